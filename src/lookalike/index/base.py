"""The vector index protocol and its registry of kinds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lookalike._registry import Registry
from lookalike.errors import IndexMismatchError
from lookalike.settings import IndexSettings


@dataclass(frozen=True)
class IndexCapabilities:
    """What a vector index says of itself now (an approximate kind starts exact, then is built):

    - `exact`: a search returns the true top k; otherwise the engine fetches a longer shortlist;
    - `exact_scores`: its scores are true inner products; otherwise (compressed codes) the engine
      re-computes the shortlist's scores from the stored full vectors;
    - `deletes`: removed vectors are freed at once; otherwise they are hidden until a rebuild.
    """

    exact: bool = True
    exact_scores: bool = True
    deletes: bool = True


@runtime_checkable
class VectorIndex(Protocol):
    """Inner-product search over L2-normalised vectors with int64 ids.

    `search` returns (scores, ids), both (n_queries, k); missing results have id -1 and score -inf.
    `capabilities` declares what callers may rely on; `expect(size)` announces a bulk load's final
    size (tunables and training samples then fit it); `describe()` gives the facts `info` shows.
    """

    kind: str
    dim: int

    @property
    def capabilities(self) -> IndexCapabilities: ...

    def expect(self, size: int) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...

    def save(self, path: Path) -> None: ...


class IndexKind(Protocol):
    def create(self, dim: int, settings: IndexSettings) -> VectorIndex: ...

    def load(self, path: Path, dim: int, settings: IndexSettings) -> VectorIndex: ...


INDEX_KINDS: Registry[IndexKind] = Registry("index kind")


def create_index(kind: str, dim: int, settings: IndexSettings) -> VectorIndex:
    return INDEX_KINDS.get(kind)().create(dim, settings)


def load_index(kind: str, path: Path, dim: int, settings: IndexSettings) -> VectorIndex:
    return INDEX_KINDS.get(kind)().load(path, dim, settings)


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """float32, C-contiguous, (n, dim): the form FAISS needs; anything else is a clear error."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] != dim:
        raise IndexMismatchError(f"expected {what} of shape (n, {dim}), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise IndexMismatchError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_ids(ids: np.ndarray, count: int) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    if array.shape[0] != count:
        raise IndexMismatchError(f"expected {count} ids, got {array.shape[0]}")
    return array
