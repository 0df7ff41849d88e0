"""The approximate kinds' tunables: each one from the settings, or chosen from the collection's size.

The defaults come from benchmarks/ann.py (1M x 1280-d vectors on a 2-core CPU): see its results.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lookalike.errors import SettingsError
from lookalike.settings import IndexSettings

GRAPH_KINDS = ("hnsw", "hnswpq")  # FAISS cannot delete from an HNSW graph: these use tombstones
IVF_KINDS = ("ivfpq", "ivfhnswpq")  # inverted lists: ids and deletion are native
REDUCED_KINDS = ("pcaivfsq8",)  # a learned PCA, IVF-SQ8 codes, exact re-scoring from float16 reduced vectors
APPROXIMATE_KINDS = GRAPH_KINDS + IVF_KINDS + REDUCED_KINDS
GRAPH_MIN_VECTORS = 1_000  # below this, brute force is as fast as a graph, and exact
POINTS_PER_CENTROID = 39  # FAISS's k-means warns below this many training points per centroid
REDUCED_MIN_VECTORS = POINTS_PER_CENTROID * 256  # as the PQ kinds: a PCA of 1,280-d vectors needs thousands
REDUCED_POINTS_PER_CENTROID = 24  # k-means in the reduced space: 100,000 training vectors give 4,096 cells


@dataclass(frozen=True)
class AnnParams:
    """Everything that builds one approximate FAISS index; saved beside it as JSON."""

    kind: str
    size: int  # the collection size the automatic values were chosen for
    hnsw_m: int
    ef_construction: int
    ef_search: int
    nlist: int
    nprobe: int
    pq_m: int
    pq_nbits: int
    opq: bool
    reduce_dim: int = 0  # pcaivfsq8: the PCA's output dimension (0 for the other kinds)
    rescore_factor: int = 0  # pcaivfsq8: k x this candidates re-scored from the float16 reduced vectors

    @property
    def quantized(self) -> bool:
        """Scores come from compressed codes: approximate, to be re-computed from the full vectors
        (pcaivfsq8 re-scores its own shortlist: its scores are exact in its reduced space)."""
        return self.kind not in ("hnsw", *REDUCED_KINDS)

    @property
    def fast_scan(self) -> bool:
        return self.kind in IVF_KINDS and self.pq_nbits == 4

    def factory(self) -> str:
        """The `faiss.index_factory` description of this index."""
        opq = f"OPQ{self.pq_m}," if self.opq and self.quantized else ""
        pq = f"PQ{self.pq_m}x{self.pq_nbits}" + ("fs" if self.fast_scan else "")
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m},Flat"
        if self.kind in REDUCED_KINDS:
            return f"PCA{self.reduce_dim},{self.coded_factory()}"
        if self.kind == "hnswpq":
            return f"{opq}HNSW{self.hnsw_m}_{pq}"
        if self.kind == "ivfpq":
            return f"{opq}IVF{self.nlist},{pq}"
        return f"{opq}IVF{self.nlist}_HNSW{self.hnsw_m},{pq}"

    def coded_factory(self) -> str:
        """pcaivfsq8: the FAISS index over the reduced vectors (the PCA is lookalike's own, see ann_reduced)."""
        return f"IVF{self.nlist},SQ8"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnnParams:
        return cls(**data)


def check_kind(kind: str) -> None:
    if kind not in APPROXIMATE_KINDS:
        raise SettingsError(f"unknown approximate index kind {kind!r}; expected one of {', '.join(APPROXIMATE_KINDS)}")


def min_vectors(kind: str, settings: IndexSettings) -> int:
    """How many vectors a partition holds before the approximate index is built (searched exactly until then)."""
    check_kind(kind)
    wanted = settings.min_vectors
    if wanted is None and kind in REDUCED_KINDS:
        wanted = REDUCED_MIN_VECTORS
    elif wanted is None:
        wanted = GRAPH_MIN_VECTORS if kind == "hnsw" else POINTS_PER_CENTROID * 2**settings.pq_nbits
    return max(wanted, hard_minimum(kind, settings))


def hard_minimum(kind: str, settings: IndexSettings) -> int:
    """Fewer vectors than this cannot train the kind's quantisers at all (k-means needs a point per centroid)."""
    if kind == "hnsw":
        return 1
    needed = 2 if kind in REDUCED_KINDS else 2**settings.pq_nbits  # a PCA needs two vectors
    if kind in IVF_KINDS + REDUCED_KINDS and settings.nlist is not None:
        needed = max(needed, settings.nlist)
    return needed


def choose_params(kind: str, size: int, train_size: int, dim: int, settings: IndexSettings) -> AnnParams:
    """The index's tunables: the settings' values, and for the others defaults fitted to `size` vectors.

    `train_size` is how many vectors the quantisers will train on (it bounds the number of IVF cells).
    """
    check_kind(kind)
    reduced = kind in REDUCED_KINDS
    nlist = settings.nlist or (auto_reduced_nlist if reduced else auto_nlist)(size, train_size)
    nprobe = settings.nprobe or (auto_reduced_nprobe if reduced else auto_nprobe)(nlist)
    return AnnParams(
        kind=kind,
        size=size,
        hnsw_m=settings.hnsw_m or auto_hnsw_m(size),
        ef_construction=settings.ef_construction or 40,
        ef_search=settings.ef_search or auto_ef_search(size),
        nlist=nlist,
        nprobe=min(nprobe, nlist),
        pq_m=_pq_m(settings.pq_m, dim, settings.pq_nbits),
        pq_nbits=settings.pq_nbits,
        opq=settings.opq,
        reduce_dim=min(settings.reduce_dim, dim) if reduced else 0,
        rescore_factor=(settings.rescore_factor or settings.shortlist_factor) if reduced else 0,
    )


def auto_hnsw_m(size: int) -> int:
    return 16 if size < 200_000 else 32


def auto_ef_search(size: int) -> int:
    return 64 if size < 200_000 else 128


def auto_nlist(size: int, train_size: int) -> int:
    """A power of two near sqrt(size), small enough that each cell gets 39 training points."""
    target = 2 ** round(math.log2(max(math.sqrt(max(size, 1)), 1)))
    ceiling = 2 ** int(math.log2(max(train_size // POINTS_PER_CENTROID, 1)))
    return max(1, min(target, ceiling))


def auto_nprobe(nlist: int) -> int:
    return max(1, min(nlist, max(8, nlist // 16)))


def auto_reduced_nlist(size: int, train_size: int) -> int:
    """pcaivfsq8: a power of two near 4 sqrt(size) (4,096 at 1M; finer cells than the PQ kinds', since
    scanning SQ8 codes costs more than PQ look-ups), with 24 training points per cell."""
    target = 2 ** round(math.log2(max(4 * math.sqrt(max(size, 1)), 1)))
    ceiling = 2 ** int(math.log2(max(train_size // REDUCED_POINTS_PER_CENTROID, 1)))
    return max(1, min(target, ceiling))


def auto_reduced_nprobe(nlist: int) -> int:
    """pcaivfsq8: 16 cells (Recall@10 0.965 in the reduced space at 1M, benchmarks/ann.py), more past 4,096."""
    return max(1, min(nlist, max(16, nlist // 256)))


def auto_pq_m(dim: int, nbits: int = 8) -> int:
    """A divisor of dim near dim / 16 sub-quantisers (80 for 1280-d, 32 for 512-d; at least 8 when dim
    allows) at 8 bits; proportionally more at fewer bits, so the code keeps its size in bits."""
    target = max(dim // 16, min(dim, 8)) * 8 // nbits
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), -m))


def _pq_m(wanted: int | None, dim: int, nbits: int) -> int:
    if wanted is None:
        return auto_pq_m(dim, nbits)
    if dim % wanted:
        options = ", ".join(str(m) for m in range(4, min(dim, 256) + 1) if dim % m == 0)
        raise SettingsError(f"index.pq_m={wanted} must divide the vector dimension {dim}; e.g. one of {options}")
    return wanted
