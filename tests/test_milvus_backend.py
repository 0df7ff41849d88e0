"""The engine end to end on the milvus backend (a real Milvus Lite file, no mock): index, search,
remove, re-add, reopen, re-rankers' blobs, training an embedding, the fingerprint check, the CLI and
the server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lookalike import Engine, Settings
from lookalike.errors import IndexMismatchError, LookalikeError

from .conftest import SAMPLES, product_of

pytest.importorskip("pymilvus", reason="the milvus backend needs pymilvus + milvus-lite (pip install .[scale])")
pytestmark = pytest.mark.slow


def _settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings().replace(**{"index.backend": "milvus", "index.uri": str(tmp_path / "milvus.db"), **changes})


def _path_rows(engine: Engine) -> dict[str, int]:
    """The `_paths` collection: path -> the id it points at."""
    space = engine.catalog.space
    return {row["path"]: int(row["item_id"]) for batch in space.scan(space.paths_name, ["path", "item_id"])
            for row in batch}  # fmt: skip


@pytest.fixture(scope="module")
def milvus_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("milvus")
    path = folder / "shop.index"
    with Engine.create(path, _settings(folder)) as engine:
        report = engine.add([SAMPLES / "catalog"])
    assert len(report.added) == 60 and not report.failed
    return path


def test_the_folder_holds_settings_and_models_and_milvus_the_rest(milvus_index: Path) -> None:
    saved = json.loads((milvus_index / "settings.json").read_text())["index"]
    assert saved["backend"] == "milvus" and saved["collection"] == "shop_index"
    assert Path(saved["uri"]).is_absolute()
    assert not (milvus_index / "catalog.sqlite").exists() and not (milvus_index / "vectors").exists()
    with Engine.open(milvus_index) as engine:
        info = engine.info()
        assert info["images"] == 60 and info["backend"]["backend"] == "milvus"
        assert sum(info["categories"].values()) == 60


def test_search_finds_the_product_and_filters_by_category(milvus_index: Path, sample_queries: list[Path]) -> None:
    with Engine.open(milvus_index) as engine:
        hits = 0
        for query in sample_queries:
            result = engine.search(query, k=3)
            hits += product_of(result.hits[0].path) == product_of(query)
        assert hits >= len(sample_queries) * 0.6
        category = next(iter(engine.categories()))
        result = engine.search(sample_queries[0], k=5, category=category)
        assert result.hits and all(hit.category == category for hit in result.hits)


def test_search_results_match_the_faiss_backend(
    milvus_index: Path, built_index: Path, sample_queries: list[Path]
) -> None:
    with Engine.open(milvus_index) as milvus, Engine.open(built_index) as faiss:
        for query in sample_queries[:4]:
            a, b = milvus.search(query, k=5, rerank=False), faiss.search(query, k=5, rerank=False)
            assert [Path(h.path).name for h in a.hits] == [Path(h.path).name for h in b.hits]
            assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-4)


def test_remove_readd_and_reopen(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue"
    shutil.copytree(SAMPLES / "catalog" / "Apple", catalogue / "Apple")
    path = tmp_path / "small.index"
    with Engine.create(path, _settings(tmp_path)) as engine:
        added = engine.add([catalogue]).added
        target = engine.item(added[0])
        assert engine.search(target.path, k=1).hits[0].id == target.id  # read-your-writes, no flush
        engine.remove([target.id])
        assert engine.item(target.id) is None
        assert all(hit.id != target.id for hit in engine.search(target.path, k=5).hits)
        readded = engine.add([Path(target.path)], categories="Apple").added
        assert engine.search(target.path, k=1).hits[0].id == readded[0]
        unchanged = engine.add([catalogue])
        assert not unchanged.added and len(unchanged.unchanged) == len(added)
    with Engine.open(path) as reopened:
        assert len(reopened) == len(added)
        assert reopened.find(target.path).id == readded[0]


def test_localised_index_keeps_silhouettes_for_shape_reranking(tmp_path: Path, sample_queries: list[Path]) -> None:
    catalogue = tmp_path / "catalogue"
    for product in ("Apple", "Milk"):
        shutil.copytree(SAMPLES / "catalog" / product, catalogue / product)
    settings = _settings(
        tmp_path, **{"localize.enabled": True, "rerank.chain": ["mask_iou"], "rerank.mask_iou.weight": 0.3}
    )
    with Engine.create(tmp_path / "shapes.index", settings) as engine:
        engine.add([catalogue])
        item = engine.items()[0]
        assert engine.silhouette(item.id)  # the blob round-trips through Milvus
        result = engine.search(sample_queries[0], k=3)
        assert "iou" in result.hits[0].scores


def test_an_index_built_by_other_weights_is_refused(milvus_index: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.index"
    shutil.copytree(milvus_index, other)
    settings = json.loads((other / "settings.json").read_text())
    settings["embed"]["gem_p"] = 1.0  # another model over the same collection
    (other / "settings.json").write_text(json.dumps(settings))
    with Engine.open(other) as engine, pytest.raises(IndexMismatchError, match="gem|pool|embedder|model"):
        engine.search(SAMPLES / "queries" / sorted(p.name for p in (SAMPLES / "queries").iterdir())[0], k=1)


def test_creating_over_an_existing_collection_needs_rebuild(milvus_index: Path, tmp_path: Path) -> None:
    saved = json.loads((milvus_index / "settings.json").read_text())["index"]
    settings = Settings().replace(
        **{"index.backend": "milvus", "index.uri": saved["uri"], "index.collection": saved["collection"]}
    )
    with pytest.raises(LookalikeError, match="already holds an index"):
        Engine.create(tmp_path / "again.index", settings)


def test_unsupported_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LookalikeError, match="not offered on the milvus backend"):
        Engine.create(tmp_path / "pq.index", _settings(tmp_path, **{"index.kind": "ivfpq"}))


def test_cli_index_with_milvus_backend_then_search(tmp_path: Path, sample_queries: list[Path]) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app

    catalogue = tmp_path / "catalogue"
    shutil.copytree(SAMPLES / "catalog" / "Milk", catalogue / "Milk")
    runner = CliRunner()
    index = tmp_path / "cli.index"
    uri = str(tmp_path / "catalog.db")
    created = runner.invoke(app, ["index", str(catalogue), "--index", str(index), "--backend", "milvus", "--uri", uri])
    assert created.exit_code == 0, created.output
    assert json.loads((index / "settings.json").read_text())["index"]["uri"] == uri
    # another process opens the Lite file once this one let it go (its collections come back released)
    code = "import sys; from lookalike.cli import main; sys.argv = ['lookalike', *sys.argv[1:]]; main()"
    found = subprocess.run(
        [sys.executable, "-c", code, "search", str(sample_queries[0]), "--index", str(index), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    assert json.loads(found.stdout)["hits"][0]["category"] == "Milk"
    refused = runner.invoke(app, ["index", str(catalogue), "--index", str(tmp_path / "x.index"), "--backend", "milvus"])
    assert refused.exit_code != 0 and "index.uri" in refused.output


def test_server_searches_and_writes_through_milvus(tmp_path: Path, sample_queries: list[Path]) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient

    from lookalike.server import ServerSettings, create_app

    catalogue = tmp_path / "catalogue"
    for product in ("Milk", "Juice"):
        shutil.copytree(SAMPLES / "catalog" / product, catalogue / product)
    with Engine.create(tmp_path / "served.index", _settings(tmp_path)) as engine:
        engine.add([catalogue])
    with (
        Engine.open(tmp_path / "served.index") as engine,
        TestClient(create_app(engine, ServerSettings(warm_up=False, allow_writes=True))) as client,
    ):
        assert client.get("/api/health").status_code == 200
        with sample_queries[0].open("rb") as photo:
            answer = client.post("/api/search?k=3", files={"file": ("q.jpg", photo, "image/jpeg")})
        assert answer.status_code == 200, answer.text
        hits = answer.json()["hits"]
        assert len(hits) == 3 and {hit["category"] for hit in hits} <= {"Milk", "Juice"}
        item_id = hits[0]["id"]
        assert client.get(f"/api/items/{item_id}").json()["id"] == item_id
        assert client.get(f"/api/items/{item_id}/similar?k=2").status_code == 200
        removed = client.delete(f"/api/items/{item_id}")
        assert removed.status_code == 200, removed.text
        assert client.get(f"/api/items/{item_id}").status_code == 404


def test_training_an_embedding_switches_the_collection_and_other_processes_follow(tmp_path: Path) -> None:
    from lookalike.settings import HeadSettings

    catalogue = tmp_path / "catalogue"
    for product in ("Milk", "Juice", "Apple"):
        shutil.copytree(SAMPLES / "catalog" / product, catalogue / product)
    path = tmp_path / "tuned.index"
    with Engine.create(path, _settings(tmp_path)) as engine:
        engine.add([catalogue])
        first = engine.items()[0]
    with Engine.open(path) as reader, Engine.open(path) as writer:
        before = reader.search(first.path, k=1)
        writer.train_embedding(HeadSettings(kind="pca", dim=16), force=True)
        assert writer.info()["dim"] == 16 and writer.info()["backend"]["collection"].endswith("_v1")
        after = reader.search(first.path, k=1)  # the reader notices the switch and loads the new model
        assert after.hits[0].id == first.id == before.hits[0].id
        assert reader.info()["dim"] == 16 and len(reader) == len(writer)


def test_check_reports_a_healthy_milvus_index(milvus_index: Path) -> None:
    with Engine.open(milvus_index) as engine:
        report = engine.check()
        assert report.ok, report.problems
        assert any("60 images" in note for note in report.notes)
        assert any("Milvus collection" in note for note in report.notes)


def test_cli_info_and_rebuild_on_milvus(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app

    catalogue = tmp_path / "catalogue"
    shutil.copytree(SAMPLES / "catalog" / "Juice", catalogue / "Juice")
    with Engine.create(tmp_path / "r.index", _settings(tmp_path)) as engine:
        engine.add([catalogue])
    runner = CliRunner()
    info = runner.invoke(app, ["info", "--index", str(tmp_path / "r.index")])
    assert info.exit_code == 0, info.output
    rebuilt = runner.invoke(app, ["rebuild", "--index", str(tmp_path / "r.index"), "--kind", "hnsw"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "HNSW" in rebuilt.output and "as hnsw" in rebuilt.output
    with Engine.open(tmp_path / "r.index") as engine:
        assert engine.settings.index.kind == "hnsw"
        item = engine.items()[0]
        assert engine.search(item.path, k=1).hits[0].id == item.id
    refused = runner.invoke(app, ["rebuild", "--index", str(tmp_path / "r.index"), "--kind", "ivfpq"])
    assert refused.exit_code != 0 and "not offered on the milvus backend" in refused.output


def test_ids_are_exact_in_javascript(milvus_index: Path) -> None:
    with Engine.open(milvus_index) as engine:
        assert all(0 < item.id < 2**53 for item in engine.items())  # the web page reads ids as JS numbers


def test_items_come_in_id_order_a_page_at_a_time(milvus_index: Path) -> None:
    with Engine.open(milvus_index) as engine:
        everything = engine.items()
        ids = [item.id for item in everything]
        assert len(ids) == 60 and ids == sorted(ids)
        assert engine.items(limit=7, offset=5) == everything[5:12]
        assert engine.items(offset=57) == everything[57:]
        assert engine.items(limit=0) == [] and engine.items(offset=60) == []
        category = everything[0].category
        in_category = [item for item in everything if item.category == category]
        assert engine.items(category, limit=3, offset=2) == in_category[2:5]


def test_adding_reads_only_the_rows_of_its_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Path lookups, the id check and the writes are primary-key reads and writes: what a batch costs
    does not grow with the catalogue (Milvus Lite scans every row for any other filter)."""
    catalogue = tmp_path / "catalogue"
    shutil.copytree(SAMPLES / "catalog" / "Banana", catalogue / "Banana")
    images = sorted(catalogue.rglob("*.jpg"))
    with Engine.create(tmp_path / "lookups.index", _settings(tmp_path)) as engine:
        engine.add(images[:3], categories="Banana")
        space, calls = engine.catalog.space, []
        original = space.call

        def recording(what: str, method: str, *args: Any, **kwargs: Any) -> Any:
            calls.append((method, kwargs.get("filter")))
            return original(what, method, *args, **kwargs)

        monkeypatch.setattr(space, "call", recording)
        monkeypatch.setattr(space, "scan", lambda collection, *a, **k: pytest.fail(f"scanned {collection} to add"))
        report = engine.add([catalogue])
        assert len(report.added) == 3 and len(report.unchanged) == 3
        filters = [expression for method, expression in calls if method == "query"]
        assert filters and all(re.match(r"(id|path|key) in \[", expression) for expression in filters), filters
        assert not any(expression for method, expression in calls if method == "delete")


def test_path_rows_follow_replacements_and_removals(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue"
    shutil.copytree(SAMPLES / "catalog" / "Banana", catalogue / "Banana")
    with Engine.create(tmp_path / "paths.index", _settings(tmp_path)) as engine:
        ids = engine.add([catalogue]).added
        assert _path_rows(engine) == {item.path: item.id for item in engine.items()}
        first = engine.store.generation
        changed = Path(engine.item(ids[0]).path)  # a file whose content changed: re-embedded under a new id
        shutil.copyfile(sorted((SAMPLES / "catalog" / "Apple").iterdir())[0], changed)
        updated = engine.add([changed], categories="Banana").updated
        assert _path_rows(engine)[str(changed)] == updated[0] == engine.find(changed).id
        removed = engine.item(ids[1]).path
        engine.remove([ids[1]])
        assert removed not in _path_rows(engine) and engine.find(removed) is None
        assert engine.store.generation > first
        # a path row left by a write cut short (its image never inserted, or holding another path) names nothing
        engine.store.record_paths([123, ids[2]], [_new_item("/nowhere/ghost.jpg"), _new_item("/nowhere/alias.jpg")])
        real = engine.item(ids[2])
        known = engine.store.known_paths(["/nowhere/ghost.jpg", "/nowhere/alias.jpg", real.path])
        assert known == {real.path: (real.id, real.content_hash)}
        assert engine.find("/nowhere/alias.jpg") is None
        assert engine.check().ok
        # blobs are read by primary key, chunk after chunk (45,000 bytes each)
        three, two = bytes(range(256)) * 400, bytes(90_000)  # 3 chunks; exactly 2 full ones
        engine.store.write_blobs([ids[2], ids[3]], [_new_item("x", {"big": three}), _new_item("y", {"big": two})])
        assert engine.store.blobs("big", [ids[2], ids[3], ids[4]]) == {ids[2]: three, ids[3]: two}


def test_an_index_made_before_the_path_collection_gets_one_on_its_next_write(tmp_path: Path) -> None:
    from lookalike.index.milvus import PATHS_READY

    catalogue = tmp_path / "catalogue"
    shutil.copytree(SAMPLES / "catalog" / "Banana", catalogue / "Banana")
    images = sorted(catalogue.rglob("*.jpg"))
    path = tmp_path / "old.index"
    with Engine.create(path, _settings(tmp_path)) as engine:
        engine.add(images[:3], categories="Banana")
        space = engine.catalog.space
        space.call("dropping", "drop_collection", space.paths_name)  # as an index made before it was
        space.call("forgetting", "delete", space.meta_name, ids=[PATHS_READY])
    with Engine.open(path) as engine:
        assert not engine.store.paths_ready and engine.find(images[0]) is not None  # found without it
        report = engine.add([catalogue])
        assert len(report.unchanged) == 3 and len(report.added) == 3
        assert engine.store.paths_ready
        assert _path_rows(engine) == {item.path: item.id for item in engine.items()}
        assert engine.check().ok


def _new_item(path: str, blobs: dict[str, bytes] | None = None) -> Any:
    import numpy as np

    from lookalike.index import NewItem

    return NewItem(path, "Banana", "0" * 64, np.zeros(4, np.float32), blobs=blobs or {})


def test_the_photo_archive_and_its_reranker_on_milvus(tmp_path: Path, sample_queries: list[Path]) -> None:
    from lookalike.settings import HeadSettings

    small = {"rerank.archive.graph_k": 5, "rerank.archive.query_k": 7, "rerank.archive.weight": 0.5}
    photo = next(query for query in sample_queries if query.name == "Tropicana-Apple-Juice_015.jpg")

    def rank(engine: Engine) -> int:
        names = [product_of(hit.path.replace("_Iconic", "_0")) for hit in engine.search(photo, k=10).hits]
        return names.index("Tropicana-Apple-Juice") + 1

    with Engine.create(tmp_path / "studio.index", _settings(tmp_path, **small)) as engine:
        engine.add([SAMPLES / "iconic"])
        before = rank(engine)
        report = engine.archive_photos(sorted((SAMPLES / "catalog").rglob("*.jpg")))
        assert report == {"photos": 60, "added": 60, "reranker": True}
        assert (before, rank(engine)) == (3, 1)  # as on the embedded backend (tests/test_archive.py)
        engine.train_embedding(HeadSettings(kind="pca", dim=8), force=True)
        assert engine.archive_info() == {"photos": 60, "current": True, "reranker": True}
