"""The vector-store interface: where an index's vectors live and are searched.

Two backends implement it: "faiss" (per-category FAISS partitions in memory, saved as snapshots in
the index folder: the embedded default) and "milvus" (a Milvus collection, local Milvus Lite file or
a server shared by several replicas). The catalogue (lookalike.index.catalog) talks only to this
interface; a shared contract suite (tests/contract/test_vector_stores.py) runs on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lookalike._registry import Registry
from lookalike.settings import IndexSettings


@dataclass(frozen=True)
class StoreCapabilities:
    """What a vector store declares of itself.

    - `kinds`: the index kinds (`index.kind`) it builds;
    - `exact`: a search returns the true top k (otherwise callers fetch a longer shortlist);
    - `exact_scores`: scores are true inner products (otherwise the shortlist is re-scored);
    - `read_your_writes`: a search right after `upsert` returns it;
    - `shared`: several processes see one state without catching up (no per-process copy to sync).
    """

    backend: str
    kinds: tuple[str, ...]
    exact: bool = True
    exact_scores: bool = True
    read_your_writes: bool = True
    shared: bool = False


@dataclass(frozen=True)
class SearchPlan:
    approximate: bool  # fetch a longer shortlist
    rescore: bool  # re-compute the shortlist's scores from the full vectors


@runtime_checkable
class VectorStore(Protocol):
    """Inner-product search over L2-normalised vectors with int64 ids, each filed under a category.

    `search` returns (scores, ids), both (n_queries, k), best first; missing results have id -1 and
    score -inf. `categories` restricts a search to those categories (None: all). A vector of the
    wrong dimension is refused with `IndexMismatchError`.
    """

    dim: int

    @property
    def capabilities(self) -> StoreCapabilities: ...

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        categories: Sequence[str | None],
        payload: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """New ids (the catalogue never reuses one). `payload`: each image's facts, kept beside its
        vector by a backend that stores them there (Milvus); ignored where a database holds them."""

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, categories: Sequence[str | None]) -> None:
        """Add, replacing what these ids held."""

    def delete(self, ids: np.ndarray, categories: Sequence[str | None]) -> None: ...

    def search(
        self, queries: np.ndarray, k: int, categories: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def plan(self, categories: Sequence[str | None] | None = None) -> SearchPlan: ...

    def count(self) -> int: ...

    def sizes(self) -> dict[str, int]: ...

    def describe(self) -> dict[str, Any]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class StoreFactory(Protocol):
    """A backend: makes a new, empty vector store, or opens the existing one of an index folder."""

    def __call__(self, folder: Path, dim: int, settings: IndexSettings, *, create: bool) -> VectorStore: ...


VECTOR_STORES: Registry[StoreFactory] = Registry("index backend")


def create_vector_store(folder: Path, dim: int, settings: IndexSettings, *, create: bool = False) -> VectorStore:
    """The `settings.backend` vector store of the index at `folder` (a new, empty one with create=True)."""
    return VECTOR_STORES.get(settings.backend)(folder, dim, settings, create=create)
