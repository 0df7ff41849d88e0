"""One suite run over every vector-store backend: FAISS partitions and Milvus (a real Milvus Lite file).

A new backend registered in VECTOR_STORES gets these tests by adding its (backend, kind) cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import IndexMismatchError
from lookalike.index import VECTOR_STORES, VectorStore, create_vector_store
from lookalike.settings import IndexSettings

DIM = 32
CASES = [("faiss", "flat"), ("faiss", "hnsw"), ("milvus", "flat"), ("milvus", "hnsw"), ("milvus", "ivf_flat")]


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _settings(backend: str, kind: str, folder: Path) -> IndexSettings:
    if backend == "milvus":
        pytest.importorskip("pymilvus", reason="the milvus backend needs pymilvus + milvus-lite (pip install .[scale])")
        return IndexSettings(backend=backend, kind=kind, uri=str(folder / "milvus.db"), collection="contract")
    return IndexSettings(backend=backend, kind=kind, min_vectors=100)


@pytest.fixture(params=CASES, ids=[f"{b}-{k}" for b, k in CASES])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[IndexSettings, Path]]:
    backend, kind = request.param
    yield _settings(backend, kind, tmp_path), tmp_path / "vectors"


@pytest.fixture
def store(case: tuple[IndexSettings, Path]) -> Iterator[VectorStore]:
    settings, folder = case
    opened = create_vector_store(folder, DIM, settings, create=True)
    yield opened
    opened.close()


def _fill(store: VectorStore, rows: int = 400) -> tuple[np.ndarray, np.ndarray, list[str]]:
    vectors, ids = _unit(rows, 0), np.arange(10_000, 10_000 + rows, dtype=np.int64)
    categories = ["shoes" if i % 3 else "bags" for i in range(rows)]
    store.add(ids, vectors, categories)
    return ids, vectors, categories


def test_every_backend_is_registered_and_declares_itself(store: VectorStore, case: tuple) -> None:
    settings, _ = case
    assert set(VECTOR_STORES.names()) >= {"faiss", "milvus"}
    capabilities = store.capabilities
    assert capabilities.backend == settings.backend and settings.kind in capabilities.kinds
    assert capabilities.read_your_writes
    assert capabilities.shared == (settings.backend == "milvus")


def test_search_after_add_finds_it_with_and_without_a_category(store: VectorStore) -> None:
    ids, vectors, categories = _fill(store)
    assert store.count() == 400
    scores, found = store.search(vectors[:5], 3)
    assert found.shape == (5, 3) and list(found[:, 0]) == list(ids[:5])  # read-your-writes: no flush needed
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-3)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)
    _, bags_only = store.search(vectors[:6], 10, ["bags"])
    returned = [int(i) for i in bags_only.ravel() if i >= 0]
    assert returned and all(categories[i - 10_000] == "bags" for i in returned)
    assert store.sizes() == {"bags": categories.count("bags"), "shoes": categories.count("shoes")}


def test_recall_against_exact_search(store: VectorStore) -> None:
    ids, vectors, _ = _fill(store, 600)
    queries = _unit(30, 7)
    exact = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :10]]
    _, found = store.search(queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.9, recall
    if store.capabilities.exact:
        assert recall == 1.0


def test_delete_then_add_again(store: VectorStore) -> None:
    ids, vectors, categories = _fill(store)
    store.delete(ids[:10], categories[:10])
    assert store.count() == 390
    _, found = store.search(vectors[:10], 5)
    assert not set(found.ravel()) & set(ids[:10])
    store.add(np.arange(20_000, 20_010, dtype=np.int64), vectors[:10], categories[:10])  # the same images, new ids
    _, found = store.search(vectors[:10], 1)
    assert list(found[:, 0]) == list(range(20_000, 20_010))


def test_upsert_replaces_a_vector(store: VectorStore) -> None:
    ids, vectors, categories = _fill(store)
    moved = _unit(1, 99)
    store.upsert(ids[:1], moved, categories[:1])
    assert store.count() == 400
    _, found = store.search(moved, 1)
    assert found[0, 0] == ids[0]
    _, found = store.search(vectors[:1], 1)
    assert found[0, 0] != ids[0]


def test_reopen_keeps_everything(case: tuple[IndexSettings, Path]) -> None:
    settings, folder = case
    store = create_vector_store(folder, DIM, settings, create=True)
    _, vectors, _ = _fill(store)
    before = store.search(vectors[:20], 5)[1]
    store.flush()
    store.close()
    reopened = create_vector_store(folder, DIM, settings)
    try:
        assert reopened.count() == 400
        np.testing.assert_array_equal(reopened.search(vectors[:20], 5)[1], before)
    finally:
        reopened.close()


def test_a_vector_of_the_wrong_dimension_is_refused(store: VectorStore) -> None:
    _fill(store, 20)
    with pytest.raises(IndexMismatchError, match=str(DIM)):
        store.add(np.array([1]), np.ones((1, DIM + 1), np.float32), ["bags"])
    with pytest.raises(IndexMismatchError, match=str(DIM)):
        store.search(np.ones((1, DIM - 1), np.float32), 3)
    assert store.count() == 20


def test_empty_store_and_unknown_category(store: VectorStore) -> None:
    scores, ids = store.search(_unit(2, 3), 4)
    assert ids.shape == (2, 4) and np.all(ids == -1) and np.all(np.isneginf(scores))
    _fill(store, 20)
    _, ids = store.search(_unit(1, 4), 4, ["no such category"])
    assert np.all(ids == -1)
