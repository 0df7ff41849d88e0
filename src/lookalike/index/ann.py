"""Approximate nearest-neighbour kinds on FAISS: "hnsw", "ivfpq", "hnswpq", "ivfhnswpq", "pcaivfsq8" and "auto".

Life of a partition: it starts exact (a flat index) and becomes approximate once it holds enough
vectors (`min_vectors`; for "auto" more than `auto_threshold`, then `auto_kind`). The quantisers
train then, on a seeded sample of what it holds, and the tunables not set in the settings are
chosen from its size, or from the size a bulk load announces with `expect` (it then waits for a
larger training sample). `describe()` says which state a partition is in and why.

Deletion: the IVF kinds delete natively. FAISS cannot delete from an HNSW graph, so the HNSW kinds
hide removed vectors behind tombstones: a bitmap of the live ones, passed to FAISS's search as an
IDSelector, so a search still returns k live results. Once tombstones exceed `tombstone_fraction`
the graph is rebuilt from its own stored vectors (HNSW: exact; HNSW-PQ: re-encoding the decoded
codes with the same trained quantiser). Re-adding a removed id rebuilds too.

Scores of the PQ kinds are approximate: the engine fetches k x `shortlist_factor` candidates and
re-computes their scores from the full vectors in SQLite (`rescore`). "pcaivfsq8" (lookalike.index.
ann_reduced) searches a learned `reduce_dim` PCA space with IVF-SQ8 codes and re-scores its own
shortlist from float16 reduced vectors: its scores are exact inner products in that reduced space.

Saved as the FAISS file plus `<file>.json` (kind, state, tunables) and, for the HNSW kinds,
`<file>.ids.npy` and `<file>.live.npy`; "pcaivfsq8" adds `<file>.rows.npy` and `<file>.reduction.npz`.
With `mmap` the FAISS file (and the float16 rows) are opened memory-mapped and read-only; the first
write reads the FAISS index into memory.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lookalike.errors import IndexMismatchError
from lookalike.index.ann_params import (
    APPROXIMATE_KINDS,
    GRAPH_KINDS,
    REDUCED_KINDS,
    AnnParams,
    check_kind,
    choose_params,
    min_vectors,
)
from lookalike.index.ann_reduced import PcaReduction, ReducedStage
from lookalike.index.base import INDEX_KINDS, IndexCapabilities, check_ids, check_vectors
from lookalike.index.flat import FlatIndex
from lookalike.settings import IndexSettings

CHUNK = 65_536  # vectors moved at a time when building or compacting
OPQ_ITERATIONS, OPQ_TRAIN_POINTS = 10, 16_384  # FAISS's 50 and 65,536 take many minutes at 1280-d on 2 cores


class _Stage(Protocol):
    index: Any

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...

    def save(self, path: Path) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...


class AnnIndex:
    """An approximate kind (see the module's docstring); follows the `VectorIndex` protocol."""

    def __init__(self, kind: str, dim: int, settings: IndexSettings) -> None:
        self.kind = kind
        self.dim = dim
        self.settings = settings
        self.target = settings.auto_kind if kind == "auto" else kind
        check_kind(self.target)
        self.expected = 0
        self._stage: _Stage = _Exact(dim)
        self._source: Path | None = None  # set while the FAISS index is memory-mapped, read-only

    # -- state
    @property
    def approximate(self) -> bool:
        """True once built: a search may miss true neighbours."""
        return not isinstance(self._stage, _Exact)

    @property
    def quantized(self) -> bool:
        """True when scores come from compressed codes and should be re-computed exactly."""
        return isinstance(self._stage, _Built) and self._stage.params.quantized

    @property
    def capabilities(self) -> IndexCapabilities:
        graph = isinstance(self._stage, _Graph)
        return IndexCapabilities(exact=not self.approximate, exact_scores=not self.quantized, deletes=not graph)

    @property
    def params(self) -> AnnParams | None:
        return self._stage.params if isinstance(self._stage, _Built) else None

    @property
    def reduction(self) -> PcaReduction | None:
        """The learned reduction of a built "pcaivfsq8" index (its scores live in that space), else None."""
        return self._stage.reduction if isinstance(self._stage, ReducedStage) else None

    def tune(
        self, *, ef_search: int | None = None, nprobe: int | None = None, rescore_factor: int | None = None
    ) -> None:
        """Change the search-time tunables of a built index; no rebuild (before building: a no-op)."""
        if isinstance(self._stage, _Built):
            self._stage.params = _search_overrides(self._stage.params, ef_search, nprobe, rescore_factor)

    def expect(self, size: int) -> None:
        """Announce the partition's size after a bulk load: tunables and training sample then fit it."""
        self.expected = max(self.expected, int(size))

    def build_threshold(self) -> int:
        """The number of vectors at which the exact start is replaced by the approximate index."""
        floor = min_vectors(self.target, self.settings)
        if self.kind == "auto":
            floor = max(floor, self.settings.auto_threshold + 1)
        if self.expected and self.target != "hnsw":
            floor = max(floor, min(self.settings.train_size, self.expected))
        return floor

    def describe(self) -> dict[str, Any]:
        facts = {"kind": self.kind, "vectors": len(self), **self._stage.describe()}
        if not self.approximate:
            facts["note"] = (
                f"searched exactly until it holds {self.build_threshold():,} vectors, "
                f"then built as {self.target}" + (" (quantisers trained then)" if self.target != "hnsw" else "")
            )
        if self.memory_mapped:
            facts["memory_mapped"] = True
        return facts

    @property
    def memory_mapped(self) -> bool:
        return self._source is not None

    # -- VectorIndex protocol
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = check_vectors(vectors, self.dim)
        ids = check_ids(ids, len(vectors))
        self._writable()
        if isinstance(self._stage, _Exact):
            room = max(self.build_threshold() - len(self._stage), 0)
            self._stage.add(ids[:room], vectors[:room])
            if len(self._stage) >= self.build_threshold():
                self._build(self._stage)
            ids, vectors = ids[room:], vectors[room:]
        for start in range(0, len(ids), CHUNK):
            self._stage.add(ids[start : start + CHUNK], vectors[start : start + CHUNK])

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids):
            self._writable()
            self._stage.remove(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_vectors(queries, self.dim, "queries")
        if len(self) == 0 or k < 1:
            return _empty(len(queries), max(k, 0))
        return self._stage.search(queries, k)

    def __len__(self) -> int:
        return len(self._stage)

    def save(self, path: Path) -> None:
        meta = {"kind": self.kind, "dim": self.dim, "expected": self.expected, **self._stage.save(path)}
        _side(path, ".json").write_text(json.dumps(meta, indent=1))
        if self._source is not None:
            self._source = path  # the same bytes: the old snapshot may be deleted after this

    # -- building
    def _build(self, exact: _Exact) -> None:
        """Train on a sample of the exact start's vectors, then move them all into the approximate index."""
        ids, vectors = exact.contents()
        sample = _sample(vectors, self.settings.train_size, self.settings.seed)
        params = choose_params(self.target, max(len(ids), self.expected), len(sample), self.dim, self.settings)
        stage = _new_stage(params, self.dim, self.settings)
        stage.train(sample)
        for start in range(0, len(ids), CHUNK):
            stage.add(ids[start : start + CHUNK], vectors[start : start + CHUNK])
        self._stage = stage

    def _writable(self) -> None:
        """Replace a read-only memory-mapped FAISS index by an in-memory copy before writing."""
        if self._source is None:
            return
        import faiss

        if self._source.is_file():
            index = faiss.read_index(str(self._source))
        else:
            index = faiss.deserialize_index(faiss.serialize_index(self._stage.index))
        self._stage.index = index
        self._source = None

    # -- loading
    @classmethod
    def load(cls, kind: str, path: Path, dim: int, settings: IndexSettings) -> AnnIndex:
        meta_path = _side(path, ".json")
        if not meta_path.is_file():
            raise IndexMismatchError(f"{path}: no {meta_path.name} beside it; not a saved {kind!r} index")
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") != kind or meta.get("dim") != dim:
            raise IndexMismatchError(
                f"{path}: holds a {meta.get('kind')!r} index of {meta.get('dim')}-d vectors, "
                f"expected {kind!r} of {dim}-d; rebuild it (lookalike rebuild)"
            )
        index = cls(kind, dim, settings)
        index.expected = int(meta.get("expected", 0))
        flags = _mmap_flags(meta) if settings.mmap else 0
        faiss_index = _read(path, flags)
        index._source = path if flags else None
        index._stage = _load_stage(meta, dim, settings, faiss_index, path)
        return index


# -- the three stages of a partition


class _Exact:
    """The exact start: a flat index, until the partition holds enough vectors to build."""

    params = None

    def __init__(self, dim: int, index: Any = None) -> None:
        import faiss

        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def _flat(self) -> FlatIndex:
        return FlatIndex(self.dim, self.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._flat().add(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        self._flat().remove(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._flat().search(queries, k)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return ids, self.index.index.reconstruct_n(0, self.index.ntotal)

    def save(self, path: Path) -> dict[str, Any]:
        _write(self.index, path)
        return {"state": "exact"}

    def describe(self) -> dict[str, Any]:
        return {"state": "exact"}


class _Graph:
    """HNSW over full vectors or PQ codes; FAISS positions map to ids here, removals are tombstones."""

    def __init__(self, params: AnnParams, settings: IndexSettings, index: Any, ids: Any = None, live: Any = None):
        self.params = params
        self.settings = settings
        self.index = index
        self.ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self.live = np.ones(len(self.ids), bool) if live is None else np.array(live, dtype=bool)
        self._live_count = int(self.live.sum())
        self._selector: tuple[Any, np.ndarray] | None = None

    def train(self, sample: np.ndarray) -> None:
        if not self.index.is_trained:
            self.index.train(sample)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.tombstones and np.isin(ids, self.ids[~self.live]).any():
            self.compact()  # a removed id comes back: its old vector must go first
        self.index.add(vectors)
        self.ids = np.concatenate([self.ids, ids])
        self.live = np.concatenate([self.live, np.ones(len(ids), bool)])
        self._live_count += len(ids)
        self._selector = None

    def remove(self, ids: np.ndarray) -> None:
        hit = np.isin(self.ids, ids) & self.live
        if not hit.any():
            return
        self.live[hit] = False
        self._live_count -= int(hit.sum())
        self._selector = None
        if self.tombstones > self.settings.tombstone_fraction * len(self.ids):
            self.compact()

    @property
    def tombstones(self) -> int:
        return len(self.ids) - self._live_count

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.params.ef_search, k)
        if self.tombstones:
            params.sel = self._live_selector()
        scores, positions = self.index.search(queries, k, params=_wrap(self.index, params))
        labels = np.where(positions >= 0, self.ids[np.maximum(positions, 0)], -1)
        return _finish(_as_inner_product(scores, queries, self.params), labels)

    def _live_selector(self) -> Any:
        import faiss

        if self._selector is None:
            bits = np.packbits(self.live, bitorder="little")
            self._selector = (faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits)
        return self._selector[0]

    def compact(self) -> None:
        """Rebuild the graph from its live vectors (HNSW-PQ: the same codes, re-encoded)."""
        keep = np.flatnonzero(self.live)
        fresh = _empty_like(self.index, self.params, self.settings)
        for start in range(0, len(keep), CHUNK):
            fresh.add(self.index.reconstruct_batch(keep[start : start + CHUNK]))
        self.index, self.ids = fresh, self.ids[keep]
        self.live = np.ones(len(keep), bool)
        self._selector = None

    def __len__(self) -> int:
        return self._live_count

    def save(self, path: Path) -> dict[str, Any]:
        _write(self.index, path)
        np.save(_side(path, ".ids.npy"), self.ids)
        np.save(_side(path, ".live.npy"), self.live)
        return {"state": "built", "params": self.params.to_dict()}

    def describe(self) -> dict[str, Any]:
        return {"state": "approximate", "tombstones": self.tombstones, **_param_facts(self.params)}


class _Ivf:
    """Inverted lists of PQ codes (coarse quantiser flat or HNSW); ids and deletion are FAISS's."""

    def __init__(self, params: AnnParams, settings: IndexSettings, index: Any) -> None:
        self.params = params
        self.settings = settings
        self.index = index

    def train(self, sample: np.ndarray) -> None:
        import faiss

        ivf = faiss.extract_index_ivf(self.index)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if hasattr(quantizer, "hnsw"):
            quantizer.hnsw.efConstruction = self.params.ef_construction
        ivf.cp.seed = self.settings.seed
        self.index.train(sample)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        import faiss

        self.index.remove_ids(faiss.IDSelectorBatch(ids))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        params = faiss.SearchParametersIVF()
        params.nprobe = self.params.nprobe
        quantizer = None
        if self.params.kind == "ivfhnswpq":
            quantizer = faiss.SearchParametersHNSW()
            quantizer.efSearch = max(self.params.ef_search, self.params.nprobe)
            params.quantizer_params = quantizer
        scores, labels = self.index.search(queries, k, params=_wrap(self.index, params))
        return _finish(_as_inner_product(scores, queries, self.params), labels)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def save(self, path: Path) -> dict[str, Any]:
        _write(self.index, path)
        return {"state": "built", "params": self.params.to_dict()}

    def describe(self) -> dict[str, Any]:
        return {"state": "approximate", **_param_facts(self.params)}


_Built = _Graph | _Ivf | ReducedStage


def _new_stage(params: AnnParams, dim: int, settings: IndexSettings) -> _Graph | _Ivf | ReducedStage:
    if params.kind in REDUCED_KINDS:
        return ReducedStage(params, settings)
    index = _new_faiss(params, dim)
    return _Graph(params, settings, index) if params.kind in GRAPH_KINDS else _Ivf(params, settings, index)


def _new_faiss(params: AnnParams, dim: int) -> Any:
    import faiss

    metric = faiss.METRIC_L2 if params.quantized else faiss.METRIC_INNER_PRODUCT
    index = faiss.index_factory(dim, params.factory(), metric)
    inner = faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efConstruction = params.ef_construction
    for part in (inner, faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else None):
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False  # minutes at 1280-d, and unused by our searches
    if isinstance(index, faiss.IndexPreTransform):
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        opq.niter, opq.max_train_points = OPQ_ITERATIONS, OPQ_TRAIN_POINTS
    return index


def _empty_like(index: Any, params: AnnParams, settings: IndexSettings) -> Any:
    """An empty index with the same trained quantisers (or a new one when nothing was trained)."""
    import faiss

    if not params.quantized:
        return _new_faiss(params, index.d)
    fresh = faiss.clone_index(index)
    fresh.reset()
    return fresh


def _load_stage(meta: dict[str, Any], dim: int, settings: IndexSettings, index: Any, path: Path) -> _Stage:
    if meta.get("state") == "exact":
        return _Exact(dim, index)
    params = AnnParams.from_dict(meta["params"])
    params = _search_overrides(params, settings.ef_search, settings.nprobe, settings.rescore_factor)
    if params.kind in REDUCED_KINDS:
        return ReducedStage.load(params, settings, index, path)
    if params.kind in GRAPH_KINDS:
        return _Graph(params, settings, index, np.load(_side(path, ".ids.npy")), np.load(_side(path, ".live.npy")))
    return _Ivf(params, settings, index)


def _search_overrides(
    params: AnnParams, ef_search: int | None, nprobe: int | None, rescore_factor: int | None = None
) -> AnnParams:
    """Search-time tunables (from the settings, or `tune`) apply to a built index without rebuilding it."""
    changes: dict[str, int] = {}
    if ef_search is not None:
        changes["ef_search"] = ef_search
    if nprobe is not None:
        changes["nprobe"] = min(nprobe, params.nlist)
    if rescore_factor is not None and params.kind in REDUCED_KINDS:
        changes["rescore_factor"] = rescore_factor
    return dataclasses.replace(params, **changes) if changes else params


def _wrap(index: Any, params: Any) -> Any:
    """Search parameters for an index behind a transform (OPQ) are passed through its wrapper."""
    import faiss

    if not isinstance(index, faiss.IndexPreTransform):
        return params
    outer = faiss.SearchParametersPreTransform()
    outer.index_params = params  # the caller keeps `params` alive until the search returns
    return outer


def _as_inner_product(scores: np.ndarray, queries: np.ndarray, params: AnnParams) -> np.ndarray:
    """The PQ kinds search by squared L2 distance (HNSW over PQ codes needs it; IVF-PQ is better with
    it); for unit vectors x, q.x = (|q|^2 + 1 - |q - x|^2) / 2."""
    if not params.quantized:
        return scores
    return (np.einsum("ij,ij->i", queries, queries)[:, None] + 1.0 - scores) / 2.0


def _param_facts(params: AnnParams) -> dict[str, Any]:
    return {"faiss": params.factory(), "params": params.to_dict()}


def _mmap_flags(meta: dict[str, Any]) -> int:
    """FAISS's memory-mapped, read-only reading for what it can map (0: read into memory).

    Flat codes (the exact start, HNSW storage, PQ codes under HNSW) map with IO_FLAG_MMAP_IFC, IVF
    inverted lists with IO_FLAG_MMAP (the two cannot be combined); fast-scan lists cannot be mapped.
    """
    import faiss

    if meta.get("state") == "exact" or meta["params"]["kind"] in GRAPH_KINDS:
        return faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    if AnnParams.from_dict(meta["params"]).fast_scan:
        return 0
    return faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY


def _read(path: Path, flags: int = 0) -> Any:
    import faiss

    return faiss.read_index(str(path), flags)


def _write(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(vectors) <= size:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def _finish(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = labels.astype(np.int64)
    return np.where(labels < 0, -np.inf, scores).astype(np.float32), labels


def rescore(
    query: np.ndarray, ids: Iterable[int], stored: dict[int, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of `query` with the stored vectors of `ids`; the best k, best first.

    Ids without a stored vector (removed meanwhile) are dropped.
    """
    kept = [int(i) for i in ids if int(i) in stored]
    if not kept:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    scores = np.stack([stored[i] for i in kept]) @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order].astype(np.float32), np.asarray(kept, dtype=np.int64)[order]


class _AnnKind:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def create(self, dim: int, settings: IndexSettings) -> AnnIndex:
        return AnnIndex(self.kind, dim, settings)

    def load(self, path: Path, dim: int, settings: IndexSettings) -> AnnIndex:
        return AnnIndex.load(self.kind, path, dim, settings)


def _register() -> None:
    for kind in (*APPROXIMATE_KINDS, "auto"):
        INDEX_KINDS.register(kind)(lambda kind=kind: _AnnKind(kind))


_register()
