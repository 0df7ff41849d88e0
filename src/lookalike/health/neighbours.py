"""The catalogue's kNN graph, from the index's own search (so it works on every backend and scales
with it), and union-find over its strong edges."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lookalike.pipeline import Engine


@dataclass
class Neighbours:
    """Each queried image's `k` nearest other images, best first (id -1 where fewer exist)."""

    ids: np.ndarray  # (n,) the queried images
    vectors: np.ndarray  # (n, dim) their vectors
    categories: list[str | None]
    neighbour_ids: np.ndarray  # (n, k)
    scores: np.ndarray  # (n, k) exact inner products (cosine similarities)


def neighbour_chunks(engine: Engine, k: int, *, after_id: int = -1, batch: int = 1024) -> Iterator[Neighbours]:
    """The kNN lists of every image whose id is above `after_id`, in batches of `batch` queries.

    Searches run over every category at once through `engine.catalog.searching()`; approximate
    stores fetch a longer shortlist and every score is recomputed exactly from the stored vectors.
    """
    engine._catch_up()
    dim = engine.catalog.dim
    for ids, vectors, categories in _batches(engine.store.vectors(dim), after_id, batch):
        with engine.catalog.searching() as store:
            plan = store.plan(None)
            fetch = (k + 1) * (engine.settings.index.shortlist_factor if plan.approximate else 1)
            scores, found = store.search(vectors, fetch, None)
        if plan.rescore or plan.approximate:
            scores, found = _rescore(engine, vectors, found, dim)
        neighbour_ids, neighbour_scores = _without_self(ids, found, scores, k)
        yield Neighbours(ids, vectors, categories, neighbour_ids, neighbour_scores)


def _batches(
    chunks: Iterable[tuple[np.ndarray, np.ndarray, list[str | None]]], after_id: int, batch: int
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str | None]]]:
    for ids, vectors, categories in chunks:
        keep = ids > after_id
        if not keep.any():
            continue
        ids, vectors = ids[keep], vectors[keep]
        categories = [category for category, kept in zip(categories, keep, strict=True) if kept]
        for start in range(0, len(ids), batch):
            end = start + batch
            yield ids[start:end], np.ascontiguousarray(vectors[start:end]), categories[start:end]


def _rescore(engine: Engine, queries: np.ndarray, found: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores for an approximate shortlist, re-sorted best first (-inf where no vector is stored)."""
    unique = np.unique(found[found >= 0])
    stored = engine.store.vectors_of(unique, dim)
    matrix = np.stack([stored.get(int(i), np.full(dim, np.nan, np.float32)) for i in unique] or [np.zeros(dim)])
    positions = np.searchsorted(unique, np.clip(found, 0, None)) if len(unique) else np.zeros_like(found)
    scores = np.empty(found.shape, dtype=np.float32)
    for start in range(0, len(found), 128):  # (128, shortlist, dim) candidate vectors at a time
        rows = slice(start, start + 128)
        scores[rows] = np.einsum("nd,nkd->nk", queries[rows], matrix[positions[rows]])
    scores[(found < 0) | np.isnan(scores)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1)


def _without_self(ids: np.ndarray, found: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first `k` results other than the query itself (-1 / -inf padding)."""
    out_ids = np.full((len(ids), k), -1, dtype=np.int64)
    out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
    for row, item_id in enumerate(ids):
        keep = (found[row] != item_id) & (found[row] >= 0)
        others, their_scores = found[row][keep][:k], scores[row][keep][:k]
        out_ids[row, : len(others)] = others
        out_scores[row, : len(others)] = their_scores
    return out_ids, out_scores


class UnionFind:
    """Disjoint sets over arbitrary hashable keys (catalogue ids), with path halving."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def find(self, key: int) -> int:
        parent = self._parent
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]  # path halving
            key = parent[key]
        return key

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def groups(self) -> list[list[int]]:
        """Sets of two or more keys, each sorted, in order of their smallest key."""
        members: dict[int, list[int]] = {}
        for key in self._parent:
            members.setdefault(self.find(key), []).append(key)
        return sorted((sorted(group) for group in members.values() if len(group) > 1), key=lambda g: g[0])
