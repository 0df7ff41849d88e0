"""Diffusion over the catalogue and the index's photo archive (unlabelled photos of its products).

A phone photo is often nearer other phone photos of its product than the product's studio image. The
archive's photos (`lookalike.index.archive`) join the catalogue images as nodes of one kNN graph, and
diffusion (Yang et al.; label propagation, Zhou et al. 2004) carries a query's similarity to its
nearest photos over to the catalogue images those photos are linked to. Offline: L = (1 - alpha)
(I - alpha S)^-1 restricted to the catalogue's columns, the largest `keep` entries of every row
(catalogue images and photos). Online: the query's `query_k` nearest nodes among its candidates and
the archive's photos seed y (similarities ** gamma), and a candidate's score is sum_i y_i L[i, j],
scaled to a maximum of 1.

With no archive this is diffusion over the catalogue alone (`lookalike.rerank.diffusion`, with this
re-ranker's settings). Archive vectors made by another featurizer than the index's are left out,
with a warning: `Engine` re-embeds the archive with every new embedding, so this means the archive
was copied from elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.graph import knn_affinity, normalise_graph, solve_diffusion
from lookalike.index.archive import PhotoArchive
from lookalike.rerank.base import Candidate, Needs, QueryContext, register_reranker
from lookalike.rerank.diffusion import DiffusionMatrix, DiffusionReranker, stored_vectors
from lookalike.settings import Settings

MATRIX_FOLDER = "archive/diffusion"
BLOCK = 256  # catalogue columns solved at once: memory is (catalogue + photos) x BLOCK floats


@register_reranker("archive")
class ArchiveReranker(DiffusionReranker):
    """Diffusion (its settings, `rerank.archive`) over the catalogue and the photo archive."""

    name = "archive"
    needs = Needs(catalogue=True)

    def __init__(self, settings: Settings) -> None:
        self._configure(settings.rerank.archive)
        # the matrix, the photos' vectors its rows -1, -2, ... stand for and the archive version they come
        # from, swapped together: a query never pairs one with another's
        self._state: tuple[DiffusionMatrix, np.ndarray, tuple[int, int] | None] | None = None
        self._source: tuple[Any, int, Path, int] | None = None
        self._refreshing = threading.Lock()  # a server's query threads may all see a new archive at once

    def refresh(self, store: Any, dim: int, folder: Path, generation: int) -> None:
        """Load the saved matrix for this catalogue generation and archive, else build and save it."""
        with self._refreshing:
            self._refresh(store, dim, folder, generation)

    def _refresh(self, store: Any, dim: int, folder: Path, generation: int) -> None:
        self._source, version = (store, dim, folder, generation), PhotoArchive.version(folder)
        archive = PhotoArchive.load_current(folder, store.get_meta("embedder"))
        photos = archive.vectors if archive is not None else np.zeros((0, dim), np.float32)
        key = self._key(generation, version, len(photos))
        matrix_folder = folder / MATRIX_FOLDER
        loaded = DiffusionMatrix.load(matrix_folder, key)
        if loaded is None:
            ids, vectors = stored_vectors(store, dim)
            loaded = build_joint_matrix(ids, vectors, photos, self.graph_k, self.alpha, self.gamma, self.keep)
            loaded.save(matrix_folder, key)
        self._state = (loaded, photos, version)

    def rescore(self, query: QueryContext, candidates: Sequence[Candidate]) -> np.ndarray:
        if self._stale():
            with self._refreshing:  # the archive was written since (by this process or another)
                if self._stale():
                    self._refresh(*self._source)  # type: ignore[misc]
        if self._state is None or not self._state[0].ids.size:
            return np.zeros(len(candidates))
        matrix, photos, _ = self._state
        seed_ids, similarities = self._seeds(query.vector, candidates, photos)
        weights = np.clip(similarities, 0.0, None) ** self.gamma
        scores = matrix.combine(seed_ids, weights, [c.id for c in candidates])
        top = scores.max(initial=0.0)
        return scores / top if top > 0 else scores

    def _stale(self) -> bool:
        """Whether the archive on disk is not the one the matrix in use was built from."""
        if self._source is None or self._state is None:
            return False
        return PhotoArchive.version(self._source[2]) != self._state[2]

    def _seeds(
        self, vector: np.ndarray, candidates: Sequence[Candidate], photos: np.ndarray
    ) -> tuple[list[int], np.ndarray]:
        """The query's `query_k` nearest nodes: catalogue candidates (by their vector score) and archive photos
        (ids -1 - row, as in the matrix)."""
        ids = [c.id for c in candidates]
        similarities = [c.scores.get("vector", c.score) for c in candidates]
        if len(photos):
            photo_similarities = photos @ vector.astype(np.float32)
            nearest = np.argpartition(-photo_similarities, min(self.query_k, len(photos) - 1))[: self.query_k]
            ids += [-1 - int(row) for row in nearest]
            similarities += photo_similarities[nearest].tolist()
        order = np.argsort(-np.asarray(similarities), kind="stable")[: self.query_k]
        return [ids[i] for i in order], np.asarray(similarities, dtype=np.float64)[order]

    def _key(self, generation: int, version: tuple[int, int] | None, photos: int) -> str:
        """What the saved matrix must match: the catalogue's generation, the archive's version, the settings."""
        own = [self.graph_k, self.alpha, self.gamma, self.keep, version, photos]
        return f"{generation}:" + hashlib.sha1(json.dumps(own).encode()).hexdigest()[:16]


def build_joint_matrix(
    ids: np.ndarray, vectors: np.ndarray, photos: np.ndarray, k: int, alpha: float, gamma: float, keep: int
) -> DiffusionMatrix:
    """Rows for the catalogue images (`ids`) then the photos (ids -1, -2, ...), each holding its largest
    `keep` entries of L over the catalogue's columns."""
    n_catalogue = len(ids)
    if n_catalogue == 0 or len(photos) == 0:  # the catalogue alone: its rows are its columns (L is symmetric)
        return DiffusionMatrix.build(ids, vectors, k, alpha, gamma, keep)
    nodes = np.concatenate([vectors, photos]).astype(np.float32)
    node_ids = np.concatenate([np.asarray(ids, np.int64), -1 - np.arange(len(photos), dtype=np.int64)])
    normalised = normalise_graph(knn_affinity(nodes, k, gamma))
    keep = min(keep, n_catalogue)
    best_columns = np.zeros((len(nodes), 0), np.int32)
    best_values = np.zeros((len(nodes), 0), np.float32)
    for start in range(0, n_catalogue, BLOCK):
        columns = np.arange(start, min(start + BLOCK, n_catalogue))
        block = solve_diffusion(normalised, alpha, columns)  # L[:, columns]: row i is node i's entries
        merged_values = np.concatenate([best_values, block.astype(np.float32)], axis=1)
        merged_columns = np.concatenate([best_columns, np.broadcast_to(columns.astype(np.int32), block.shape)], axis=1)
        if merged_values.shape[1] > keep:
            top = np.argpartition(-merged_values, keep - 1, axis=1)[:, :keep]
            merged_values = np.take_along_axis(merged_values, top, axis=1)
            merged_columns = np.take_along_axis(merged_columns, top, axis=1)
        best_values, best_columns = merged_values, merged_columns
    indptr = np.arange(0, len(nodes) * keep + 1, keep, dtype=np.int64)
    return DiffusionMatrix(node_ids, indptr, best_columns.ravel(), best_values.ravel())
