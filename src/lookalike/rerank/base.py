"""The re-ranking protocol: each re-ranker re-scores the top N candidates and says why.

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
from lookalike.settings import Settings


@dataclass
class Candidate:
    """A catalogue image on its way to becoming a hit."""

    id: int
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class QueryContext:
    """What re-rankers may know about the query and the index."""

    vector: np.ndarray
    blobs: dict[str, bytes]
    store: Any  # MetadataStore
    dim: int
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reranker(Protocol):
    """Re-scores the top N candidates.

    Two optional hooks let a re-ranker prepare data offline:
    - `describe(image, localization) -> dict[str, bytes]`: per-image data stored with each
      catalogue image at indexing time and computed for the query (e.g. SIFT keypoints);
    - `refresh(store, dim, folder, generation)`: catalogue-wide data rebuilt after the catalogue
      changes (e.g. the diffusion matrix), saved under `folder`.
    """

    name: str
    top_n: int
    weight: float

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        """This re-ranker's score, in [0, 1], of each candidate (all are within the top N)."""
        ...


RERANKERS: Registry[Reranker] = Registry("re-ranker")
register_reranker = RERANKERS.register


def create_reranker(name: str, settings: Settings) -> Reranker:
    return RERANKERS.get(name)(settings)


def available_rerankers() -> list[str]:
    return RERANKERS.names()


def apply_chain(chain: Sequence[Reranker], query: QueryContext, candidates: list[Candidate]) -> list[Candidate]:
    """Run each re-ranker on the current top N; the rest keep their order below."""
    for reranker in chain:
        head, tail = candidates[: reranker.top_n], candidates[reranker.top_n :]
        if not head:
            continue
        own = np.asarray(reranker.rescore(query, head), dtype=np.float64)
        for candidate, value in zip(head, own, strict=True):
            candidate.scores[reranker.name] = float(value)
            candidate.score = (1.0 - reranker.weight) * candidate.score + reranker.weight * float(value)
        head.sort(key=lambda c: -c.score)
        candidates = head + tail
    return candidates


def chain_depth(chain: Sequence[Reranker]) -> int:
    """How many vector-search candidates the chain needs."""
    return max((r.top_n for r in chain), default=0)
