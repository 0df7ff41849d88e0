"""The "pcaivfsq8" kind once built: a learned PCA, IVF-SQ8 codes, exact re-scoring from float16 rows.

1. `PcaReduction` (learned on the partition's seeded training sample) projects each vector onto the
   top `reduce_dim` axes of the vectors' second moment, then L2-normalises it again. The moment is not
   centred: the index ranks by inner product, so the mean direction stays (it is the first axis kept).
2. A FAISS IVF index with SQ8 codes (one byte per reduced dimension) finds k x `rescore_factor`
   candidates; its labels are row numbers.
3. Row r of a float16 array holds the reduced vector of `ids[r]`; the candidates' rows are read and
   their inner products with the reduced query computed exactly. Saved, the rows are a `.npy` file
   that later opens memory-mapped: only the rows a search touches are read.

Scores are therefore exact inner products of the reduced, re-normalised vectors (cosines in the
`reduce_dim` space), not of the full vectors: the engine need not re-score them.

Removal deletes the codes from the inverted lists at once; the row stays, marked dead in `live`, so a
removed id that comes back gets a new row. Past `tombstone_fraction` dead rows, the rows are compacted
and the inverted lists rebuilt from them (re-encoded from the float16 rows, with the same quantisers).

Files beside the FAISS file `<file>`: `<file>.rows.npy` (float16 reduced vectors), `<file>.ids.npy`,
`<file>.live.npy` and `<file>.reduction.npz` (the PCA's axes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lookalike._estimator import check_is_fitted
from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.index.ann_params import REDUCED_POINTS_PER_CENTROID, AnnParams
from lookalike.settings import IndexSettings

CHUNK = 65_536  # rows re-encoded at a time when compacting
RESCORE_BATCH = 256  # queries whose candidate rows are gathered at once


class PcaReduction:
    """Projection onto the top `dim` axes of the (uncentred) second moment, then L2 normalisation.

    The estimator contract: `fit(X)` learns `components_` (dim, n_features_in_) and `explained_`
    (the fraction of the second moment the axes keep); `transform` before `fit` raises NotFittedError.
    """

    kind = "pca"
    _estimator_type = "reduction"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def fit(self, X: np.ndarray) -> PcaReduction:
        vectors = np.asarray(X, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise LookalikeError(f"a PCA reduction trains on (n, d) vectors with n >= 2, got shape {vectors.shape}")
        if self.dim > vectors.shape[1]:
            raise LookalikeError(
                f"cannot reduce {vectors.shape[1]}-d vectors to {self.dim}-d; expected <= {vectors.shape[1]}"
            )
        moment = np.zeros((vectors.shape[1], vectors.shape[1]))
        for start in range(0, len(vectors), CHUNK):
            chunk = vectors[start : start + CHUNK]
            moment += (chunk.T @ chunk).astype(np.float64)
        values, axes = np.linalg.eigh(moment / len(vectors))
        order = np.argsort(values)[::-1][: self.dim]
        self.components_ = np.ascontiguousarray(axes[:, order].T, dtype=np.float32)
        self.explained_ = float(values[order].sum() / max(values.sum(), 1e-12))
        self.n_features_in_ = vectors.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, dim) float32 rows of unit length (a row orthogonal to every kept axis stays zero)."""
        check_is_fitted(self, "components_")
        vectors = np.asarray(X, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.n_features_in_:
            raise IndexMismatchError(f"expected vectors of shape (n, {self.n_features_in_}), got {vectors.shape}")
        reduced = vectors @ self.components_.T
        return np.ascontiguousarray(reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12))

    def facts(self) -> dict[str, Any]:
        check_is_fitted(self, "components_")
        return {"kind": self.kind, "dim": self.dim, "from_dim": self.n_features_in_, "explained": self.explained_}

    def save(self, path: Path) -> None:
        check_is_fitted(self, "components_", action="save")
        np.savez(path, components=self.components_, explained=np.float64(self.explained_))

    @classmethod
    def load(cls, path: Path, dim: int) -> PcaReduction:
        with np.load(path, allow_pickle=False) as data:
            components, explained = data["components"], float(data["explained"])
        if components.shape[0] != dim:
            raise IndexMismatchError(f"{path}: holds a reduction to {components.shape[0]}-d, expected {dim}-d")
        reduction = cls(dim)
        reduction.components_ = np.ascontiguousarray(components, dtype=np.float32)
        reduction.explained_ = explained
        reduction.n_features_in_ = components.shape[1]
        return reduction


class _Rows:
    """A growing float16 array (amortised doubling); starts as a read-only memory map when loaded."""

    def __init__(self, dim: int, array: np.ndarray | None = None) -> None:
        self.array = np.zeros((0, dim), np.float16) if array is None else array
        self.count = len(self.array)

    @property
    def view(self) -> np.ndarray:
        return self.array[: self.count]

    def append(self, rows: np.ndarray) -> None:
        needed = self.count + len(rows)
        if isinstance(self.array, np.memmap) or needed > len(self.array):
            grown = np.empty((max(needed, 2 * len(self.array)), self.array.shape[1]), np.float16)
            grown[: self.count] = self.view
            self.array = grown
        self.array[self.count : needed] = rows
        self.count = needed

    @property
    def mapped(self) -> bool:
        return isinstance(self.array, np.memmap)


class ReducedStage:
    """A built "pcaivfsq8" partition (see the module's docstring); a stage of `AnnIndex`."""

    def __init__(
        self,
        params: AnnParams,
        settings: IndexSettings,
        index: Any = None,
        reduction: PcaReduction | None = None,
        rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.params = params
        self.settings = settings
        self.index = index if index is not None else _new_faiss(params)
        self.reduction = reduction or PcaReduction(params.reduce_dim)
        vectors, ids, live = rows if rows is not None else (None, np.zeros(0, np.int64), np.zeros(0, bool))
        self.rows = _Rows(params.reduce_dim, vectors)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.live = np.array(live, dtype=bool)
        self._live_count = int(self.live.sum())

    def train(self, sample: np.ndarray) -> None:
        import faiss

        self.reduction.fit(sample)
        clustering = faiss.extract_index_ivf(self.index).cp
        clustering.seed = self.settings.seed
        clustering.min_points_per_centroid = REDUCED_POINTS_PER_CENTROID  # FAISS warns below this many
        self.index.train(self.reduction.transform(sample))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        reduced = self.reduction.transform(vectors)
        self.index.add_with_ids(reduced, np.arange(self.rows.count, self.rows.count + len(ids), dtype=np.int64))
        self.rows.append(reduced.astype(np.float16))
        self.ids = np.concatenate([self.ids, ids])
        self.live = np.concatenate([self.live, np.ones(len(ids), bool)])
        self._live_count += len(ids)

    def remove(self, ids: np.ndarray) -> None:
        import faiss

        hit = np.flatnonzero(np.isin(self.ids, ids) & self.live).astype(np.int64)
        if not len(hit):
            return
        self.index.remove_ids(faiss.IDSelectorBatch(hit))
        self.live[hit] = False
        self._live_count -= len(hit)
        if self.dead_rows > self.settings.tombstone_fraction * len(self.ids):
            self.compact()

    @property
    def dead_rows(self) -> int:
        return len(self.ids) - self._live_count

    def compact(self) -> None:
        """Drop the dead rows; the inverted lists are rebuilt from the live float16 rows (same quantisers)."""
        import faiss

        keep = np.flatnonzero(self.live)
        fresh = faiss.clone_index(self.index)
        fresh.reset()
        rows = _Rows(self.params.reduce_dim)
        for start in range(0, len(keep), CHUNK):
            block = np.asarray(self.rows.view[keep[start : start + CHUNK]])
            fresh.add_with_ids(block.astype(np.float32), np.arange(start, start + len(block), dtype=np.int64))
            rows.append(block)
        self.index, self.rows, self.ids = fresh, rows, self.ids[keep]
        self.live = np.ones(len(keep), bool)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        reduced = self.reduction.transform(queries)
        params = faiss.SearchParametersIVF()
        params.nprobe = self.params.nprobe
        _, rows = self.index.search(reduced, k * self.params.rescore_factor, params=params)
        return self._rescore(reduced, rows, k)

    def _rescore(self, reduced: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of the candidates' float16 rows with the reduced queries; the best k."""
        scores = np.full(rows.shape, -np.inf, np.float32)
        for start in range(0, len(rows), RESCORE_BATCH):
            block = rows[start : start + RESCORE_BATCH]
            gathered = np.asarray(self.rows.view[np.maximum(block, 0).ravel()], dtype=np.float32)
            gathered = gathered.reshape(*block.shape, -1)
            exact = np.matmul(gathered, reduced[start : start + RESCORE_BATCH, :, None])[..., 0]
            scores[start : start + RESCORE_BATCH] = np.where(block >= 0, exact, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best, picked = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
        labels = np.where(picked >= 0, self.ids[np.maximum(picked, 0)], -1)
        return _pad(best, labels, k)

    def __len__(self) -> int:
        return self._live_count

    def save(self, path: Path) -> dict[str, Any]:
        import faiss

        faiss.write_index(self.index, str(path))
        _save_atomic(_side(path, ".rows.npy"), self.rows.view)  # the old file may be mapped: replaced, not rewritten
        np.save(_side(path, ".ids.npy"), self.ids)
        np.save(_side(path, ".live.npy"), self.live)
        self.reduction.save(_side(path, ".reduction.npz"))
        return {"state": "built", "params": self.params.to_dict(), "reduction": self.reduction.facts()}

    @classmethod
    def load(cls, params: AnnParams, settings: IndexSettings, index: Any, path: Path) -> ReducedStage:
        reduction = PcaReduction.load(_side(path, ".reduction.npz"), params.reduce_dim)
        vectors = np.load(_side(path, ".rows.npy"), mmap_mode="r" if settings.mmap else None)
        ids, live = np.load(_side(path, ".ids.npy")), np.load(_side(path, ".live.npy"))
        if not len(vectors) == len(ids) == len(live) or vectors.shape[1] != params.reduce_dim:
            raise IndexMismatchError(
                f"{path}: {vectors.shape} float16 rows for {len(ids)} ids and {len(live)} flags; "
                "the files do not belong together: rebuild the index (lookalike rebuild)"
            )
        return cls(params, settings, index, reduction, (vectors, ids, live))

    def describe(self) -> dict[str, Any]:
        return {
            "state": "approximate",
            "faiss": self.params.factory(),
            "params": self.params.to_dict(),
            "reduction": self.reduction.facts(),
            "scores": f"exact inner products of the {self.params.reduce_dim}-d reduced vectors (float16 rows)",
            "dead_rows": self.dead_rows,
            "rows_memory_mapped": self.rows.mapped,
        }


def _new_faiss(params: AnnParams) -> Any:
    import faiss

    return faiss.index_factory(params.reduce_dim, params.coded_factory(), faiss.METRIC_L2)


def _pad(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[1] >= k:
        return scores, labels
    width = k - scores.shape[1]
    padded = np.pad(scores, ((0, 0), (0, width)), constant_values=-np.inf)
    return padded, np.pad(labels, ((0, 0), (0, width)), constant_values=-1)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(path.name + ".tmp.npy")
    np.save(temporary, array)
    os.replace(temporary, path)


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)
