"""Exact search: FAISS inner product on L2-normalised vectors (the ranking of Euclidean distance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.base import INDEX_KINDS, IndexCapabilities, check_ids, check_vectors
from lookalike.settings import IndexSettings


class FlatIndex:
    """Brute-force inner product; supports removal; exact."""

    kind = "flat"
    capabilities = IndexCapabilities(exact=True, exact_scores=True, deletes=True)

    def __init__(self, dim: int, faiss_index: Any = None) -> None:
        import faiss

        self.dim = dim
        self._index = faiss_index if faiss_index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = check_vectors(vectors, self.dim)
        self._index.add_with_ids(vectors, check_ids(ids, len(vectors)))

    def remove(self, ids: np.ndarray) -> None:
        import faiss

        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids):
            self._index.remove_ids(faiss.IDSelectorBatch(ids))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_vectors(queries, self.dim, "queries")
        if self._index.ntotal == 0 or k < 1:
            return _empty(len(queries), max(k, 0))
        scores, ids = self._index.search(queries, min(k, self._index.ntotal))
        return _pad(scores, ids, k)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def expect(self, size: int) -> None:
        """Nothing to prepare: brute force needs no tunables."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "vectors": len(self), "state": "exact"}

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(path))


class _FlatKind:
    def create(self, dim: int, settings: IndexSettings) -> FlatIndex:
        return FlatIndex(dim)

    def load(self, path: Path, dim: int, settings: IndexSettings) -> FlatIndex:
        import faiss

        return FlatIndex(dim, faiss.read_index(str(path)))


INDEX_KINDS.register("flat")(_FlatKind)


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    if scores.shape[1] >= k:
        return scores, ids
    full_scores, full_ids = _empty(len(scores), k)
    full_scores[:, : scores.shape[1]] = scores
    full_ids[:, : ids.shape[1]] = ids
    return full_scores, full_ids
