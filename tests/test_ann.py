"""Approximate index kinds: tombstones, "auto", the training fallback, tunables, memory mapping,
the engine's exact re-scoring, and rebuilding (the shared suite is tests/contract/test_index_kinds.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Engine
from lookalike.cli import app
from lookalike.errors import IndexMismatchError, LookalikeError, NotFittedError, SettingsError, UnknownNameError
from lookalike.index import create_index, load_index
from lookalike.index.ann import AnnIndex, rescore
from lookalike.index.ann_params import auto_nlist, auto_pq_m, choose_params
from lookalike.index.ann_reduced import PcaReduction
from lookalike.settings import IndexSettings, Settings

DIM = 32


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _ann(kind: str, **settings: object) -> AnnIndex:
    index = create_index(kind, DIM, IndexSettings(kind=kind, **settings))  # type: ignore[arg-type]
    assert isinstance(index, AnnIndex)
    return index


# -- deletion


def test_tombstones_hide_removed_vectors_and_rebuild_past_the_fraction() -> None:
    index = _ann("hnsw", min_vectors=100, tombstone_fraction=0.2)
    vectors, ids = _unit(1000, 0), np.arange(1000)
    index.add(ids, vectors)
    index.remove(ids[:150])  # 15 %: hidden
    assert index.describe()["tombstones"] == 150 and len(index) == 850
    _, found = index.search(vectors[:150], 10)
    assert (found >= 0).all() and not set(found.ravel()) & set(range(150))  # still k live results
    index.remove(ids[150:250])  # 25 % > 20 %: the graph is rebuilt without them
    assert index.describe()["tombstones"] == 0 and len(index) == 750
    _, found = index.search(vectors[250:260], 1)
    assert list(found[:, 0]) == list(range(250, 260))


def test_a_removed_id_added_again_gets_its_new_vector() -> None:
    index = _ann("hnswpq", min_vectors=300)
    vectors, ids = _unit(1000, 1), np.arange(1000)
    index.add(ids, vectors)
    index.remove([300])
    index.add([300], vectors[[999]])  # an update: same id, another image
    assert len(index) == 1000 and index.describe()["tombstones"] == 0
    _, found = index.search(vectors[[999]], 10)
    assert 300 in found[0] and 999 in found[0]


def test_tombstones_are_saved_with_the_snapshot(tmp_path: Path) -> None:
    settings = IndexSettings(kind="hnsw", min_vectors=100)
    index = create_index("hnsw", DIM, settings)
    vectors = _unit(500, 2)
    index.add(np.arange(500), vectors)
    index.remove(np.arange(20))
    index.save(tmp_path / "x.faiss")
    reopened = load_index("hnsw", tmp_path / "x.faiss", DIM, settings)
    assert len(reopened) == 480 and reopened.describe()["tombstones"] == 20
    _, found = reopened.search(vectors[:20], 5)
    assert not set(found.ravel()) & set(range(20))


@pytest.mark.parametrize("kind", ["ivfpq", "ivfhnswpq"])
def test_ivf_kinds_delete_natively(kind: str) -> None:
    index = _ann(kind, min_vectors=300)
    vectors = _unit(800, 3)
    index.add(np.arange(800), vectors)
    index.remove(np.arange(100))
    assert len(index) == 700 and "tombstones" not in index.describe()
    _, found = index.search(vectors[:100], 20)
    assert not set(found.ravel()) & set(range(100))


# -- exact until built: training fallback, "auto", bulk loads


def test_too_few_vectors_to_train_are_searched_exactly() -> None:
    index = _ann("ivfpq")
    vectors = _unit(2000, 4)
    index.add(np.arange(2000), vectors)
    facts = index.describe()
    assert facts["state"] == "exact" and not index.approximate
    assert "until it holds 9,984 vectors" in facts["note"] and "quantisers trained then" in facts["note"]
    _, found = index.search(vectors[:5], 1)
    assert list(found[:, 0]) == [0, 1, 2, 3, 4]


def test_the_training_threshold_never_goes_below_what_kmeans_needs() -> None:
    assert _ann("ivfpq", min_vectors=10).build_threshold() == 256  # 2^pq_nbits centroids
    assert _ann("ivfpq", min_vectors=10, nlist=512).build_threshold() == 512
    assert _ann("hnsw").build_threshold() == 1000
    assert _ann("auto", auto_threshold=100, auto_kind="ivfpq").build_threshold() == 39 * 256  # trains auto_kind
    assert _ann("auto", auto_threshold=5000, auto_kind="hnsw").build_threshold() == 5001  # hnsw: no training
    assert _ann("auto", auto_threshold=50_000).build_threshold() == 50_001  # the default auto_kind, pcaivfsq8


def test_auto_turns_approximate_past_its_threshold() -> None:
    index = _ann("auto", auto_threshold=600, min_vectors=300, auto_kind="ivfpq")
    vectors = _unit(601, 5)
    index.add(np.arange(600), vectors[:600])
    assert index.describe()["state"] == "exact" and "601" in index.describe()["note"]
    index.add([600], vectors[600:])
    facts = index.describe()
    assert facts["state"] == "approximate" and facts["faiss"].startswith("IVF") and facts["kind"] == "auto"
    assert len(index) == 601 and index.quantized


def test_auto_turns_large_partitions_into_pcaivfsq8_by_default() -> None:
    index = _ann("auto", auto_threshold=1500, min_vectors=500, reduce_dim=16)
    vectors = _clustered(2000, 23)
    index.add(np.arange(1500), vectors[:1500])
    assert not index.approximate and "then built as pcaivfsq8" in index.describe()["note"]
    index.add(np.arange(1500, 2000), vectors[1500:])
    facts = index.describe()
    assert facts["kind"] == "auto" and facts["faiss"].startswith("PCA16,IVF") and index.reduction is not None
    _, found = index.search(vectors[:5], 1)
    assert list(found[:, 0]) == [0, 1, 2, 3, 4]


def test_an_announced_size_waits_for_a_larger_training_sample() -> None:
    index = _ann("ivfpq", min_vectors=300, train_size=800)
    index.expect(5000)
    assert index.build_threshold() == 800
    vectors = _unit(900, 6)
    index.add(np.arange(700), vectors[:700])
    assert not index.approximate
    index.add(np.arange(700, 900), vectors[700:])
    assert index.approximate and index.params is not None and index.params.size == 5000


# -- tunables


def test_automatic_tunables_follow_the_size() -> None:
    assert auto_nlist(1_000_000, 100_000) == 1024 and auto_nlist(2000, 2000) == 32 and auto_nlist(10, 10) == 1
    assert auto_pq_m(1280) == 80 and auto_pq_m(512) == 32 and auto_pq_m(32) == 8
    settings = IndexSettings()
    assert choose_params("ivfpq", 10**6, 10**5, 1280, settings).factory() == "IVF1024,PQ80x8"
    assert choose_params("ivfhnswpq", 10**6, 10**5, 1280, settings).factory() == "IVF1024_HNSW32,PQ80x8"
    assert choose_params("hnswpq", 10**6, 10**5, 1280, settings).factory() == "HNSW32_PQ80x8"
    assert choose_params("hnsw", 10**4, 10**4, 1280, settings).factory() == "HNSW16,Flat"
    opq_fast = IndexSettings(opq=True, pq_nbits=4, pq_m=64)
    assert choose_params("ivfpq", 10**6, 10**5, 1280, opq_fast).factory() == "OPQ64,IVF1024,PQ64x4fs"


def test_a_code_size_that_does_not_divide_the_dimension_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match=r"index.pq_m=30 must divide the vector dimension 1280; e.g. one of"):
        choose_params("ivfpq", 10**5, 10**5, 1280, IndexSettings(pq_m=30))


def test_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="index.auto_kind must be one of"):
        Settings(index=IndexSettings(auto_kind="flat"))
    with pytest.raises(SettingsError, match=r"index.nprobe must be >= 1 or null \(automatic\), got 0"):
        Settings(index=IndexSettings(nprobe=0))
    settings = Settings().replace(**{"index.kind": "auto", "index.nprobe": 16})
    assert Settings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings


def test_fast_scan_codes_with_exact_rescoring() -> None:
    index = _ann("ivfpq", min_vectors=300, pq_nbits=4)
    vectors = _unit(2000, 7)
    index.add(np.arange(2000), vectors)
    assert index.describe()["faiss"].endswith("x4fs")
    queries = vectors[:20] + 0.05 * _unit(20, 8)
    _, shortlist = index.search(queries, 40)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    found = [
        rescore(q, ids[ids >= 0], dict(enumerate(vectors)), 10)[1] for q, ids in zip(queries, shortlist, strict=True)
    ]
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]) >= 0.8


def test_opq_learns_a_rotation_and_keeps_recall(tmp_path: Path) -> None:
    index = _ann("ivfpq", min_vectors=300, opq=True, pq_m=8)
    vectors = _unit(2000, 9)
    index.add(np.arange(2000), vectors)
    assert index.describe()["faiss"].startswith("OPQ8,IVF")
    queries = vectors[:20] + 0.05 * _unit(20, 10)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]

    def recall(searched: AnnIndex) -> float:
        _, shortlist = searched.search(queries, 40)
        stored = dict(enumerate(vectors))
        found = [rescore(q, i[i >= 0], stored, 10)[1] for q, i in zip(queries, shortlist, strict=True)]
        return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))

    assert recall(index) >= 0.8
    index.remove(np.arange(10))
    assert len(index) == 1990
    index.save(tmp_path / "opq.faiss")
    reopened = load_index("ivfpq", tmp_path / "opq.faiss", DIM, IndexSettings(kind="ivfpq", opq=True, pq_m=8))
    assert isinstance(reopened, AnnIndex) and len(reopened) == 1990 and recall(reopened) >= 0.75


def test_search_tunables_in_the_settings_apply_to_a_saved_index(tmp_path: Path) -> None:
    index = _ann("ivfpq", min_vectors=300)
    index.add(np.arange(1000), _unit(1000, 9))
    index.save(tmp_path / "x.faiss")
    reopened = load_index("ivfpq", tmp_path / "x.faiss", DIM, IndexSettings(kind="ivfpq", nprobe=2))
    assert isinstance(reopened, AnnIndex) and reopened.params is not None and reopened.params.nprobe == 2


def test_saved_indexes_open_memory_mapped_until_the_first_write(tmp_path: Path) -> None:
    index = _ann("ivfpq", min_vectors=300)
    vectors = _unit(1000, 10)
    index.add(np.arange(1000), vectors)
    index.save(tmp_path / "x.faiss")
    mapped = load_index("ivfpq", tmp_path / "x.faiss", DIM, IndexSettings(kind="ivfpq"))
    assert isinstance(mapped, AnnIndex) and mapped.describe()["memory_mapped"]
    np.testing.assert_array_equal(mapped.search(vectors[:5], 5)[1], index.search(vectors[:5], 5)[1])
    mapped.remove([0])
    assert not mapped.memory_mapped and len(mapped) == 999
    plain = load_index("ivfpq", tmp_path / "x.faiss", DIM, IndexSettings(kind="ivfpq", mmap=False))
    assert isinstance(plain, AnnIndex) and not plain.memory_mapped


def test_a_snapshot_of_another_kind_is_refused(tmp_path: Path) -> None:
    index = _ann("hnsw")
    index.add(np.arange(10), _unit(10, 11))
    index.save(tmp_path / "x.faiss")
    with pytest.raises(Exception, match=r"holds a 'hnsw' index of 32-d vectors, expected 'ivfpq' of 32-d"):
        load_index("ivfpq", tmp_path / "x.faiss", DIM, IndexSettings(kind="ivfpq"))


def test_rescore_orders_by_exact_scores_and_drops_unknown_ids() -> None:
    stored = {1: np.array([1.0, 0.0], np.float32), 2: np.array([0.6, 0.8], np.float32)}
    scores, ids = rescore(np.array([0.0, 1.0], np.float32), [1, 2, 3], stored, 5)
    assert list(ids) == [2, 1] and scores[0] == pytest.approx(0.8)


# -- "pcaivfsq8": a learned PCA, IVF-SQ8 codes, exact re-scoring from float16 reduced vectors


def _clustered(rows: int, seed: int, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    vectors = (centres[rng.integers(0, clusters, rows)] + 0.6 * rng.normal(size=(rows, DIM))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _reduced(**settings: object) -> tuple[AnnIndex, np.ndarray]:
    """A built pcaivfsq8 index over 3,000 clustered vectors with ids 10,000..12,999, reduced to 16-d."""
    index = _ann("pcaivfsq8", min_vectors=1000, reduce_dim=16, **settings)
    vectors = _clustered(3000, 20)
    index.add(np.arange(10_000, 13_000), vectors)
    return index, vectors


def test_pcaivfsq8_finds_the_exact_neighbours_of_its_reduced_space_with_exact_scores() -> None:
    index, vectors = _reduced()
    facts = index.describe()
    assert facts["faiss"] == "PCA16,IVF32,SQ8" and facts["reduction"]["from_dim"] == DIM
    assert "exact inner products of the 16-d reduced vectors" in facts["scores"]
    assert index.approximate and not index.quantized and index.capabilities.exact_scores
    reduction = index.reduction
    assert reduction is not None
    queries = vectors[:100] + 0.1 * _clustered(100, 21)
    scores, found = index.search(queries, 10)
    reduced, reduced_queries = reduction.transform(vectors), reduction.transform(queries)
    truth = 10_000 + np.argsort(-(reduced_queries @ reduced.T), axis=1)[:, :10]
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]) >= 0.95
    exact = np.einsum("nd,nkd->nk", reduced_queries, reduced[found - 10_000])
    np.testing.assert_allclose(scores, exact, atol=2e-3)  # float16 rows
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_pcaivfsq8_never_returns_removed_ids_and_takes_them_back() -> None:
    index, vectors = _reduced(tombstone_fraction=0.2)
    index.remove(np.arange(10_000, 10_300))  # 10 %: codes deleted, rows kept dead
    assert len(index) == 2700 and index.describe()["dead_rows"] == 300
    _, found = index.search(vectors[:300], 20)
    assert not set(found.ravel()) & set(range(10_000, 10_300))
    index.add([10_000], vectors[[2999]])  # an update: the id comes back with another vector, in a new row
    _, found = index.search(vectors[[2999]], 5)
    assert {10_000, 12_999} <= set(found[0])
    index.remove(np.arange(10_300, 10_700))  # 700 dead rows of 3,001: past 20 %, compacted
    facts = index.describe()
    assert facts["dead_rows"] == 0 and len(index) == 2301
    _, found = index.search(vectors[700:710], 1)
    assert list(found[:, 0]) == list(range(10_700, 10_710))
    _, found = index.search(vectors[[2999]], 5)
    assert {10_000, 12_999} <= set(found[0])


def test_pcaivfsq8_reopens_with_its_rows_memory_mapped(tmp_path: Path) -> None:
    index, vectors = _reduced()
    index.remove([10_001])
    index.save(tmp_path / "x.faiss")
    for name in ("x.faiss.rows.npy", "x.faiss.ids.npy", "x.faiss.live.npy", "x.faiss.reduction.npz"):
        assert (tmp_path / name).is_file()
    settings = IndexSettings(kind="pcaivfsq8", min_vectors=1000, reduce_dim=16)
    mapped = load_index("pcaivfsq8", tmp_path / "x.faiss", DIM, settings)
    assert isinstance(mapped, AnnIndex) and len(mapped) == 2999
    assert mapped.describe()["rows_memory_mapped"] and mapped.describe()["memory_mapped"]
    queries = vectors[:20]
    np.testing.assert_array_equal(mapped.search(queries, 10)[1], index.search(queries, 10)[1])
    mapped.add([10_001], vectors[[1]])  # the first write reads the index and the rows into memory
    assert not mapped.memory_mapped and not mapped.describe()["rows_memory_mapped"]
    assert mapped.search(vectors[[1]], 1)[1][0, 0] == 10_001
    plain = load_index("pcaivfsq8", tmp_path / "x.faiss", DIM, replace(settings, mmap=False, rescore_factor=8))
    assert isinstance(plain, AnnIndex) and not plain.describe()["rows_memory_mapped"]
    assert plain.params is not None and plain.params.rescore_factor == 8


def test_pcaivfsq8_checks_dimensions() -> None:
    index, _ = _reduced()
    with pytest.raises(IndexMismatchError, match=r"expected queries of shape \(n, 32\), got \(1, 16\)"):
        index.search(np.zeros((1, 16), np.float32), 5)
    assert choose_params("pcaivfsq8", 10**6, 10**5, 64, IndexSettings()).reduce_dim == 64  # at most the input's
    with pytest.raises(NotFittedError, match="this pca reduction is not fitted yet: call fit"):
        PcaReduction(8).transform(np.zeros((1, DIM), np.float32))
    with pytest.raises(LookalikeError, match="cannot reduce 32-d vectors to 64-d"):
        PcaReduction(64).fit(_unit(10, 22))
    with pytest.raises(SettingsError, match="index.reduce_dim must be >= 1, got 0"):
        Settings(index=IndexSettings(reduce_dim=0))


def test_pcaivfsq8_tunables_follow_the_size() -> None:
    params = choose_params("pcaivfsq8", 10**6, 10**5, 1280, IndexSettings())
    assert params.factory() == "PCA256,IVF4096,SQ8" and params.nprobe == 16 and params.rescore_factor == 4
    assert choose_params("pcaivfsq8", 50_000, 50_000, 1280, IndexSettings()).factory() == "PCA256,IVF1024,SQ8"
    assert choose_params("pcaivfsq8", 10**7, 10**6, 1280, IndexSettings()).nprobe == 64  # 16,384 cells
    assert _ann("pcaivfsq8").build_threshold() == 39 * 256  # the PCA and the coarse quantiser train then


# -- the engine


def _top1(engine: Engine, queries: list[Path]) -> list[int]:
    return [engine.search(query, k=5)[0].id for query in queries]


def test_engine_hnsw_finds_the_same_top1_as_flat_and_keeps_add_remove(engine: Engine, sample_queries: list[Path]):
    flat = _top1(engine, sample_queries)
    report = engine.rebuild("hnsw", min_vectors=1)
    assert report["kind"] == "hnsw" and report["vectors"] == 60
    assert all(p["state"] == "approximate" for p in report["partitions"].values())
    assert _top1(engine, sample_queries) == flat
    gone = flat[0]
    engine.remove([gone])
    assert gone not in [hit.id for hit in engine.search(sample_queries[0], k=10)]
    reopened = Engine.open(engine.path)
    assert reopened.settings.index.kind == "hnsw" and reopened.settings.index.min_vectors == 1
    assert gone not in [hit.id for hit in reopened.search(sample_queries[0], k=10)]
    assert sum(p["tombstones"] for p in reopened.info()["vector_index"].values()) == 1
    reopened.close()


def test_engine_rescores_pq_shortlists_exactly(engine: Engine, sample_queries: list[Path]) -> None:
    flat = engine.search(sample_queries[0], k=5)
    flat_top1 = _top1(engine, sample_queries)
    engine.rebuild("ivfpq", partition_by_category=False, min_vectors=16, pq_nbits=4)
    facts = engine.info()["vector_index"][""]
    assert facts["state"] == "approximate" and facts["faiss"].endswith("x4fs")
    result = engine.search(sample_queries[0], k=5)
    assert "rescore" in result.timings
    assert result[0].id == flat[0].id and result[0].score == pytest.approx(flat[0].score, abs=1e-5)
    assert _top1(engine, sample_queries) == flat_top1


def test_engine_pcaivfsq8_scores_in_its_reduced_space_without_fetching_vectors(
    engine: Engine, sample_queries: list[Path]
) -> None:
    flat_top1 = _top1(engine, sample_queries)
    engine.rebuild("pcaivfsq8", partition_by_category=False, min_vectors=16)
    facts = engine.info()["vector_index"][""]
    assert facts["state"] == "approximate" and facts["faiss"].startswith("PCA256,IVF") and facts["vectors"] == 60
    result = engine.search(sample_queries[0], k=5)
    assert "rescore" not in result.timings  # its scores are exact in its reduced space: no SQLite fetch
    assert _top1(engine, sample_queries) == flat_top1


def test_engine_rebuild_refuses_an_unknown_kind_and_keeps_the_settings(engine: Engine) -> None:
    before = (engine.path / "settings.json").read_text()
    with pytest.raises(UnknownNameError, match="Unknown index kind 'annoy'; expected one of: auto, flat"):
        engine.rebuild("annoy")
    assert (engine.path / "settings.json").read_text() == before


def test_cli_rebuild_changes_the_kind(engine: Engine) -> None:
    path = engine.path
    engine.close()
    runner = CliRunner()
    result = runner.invoke(app, ["rebuild", "--index", str(path), "--kind", "hnsw", "--set", "index.min_vectors=1"])
    assert result.exit_code == 0, result.output
    assert "rebuilt 60 vectors as hnsw" in result.output and "HNSW16,Flat" in result.output
    saved = json.loads((path / "settings.json").read_text())["index"]
    assert saved["kind"] == "hnsw" and saved["min_vectors"] == 1
    info = runner.invoke(app, ["info", "--index", str(path)])
    assert info.exit_code == 0, info.output
    assert "vector index: hnsw; 7 approximate partition(s) (HNSW16,Flat), 0 exact" in info.output
    wrong = runner.invoke(app, ["rebuild", "--index", str(path), "--set", "rerank.qe_top_n=3"])
    assert wrong.exit_code == 2 and "--set expects index.<name>=value" in wrong.output
