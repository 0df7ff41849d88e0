"""FAISS's OpenMP threads per search: one for small searches, what `Engine.open(threads=)` says otherwise."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from lookalike import Engine
from lookalike.index._threads import PARALLEL_WORK, faiss_threads, threads_for
from lookalike.index.flat import FlatIndex
from lookalike.index.partitioned import PartitionedIndex
from lookalike.settings import IndexSettings


class Recording(FlatIndex):
    """A flat index that notes the OpenMP threads its searches ran with."""

    seen: list[int]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.seen.append(faiss.omp_get_max_threads())
        return super().search(queries, k)


def _store(sizes: dict[str, int], dim: int = 8) -> tuple[PartitionedIndex, list[Recording]]:
    store = PartitionedIndex(IndexSettings(), dim)
    rng = np.random.default_rng(0)
    start, partitions = 0, []
    for category, size in sizes.items():
        partition = Recording(dim)
        partition.seen = []
        vectors = rng.normal(size=(size, dim)).astype(np.float32)
        partition.add(np.arange(start, start + size), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        store.partitions[category] = partition
        partitions.append(partition)
        start += size
    return store, partitions


@pytest.fixture()
def two_threads() -> None:
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    yield
    faiss.omp_set_num_threads(previous)


def test_the_rule() -> None:
    assert threads_for(1, 60) == 1 and threads_for(1, PARALLEL_WORK - 1) == 1
    assert threads_for(1, PARALLEL_WORK) is None and threads_for(64, PARALLEL_WORK // 32) is None


def test_a_small_search_runs_on_one_thread_and_restores_the_count(two_threads: None) -> None:
    store, partitions = _store({"a": 40, "b": 20})
    _, ids = store.search(np.ones((1, 8), np.float32) / np.sqrt(8), 5)
    assert ids.shape == (1, 5) and (ids >= 0).all()
    assert [p.seen for p in partitions] == [[1], [1]]
    assert faiss.omp_get_max_threads() == 2  # the calling thread's count is put back


def test_a_large_search_keeps_the_callers_threads(two_threads: None) -> None:
    store, partitions = _store({"a": 2000})
    store.search(np.ones((PARALLEL_WORK // 2000 + 1, 8), np.float32), 3)
    assert partitions[0].seen == [2]
    with faiss_threads(1):  # what Engine.open(threads=1) puts around its searches
        store.search(np.ones((PARALLEL_WORK // 2000 + 1, 8), np.float32), 3)
    assert partitions[0].seen == [2, 1] and faiss.omp_get_max_threads() == 2


def test_engine_threads_bound_its_searches(built_index: Path, sample_queries: list[Path], two_threads: None) -> None:
    with Engine.open(built_index, threads=1) as engine:
        with engine.catalog.searching() as vectors:
            partition = next(iter(vectors.partitions.values()))
            original = type(partition).search
            seen: list[int] = []

            def recording(self: FlatIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
                seen.append(faiss.omp_get_max_threads())
                return original(self, queries, k)

        type(partition).search = recording  # type: ignore[method-assign]
        try:
            hits = engine.search(sample_queries[0], k=3)
        finally:
            type(partition).search = original  # type: ignore[method-assign]
    assert len(hits) == 3 and seen and set(seen) == {1}
    assert faiss.omp_get_max_threads() == 2
