"""Catalogue views (phone-photo views of each catalogue image, kept beside the index) and the "views" re-ranker."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.errors import LookalikeError
from lookalike.index.views import CatalogueViews
from lookalike.rerank import Candidate, QueryData, apply_chain, create_reranker
from lookalike.settings import HeadSettings

from .conftest import product_of

KNOWN_PHOTO = "Tropicana-Apple-Juice_015.jpg"  # third with the pretrained vectors, first with 8 views
COUNT = 8


class _Store:
    def __init__(self, embedder: Any = "model-a") -> None:
        self._embedder = embedder

    def get_meta(self, key: str) -> Any:
        return {"embedder": self._embedder}.get(key)


def _unit(*rows: Sequence[float]) -> np.ndarray:
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _query_and_views() -> tuple[np.ndarray, CatalogueViews]:
    """A query nearer studio image 1 (cosine 0.6) than image 0 (0.3), but image 0 has two views like it
    (0.9, 0.8) and image 1 two unlike it (0.5, 0.4)."""
    query = np.array([1.0, 0.0, 0.0], np.float32)

    def at(cosine: float) -> list[float]:
        return [cosine, float(np.sqrt(1 - cosine**2)), 0.0]

    views = _unit(at(0.9), at(0.8), at(0.5), at(0.4))
    return query, CatalogueViews(np.array([0, 0, 1, 1]), views, "model-a", 2, "recipe")


def _ranking(folder: Path, best: int, embedder: Any = "model-a", own: Sequence[float] = (0.3, 0.6)) -> list:
    query, views = _query_and_views()
    views.save(folder)
    reranker = create_reranker("views", Settings().replace(**{"rerank.views.best": best}))
    reranker.refresh(_Store(embedder), 3, folder, 0)
    candidates = [Candidate(i, score, {"vector": score}) for i, score in sorted(enumerate(own), key=lambda c: -c[1])]
    chained = apply_chain([reranker], QueryData(query, {}, _Store(embedder), 3), candidates)
    return [(c.id, round(c.scores["views"], 4)) for c in chained]


def test_an_image_with_views_like_the_query_comes_first(tmp_path: Path) -> None:
    assert _ranking(tmp_path, best=3) == [(0, round((0.9 + 0.8 + 0.3) / 3, 4)), (1, 0.5)]
    assert _ranking(tmp_path, best=1) == [(0, 0.9), (1, 0.6)]


def test_views_of_another_model_are_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lookalike.index.views"):
        assert _ranking(tmp_path, best=3, embedder="model-b") == [(1, 0.6), (0, 0.3)]
    assert "another model" in caplog.text


def test_an_image_without_views_keeps_its_vector_score(tmp_path: Path) -> None:
    assert _ranking(tmp_path, best=3, own=(0.3, 0.6, 0.7))[0] == (2, 0.7)


def test_views_written_after_the_refresh_are_used(tmp_path: Path) -> None:
    reranker = create_reranker("views", Settings())
    reranker.refresh(_Store(), 3, tmp_path, 0)  # no views yet
    query, views = _query_and_views()
    views.save(tmp_path)
    candidates = [Candidate(1, 0.6, {"vector": 0.6}), Candidate(0, 0.3, {"vector": 0.3})]
    chained = apply_chain([reranker], QueryData(query, {}, _Store(), 3), candidates)
    assert [c.id for c in chained] == [0, 1]


def test_merging_and_keeping() -> None:
    first = CatalogueViews(np.array([1, 1, 2, 2]), np.arange(8, dtype=np.float32).reshape(4, 2), "m", 2, "r")
    again = CatalogueViews(np.array([2, 2, 3, 3]), np.full((4, 2), -1, np.float32), "m", 2, "r")
    merged = first.merged(again)
    assert merged.owners.tolist() == [1, 1, 2, 2, 3, 3] and merged.vectors[2:].min() == -1
    assert merged.keeping({1, 3}).owners.tolist() == [1, 1, 3, 3]
    with pytest.raises(LookalikeError, match="different models or recipes"):
        first.merged(CatalogueViews(again.owners, again.vectors, "m", 2, "another recipe"))


# -- the engine


def _rank(engine: Engine, photo: Path) -> int:
    hits = engine.search(photo, k=10).hits
    return [product_of(hit.path.replace("_Iconic", "_0")) for hit in hits].index(product_of(photo)) + 1


@pytest.fixture(scope="module")
def studio(samples: Path, sample_queries: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 10 studio images indexed, every photo's rank before and after 8 views of each (pretrained vectors)."""
    path = tmp_path_factory.mktemp("views") / "studio.index"
    with Engine.create(path, Settings()) as engine:
        engine.add([samples / "iconic"])
        before = {photo.name: _rank(engine, photo) for photo in sample_queries}
        stages: set[str] = set()
        info = engine.make_views(count=COUNT, on_stage=lambda s, d, t: stages.add(s))
        after = {photo.name: _rank(engine, photo) for photo in sample_queries}
        hit = engine.search(sample_queries[0], k=3).hits[0]
    return {"path": path, "before": before, "after": after, "info": info, "stages": stages, "hit": hit}


def test_views_move_a_known_photos_product_up(studio: dict) -> None:
    before, after = studio["before"], studio["after"]
    assert before[KNOWN_PHOTO] == 3 and after[KNOWN_PHOTO] == 1
    assert sum(rank == 1 for rank in after.values()) > sum(rank == 1 for rank in before.values()), (before, after)
    assert studio["hit"].scores.keys() == {"vector", "views"}


def test_the_views_are_kept_and_switched_on(studio: dict) -> None:
    assert studio["info"] == {"images": 10, "missing": 0, "count": COUNT, "current": True, "reranker": True}
    assert studio["stages"] == {"catalogue views"}
    views = CatalogueViews.load(studio["path"])
    assert views is not None and views.vectors.shape == (10 * COUNT, 1280)
    assert np.allclose(np.linalg.norm(views.vectors, axis=1), 1, atol=1e-3)
    with Engine.open(studio["path"]) as engine:
        assert engine.settings.rerank.chain == ("views",)
        assert engine.settings.rerank.views.count == COUNT
        assert engine.info()["views"]["images"] == 10
        assert f"catalogue views: {COUNT} for each of the 10 images" in engine.check().notes


def test_views_follow_the_catalogue(studio: dict, samples: Path, tmp_path: Path) -> None:
    """An added image gets the views a full build gives it; a removed one loses its views."""
    copy = tmp_path / "studio.index"
    shutil.copytree(studio["path"], copy)
    photo = sorted((samples / "catalog").rglob("*.jpg"))[0]
    with Engine.open(copy) as engine:
        added = engine.add([photo]).added[0]
        views = CatalogueViews.load(copy)
        assert views is not None and (views.owners == added).sum() == COUNT and len(views.images) == 11
        full = engine._views_for(engine.featurizer, None, None)
        assert np.allclose(full.vectors[full.owners == added], views.vectors[views.owners == added], atol=1e-5)
        engine.remove([added])
        assert CatalogueViews.load(copy).images == set(engine.store.ids().tolist())
        assert engine.check().ok


def test_images_added_while_views_are_made_get_theirs(studio: dict, samples: Path, tmp_path: Path) -> None:
    """Views are made without the write lock; an image another writer adds meanwhile gets its views on saving."""
    copy = tmp_path / "studio.index"
    shutil.copytree(studio["path"], copy)
    photo = sorted((samples / "catalog").rglob("*.jpg"))[0]
    with Engine.open(copy) as engine:
        added: list[int] = []

        def meanwhile(stage: str, done: int, total: int) -> None:
            if not added:
                added.extend(engine.add([photo]).added)

        info = engine.make_views(count=2, on_stage=meanwhile)
        views = CatalogueViews.load(copy)
        assert info["images"] == 11 and info["missing"] == 0 and info["count"] == 2
        assert views is not None and (views.owners == added[0]).sum() == 2 and len(views) == 22


def test_a_new_embedding_makes_the_views_again(studio: dict, tmp_path: Path) -> None:
    copy = tmp_path / "studio.index"
    shutil.copytree(studio["path"], copy)
    with Engine.open(copy) as engine:
        engine.train_embedding(HeadSettings(kind="pca", dim=8), force=True)
        views = CatalogueViews.load(copy)
        assert views is not None and views.vectors.shape == (10 * COUNT, 8)
        assert engine.views_info()["current"]
        CatalogueViews(views.owners, views.vectors * 0, {"another": "model"}, COUNT, views.recipe).save(copy)
        assert any("made by another model" in problem for problem in engine.check().problems)
        assert any("made them" in fixed for fixed in engine.check(repair=True).repaired)
        repaired = CatalogueViews.load(copy)
        assert engine.check().ok and np.allclose(repaired.vectors, views.vectors, atol=1e-4)


def test_the_views_command(studio: dict, tmp_path: Path) -> None:
    runner, index = CliRunner(), str(tmp_path / "studio.index")
    shutil.copytree(studio["path"], index)
    state = runner.invoke(app, ["views", "--index", index, "--info", "--no-use", "--json"])
    assert state.exit_code == 0, state.output
    assert json.loads(state.output)["views"]["reranker"] is False
    info = runner.invoke(app, ["info", "--index", index])
    assert "views:" in info.output and "not used" in info.output
    made = runner.invoke(app, ["views", "--index", index, "--count", "2"])
    assert made.exit_code == 0, made.output
    said = " ".join(made.output.split())  # the console wraps long lines
    assert "2 phone-photo views of each of 10 catalogue images, used by the 'views' re-ranker" in said
    cleared = runner.invoke(app, ["views", "--index", index, "--clear"])
    assert cleared.exit_code == 0 and "cleared the catalogue views" in cleared.output
    assert json.loads((Path(index) / "settings.json").read_text())["rerank"]["chain"] == []
    assert not (Path(index) / "views").exists()
    switched = runner.invoke(app, ["views", "--index", index, "--info", "--use"])
    assert switched.exit_code == 0 and "no catalogue views" in switched.output
    with Engine.open(index) as engine, pytest.raises(LookalikeError, match="no catalogue views"):
        engine.use_views()


def test_the_views_through_the_rest_api(studio: dict, sample_queries: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")
    from fastapi.testclient import TestClient

    from lookalike.server import ServerSettings, create_app

    key = "correct-horse-battery-staple"
    copy = tmp_path / "studio.index"
    shutil.copytree(studio["path"], copy)
    idle = {"making": False, "done": 0, "total": 0, "error": None}
    made = {"images": 10, "missing": 0, "count": 2, "current": True, "reranker": True, **idle, "done": 10, "total": 10}
    headers = {"X-API-Key": key}
    with Engine.open(copy) as engine:
        with TestClient(create_app(engine, ServerSettings(warm_up=False))) as closed:
            assert closed.get("/api/views").json() == {**made, **idle, "count": COUNT}
            assert closed.post("/api/views").status_code == 403  # writes off: refused
            assert closed.delete("/api/views").status_code == 403
        settings = ServerSettings(warm_up=False, allow_writes=True, api_key=key)
        with TestClient(create_app(engine, settings)) as client:
            assert client.post("/api/views?count=2").status_code == 401  # no key
            assert client.post("/api/views?count=0", headers=headers).status_code == 422
            started = client.post("/api/views?count=2", headers=headers)
            assert started.status_code == 202, started.text
            if started.json()["making"]:  # a second request while the first runs is refused
                again = client.post("/api/views?count=2", headers=headers)
                assert again.status_code in (202, 409)
            assert _when_made(client) == made
            query = {"file": (sample_queries[0].name, sample_queries[0].read_bytes(), "image/jpeg")}
            assert "views" in client.post("/api/search?k=3", files=query).json()["hits"][0]["scores"]
            cleared = client.delete("/api/views", headers=headers)
            empty = {"images": 0, "missing": 0, "count": 0, "current": True, "reranker": False}
            assert cleared.json() == {**empty, **idle, "done": 10, "total": 10}


def _when_made(client: Any) -> dict:
    """GET /api/views once the making has ended (at most a minute)."""
    import time

    deadline = time.monotonic() + 60
    while (state := client.get("/api/views").json())["making"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return state


def test_a_server_stops_making_views_when_it_shuts_down(studio: dict, tmp_path: Path) -> None:
    """Shutting down stops the making at its next image: nothing of it is written, the engine closes after it."""
    pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")
    from fastapi.testclient import TestClient

    from lookalike.server import ServerSettings, create_app

    copy = tmp_path / "studio.index"
    shutil.copytree(studio["path"], copy)
    before = (copy / "views" / "views.npz").read_bytes()
    with Engine.open(copy) as engine:
        with TestClient(create_app(engine, ServerSettings(warm_up=False, allow_writes=True))) as client:
            assert client.post("/api/views?count=64").status_code == 202
        assert not client.app.state.context.views_job.running
        assert engine.settings.rerank.views.count == COUNT
    assert (copy / "views" / "views.npz").read_bytes() == before


def test_an_empty_index_has_nothing_to_make_views_of(tmp_path: Path) -> None:
    with Engine.create(tmp_path / "empty.index", Settings()) as engine:
        with pytest.raises(LookalikeError, match="no images to make views of"):
            engine.make_views()
        assert engine.views_info() is None and not (tmp_path / "empty.index" / "views").exists()


def test_an_evaluation_config_that_makes_views_must_search_with_them() -> None:
    """The harness searches with each configuration's own chain: making views for a chain without "views" is refused."""
    from types import SimpleNamespace

    from lookalike.evaluate.configs import create_config
    from lookalike.evaluate.harness import VIEWS_STEP, Config, unmet_needs

    dataset = SimpleNamespace(gallery=[], training=[], queries=[])
    needs = unmet_needs(dataset, Config("no-chain", Settings(), prepare=(VIEWS_STEP,)))  # type: ignore[arg-type]
    assert len(needs) == 1 and "'views' re-ranker" in needs[0] and "rerank.chain" in needs[0]
    for name in ("views", "self-views", "self-photos-views"):
        assert "views" in create_config(name).settings.rerank.chain
        assert not any("re-ranker" in need for need in unmet_needs(dataset, create_config(name))), name  # type: ignore[arg-type]
