"""The photo archive (unlabelled photos kept beside the index) and the "archive" re-ranker."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.errors import ImageError, LookalikeError
from lookalike.graph import knn_affinity, normalise_graph
from lookalike.index.archive import PhotoArchive
from lookalike.rerank import Candidate, QueryData, apply_chain, create_reranker
from lookalike.rerank import archive as archive_module
from lookalike.settings import HeadSettings

from .conftest import product_of

KNOWN_PHOTO = "Tropicana-Apple-Juice_015.jpg"  # third with the pretrained vectors, first with the archive
# a 70-node graph: the defaults (graph_k 30) are for thousands of photos
SMALL = {"rerank.archive.graph_k": 5, "rerank.archive.query_k": 7, "rerank.archive.weight": 0.5}


class _Store:
    """What re-rankers read of a MetadataStore, over an array of catalogue vectors."""

    def __init__(self, vectors: np.ndarray, embedder: Any = "model-a") -> None:
        self._vectors, self._embedder = vectors, embedder

    def vectors(self, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[None]]]:
        yield np.arange(len(self._vectors)), self._vectors, [None] * len(self._vectors)

    def vectors_of(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        return {i: self._vectors[i] for i in ids}

    def get_meta(self, key: str) -> Any:
        return {"embedder": self._embedder}.get(key)


def _unit(*rows: Sequence[float]) -> np.ndarray:
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _on_circle(degrees: float, lift: float = 0.0) -> list[float]:
    angle = np.radians(degrees)
    return [float(np.cos(angle)), float(np.sin(angle)), lift]


def _scene() -> dict[str, np.ndarray]:
    """Studio image A at 0 degrees with a chain of its photos towards the query at 80 degrees; studio image
    B out of the plane, nearer the query than A is (cosine 0.5 against 0.17), with photos of its own."""
    b = _unit([*np.multiply(_on_circle(80)[:2], 0.5), 0.866])[0]
    b_photos = _unit(*(b + np.array(offset) for offset in ([0.1, 0, 0], [0, 0.1, 0], [-0.1, 0, 0.05])))
    chain = _unit(*(_on_circle(d) for d in (15, 30, 45, 60, 72)))
    return {"catalogue": _unit(_on_circle(0), b), "photos": np.concatenate([chain, b_photos]),
            "query": _unit(_on_circle(80))[0]}  # fmt: skip


def _ranking(folder: Path, scene: dict[str, np.ndarray], photos: np.ndarray | None, embedder: Any = "model-a") -> list:
    settings = Settings().replace(**{"rerank.archive.weight": 1.0, "rerank.archive.graph_k": 2,
                                     "rerank.archive.query_k": 3})  # fmt: skip
    store = _Store(scene["catalogue"])
    if photos is not None:
        PhotoArchive([f"p{i}.jpg" for i in range(len(photos))], photos, embedder).save(folder)
    reranker = create_reranker("archive", settings)
    reranker.refresh(store, 3, folder, 0)
    scores = scene["catalogue"] @ scene["query"]
    candidates = [Candidate(int(i), float(scores[i]), {"vector": float(scores[i])}) for i in np.argsort(-scores)]
    query = QueryData(scene["query"], {}, store, 3)
    return [c.id for c in apply_chain([reranker], query, candidates)]


def test_photos_carry_a_query_to_the_product_they_show(tmp_path: Path) -> None:
    scene = _scene()
    assert _ranking(tmp_path / "none", scene, None) == [1, 0]  # the catalogue alone: B, nearer the query
    assert _ranking(tmp_path / "with", scene, scene["photos"]) == [0, 1]  # through A's photos: A


def test_an_archive_of_another_model_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scene = _scene()
    with caplog.at_level(logging.WARNING, logger="lookalike.index.archive"):
        assert _ranking(tmp_path, scene, scene["photos"], embedder="model-b") == [1, 0]
    assert "another model" in caplog.text


def test_an_archive_written_after_the_refresh_is_used(tmp_path: Path) -> None:
    scene = _scene()
    settings = Settings().replace(**{"rerank.archive.weight": 1.0, "rerank.archive.graph_k": 2,
                                     "rerank.archive.query_k": 3})  # fmt: skip
    store = _Store(scene["catalogue"])
    reranker = create_reranker("archive", settings)
    reranker.refresh(store, 3, tmp_path, 0)
    PhotoArchive([f"p{i}.jpg" for i in range(8)], scene["photos"], "model-a").save(tmp_path)
    scores = scene["catalogue"] @ scene["query"]
    candidates = [Candidate(1, float(scores[1]), {"vector": float(scores[1])}),
                  Candidate(0, float(scores[0]), {"vector": float(scores[0])})]  # fmt: skip
    ranked = apply_chain([reranker], QueryData(scene["query"], {}, store, 3), candidates)
    assert [c.id for c in ranked] == [0, 1]


@pytest.mark.parametrize("keep", [7, 2])
def test_the_joint_matrix_holds_the_largest_entries_of_the_dense_solve(
    keep: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "BLOCK", 3)  # 7 catalogue columns in 3 blocks: rows merged across blocks
    rng = np.random.default_rng(0)
    nodes = rng.normal(size=(27, 8)).astype(np.float32)
    nodes /= np.linalg.norm(nodes, axis=1, keepdims=True)
    ids = np.arange(100, 107)
    matrix = archive_module.build_joint_matrix(ids, nodes[:7], nodes[7:], k=4, alpha=0.9, gamma=1.0, keep=keep)
    normalised = normalise_graph(knn_affinity(nodes, 4, 1.0)).toarray()
    dense = (0.1 * np.linalg.inv(np.eye(27) - 0.9 * normalised))[:, :7]
    assert list(matrix.ids[:7]) == list(ids) and list(matrix.ids[7:]) == [-1 - i for i in range(20)]
    for row in range(27):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        got = dict(zip(matrix.indices[start:end].tolist(), matrix.values[start:end].tolist(), strict=True))
        expected = np.argsort(-dense[row])[:keep]
        assert set(got) == set(expected.tolist())
        assert np.allclose([got[c] for c in expected], dense[row, expected], atol=1e-5)


def test_merging_replaces_photos_added_again() -> None:
    first = PhotoArchive(["a.jpg", "b.jpg"], np.eye(2, 3, dtype=np.float32), "m")
    again = PhotoArchive(["b.jpg", "c.jpg"], np.full((2, 3), 0.5, np.float32), "m")
    merged = first.merged(again)
    assert merged.paths == ["a.jpg", "b.jpg", "c.jpg"]
    assert np.allclose(merged.vectors[1], 0.5) and np.allclose(merged.vectors[0], [1, 0, 0])


# -- the engine


def _rank(engine: Engine, photo: Path) -> int:
    hits = engine.search(photo, k=10).hits
    return [product_of(hit.path.replace("_Iconic", "_0")) for hit in hits].index(product_of(photo)) + 1


@pytest.fixture(scope="module")
def studio(samples: Path, sample_queries: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 10 studio images indexed, every photo's rank before and after the 60 sample catalogue photos
    join the archive (pretrained vectors, no training)."""
    path = tmp_path_factory.mktemp("archive") / "studio.index"
    with Engine.create(path, Settings().replace(**SMALL)) as engine:
        engine.add([samples / "iconic"])
        before = {photo.name: _rank(engine, photo) for photo in sample_queries}
        stages: set[str] = set()
        report = engine.archive_photos(_photos(samples), on_stage=lambda s, d, t: stages.add(s))
        after = {photo.name: _rank(engine, photo) for photo in sample_queries}
        hit = engine.search(sample_queries[0], k=3).hits[0]
    return {"path": path, "before": before, "after": after, "report": report, "stages": stages, "hit": hit}


def _photos(samples: Path) -> list[Path]:
    return sorted((samples / "catalog").rglob("*.jpg"))


def test_the_archive_moves_a_known_photos_product_up(studio: dict) -> None:
    before, after = studio["before"], studio["after"]
    assert before[KNOWN_PHOTO] == 3 and after[KNOWN_PHOTO] == 1
    assert all(after[name] <= before[name] for name in before), (before, after)
    assert studio["hit"].scores.keys() == {"vector", "archive"}


def test_the_archive_is_kept_and_switched_on(studio: dict) -> None:
    assert studio["report"] == {"photos": 60, "added": 60, "reranker": True}
    assert studio["stages"] == {"archive photos"}
    with Engine.open(studio["path"]) as engine:
        assert engine.settings.rerank.chain == ("archive",)
        assert engine.info()["archive"] == {"photos": 60, "current": True, "reranker": True}
        assert "photo archive: 60 photos, made by the index's model" in engine.check().notes
    saved = json.loads((studio["path"] / "settings.json").read_text())
    assert saved["rerank"]["chain"] == ["archive"]


def test_an_unreadable_photo_is_named_and_the_archive_kept(studio: dict, samples: Path, tmp_path: Path) -> None:
    copy = tmp_path / "studio.index"
    shutil.copytree(studio["path"], copy)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with Engine.open(copy) as engine:
        with pytest.raises(ImageError, match="broken.jpg"):
            engine.archive_photos([broken])
        assert engine.archive_info()["photos"] == 60
        assert engine.clear_archive() and engine.archive_info() is None
        assert not (copy / "archive").exists() and all(p.is_file() for p in _photos(samples))
        assert engine.settings.rerank.chain == ()
        assert not engine.clear_archive()
        with pytest.raises(LookalikeError, match="no photo archive"):
            engine.use_archive()


def test_a_new_embedding_embeds_the_archive_again(engine: Engine, sample_queries: list[Path]) -> None:
    engine.archive_photos(sample_queries)
    engine.train_embedding(HeadSettings(kind="pca", dim=32), force=True)
    info = engine.archive_info()
    assert info == {"photos": 20, "current": True, "reranker": True}
    archive = PhotoArchive.load(engine.path)
    assert archive is not None and archive.vectors.shape == (20, 32)
    assert np.allclose(archive.vectors[0], engine.embed([sample_queries[0]])[0], atol=1e-4)
    PhotoArchive(archive.paths, archive.vectors * 0, {"another": "model"}).save(engine.path)
    assert any("made by another model" in problem for problem in engine.check().problems)
    assert any("embedded its 20 readable photos again" in fixed for fixed in engine.check(repair=True).repaired)
    repaired = PhotoArchive.load(engine.path)
    assert engine.check().ok and repaired is not None and np.allclose(repaired.vectors, archive.vectors, atol=1e-4)


def test_the_archive_command(engine: Engine, samples: Path) -> None:
    runner, index = CliRunner(), str(engine.path)
    engine.close()
    added = runner.invoke(app, ["archive", "--index", index, str(samples / "queries")])
    assert added.exit_code == 0, added.output
    assert "added 20 photos" in added.output and "used by the 'archive' re-ranker" in added.output
    state = runner.invoke(app, ["archive", "--index", index, "--json"])
    assert json.loads(state.output) == {"archive": {"photos": 20, "current": True, "reranker": True}, "added": None}
    info = runner.invoke(app, ["info", "--index", index])
    assert "archive:" in info.output and "20 unlabelled photos" in info.output
    cleared = runner.invoke(app, ["archive", "--index", index, "--clear"])
    assert cleared.exit_code == 0 and "cleared the photo archive" in cleared.output
    empty = runner.invoke(app, ["archive", "--index", index])
    assert empty.exit_code == 0 and "no photo archive" in empty.output
    assert json.loads((engine.path / "settings.json").read_text())["rerank"]["chain"] == []
    missing = runner.invoke(app, ["archive", "--index", index, str(samples / "nothing-here.jpg")])
    assert missing.exit_code != 0 and "nothing-here.jpg" in missing.output


def test_a_server_sees_photos_another_writer_archives(samples: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from lookalike.server import create_app

    path, photo = tmp_path / "studio.index", samples / "queries" / KNOWN_PHOTO
    with Engine.create(path, Settings().replace(**SMALL, **{"rerank.chain": ["archive"]})) as engine:
        engine.add([samples / "iconic"])

    def first_products(client: TestClient) -> list[str]:
        files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
        hits = client.post("/api/search?k=3", files=files).json()["hits"]
        return [product_of(hit["name"].replace("_Iconic", "_0")) for hit in hits]

    with Engine.open(path) as serving, TestClient(create_app(serving)) as client:
        assert first_products(client)[0] != "Tropicana-Apple-Juice"  # no archive yet
        with Engine.open(path) as writer:  # another writer, as another process would be
            writer.archive_photos(_photos(samples))
        with ThreadPoolExecutor(max_workers=4) as pool:  # the first queries after the write refresh at once
            answers = list(pool.map(lambda _: first_products(client), range(4)))
        assert all(answer[0] == "Tropicana-Apple-Juice" for answer in answers), answers


def test_the_archive_through_the_rest_api(studio: dict, samples: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")
    from fastapi.testclient import TestClient

    from lookalike.server import ServerSettings, create_app

    key = "correct-horse-battery-staple"
    copy = tmp_path / "studio.index"
    shutil.copytree(studio["path"], copy)
    photos = sorted((samples / "queries").iterdir())[:3]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    with Engine.open(copy) as engine:
        with TestClient(create_app(engine, ServerSettings(warm_up=False))) as closed:
            assert closed.get("/api/archive").json() == {"photos": 60, "current": True, "reranker": True, "added": 0}
            assert closed.post("/api/archive", files=files).status_code == 403  # writes off: refused
            assert closed.delete("/api/archive").status_code == 403
        settings = ServerSettings(warm_up=False, allow_writes=True, api_key=key)
        with TestClient(create_app(engine, settings)) as client:
            assert client.post("/api/archive", files=files).status_code == 401  # no key
            bad = client.post("/api/archive", files=[("files", ("x.jpg", b"not a photo", "image/jpeg"))],
                              headers={"X-API-Key": key})  # fmt: skip
            assert bad.status_code == 422 and "x.jpg" in bad.text
            assert client.get("/api/archive").json()["photos"] == 60  # the bad request changed nothing
            added = client.post("/api/archive", files=files, headers={"X-API-Key": key})
            assert added.status_code == 201, added.text
            assert added.json() == {"photos": 63, "current": True, "reranker": True, "added": 3}
            kept = list((copy / "archive" / "photos").rglob("*.jpg"))
            assert len(kept) == 3 and all(path.stat().st_size for path in kept)
            again = client.post("/api/archive", files=files, headers={"X-API-Key": key})
            assert again.status_code == 200 and again.json()["photos"] == 63  # the same photos: no new ones
            assert again.json()["added"] == 0
            query = {"file": (photos[0].name, photos[0].read_bytes(), "image/jpeg")}
            hits = client.post("/api/search?k=3", files=query)
            assert "archive" in hits.json()["hits"][0]["scores"]
            cleared = client.delete("/api/archive", headers={"X-API-Key": key})
            assert cleared.json() == {"photos": 0, "current": True, "reranker": False, "added": 0}
            assert not (copy / "archive" / "photos").exists()
