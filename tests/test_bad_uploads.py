"""The bad-input corpus through both upload routes: a clear 4xx naming the upload, never a 500,
and nothing already indexed lost; good files of every kind are searched and added."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookalike import Engine
from lookalike.server import ServerSettings, create_app

from .badinputs import Case, build_corpus
from .conftest import copy_index


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return [case for case in build_corpus(tmp_path_factory.mktemp("corpus")) if case.is_regular_file]


@pytest.fixture(scope="module")
def server(built_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Engine]]:
    path = copy_index(built_index, tmp_path_factory.mktemp("uploads"))
    settings = ServerSettings(warm_up=False, allow_writes=True)
    with Engine.open(path) as engine, TestClient(create_app(engine, settings)) as client:
        yield client, engine


def _upload(case: Case) -> tuple[str, bytes, str]:
    return (case.path.name, case.path.read_bytes(), "application/octet-stream")


def test_the_corpus_is_large_enough(corpus: list[Case]) -> None:
    assert len(corpus) >= 20 and any(not case.expected_ok for case in corpus) and any(c.expected_ok for c in corpus)


def test_search_uploads(server: tuple[TestClient, Engine], corpus: list[Case]) -> None:
    client, _ = server
    for case in corpus:
        response = client.post("/api/search", params={"k": 3}, files={"file": _upload(case)})
        assert response.status_code < 500, (case.name, response.text)
        if case.expected_ok:
            assert response.status_code == 200 and len(response.json()["hits"]) == 3, (case.name, response.text)
        else:
            assert response.status_code in (413, 422), (case.name, response.status_code, response.text)
            message = response.json()["error"]["message"]
            assert case.path.name in message, (case.name, message)
            assert case.reason_pattern is None or re.search(case.reason_pattern, message), (case.name, message)


def test_add_uploads_one_by_one_and_all_at_once(server: tuple[TestClient, Engine], corpus: list[Case]) -> None:
    client, engine = server
    before = len(engine)
    added = []
    for case in corpus:
        response = client.post("/api/items", data={"category": "Corpus"}, files={"files": _upload(case)})
        assert response.status_code < 500, (case.name, response.text)
        if case.expected_ok:
            assert response.status_code in (200, 201), (case.name, response.text)
            item = response.json()["items"][0]
            added.append(item["id"])
            assert client.get(f"/api/images/{item['id']}").status_code == 200, case.name  # the file is served
            assert client.get(f"/api/thumbnails/{item['id']}").status_code == 200, case.name
        else:
            assert response.status_code in (413, 422), (case.name, response.status_code, response.text)
            assert case.path.name in response.json()["error"]["message"], case.name
    assert len(engine) == before + len(set(added)), "every good upload indexed once, every bad one refused"
    # one request mixing good and bad files is refused whole, and loses nothing already indexed
    mixed = [("files", _upload(case)) for case in corpus[:8]]
    response = client.post("/api/items", data={"category": "Mixed"}, files=mixed)
    assert response.status_code < 500 and len(engine) >= before + len(set(added))
    assert all(client.get(f"/api/items/{item_id}").status_code == 200 for item_id in added)
