"""Alpha query expansion (Radenovic et al.): the query averaged with its best neighbours.

The expanded query q' = normalise(q + sum_i s_i^alpha x_i) over the top `rerank.qe.neighbours` results;
the top N candidates are re-scored by their similarity to q'. Cheaper than diffusion: no offline
work, one small matrix product online.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lookalike.rerank.base import Candidate, Needs, QueryContext, register_reranker
from lookalike.settings import Settings


@register_reranker("qe")
class QueryExpansionReranker:
    name = "qe"
    needs = Needs(vectors=True)

    def __init__(self, settings: Settings) -> None:
        own = settings.rerank.qe
        self.top_n, self.weight, self.neighbours, self.alpha = own.top_n, own.weight, own.neighbours, own.alpha

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        stored = query.stored.vectors([c.id for c in candidates])
        vectors = np.stack([stored[c.id] for c in candidates])
        expanded = expand_query(query.vector, vectors[: self.neighbours], self.alpha)
        return np.clip(vectors @ expanded, 0.0, 1.0)


def expand_query(query: np.ndarray, neighbours: np.ndarray, alpha: float) -> np.ndarray:
    """normalise(q + sum_i max(q . x_i, 0)^alpha x_i)."""
    weights = np.clip(neighbours @ query, 0.0, None) ** alpha
    expanded = query + weights @ neighbours
    return expanded / max(float(np.linalg.norm(expanded)), 1e-12)
