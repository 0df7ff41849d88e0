"""The re-ranking protocol: each re-ranker re-scores the top N candidates and says why.

Each re-ranker declares what it reads (`Needs`): the engine loads exactly that for every query path
and hands it a view of the index (`StoredData`) that refuses undeclared reads.

A re-ranker adds its own score to each candidate's breakdown (`scores[name]`) and fuses it into the
running score: score = (1 - weight) * score + weight * its score. With weight 0 the order is the
vector search's; the breakdown still shows what the re-ranker measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lookalike._registry import Registry
from lookalike.errors import LookalikeError
from lookalike.settings import Settings


@dataclass
class Candidate:
    """A catalogue image on its way to becoming a hit."""

    id: int
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Needs:
    """What a re-ranker reads besides the query's vector; the engine loads exactly this, for every
    kind of query (a file, encoded bytes or a catalogue id), and refuses reads it did not declare.

    - `blobs`: per-image data stored with each catalogue image, read for the query and the candidates
      (e.g. "silhouette", "sift");
    - `vectors`: the candidates' stored vectors;
    - `describes`: it computes its own blobs, with `describe(image, localization) -> dict[str, bytes]`,
      for each catalogue image at indexing time and for each query photo;
    - `catalogue`: it keeps catalogue-wide data (e.g. the diffusion matrix), rebuilt after changes by
      `refresh(store, dim, folder, generation)`.
    """

    blobs: tuple[str, ...] = ()
    vectors: bool = False
    describes: bool = False
    catalogue: bool = False


class StoredData:
    """The index's stored data, limited to what one re-ranker declared in its `Needs`."""

    def __init__(self, store: Any, dim: int, needs: Needs, owner: str) -> None:
        self._store, self._dim, self._needs, self._owner = store, dim, needs, owner

    def blobs(self, name: str, ids: Sequence[int]) -> dict[int, bytes]:
        if name not in self._needs.blobs:
            raise LookalikeError(
                f"re-ranker {self._owner!r} reads stored data {name!r} that its needs do not declare "
                f"(declared: {list(self._needs.blobs)}); add it to its Needs(blobs=...)"
            )
        return self._store.blobs(name, ids)

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not self._needs.vectors:
            raise LookalikeError(
                f"re-ranker {self._owner!r} reads stored vectors that its needs do not declare (Needs(vectors=True))"
            )
        return self._store.vectors_of(ids, self._dim)


@dataclass
class QueryContext:
    """What a re-ranker knows about the query (its vector, its blobs) and the index (`stored`)."""

    vector: np.ndarray
    blobs: dict[str, bytes]
    stored: StoredData
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class QueryData:
    """A query as the engine hands it to the chain: each re-ranker gets its own `QueryContext`."""

    vector: np.ndarray
    blobs: dict[str, bytes]
    store: Any  # MetadataStore
    dim: int
    details: dict[str, Any] = field(default_factory=dict)

    def context_for(self, reranker: Reranker) -> QueryContext:
        stored = StoredData(self.store, self.dim, reranker.needs, reranker.name)
        return QueryContext(self.vector, self.blobs, stored, self.details)


@runtime_checkable
class Reranker(Protocol):
    """Re-scores the top N candidates; `needs` says what it reads and which optional hooks it has
    (`describe` when `needs.describes`, `refresh` when `needs.catalogue`)."""

    name: str
    top_n: int
    weight: float
    needs: Needs

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        """This re-ranker's score, in [0, 1], of each candidate (all are within the top N)."""
        ...


RERANKERS: Registry[Reranker] = Registry("re-ranker")
register_reranker = RERANKERS.register


def create_reranker(name: str, settings: Settings) -> Reranker:
    return RERANKERS.get(name)(settings)


def available_rerankers() -> list[str]:
    return RERANKERS.names()


def apply_chain(chain: Sequence[Reranker], query: QueryData, candidates: list[Candidate]) -> list[Candidate]:
    """Run each re-ranker on the current top N; the rest keep their order below."""
    for reranker in chain:
        head, tail = candidates[: reranker.top_n], candidates[reranker.top_n :]
        if not head:
            continue
        own = np.asarray(reranker.rescore(query.context_for(reranker), head), dtype=np.float64)
        for candidate, value in zip(head, own, strict=True):
            candidate.scores[reranker.name] = float(value)
            candidate.score = (1.0 - reranker.weight) * candidate.score + reranker.weight * float(value)
        head.sort(key=lambda c: -c.score)
        candidates = head + tail
    return candidates


def chain_depth(chain: Sequence[Reranker]) -> int:
    """How many vector-search candidates the chain needs."""
    return max((r.top_n for r in chain), default=0)


def needed_blobs(chain: Sequence[Reranker]) -> list[str]:
    """The stored blobs a query must carry for this chain (loaded for a catalogue id, computed for a photo)."""
    return sorted({name for reranker in chain for name in reranker.needs.blobs})
