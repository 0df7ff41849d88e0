"""Scores against a catalogue image's phone-photo views (`lookalike.index.views`).

A studio image is one look of its product; a phone photo of it is cut off, slanted, on a shelf, in
other light. The index keeps `count` such views of each catalogue image (`lookalike views`), embedded
by its model, and this re-ranker scores a candidate by the mean of the query's `best` highest
similarities among the image itself (its vector score) and its views: a query like one view only is
held back by the mean, a query close to several looks of the product comes forward.

Candidates without views (added to the index after its views, with no way to make theirs) keep their
vector score. Views made by another featurizer than the index's are left out, with a warning.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.views import CatalogueViews
from lookalike.rerank.base import Candidate, Needs, QueryContext, register_reranker
from lookalike.settings import Settings

# one state, swapped whole: view vectors, each catalogue id's rows among them, the file version they came from
State = tuple[np.ndarray, dict[int, np.ndarray], "tuple[int, int] | None"]


@register_reranker("views")
class ViewsReranker:
    name = "views"
    needs = Needs(catalogue=True)

    def __init__(self, settings: Settings) -> None:
        own = settings.rerank.views
        self.top_n, self.weight, self.best = own.top_n, own.weight, own.best
        self._state: State | None = None
        self._source: tuple[Any, Path] | None = None
        self._refreshing = threading.Lock()

    def refresh(self, store: Any, dim: int, folder: Path, generation: int) -> None:
        """Load the index's views (they follow the catalogue: `Engine` writes them with every change)."""
        with self._refreshing:
            self._refresh(store, folder)

    def _refresh(self, store: Any, folder: Path) -> None:
        self._source, version = (store, folder), CatalogueViews.version(folder)
        views = CatalogueViews.load_current(folder, store.get_meta("embedder"))
        if views is None:
            self._state = (np.zeros((0, 0), np.float32), {}, version)
            return
        order = np.argsort(views.owners, kind="stable")
        owners = views.owners[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(owners)]
        rows = {int(owners[s]): order[s:e] for s, e in zip(starts, ends, strict=True)}
        self._state = (views.vectors, rows, version)

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        if self._stale():
            with self._refreshing:  # the views were written since (by this process or another)
                if self._stale():
                    self._refresh(*self._source)  # type: ignore[misc]
        own = np.array([c.scores.get("vector", c.score) for c in candidates], dtype=np.float64)
        scores = own.copy()
        if self._state is not None and self._state[1]:
            vectors, rows_of, _ = self._state
            found = [(i, rows_of[c.id]) for i, c in enumerate(candidates) if c.id in rows_of]
            if found:
                at = np.array([i for i, _ in found])
                rows = np.stack([candidate_rows for _, candidate_rows in found])  # every image has `count` views
                similarities = _similarities(vectors, rows, query.vector.astype(np.float32))
                every = np.concatenate([similarities, own[at, None]], axis=1)
                best = min(self.best, every.shape[1])
                scores[at] = np.partition(every, every.shape[1] - best, axis=1)[:, -best:].mean(axis=1)
        return np.clip(scores, 0.0, 1.0)

    def _stale(self) -> bool:
        if self._source is None or self._state is None:
            return False
        return CatalogueViews.version(self._source[1]) != self._state[2]


def _similarities(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """query . vectors[rows], shaped like rows: one product over all views when the candidates hold a good share
    of them (contiguous reads beat gathering the rows), else over the gathered rows."""
    if len(vectors) <= 4 * rows.size:
        return (vectors @ query)[rows]
    return (vectors[rows.ravel()] @ query).reshape(rows.shape)
