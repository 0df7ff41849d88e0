"""One suite run over every registered vector index kind: a new kind gets these tests for free."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import IndexMismatchError, UnknownNameError
from lookalike.index import INDEX_KINDS, PartitionedIndex, create_index, load_index
from lookalike.settings import IndexSettings

DIM = 32
KINDS = INDEX_KINDS.names()


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _exact(queries: np.ndarray, gallery: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ gallery.T), axis=1)[:, :k]]


@pytest.mark.parametrize("kind", KINDS)
def test_add_search_remove_reopen(kind: str, tmp_path: Path) -> None:
    settings = IndexSettings(kind=kind)
    gallery, ids = _unit(500, 0), np.arange(1000, 1500, dtype=np.int64)
    index = create_index(kind, DIM, settings)
    index.add(ids, gallery)
    assert len(index) == 500
    queries = gallery[:20] + 0.05 * _unit(20, 1)
    scores, found = index.search(queries, 10)
    assert found.shape == (20, 10) and np.all(np.diff(scores, axis=1) <= 1e-6)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, _exact(queries, gallery, ids, 10), strict=True)])
    assert recall >= 0.9
    index.remove(ids[:10])
    assert len(index) == 490
    _, after = index.search(gallery[:10], 5)
    assert not set(after.ravel()) & set(ids[:10])
    index.save(tmp_path / "x.faiss")
    reopened = load_index(kind, tmp_path / "x.faiss", DIM, settings)
    np.testing.assert_array_equal(reopened.search(queries, 10)[1], index.search(queries, 10)[1])


@pytest.mark.parametrize("kind", KINDS)
def test_small_and_empty(kind: str) -> None:
    index = create_index(kind, DIM, IndexSettings(kind=kind))
    scores, ids = index.search(_unit(2, 3), 4)
    assert ids.shape == (2, 4) and np.all(ids == -1) and np.all(np.isneginf(scores))
    index.add(np.array([7, 8]), _unit(2, 4))
    _, ids = index.search(_unit(1, 5), 4)
    assert sorted(ids[0][:2]) == [7, 8] and list(ids[0][2:]) == [-1, -1]


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_shapes_are_clear_errors(kind: str) -> None:
    index = create_index(kind, DIM, IndexSettings(kind=kind))
    with pytest.raises(IndexMismatchError, match=r"expected vectors of shape \(n, 32\), got \(3, 16\)"):
        index.add(np.arange(3), np.zeros((3, 16), np.float32))
    with pytest.raises(IndexMismatchError, match="NaN"):
        index.add(np.arange(1), np.full((1, DIM), np.nan, np.float32))


def test_unknown_kind_lists_the_valid_ones() -> None:
    expected = "Unknown index kind 'annoy'; expected one of: auto, flat, hnsw, hnswpq, ivfhnswpq, ivfpq, pcaivfsq8"
    with pytest.raises(UnknownNameError, match=expected):
        create_index("annoy", DIM, IndexSettings())


# -- the approximate kinds once built (trained): small training thresholds, a set large enough to train

BUILT = {"min_vectors": 500, "auto_threshold": 500}
RECALL_BOUND = 0.85  # recall@10 against exact search, 2,000 random 32-d vectors, after exact re-scoring


def _rescored_recall(found: np.ndarray, queries: np.ndarray, gallery: np.ndarray, ids: np.ndarray) -> float:
    """Recall@10 of the top 10 after re-computing the shortlist's scores exactly (as the engine does)."""
    row_of = {int(i): row for row, i in enumerate(ids)}
    truth = _exact(queries, gallery, ids, 10)
    recalls = []
    for query, shortlist, true in zip(queries, found, truth, strict=True):
        kept = np.array([i for i in shortlist if i >= 0])
        best = kept[np.argsort(-(gallery[[row_of[int(i)] for i in kept]] @ query))[:10]]
        recalls.append(len(set(best) & set(true)) / 10)
    return float(np.mean(recalls))


@pytest.mark.parametrize("kind", KINDS)
def test_built_recall_remove_reopen(kind: str, tmp_path: Path) -> None:
    settings = IndexSettings(kind=kind, **BUILT)
    gallery, ids = _unit(2000, 10), np.arange(5000, 7000, dtype=np.int64)
    index = create_index(kind, DIM, settings)
    index.add(ids[:300], gallery[:300])  # below the threshold: exact until the next batch
    index.add(ids[300:], gallery[300:])
    assert len(index) == 2000 and getattr(index, "approximate", True)
    queries = gallery[:50] + 0.05 * _unit(50, 11)
    _, found = index.search(queries, 40)  # the shortlist: k x the default shortlist_factor
    assert _rescored_recall(found, queries, gallery, ids) >= RECALL_BOUND
    index.remove(ids[:100])
    assert len(index) == 1900
    _, after = index.search(gallery[:100], 10)
    assert not set(after.ravel()) & set(ids[:100])
    index.save(tmp_path / "x.faiss")
    reopened = load_index(kind, tmp_path / "x.faiss", DIM, settings)
    np.testing.assert_array_equal(reopened.search(queries, 10)[1], index.search(queries, 10)[1])
    reopened.add(ids[:5], gallery[:5])  # writes after reopening (a memory-mapped file is copied first)
    assert len(reopened) == 1905 and reopened.search(gallery[:1], 1)[1][0, 0] == ids[0]


@pytest.mark.parametrize("kind", KINDS)
def test_partitions_with_every_kind(kind: str, tmp_path: Path) -> None:
    """A large partition is built approximate, a small one stays exact; both search and reopen."""
    settings = IndexSettings(kind=kind, **BUILT)
    vectors = _unit(1100, 12)
    categories = ["big"] * 1000 + ["small"] * 100
    partitioned = PartitionedIndex(settings, DIM)
    partitioned.add(np.arange(1100), vectors, categories)
    assert partitioned.sizes() == {"big": 1000, "small": 100}
    assert not getattr(partitioned.partitions["small"], "approximate", False)
    _, ids = partitioned.search(vectors[[5, 1050]], 10)  # PQ scores are approximate: a shortlist
    assert 5 in ids[0] and ids[1, 0] == 1050
    _, only_small = partitioned.search(vectors[:3], 5, ["small"])
    assert set(only_small.ravel()) <= set(range(1000, 1100))
    partitioned.save(tmp_path, generation=1)
    loaded = PartitionedIndex.load(tmp_path, settings, DIM, generation=1)
    assert loaded is not None and loaded.sizes() == partitioned.sizes()
    np.testing.assert_array_equal(loaded.search(vectors[:20], 10)[1], partitioned.search(vectors[:20], 10)[1])


def test_partitions_merge_and_snapshot(tmp_path: Path) -> None:
    settings = IndexSettings()
    partitioned = PartitionedIndex(settings, DIM)
    vectors = _unit(30, 6)
    categories = ["a"] * 10 + ["b"] * 10 + [None] * 10
    partitioned.add(np.arange(30), vectors, categories)
    assert partitioned.sizes() == {"": 10, "a": 10, "b": 10}
    _, ids = partitioned.search(vectors[:1], 30)
    np.testing.assert_array_equal(ids[0], np.argsort(-(vectors @ vectors[0])))
    _, only_b = partitioned.search(vectors[:1], 5, ["b"])
    assert set(only_b[0]) <= set(range(10, 20))
    partitioned.save(tmp_path, generation=3)
    assert PartitionedIndex.load(tmp_path, settings, DIM, generation=4) is None
    loaded = PartitionedIndex.load(tmp_path, settings, DIM, generation=3)
    assert loaded is not None and loaded.sizes() == partitioned.sizes()
    partitioned.remove(np.arange(10), ["a"] * 10)
    assert "a" not in partitioned.sizes()
