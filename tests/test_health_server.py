"""The "Catalogue health" routes: duplicate groups and the audit, and the category change they lead to."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")

from fastapi.testclient import TestClient

from lookalike import Engine
from lookalike.server import ServerSettings, create_app

from .conftest import assert_error

KEY = "health-test-key"


@pytest.fixture()
def planted(engine: Engine, samples: Path, tmp_path: Path) -> tuple[Engine, int, int]:
    """The sample index with an exact copy of a photo and a banana filed under Milk."""
    copy = tmp_path / "copy.jpg"
    shutil.copy(samples / "catalog" / "Banana" / "Banana_001.jpg", copy)
    (copied,) = engine.add([copy], "Banana").added
    (wrong,) = engine.add([samples / "queries" / "Banana_023.jpg"], "Milk").added
    return engine, copied, wrong


@pytest.fixture()
def client(planted: tuple[Engine, int, int]) -> Iterator[TestClient]:
    settings = ServerSettings(warm_up=False, allow_writes=True, api_key=KEY)
    with TestClient(create_app(planted[0], settings)) as test_client:
        yield test_client


def test_duplicates_route_lists_groups_with_thumbnails(client: TestClient, planted: tuple[Engine, int, int]) -> None:
    answer = client.get("/api/catalogue-health/duplicates")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["expected_precision"] is not None and body["images"] == 62
    group = next(g for g in body["groups"] if planted[1] in [m["id"] for m in g["members"]])
    copy = next(m for m in group["members"] if m["id"] == planted[1])
    assert copy["exact_copy_of"] == group["keeper"] and not copy["keeper"]  # the older one is kept
    member = group["members"][0]
    assert member["thumbnail_url"] == f"/api/thumbnails/{member['id']}" and "/" not in member["name"]
    assert client.get(member["thumbnail_url"]).status_code == 200


def test_duplicates_route_refuses_bad_parameters(client: TestClient) -> None:
    assert_error(client.get("/api/catalogue-health/duplicates?keep=newest"), 422, "invalid_request", "largest")
    assert client.get("/api/catalogue-health/duplicates?threshold=2").status_code == 422


def test_audit_route_flags_the_planted_mislabel(client: TestClient, planted: tuple[Engine, int, int]) -> None:
    body = client.get("/api/catalogue-health/audit").json()
    suspect = next(s for s in body["mislabelled"] if s["id"] == planted[2])
    assert suspect["current"] == "Milk" and suspect["voted"] == "Banana" and suspect["share"] >= 0.5
    assert body["outliers"] and body["labels"] == ["category"]


def test_changing_a_category_needs_the_key_and_moves_the_image(
    client: TestClient, planted: tuple[Engine, int, int]
) -> None:
    engine, _, wrong = planted
    url = f"/api/items/{wrong}/category"
    assert client.post(url, data={"category": "Banana"}).status_code == 401
    answer = client.post(url, data={"category": "Banana"}, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    moved = answer.json()
    assert moved["old_id"] == wrong and moved["category"] == "Banana"
    assert engine.item(moved["id"]).category == "Banana" and engine.item(wrong) is None
    gone = client.post(url, data={"category": "Banana"}, headers={"Authorization": f"Bearer {KEY}"})
    assert_error(gone, 404, "not_found")
    body = client.get("/api/catalogue-health/audit").json()
    assert moved["id"] not in [s["id"] for s in body["mislabelled"] if s["label"] == "category"]


def test_changing_a_category_is_refused_on_a_read_only_server(engine: Engine) -> None:
    with TestClient(create_app(engine, ServerSettings(warm_up=False))) as read_only:
        assert read_only.post("/api/items/1/category", data={"category": "Milk"}).status_code == 403
