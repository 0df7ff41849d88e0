"""Learn an index's own embedding transform (whitening or a trained head) and re-embed the index.

The transform learns from the raw backbone vectors: while an index has no transform its stored
vectors are raw; once it has one, every image also keeps its raw vector as the blob "raw" (5 KB
per image at 1280-d), so re-training and re-embedding never decode an image again. Product ids
come from `items` (path or id -> product), else from each image's category (`label="category"`,
the sub-folder for an index built from folders) or its item (`label="item"`: a manifest's item
column, a data set adapter's `item`).

Products with 2+ images are split, seeded, into training and held-out products
(`validation_fraction`): the held-out ones give the validation curve and early stopping of a
trained head, and the before/after report on products the transform never saw. The transform
kept is the one trained on the training products only.

The engine then installs it through a new `lookalike.featurizer.Featurizer`: its files in
`<index>/head/` (transform.json + weights.npz), its fingerprint in the featurizer's, and the new
vectors written through the store's own API; query vectors get the same transform, and an index
whose head files do not match the fingerprint its vectors were made with is refused.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.embed.base import l2_normalize
from lookalike.embed.transform import VectorTransform, create_transform, load_transform, save_transform
from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.settings import HeadSettings

HEAD_DIR = "head"
RAW_BLOB = "raw"
EVAL_KS = (1, 5, 10)
LABEL_COVERAGE = 0.5  # product ids naming fewer of the indexed images than this fraction: a warning

EpochCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass
class EmbeddingReport:
    """What `Engine.train_embedding` learned, and retrieval on held-out products before and after."""

    kind: str
    fingerprint: str
    dim: int
    n_images: int  # images re-embedded
    n_train_images: int
    n_train_products: int
    n_validation_images: int
    n_validation_products: int
    before: dict[str, float] | None  # leave-one-out retrieval among held-out products, raw vectors
    after: dict[str, float] | None  # the same with the transform
    history: dict[str, list[float | None]] = field(default_factory=dict)  # per epoch (trained heads)
    best_epoch: int | None = None  # 0: the untrained starting point was best on the held-out products
    refit: bool = False  # the kept transform was fitted again on every product after validation
    seconds: float = 0.0
    current: dict[str, float] | None = None  # the same figures for the embedding the index used until now
    kept: bool = True  # installed: it beat `current` on the held-out products, or it was forced
    verdict: str = ""  # what was kept and why, in a sentence
    n_labelled_images: int = 0  # indexed images with a product id (the others take no part)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds of the long stages ("self": views, training)
    rounds: list[dict[str, Any]] = field(default_factory=list)  # "self" with photos: each pseudo-label round

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BACKBONE_KINDS = ("finetune", "self")  # kinds that train the backbone's last stages (the others: its vectors)


def check_kind(kind: str) -> None:
    """An unknown embedding kind fails here, listing the valid ones."""
    from lookalike.embed.transform import available_transforms
    from lookalike.errors import UnknownNameError

    if kind not in (*BACKBONE_KINDS, *available_transforms()):
        names = ", ".join([*BACKBONE_KINDS, *available_transforms()])
        raise UnknownNameError(f"Unknown embedding kind {kind!r}; expected one of: {names}")


# -- reading the index


def raw_vectors(store: Any, stored_dim: int, raw_dim: int, has_transform: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ids, raw backbone vectors) of every image: the "raw" blobs, or the vectors of a plain index."""
    chunks = list(store.vectors(stored_dim))
    if not chunks:
        raise LookalikeError("the index holds no images: add the catalogue before training an embedding")
    ids = np.concatenate([chunk_ids for chunk_ids, _, _ in chunks])
    if not has_transform:
        return ids, np.concatenate([vectors for _, vectors, _ in chunks])
    blobs = store.blobs(RAW_BLOB, ids.tolist())
    missing = [int(i) for i in ids if int(i) not in blobs]
    if missing:
        raise IndexMismatchError(
            f"{len(missing)} image(s) of the index have no raw backbone vector (first id: {missing[0]}); "
            "rebuild the index (CLI: --rebuild) before training an embedding"
        )
    raw = np.stack([np.frombuffer(blobs[int(i)], dtype=np.float32) for i in ids])
    if raw.shape[1] != raw_dim:
        raise IndexMismatchError(f"stored raw vectors have {raw.shape[1]} features; the embedder gives {raw_dim}")
    return ids, raw


def product_labels(store: Any, ids: np.ndarray, label: str, items: Mapping[str | int, str] | None) -> list[str | None]:
    """One product id per image (None = unknown, left out of training)."""
    known = store.get_many(ids.tolist())
    if items is not None:
        by_key = {str(k): str(v) for k, v in items.items()}
        return [by_key.get(str(i), by_key.get(known[int(i)].path)) for i in ids]
    if label == "item":
        return [known[int(i)].extra.get("item") for i in ids]
    return [known[int(i)].category for i in ids]


def split_products(labels: list[str | None], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, held out): held-out products are drawn, seeded, among those with 2+ images."""
    names = np.array(["" if label is None else label for label in labels], dtype=object)
    known = np.array([label is not None for label in labels])
    products, counts = np.unique(names[known].astype(str), return_counts=True)
    eligible = products[counts >= 2]
    if len(eligible) < 2:
        raise LookalikeError(
            f"training an embedding needs 2+ products with 2+ images each; found {len(eligible)} "
            "(product ids: head.label = category or item, or pass items=...)"
        )
    n_held = round(fraction * len(eligible))
    if fraction > 0 and (n_held < 2 or len(eligible) - n_held < 2):
        n_held = 0  # too few products to hold some out: no validation
    held = set(np.random.default_rng(seed).permutation(eligible)[:n_held].tolist())
    held_mask = np.array([label in held for label in labels])
    return known & ~held_mask, held_mask


# -- fitting and reporting


def split_for(labels: list[str | None], settings: HeadSettings) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out masks; PCA whitening needs no products and learns from every image."""
    if settings.kind != "pca":
        return split_products(labels, settings.validation_fraction, settings.seed)
    try:
        _, held = split_products(labels, settings.validation_fraction, settings.seed)
    except LookalikeError:
        held = np.zeros(len(labels), dtype=bool)
    return ~held, held


def held_out_report(vectors: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """mAP and Recall@k when each held-out image queries the other held-out images."""
    from lookalike.evaluate.metrics import retrieval_report

    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :-1]
    relevances = list(labels[order] == labels[:, None])
    report = retrieval_report(relevances, ks=EVAL_KS)
    return {"map": report.map, **{f"recall@{k}": report.recall_at_k[k] for k in EVAL_KS}}


def fit_transform(
    raw: np.ndarray,
    labels: list[str | None],
    settings: HeadSettings,
    progress: EpochCallback | None = None,
) -> tuple[VectorTransform, dict[str, Any]]:
    """The transform and the facts of the report.

    It is first fitted on the training products and measured on the held-out ones; with
    `settings.refit` (and products held out) it is then fitted again on every product, a trained
    head for as many epochs as the validation curve chose.
    """
    train, held = split_for(labels, settings)
    names = np.array([label or "" for label in labels])
    validation = (raw[held], names[held]) if held.any() else None
    transform = _fit(settings, (raw[train], names[train]), validation, progress)
    facts: dict[str, Any] = {
        "n_train_images": int(train.sum()),
        "n_train_products": len(set(names[train])),
        "n_validation_images": int(held.sum()),
        "n_validation_products": len(set(names[held])),
        "before": held_out_report(l2_normalize(raw[held]), names[held]) if held.any() else None,
        "after": held_out_report(transform.transform(raw[held]), names[held]) if held.any() else None,
        "history": getattr(transform, "history_", {}),
        "best_epoch": getattr(transform, "best_epoch_", None),
        "refit": bool(settings.refit and held.any()),
    }
    if facts["refit"]:
        everyone = train | held
        transform = _fit(settings, (raw[everyone], names[everyone]), None, None, epochs=facts["best_epoch"])
    return transform, facts


def _fit(
    settings: HeadSettings,
    data: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    progress: EpochCallback | None,
    epochs: int | None = None,
) -> VectorTransform:
    transform = create_transform(settings.kind, settings)
    if settings.kind in ("linear", "mlp"):
        return transform.fit(*data, validation=validation, progress=progress, epochs=epochs)
    return transform.fit(*data)


# -- the index's head folder


def install_head(index: Path, transform: VectorTransform | None, extra: dict[str, Any] | None = None) -> None:
    """Replace `<index>/head/` with the transform's files (or remove it), through a staging folder."""
    write = None if transform is None else (lambda folder: save_transform(transform, folder, extra=extra))
    replace_folder(index / HEAD_DIR, write)


def replace_folder(target: Path, write: Callable[[Path], Any] | None) -> None:
    """Replace `target` with what `write(folder)` writes (or remove it): written beside it first, so a
    failed write leaves the old folder in place."""
    staging = target.with_name(target.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    if write is not None:
        write(staging)
    if target.exists():
        shutil.rmtree(target)
    if write is not None:
        staging.replace(target)


def load_index_transform(index: Path) -> VectorTransform | None:
    """The transform in `<index>/head/`, or None when the index has none."""
    folder = index / HEAD_DIR
    return load_transform(folder) if folder.exists() else None


def coverage_warnings(labels: list[str | None], n_rows: int | None, kind: str) -> list[str]:
    """What to say when the product ids name few of the indexed images, or name files not indexed.

    `n_rows`: how many images the caller's `items` named (None: the ids came from the index itself)."""
    total, labelled = len(labels), sum(label is not None for label in labels)
    warnings = []
    if kind != "pca" and labelled < LABEL_COVERAGE * total:
        warnings.append(
            f"the product ids name {labelled} of the {total} indexed images ({labelled / total:.0%}): the other "
            f"{total - labelled} take no part in training or in the held-out figures (they are still re-embedded)"
        )
    if n_rows is not None and n_rows > labelled:
        warnings.append(
            f"{n_rows - labelled} of the {n_rows} images the product ids name are not in the index "
            "(paths must be those of indexed files, or ids)"
        )
    return warnings


def judge(
    report: EmbeddingReport,
    current: dict[str, float] | None,
    in_use: str,
    force: bool,
    measured_on: tuple[str, str] = ("the held-out products", "held-out mAP"),
) -> None:
    """Keep the new embedding only when its mAP on `measured_on` (what, and the figure's name) beats
    the embedding in use (`current`, described by `in_use`), or when forced; fills `kept`, `current`
    and `verdict`."""
    report.current = current
    if report.after is None or current is None:
        report.kept = force
        why, fix = _unmeasured(report)
        report.verdict = (
            f"installed unchecked (--force): {why}"
            if force
            else f"not installed: {why}; {in_use} stays. {fix}, or install it unchecked with --force"
        )
        return
    where, metric = measured_on
    old, new = current["map"], report.after["map"]
    figures = f"{metric} {old:.4f} ({in_use}) -> {new:.4f} ({report.kind})"
    if new > old:
        report.kept, report.verdict = True, f"installed: it beats {in_use} on {where}, {figures}"
    elif force:
        report.kept, report.verdict = True, f"installed (--force) although it does not beat {in_use}: {figures}"
    else:
        report.kept = False
        report.verdict = (
            f"not installed: it does not beat {in_use} on {where}, {figures}; the index is "
            "unchanged (--force installs it anyway)"
        )


def _unmeasured(report: EmbeddingReport) -> tuple[str, str]:
    """Why a new embedding could not be compared with the one in use, and what makes it comparable."""
    if report.kind == "self" and report.after is None:
        return (
            "no validation views were made to measure it (head.adapt.validation_views = 0)",
            "Make validation views (--set head.adapt.validation_views=2)",
        )
    if report.kind == "self":
        return (
            "the embedding in use cannot be measured on the validation views (a learned transform, or another tail)",
            "Remove the learned embedding first (--remove), or start from it (--set head.adapt.start=current)",
        )
    return (
        "no products could be held out to measure it (too few products with 2+ images)",
        "Hold some out (--set head.validation_fraction=0.3, or finer product ids: --items CSV)",
    )


def report_from(transform: VectorTransform, facts: dict[str, Any], n_images: int, seconds: float) -> EmbeddingReport:
    return EmbeddingReport(
        kind=transform.kind,
        fingerprint=transform.fingerprint(),
        dim=int(transform.dim_),  # type: ignore[attr-defined]
        n_images=n_images,
        seconds=seconds,
        **facts,
    )


def head_meta(report: EmbeddingReport) -> dict[str, Any]:
    """What the index's meta "head" records: the transform and its held-out figures."""
    return {
        "kind": report.kind,
        "fingerprint": report.fingerprint,
        "dim": report.dim,
        "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "before": report.before,
        "after": report.after,
        "best_epoch": report.best_epoch,
    }
