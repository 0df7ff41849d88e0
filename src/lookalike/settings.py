"""Typed, frozen settings for every stage, saved as JSON inside each index.

One `Settings` object is passed down the pipeline; an index stores the settings that built it,
so reopening it restores the same models and options.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from lookalike.errors import SettingsError

SETTINGS_VERSION = 1


@dataclass(frozen=True)
class EmbedSettings:
    """Global image features: backbone, preprocessing, pooling."""

    model: str = "efficientnet-lite0"
    weights: str | None = None  # a local weights file; None = the installed package's weights
    input_size: int = 224
    grayscale: bool = False  # "shape only": grey expanded back to three channels
    gem_p: float = 3.0
    batch_size: int = 4  # 1-4 images per batch is fastest per image on a 2-core CPU
    # "onnx": the embedder exported to ONNX with the index and run by onnxruntime (searching never imports
    # torch; ~12 ms against torch's ~43 ms per image on one thread, docs/speed.md); "torch": PyTorch
    runtime: Literal["onnx", "torch"] = "onnx"
    threads: int | None = None  # the embedder's intra-op threads (onnxruntime); None = one per core

    def validate(self) -> None:
        _check(self.input_size >= 32, f"embed.input_size must be >= 32, got {self.input_size}")
        _check(self.runtime in ("onnx", "torch"), f"embed.runtime must be 'onnx' or 'torch', got {self.runtime!r}")
        _check(self.threads is None or self.threads >= 1, f"embed.threads must be >= 1 or None, got {self.threads}")
        _check(self.gem_p >= 1.0, f"embed.gem_p must be >= 1 (1 = average pooling), got {self.gem_p}")
        _check(self.batch_size >= 1, f"embed.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class LocalizeSettings:
    """Salient-object localisation: segmentation, matting, cut-out, silhouette."""

    enabled: bool = False
    model: str = "u2netp"
    model_path: str | None = None  # an ONNX segmenter from a local path
    # u2netp's native 320 costs ~2x the time of 224 for the same eth80 IoU, and retrieved no better
    # (benchmarks/segmentation.py, docs/localisation.md)
    input_size: int = 224
    quantize: bool = False  # int8 (static, cached in ~/.cache/lookalike): ~1.6x faster, masks visibly worse
    threads: int | None = None  # the runtime's intra-op threads; None = the runtime's default (one per core)
    # which runtime runs the segmenter: "auto" = OpenVINO when installed (faster on x86), else onnxruntime.
    # fp32 masks agree across runtimes to rounding, so the runtime is not part of an index's fingerprint.
    runtime: Literal["auto", "onnx", "openvino"] = "auto"
    # "bf16" (OpenVINO): bfloat16 arithmetic, 3-4x faster on CPUs with AMX (docs/localisation.md); "auto":
    # bf16 where OpenVINO computes it natively, else fp32, fixed in the index's settings when it is made
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    threshold: float = 0.5  # saliency above this is object
    min_object_fraction: float = 0.01  # smaller masks mean "no salient object": use the whole image
    keep_main_object: bool = True  # largest component plus parts attached to it
    attach_fraction: float = 0.1  # components at least this fraction of the main one are kept...
    attach_distance: float = 0.05  # ...when this close to it (fraction of sqrt(main area)); others dropped
    matting: bool = False
    matting_size: int = 256  # matting runs on the image downscaled to at most this many pixels a side
    trimap_fraction: float = 0.04  # half-width of the trimap's unknown band, as a fraction of sqrt(area)
    margin: float = 0.05  # crop margin, as a fraction of the object's box size
    silhouette_size: int = 64
    # what is embedded: the cut-out ("object"), whole image + cut-out ("both"), or the whole image
    # only ("whole": the mask then serves the silhouette re-ranking alone)
    features: Literal["object", "both", "whole"] = "both"

    def validate(self) -> None:
        _check(self.input_size >= 64, f"localize.input_size must be >= 64, got {self.input_size}")
        _check(self.threads is None or self.threads >= 1, f"localize.threads must be >= 1 or None, got {self.threads}")
        _check(
            self.runtime in ("auto", "onnx", "openvino"),
            f"localize.runtime must be 'auto', 'onnx' (onnxruntime) or 'openvino', got {self.runtime!r}",
        )
        _check(
            self.precision in ("auto", "fp32", "bf16"),
            f"localize.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}",
        )
        _check(
            not (self.quantize and self.precision == "bf16"),
            "localize.quantize (int8) and localize.precision 'bf16' exclude each other: choose one",
        )
        _check(
            not (self.quantize and self.runtime == "openvino"),
            "localize.quantize runs its int8 model with onnxruntime: set localize.runtime to 'auto' or 'onnx'",
        )
        _check(
            not (self.precision == "bf16" and self.runtime == "onnx"),
            "localize.precision 'bf16' runs with OpenVINO: set localize.runtime to 'auto' or 'openvino'",
        )
        _check(0.0 < self.threshold < 1.0, f"localize.threshold must be in (0, 1), got {self.threshold}")
        fraction = self.min_object_fraction
        _check(0.0 <= fraction < 1.0, f"localize.min_object_fraction must be in [0, 1), got {fraction}")
        attach = self.attach_fraction
        _check(0.0 <= attach <= 1.0, f"localize.attach_fraction must be in [0, 1], got {attach}")
        _check(self.attach_distance >= 0.0, f"localize.attach_distance must be >= 0, got {self.attach_distance}")
        _check(self.matting_size >= 32, f"localize.matting_size must be >= 32, got {self.matting_size}")
        band = self.trimap_fraction
        _check(0.0 < band < 0.5, f"localize.trimap_fraction must be in (0, 0.5), got {band}")
        _check(self.margin >= 0.0, f"localize.margin must be >= 0, got {self.margin}")
        size = self.silhouette_size
        _check(size >= 8 and size % 8 == 0, f"localize.silhouette_size must be a positive multiple of 8, got {size}")
        features = self.features
        _check(
            features in ("object", "both", "whole"),
            f"localize.features must be 'object', 'both' or 'whole', got {features!r}",
        )
        _check(
            self.model != "onnx" or bool(self.model_path),
            "localize.model 'onnx' needs localize.model_path: the path of a .onnx segmenter",
        )


@dataclass(frozen=True)
class IndexSettings:
    """Vector index kind, partitioning and the approximate kinds' tunables (None = chosen from the size).

    Kinds: "flat" (exact), "hnsw", "ivfpq", "hnswpq" (HNSW graph over PQ codes), "ivfhnswpq" (IVF with
    an HNSW coarse quantiser, PQ codes), "pcaivfsq8" (a learned PCA to `reduce_dim`, IVF with SQ8
    codes, exact re-scoring from memory-mapped float16 reduced vectors), "auto" (exact up to
    `auto_threshold` vectors per partition, then `auto_kind`). An approximate partition searches
    exactly until it holds `min_vectors`.
    See lookalike.index.ann and benchmarks/ann.py for the measured trade-offs.
    """

    kind: str = "flat"
    # where vectors live: "faiss" (partitions in this folder, SQLite beside them) or "milvus" (a
    # collection at `uri`: a server for replicas, or a Milvus Lite .db file); see lookalike.index.milvus
    backend: str = "faiss"
    uri: str | None = None  # milvus: http://host:19530 or a .db file (token: $LOOKALIKE_MILVUS_TOKEN)
    collection: str | None = None  # milvus: the collection's name (default: the index folder's name)
    consistency: str = "Strong"  # milvus: a search right after an add sees it ("Bounded" is faster)
    partition_by_category: bool = True
    category_depth: int = 1  # category = the first N folders below the catalogue root
    # what "auto" turns a partition into past auto_threshold: pcaivfsq8 kept Recall@10 0.965 in its 256-d
    # space at 1M vectors in 793 B/vector, 39x exact search's rate (HNSW: 0.96 in 5.4 KB), and the 256-d PCA
    # changed grocery-store photo->photo mAP by +0.006 (benchmarks/results/ann.json); "hnsw" ranks by the
    # full vectors
    auto_kind: str = "pcaivfsq8"
    auto_threshold: int = 50_000  # "auto": partitions up to this many vectors stay exact (brute force)
    min_vectors: int | None = None  # approximate kinds: exact until this many (None: hnsw 1,000; else 9,984)
    train_size: int = 100_000  # quantisers train on at most this many vectors (a seeded sample)
    hnsw_m: int | None = None  # graph degree
    ef_construction: int | None = None
    ef_search: int | None = None  # raised to the number of results fetched when that is larger
    nlist: int | None = None  # IVF cells
    nprobe: int | None = None  # IVF cells visited per query
    pq_m: int | None = None  # PQ sub-quantisers (bytes per code at 8 bits); must divide the dimension
    pq_nbits: int = 8  # bits per sub-quantiser code: 8, or 4 (IVF kinds then use FAISS's fast-scan layout)
    opq: bool = False  # learn a rotation (OPQ) before PQ: better codes, slower training
    shortlist_factor: int = 4  # approximate kinds fetch k x this; PQ scores are then re-computed exactly
    reduce_dim: int = 256  # pcaivfsq8: the PCA's output dimension (at most the vectors' own)
    rescore_factor: int | None = None  # pcaivfsq8: re-scores k x this from its float16 vectors (None: shortlist_factor)
    tombstone_fraction: float = 0.2  # HNSW kinds cannot delete: removed ids are hidden; rebuilt past this fraction
    mmap: bool = True  # open saved approximate indexes memory-mapped (read-only until the first write)
    seed: int = 0

    def validate(self) -> None:
        _check(self.backend in ("faiss", "milvus"), f"index.backend must be 'faiss' or 'milvus', got {self.backend!r}")
        _check(self.backend != "milvus" or bool(self.uri), "index.backend 'milvus' needs index.uri (--uri)")
        levels = ("Strong", "Bounded", "Session", "Eventually")
        _check(self.consistency in levels, f"index.consistency must be one of {levels}, got {self.consistency!r}")
        _check(self.category_depth >= 0, f"index.category_depth must be >= 0, got {self.category_depth}")
        approximate = ("hnsw", "ivfpq", "hnswpq", "ivfhnswpq", "pcaivfsq8")
        _check(self.auto_kind in approximate, f"index.auto_kind must be one of {approximate}, got {self.auto_kind!r}")
        _check(self.auto_threshold >= 0, f"index.auto_threshold must be >= 0, got {self.auto_threshold}")
        _check(self.train_size >= 1, f"index.train_size must be >= 1, got {self.train_size}")
        names = ("min_vectors", "hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "rescore_factor")
        for name in names:
            value = getattr(self, name)
            _check(value is None or value >= 1, f"index.{name} must be >= 1 or null (automatic), got {value}")
        _check(self.hnsw_m is None or self.hnsw_m >= 2, f"index.hnsw_m must be >= 2, got {self.hnsw_m}")
        _check(4 <= self.pq_nbits <= 10, f"index.pq_nbits must be in [4, 10], got {self.pq_nbits}")
        _check(self.shortlist_factor >= 1, f"index.shortlist_factor must be >= 1, got {self.shortlist_factor}")
        _check(self.reduce_dim >= 1, f"index.reduce_dim must be >= 1, got {self.reduce_dim}")
        fraction = self.tombstone_fraction
        _check(0.0 < fraction < 1.0, f"index.tombstone_fraction must be in (0, 1), got {fraction}")


@dataclass(frozen=True)
class MaskIoUSettings:
    """Silhouette IoU (shape) re-ranking; needs localisation."""

    top_n: int = 50
    weight: float = 0.2

    def validate(self) -> None:
        _check_rerank("mask_iou", self.top_n, self.weight)


@dataclass(frozen=True)
class QueryExpansionSettings:
    """Alpha query expansion."""

    top_n: int = 100  # candidates re-scored with the expanded query
    weight: float = 0.5
    neighbours: int = 5  # top results averaged into the query
    alpha: float = 3.0  # weight of each neighbour = similarity ** alpha

    def validate(self) -> None:
        _check_rerank("qe", self.top_n, self.weight)
        _check(self.neighbours >= 1, f"rerank.qe.neighbours must be >= 1, got {self.neighbours}")


@dataclass(frozen=True)
class DiffusionSettings:
    """Diffusion over the catalogue's kNN graph."""

    section: ClassVar[str] = "diffusion"  # its name under `rerank`, for messages
    top_n: int = 100
    weight: float = 0.5
    graph_k: int = 30  # neighbours per node in the kNN graph
    query_k: int = 10  # the query's nearest nodes that seed the diffusion
    alpha: float = 0.99
    gamma: float = 3.0  # similarities are raised to this power
    keep: int = 200  # entries (catalogue images) kept per row of the precomputed diffusion matrix

    def validate(self) -> None:
        name = f"rerank.{self.section}"
        _check_rerank(self.section, self.top_n, self.weight)
        _check(0.0 < self.alpha < 1.0, f"{name}.alpha must be in (0, 1), got {self.alpha}")
        _check(self.graph_k >= 1, f"{name}.graph_k must be >= 1, got {self.graph_k}")
        _check(self.query_k >= 1, f"{name}.query_k must be >= 1, got {self.query_k}")
        _check(self.keep >= 1, f"{name}.keep must be >= 1, got {self.keep}")
        _check(self.gamma >= 0, f"{name}.gamma must be >= 0, got {self.gamma}")


@dataclass(frozen=True)
class ArchiveSettings(DiffusionSettings):
    """Diffusion over the catalogue and the index's photo archive (`lookalike archive`): the graph's
    nodes are catalogue images and archive photos. Defaults chosen on grocery-store's validation photos
    (docs/fine-tuning.md)."""

    section: ClassVar[str] = "archive"
    weight: float = 0.2
    query_k: int = 7
    alpha: float = 0.95
    gamma: float = 1.0


@dataclass(frozen=True)
class ViewsSettings:
    """Catalogue views (`lookalike views`): each catalogue image scored by the query's `best` closest of its
    image and its `count` phone-photo views (made with `head.adapt`'s augmentations). Defaults chosen on
    grocery-store's validation photos (docs/fine-tuning.md)."""

    top_n: int = 100
    weight: float = 1.0  # 1: the views' score replaces the vector score
    count: int = 24  # views made per catalogue image (the image itself besides)
    best: int = 3  # the mean of this many best similarities among the image and its views

    def validate(self) -> None:
        _check_rerank("views", self.top_n, self.weight)
        _check(self.count >= 1, f"rerank.views.count must be >= 1, got {self.count}")
        _check(self.best >= 1, f"rerank.views.best must be >= 1, got {self.best}")


@dataclass(frozen=True)
class SiftSettings:
    """SIFT geometric verification."""

    top_n: int = 20
    weight: float = 0.3
    max_keypoints: int = 256
    ratio: float = 0.8  # Lowe's ratio test
    min_inliers: int = 6  # fewer RANSAC inliers count as no match
    full_inliers: int = 30  # this many inliers or more score 1.0

    def validate(self) -> None:
        _check_rerank("sift", self.top_n, self.weight)
        _check(0.0 < self.ratio < 1.0, f"rerank.sift.ratio must be in (0, 1), got {self.ratio}")
        _check(self.full_inliers > self.min_inliers, "rerank.sift.full_inliers must exceed rerank.sift.min_inliers")


@dataclass(frozen=True)
class RerankSettings:
    """Re-rankers applied to the top of the vector search, in `chain` order; one section each.

    A new re-ranker adds its own settings class and one field here, named as it is registered.
    """

    chain: tuple[str, ...] = ()  # names from lookalike.rerank: views, mask_iou, qe, diffusion, archive, sift
    mask_iou: MaskIoUSettings = field(default_factory=MaskIoUSettings)
    qe: QueryExpansionSettings = field(default_factory=QueryExpansionSettings)
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    views: ViewsSettings = field(default_factory=ViewsSettings)
    sift: SiftSettings = field(default_factory=SiftSettings)

    def validate(self) -> None:
        for section in fields(self):
            value = getattr(self, section.name)
            if dataclasses.is_dataclass(value):
                value.validate()  # type: ignore[attr-defined]


def _check_rerank(name: str, top_n: int, weight: float) -> None:
    _check(top_n >= 1, f"rerank.{name}.top_n must be >= 1, got {top_n}")
    _check(0.0 <= weight <= 1.0, f"rerank.{name}.weight must be in [0, 1], got {weight}")


@dataclass(frozen=True)
class ClassifySettings:
    """Category classifier (trained on the index's stored vectors) and gated search."""

    kind: str = "mlp"  # "mlp": the paper's head on frozen features; "logreg": the linear baseline; "knn": neighbours
    gating: bool = True  # with a trained classifier, search only the predicted category's partition
    threshold: float = 0.5  # top probability below this: search more categories (fallback)
    min_margin: float = 0.1  # top minus second probability below this: search more categories
    fallback: Literal["top_k", "all"] = "top_k"
    fallback_k: int = 3  # categories searched on fallback "top_k"
    validation_fraction: float = 0.2  # held out (stratified, seeded) for early stopping and the report
    seed: int = 0
    hidden: tuple[int, ...] = (1024, 512)  # Dense 1024 ReLU -> Dropout -> Dense 512 ReLU -> softmax
    dropout: float = 0.5
    learning_rate: float = 1e-3  # SGD, Nesterov momentum
    momentum: float = 0.9
    batch_size: int = 32
    max_epochs: int = 300
    plateau_patience: int = 5  # epochs without a better validation loss before the learning rate is cut
    plateau_factor: float = 0.5
    early_stopping_patience: int = 15  # epochs without a better validation loss before training stops
    standardize: bool = True  # inputs scaled to zero mean, unit variance (learned in fit)
    logreg_c: float = 1.0  # inverse L2 strength of the logistic-regression baseline
    # "knn": the most similar catalogue vectors vote; both chosen on grocery-store's val split (Lite2 fine-tuned)
    knn_k: int = 5
    knn_temperature: float = 0.02  # vote weight exp((similarity - best) / this): small trusts the nearest
    augment_copies: int = 0  # augmented copies of each training image embedded for training (0 = off)
    augment_rotation: float = 15.0  # degrees, uniform in +-
    augment_zoom: float = 0.15  # zoom in by up to this fraction (crop, then resize back)
    augment_flip: bool = True  # horizontal flip with probability 0.5

    def validate(self) -> None:
        _check(0.0 <= self.threshold <= 1.0, f"classify.threshold must be in [0, 1], got {self.threshold}")
        _check(0.0 <= self.min_margin <= 1.0, f"classify.min_margin must be in [0, 1], got {self.min_margin}")
        _check(self.fallback in ("top_k", "all"), f"classify.fallback must be 'top_k' or 'all', got {self.fallback!r}")
        _check(self.knn_k >= 1, f"classify.knn_k must be >= 1, got {self.knn_k}")
        _check(self.knn_temperature > 0, f"classify.knn_temperature must be > 0, got {self.knn_temperature}")
        _check(self.fallback_k >= 1, f"classify.fallback_k must be >= 1, got {self.fallback_k}")
        fraction = self.validation_fraction
        _check(0.0 <= fraction < 1.0, f"classify.validation_fraction must be in [0, 1), got {fraction}")
        _check(all(h >= 1 for h in self.hidden), f"classify.hidden must hold sizes >= 1, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, f"classify.dropout must be in [0, 1), got {self.dropout}")
        _check(self.learning_rate > 0.0, f"classify.learning_rate must be > 0, got {self.learning_rate}")
        _check(0.0 <= self.momentum < 1.0, f"classify.momentum must be in [0, 1), got {self.momentum}")
        _check(self.batch_size >= 1, f"classify.batch_size must be >= 1, got {self.batch_size}")
        _check(self.max_epochs >= 1, f"classify.max_epochs must be >= 1, got {self.max_epochs}")
        _check(0.0 < self.plateau_factor < 1.0, f"classify.plateau_factor must be in (0, 1), got {self.plateau_factor}")
        _check(self.plateau_patience >= 0, f"classify.plateau_patience must be >= 0, got {self.plateau_patience}")
        patience = self.early_stopping_patience
        _check(patience >= 1, f"classify.early_stopping_patience must be >= 1, got {patience}")
        _check(self.logreg_c > 0.0, f"classify.logreg_c must be > 0, got {self.logreg_c}")
        _check(self.augment_copies >= 0, f"classify.augment_copies must be >= 0, got {self.augment_copies}")
        _check(0.0 <= self.augment_zoom < 1.0, f"classify.augment_zoom must be in [0, 1), got {self.augment_zoom}")


@dataclass(frozen=True)
class AdaptSettings:
    """Label-free adaptation (`head.kind = "self"`, lookalike.embed.adapt): the backbone's last stages
    trained on the catalogue's own images, each image its own class, with views that make a studio
    image look like a phone photo of it. Each augmentation has a strength; 0 turns it off.
    """

    views: int = 24  # the image and its augmented views, through the frozen stages once (cached, float16)
    epochs: int = 4  # at most; fresh validation views choose the count (the tail: head.finetune_stages)
    lr: float = 1e-4  # AdamW, one-cycle schedule: gentler than fine-tuning's, the views are few
    start: Literal["pretrained", "current"] = "pretrained"  # "current": from the index's fine-tuned backbone
    negatives: int = 4096  # memory-bank entries each batch is contrasted with (all when there are fewer images)
    momentum: float = 0.5  # memory bank: entry = momentum x entry + (1 - momentum) x the new view's vector
    neighbours: int = 0  # photo archives: an image's k mutual nearest neighbours also count as itself
    validation_views: int = 2  # fresh views per image (up to 1,000 images) that choose the epoch and judge
    crop: float = 0.6  # random resized crop: at most this fraction of the area cut away
    perspective: float = 0.12  # corners moved by up to this fraction of the side
    rotation: float = 15.0  # degrees, +-
    color: float = 0.15  # brightness, contrast, saturation, white balance and exposure, +- this fraction
    blur: float = 1.5  # Gaussian blur sigma up to this many pixels (at 224 px)
    noise: float = 0.04  # sensor noise, standard deviation up to this fraction of the range
    jpeg: int = 30  # JPEG re-compression, quality down to this (0 = off)
    occlusion: float = 0.25  # a patch covering up to this fraction of the view (a hand, a price tag)
    background: float = 0.5  # chance the cut-out object is pasted onto another background
    pile: float = 0.5  # else, chance of a pile: copies of the cut-out object filling the view, as in a crate
    background_dir: str | None = None  # your own background photos (shop shelves), besides the defaults
    flip: bool = True  # mirror half of the views
    # unlabelled photos of the catalogue's products (`train-embedding --kind self --photos DIR`): after the
    # adaptation, each round gives every photo its nearest catalogue image as product id, keeps each catalogue
    # image's most confident photos, and fine-tunes the tail on them and the catalogue (lookalike.embed.adapt)
    pseudo_rounds: int = 3
    pseudo_per_image: int = 20  # photos kept per catalogue image, the most confident first
    pseudo_epochs: int = 4  # fine-tuning epochs per round (head.finetune_* settings otherwise)
    # "propagate": the catalogue images' ids spread over the kNN graph of photos and catalogue (label
    # propagation, lookalike.graph), so that a photo far from its studio image takes the id of the photos
    # like it; "nearest": each photo takes its nearest catalogue image's id
    pseudo_labels: Literal["propagate", "nearest"] = "propagate"
    pseudo_neighbours: int = 10  # the graph's k
    pseudo_alpha: float = 0.95  # how far ids spread: 0 keeps the seeds, towards 1 follows the graph further

    def validate(self) -> None:
        _check(self.pseudo_rounds >= 1, f"head.adapt.pseudo_rounds must be >= 1, got {self.pseudo_rounds}")
        _check(self.pseudo_per_image >= 1, f"head.adapt.pseudo_per_image must be >= 1, got {self.pseudo_per_image}")
        _check(self.pseudo_epochs >= 1, f"head.adapt.pseudo_epochs must be >= 1, got {self.pseudo_epochs}")
        labels = ("propagate", "nearest")
        _check(
            self.pseudo_labels in labels,
            f"head.adapt.pseudo_labels must be one of {labels}, got {self.pseudo_labels!r}",
        )
        _check(self.pseudo_neighbours >= 1, f"head.adapt.pseudo_neighbours must be >= 1, got {self.pseudo_neighbours}")
        _check(0.0 < self.pseudo_alpha < 1.0, f"head.adapt.pseudo_alpha must be in (0, 1), got {self.pseudo_alpha}")
        _check(self.views >= 2, f"head.adapt.views must be >= 2 (the image and one augmented view), got {self.views}")
        _check(self.epochs >= 0, f"head.adapt.epochs must be >= 0, got {self.epochs}")
        _check(self.lr > 0.0, f"head.adapt.lr must be > 0, got {self.lr}")
        starts = ("pretrained", "current")
        _check(self.start in starts, f"head.adapt.start must be 'pretrained' or 'current', got {self.start!r}")
        _check(self.negatives >= 1, f"head.adapt.negatives must be >= 1, got {self.negatives}")
        _check(0.0 <= self.momentum < 1.0, f"head.adapt.momentum must be in [0, 1), got {self.momentum}")
        _check(self.neighbours >= 0, f"head.adapt.neighbours must be >= 0, got {self.neighbours}")
        _check(self.validation_views >= 0, f"head.adapt.validation_views must be >= 0, got {self.validation_views}")
        for name in ("crop", "occlusion"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"head.adapt.{name} must be in [0, 1), got {value}")
        for name in ("background", "pile"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"head.adapt.{name} must be in [0, 1] (a chance), got {value}")
        _check(0.0 <= self.perspective <= 0.3, f"head.adapt.perspective must be in [0, 0.3], got {self.perspective}")
        _check(0.0 <= self.rotation <= 180.0, f"head.adapt.rotation must be in [0, 180] degrees, got {self.rotation}")
        _check(0.0 <= self.color <= 1.0, f"head.adapt.color must be in [0, 1], got {self.color}")
        _check(0.0 <= self.blur <= 10.0, f"head.adapt.blur must be in [0, 10] pixels, got {self.blur}")
        _check(0.0 <= self.noise <= 0.5, f"head.adapt.noise must be in [0, 0.5], got {self.noise}")
        _check(
            self.jpeg == 0 or 5 <= self.jpeg <= 95, f"head.adapt.jpeg must be 0 (off) or in [5, 95], got {self.jpeg}"
        )


@dataclass(frozen=True)
class HeadSettings:
    """A learned transform of the backbone vectors (opt-in): whitening or a trained projection head.

    Applied by an index only once `lookalike train-embedding` (`Engine.train_embedding`) has learned
    it from the index's own images; these values are that training's defaults.
    """

    # "supervised" (Radenovic's Lw), "pca" (no labels), "linear" / "mlp" (trained heads on frozen vectors),
    # "finetune" (the backbone's last stages trained on the catalogue: lookalike.embed.finetune), the
    # default: grocery-store mAP 0.32 -> 0.84 where supervised whitening reached 0.70 (benchmarks/results/);
    # "self" (the same tail trained with no labels at all, each image its own class: lookalike.embed.adapt)
    kind: str = "finetune"
    dim: int = 256  # output dimension of a whitening or a trained head; 0 = the input's ("finetune": the backbone's)
    shrinkage: float = 0.1  # covariance shrinkage towards a scaled identity (whitening; the heads' start)
    label: Literal["category", "item"] = "category"  # product id of an index's image: its category or its item
    init: Literal["supervised", "pca", "random"] = "supervised"  # the heads' starting projection
    hidden: int = 1024  # "mlp": width of the residual branch
    contrastive_weight: float = 1.0
    contrastive_margin: float = 0.7  # negatives closer than this (Euclidean, unit vectors) are pushed away
    triplet_weight: float = 1.0
    triplet_margin: float = 0.2  # on squared distances, as in SOLAR
    sos_weight: float = 1.0  # SOLAR's second-order similarity regulariser
    hard_negatives: int = 5  # contrastive: the N nearest non-matching images of each anchor in the batch
    products_per_batch: int = 16
    images_per_product: int = 4
    learning_rate: float = 1e-3  # Adam
    weight_decay: float = 1e-4
    max_epochs: int = 40
    early_stopping_patience: int = 8  # epochs without a better validation mAP before training stops
    validation_fraction: float = 0.2  # of the products, held out (seeded) for the validation curve
    refit: bool = True  # then fit again on every product (a head: for its best epoch count)
    finetune_stages: int = 3  # "finetune": the backbone's last N stages are trained (Lite0: 8 of 16 blocks)
    finetune_epochs: int = 8  # at most; held-out products choose the count
    finetune_lr: float = 3e-4  # AdamW, one-cycle schedule; the product centres learn 10x faster
    finetune_batch: int = 32
    finetune_scale: float = 16.0  # CosFace: logits = scale * (cosine - margin on the true product)
    finetune_margin: float = 0.1
    adapt: AdaptSettings = field(default_factory=AdaptSettings)  # "self": label-free adaptation
    seed: int = 0

    def validate(self) -> None:
        # "finetune", or a registered transform kind: checked against the registry when training starts
        _check(bool(self.kind) and self.kind.isidentifier(), f"head.kind must be a kind's name, got {self.kind!r}")
        _check(self.dim >= 0, f"head.dim must be >= 0 (0 = keep the input's), got {self.dim}")
        _check(0.0 <= self.shrinkage <= 1.0, f"head.shrinkage must be in [0, 1], got {self.shrinkage}")
        _check(self.label in ("category", "item"), f"head.label must be 'category' or 'item', got {self.label!r}")
        inits = ("supervised", "pca", "random")
        _check(self.init in inits, f"head.init must be one of {', '.join(inits)}, got {self.init!r}")
        _check(self.hidden >= 1, f"head.hidden must be >= 1, got {self.hidden}")
        for name in ("contrastive_weight", "contrastive_margin", "triplet_weight", "triplet_margin", "sos_weight"):
            _check(getattr(self, name) >= 0.0, f"head.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.hard_negatives >= 1, f"head.hard_negatives must be >= 1, got {self.hard_negatives}")
        _check(self.products_per_batch >= 2, f"head.products_per_batch must be >= 2, got {self.products_per_batch}")
        _check(self.images_per_product >= 2, f"head.images_per_product must be >= 2, got {self.images_per_product}")
        _check(self.learning_rate > 0.0, f"head.learning_rate must be > 0, got {self.learning_rate}")
        _check(self.weight_decay >= 0.0, f"head.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.max_epochs >= 1, f"head.max_epochs must be >= 1, got {self.max_epochs}")
        patience = self.early_stopping_patience
        _check(patience >= 1, f"head.early_stopping_patience must be >= 1, got {patience}")
        fraction = self.validation_fraction
        _check(0.0 <= fraction < 1.0, f"head.validation_fraction must be in [0, 1), got {fraction}")
        _check(self.finetune_stages >= 1, f"head.finetune_stages must be >= 1, got {self.finetune_stages}")
        _check(self.finetune_epochs >= 0, f"head.finetune_epochs must be >= 0, got {self.finetune_epochs}")
        _check(self.finetune_lr > 0.0, f"head.finetune_lr must be > 0, got {self.finetune_lr}")
        _check(self.finetune_batch >= 2, f"head.finetune_batch must be >= 2, got {self.finetune_batch}")
        _check(self.finetune_scale > 0.0, f"head.finetune_scale must be > 0, got {self.finetune_scale}")
        _check(0.0 <= self.finetune_margin < 1.0, f"head.finetune_margin must be in [0, 1), got {self.finetune_margin}")
        self.adapt.validate()


@dataclass(frozen=True)
class Settings:
    """Everything that decides how an index is built and searched."""

    embed: EmbedSettings = field(default_factory=EmbedSettings)
    localize: LocalizeSettings = field(default_factory=LocalizeSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)
    classify: ClassifySettings = field(default_factory=ClassifySettings)
    head: HeadSettings = field(default_factory=HeadSettings)

    def __post_init__(self) -> None:
        for section in fields(self):
            getattr(self, section.name).validate()
        if "mask_iou" in self.rerank.chain and not self.localize.enabled:
            raise SettingsError(
                "rerank.chain has 'mask_iou', which compares object silhouettes, but localize.enabled is False: "
                "turn localisation on (--localize) or drop mask_iou from the chain"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"version": SETTINGS_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        if not isinstance(data, dict):
            raise SettingsError(f"settings must be a JSON object, got {type(data).__name__}: {data!r:.60}")
        data = dict(data)
        version = data.pop("version", SETTINGS_VERSION)
        if version != SETTINGS_VERSION:
            raise SettingsError(f"settings version {version} is not supported (expected {SETTINGS_VERSION})")
        if isinstance(data.get("rerank"), dict):
            data["rerank"] = _nest_legacy_rerank(data["rerank"])
        if isinstance(data.get("localize"), dict) and "quantize" in data["localize"]:
            # a whole localize section saved before `precision` existed: its segmenter ran in fp32
            data["localize"] = {"precision": "fp32", **data["localize"]}
        return _build(cls, data, "settings")

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> Settings:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def replace(self, **dotted: Any) -> Settings:
        """A copy with some values changed, by dotted name: `replace(**{"embed.model": "x"})`,
        `replace(**{"rerank.sift.weight": 0.5})`."""
        data = self.to_dict()
        for key, value in dotted.items():
            *parents, name = _canonical_key(key).split(".")
            section: Any = data
            for part in parents:
                section = section.get(part) if isinstance(section, dict) else None
            if not parents or not isinstance(section, dict) or name not in section or isinstance(section[name], dict):
                raise SettingsError(f"unknown setting {key!r}; expected one of: {', '.join(_all_keys(self))}")
            section[name] = value
        return Settings.from_dict(data)

    def get(self, key: str) -> Any:
        """One value by dotted name (`settings.get("rerank.sift.top_n")`)."""
        value: Any = self
        for part in _canonical_key(key).split("."):
            if not dataclasses.is_dataclass(value) or part not in {f.name for f in fields(value)}:
                raise SettingsError(f"unknown setting {key!r}; expected one of: {', '.join(_all_keys(self))}")
            value = getattr(value, part)
        return value


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SettingsError(message)


def _all_keys(settings: Any, prefix: str = "") -> list[str]:
    keys = []
    for item in fields(settings):
        value = getattr(settings, item.name)
        if dataclasses.is_dataclass(value):
            keys += _all_keys(value, f"{prefix}{item.name}.")
        else:
            keys.append(f"{prefix}{item.name}")
    return keys


def _legacy_rerank_name(key: str) -> tuple[str, str] | None:
    """("sift", "weight") for the flat name "sift_weight" used before re-rankers had sections."""
    for section in fields(RerankSettings):
        if dataclasses.is_dataclass(section.default_factory) and key.startswith(section.name + "_"):  # type: ignore[arg-type]
            leaf = key[len(section.name) + 1 :]
            if leaf in {f.name for f in fields(section.default_factory)}:  # type: ignore[arg-type]
                return section.name, leaf
    return None


def _canonical_key(key: str) -> str:
    """Dotted names as they are now: the old "rerank.sift_weight" is "rerank.sift.weight"."""
    section, _, name = key.strip().partition(".")
    legacy = _legacy_rerank_name(name) if section == "rerank" else None
    return f"rerank.{legacy[0]}.{legacy[1]}" if legacy else key.strip()


def _nest_legacy_rerank(section: dict[str, Any]) -> dict[str, Any]:
    """A rerank section written with flat names (settings.json of older indexes) in today's shape."""
    nested: dict[str, Any] = {}
    for key, value in section.items():
        legacy = _legacy_rerank_name(key)
        if legacy is None:
            nested[key] = dict(value) if isinstance(value, dict) else value
        else:
            nested.setdefault(legacy[0], {})[legacy[1]] = value
    return nested


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(f"unknown key(s) {unknown} in {where}; expected some of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be an object, got {value!r}")
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple(value)
    if origin in (typing.Union, types.UnionType) and value is None:
        return None
    simple = hint if origin is None else next((a for a in typing.get_args(hint) if a in (int, float, str, bool)), None)
    if simple is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if simple in (int, float, str, bool) and not isinstance(value, simple):
        raise SettingsError(f"{where} must be of type {simple.__name__}, got {value!r}")
    return value
