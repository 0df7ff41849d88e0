"""Diffusion over the catalogue's kNN graph, split into offline and online work (Yang et al.).

Offline: the truncated kNN graph W of the catalogue (similarities ** gamma, mutual and symmetric),
S = D^-1/2 W D^-1/2, and L = (1 - alpha) (I - alpha S)^-1 solved by block conjugate gradients,
keeping the largest `keep` entries of each row. Online: the query seeds y (its similarities ** gamma
to its top neighbours), and a catalogue image's diffusion score is sum_i y_i L[i, j]: a sparse
combination of a few precomputed rows.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.graph import knn_affinity, normalise_graph, solve_diffusion
from lookalike.rerank.base import Candidate, Needs, QueryContext, register_reranker
from lookalike.settings import DiffusionSettings, Settings

FOLDER = "diffusion"
BLOCK = 512  # columns solved at once: memory is n x BLOCK floats


@register_reranker("diffusion")
class DiffusionReranker:
    name = "diffusion"
    needs = Needs(catalogue=True)

    def __init__(self, settings: Settings) -> None:
        self._configure(settings.rerank.diffusion)
        self._matrix: DiffusionMatrix | None = None
        self._folder: Path | None = None

    def _configure(self, own: DiffusionSettings) -> None:
        self.top_n, self.weight = own.top_n, own.weight
        self.graph_k, self.query_k = own.graph_k, own.query_k
        self.alpha, self.gamma, self.keep = own.alpha, own.gamma, own.keep

    def refresh(self, store: Any, dim: int, folder: Path, generation: int) -> None:
        """Load the saved matrix if it matches `generation`, else rebuild it from the stored vectors."""
        self._folder = folder / FOLDER
        loaded = DiffusionMatrix.load(self._folder, generation)
        if loaded is None:
            ids, vectors = stored_vectors(store, dim)
            loaded = DiffusionMatrix.build(ids, vectors, self.graph_k, self.alpha, self.gamma, self.keep)
            loaded.save(self._folder, generation)
        self._matrix = loaded

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        if self._matrix is None or not self._matrix.ids.size:
            return np.zeros(len(candidates))
        seeds = candidates[: self.query_k]
        weights = np.clip([c.scores.get("vector", c.score) for c in seeds], 0.0, None) ** self.gamma
        scores = self._matrix.combine([c.id for c in seeds], weights, [c.id for c in candidates])
        top = scores.max(initial=0.0)
        return scores / top if top > 0 else scores


class DiffusionMatrix:
    """The truncated rows of L, as CSR arrays, with the catalogue ids of its rows and columns."""

    def __init__(self, ids: np.ndarray, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
        self.ids, self.indptr, self.indices, self.values = ids, indptr, indices, values
        self._row_of = {int(item): row for row, item in enumerate(ids)}

    @classmethod
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, k: int, alpha: float, gamma: float, keep: int
    ) -> DiffusionMatrix:
        if len(ids) == 0:
            return cls(ids, np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
        normalised = normalise_graph(knn_affinity(vectors, k, gamma))
        n, keep = len(ids), min(keep, len(ids))
        indices, values = np.zeros((n, keep), np.int32), np.zeros((n, keep), np.float32)
        for start in range(0, n, BLOCK):
            columns = np.arange(start, min(start + BLOCK, n))
            block = solve_diffusion(normalised, alpha, columns).T  # L is symmetric: columns are rows
            indices[columns], values[columns] = _top_entries(block, keep)
        indptr = np.arange(0, n * keep + 1, keep, dtype=np.int64)
        return cls(ids, indptr, indices.ravel(), values.ravel())

    def combine(self, seed_ids: Sequence[int], weights: np.ndarray, target_ids: Sequence[int]) -> np.ndarray:
        """sum_i weights_i L[seed_i, target_j] for each target."""
        column_of = {self._row_of[t]: j for j, t in enumerate(target_ids) if t in self._row_of}
        scores = np.zeros(len(target_ids))
        for seed, weight in zip(seed_ids, weights, strict=True):
            row = self._row_of.get(int(seed))
            if row is None:
                continue
            start, end = self.indptr[row], self.indptr[row + 1]
            for column, value in zip(self.indices[start:end], self.values[start:end], strict=True):
                target = column_of.get(int(column))
                if target is not None:
                    scores[target] += weight * float(value)
        return scores

    def save(self, folder: Path, generation: int | str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"matrix.{os.getpid()}.{threading.get_ident()}.tmp.npz"  # writers never share one
        np.savez(temporary, ids=self.ids, indptr=self.indptr, indices=self.indices, values=self.values)
        temporary.replace(folder / "matrix.npz")
        (folder / "matrix.json").write_text(json.dumps({"generation": generation, "rows": len(self.ids)}))

    @classmethod
    def load(cls, folder: Path, generation: int | str) -> DiffusionMatrix | None:
        meta = folder / "matrix.json"
        if not meta.exists() or json.loads(meta.read_text()).get("generation") != generation:
            return None
        with np.load(folder / "matrix.npz") as data:
            return cls(data["ids"], data["indptr"], data["indices"], data["values"])


def _top_entries(rows: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argpartition(-rows, keep - 1, axis=1)[:, :keep]
    return top.astype(np.int32), np.take_along_axis(rows, top, axis=1).astype(np.float32)


def stored_vectors(store: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Every stored id and vector of the index, in the store's order."""
    chunks = list(store.vectors(dim))
    if not chunks:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate([ids for ids, _, _ in chunks]), np.concatenate([vectors for _, vectors, _ in chunks])
