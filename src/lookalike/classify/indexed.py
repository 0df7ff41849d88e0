"""The classifier that lives with an index (`<index>/classifier/`): training, saving, staleness.

It is trained on the index's stored vectors (exactly the features queries get) with their stored
categories (sub-folder names, a manifest's category column, or `Engine.add(..., categories=...)`).
`training.json` records what the catalogue looked like at training time, so the index can tell
when images or categories were added or removed since, and say so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.classify.augment import EmbedImages, augmented_vectors
from lookalike.classify.base import Classifier, create_classifier, load_classifier, save_classifier
from lookalike.classify.split import stratified_split
from lookalike.errors import LookalikeError
from lookalike.settings import ClassifySettings

CLASSIFIER_DIR = "classifier"
TRAINING_FILE = "training.json"
TRAIN_HINT = "train one with `lookalike train-classifier --index PATH` (or Engine.train_classifier())"


@dataclass
class TrainingResult:
    """A classifier trained on an index, and how it did on the held-out validation images."""

    classifier: Classifier
    report: Any  # evaluate.metrics.ClassificationReport on the validation split, or None without one
    n_train: int
    n_validation: int
    n_augmented: int
    seconds: float
    trained_on: dict[str, Any]  # the catalogue at training time (see `catalogue_snapshot`)
    failed: list[tuple[str, str]] = field(default_factory=list)  # images augmentation could not read

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for `training.json` and `info`."""
        report = self.report
        return {
            "kind": self.classifier.kind,
            "categories": len(self.classifier.classes_),
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "n_augmented": self.n_augmented,
            "seconds": round(self.seconds, 3),
            "best_epoch": getattr(self.classifier, "best_epoch_", None),
            "validation_accuracy": None if report is None else report.accuracy,
            "validation_mean_class_accuracy": None if report is None else report.mean_class_accuracy,
            "validation_class_accuracy_variance": None if report is None else report.class_accuracy_variance,
        }


def catalogue_snapshot(store: Any) -> dict[str, Any]:
    """The store's generation, images per category, a signature of (id, category) pairs, the features."""
    digest = hashlib.sha256()
    for item in store.items():
        if item.category is not None:
            digest.update(f"{item.id}\t{item.category}\n".encode())
    counts = {str(c): n for c, n in store.category_counts().items() if c is not None}
    return {
        "generation": store.generation,
        "category_counts": counts,
        "signature": digest.hexdigest(),
        "features": store.get_meta("embedder"),  # changes when the backbone or a learned head changes
    }


def training_data(store: Any, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, categories) of every categorised image in the store."""
    ids, vectors, labels = [], [], []
    for chunk_ids, chunk_vectors, categories in store.vectors(dim):
        keep = np.array([c is not None for c in categories], dtype=bool)
        ids.append(chunk_ids[keep])
        vectors.append(chunk_vectors[keep])
        labels += [c for c in categories if c is not None]
    if not labels:
        raise LookalikeError(
            "the index holds no categorised images; a classifier learns categories from sub-folder names "
            "(index a folder of category folders), a manifest's category column, or Engine.add(categories=...)"
        )
    return np.concatenate(ids), np.concatenate(vectors), np.asarray(labels, dtype=object).astype(str)


def train_index_classifier(
    store: Any,
    dim: int,
    settings: ClassifySettings,
    *,
    embed: EmbedImages | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Train `settings.kind` on the store's vectors, holding out `validation_fraction` (stratified, seeded).

    With `settings.augment_copies > 0`, that many augmented copies of every training image are
    embedded with `embed` (the index's own describe step) and added to the training set.
    """
    from lookalike.evaluate.metrics import classification_report

    started = time.perf_counter()
    snapshot = catalogue_snapshot(store)
    ids, vectors, labels = training_data(store, dim)
    _check_categories(labels)
    train, held = stratified_split(labels, settings.validation_fraction, settings.seed)
    train_x, train_y, failed = _with_augmentation(store, ids[train], vectors[train], labels[train], settings, embed)
    classifier = create_classifier(settings.kind, settings)
    classifier.fit(train_x, train_y, validation=(vectors[held], labels[held]), progress=progress)
    report = None
    if len(held):
        report = classification_report(labels[held], classifier.predict(vectors[held]), labels=classifier.classes_)
        if getattr(classifier, "refit_on_everything", False):  # nothing to early-stop: the held-out images join
            joined = np.concatenate([train_x, vectors[held]]), np.concatenate([train_y, labels[held]])
            classifier = create_classifier(settings.kind, settings).fit(*joined)
    return TrainingResult(
        classifier=classifier,
        report=report,
        n_train=len(train),
        n_validation=len(held),
        n_augmented=len(train_x) - len(train),
        seconds=time.perf_counter() - started,
        trained_on=snapshot,
        failed=failed,
    )


def _check_categories(labels: np.ndarray) -> None:
    names = sorted(set(labels.tolist()))
    if len(names) < 2:
        raise LookalikeError(
            f"a category classifier needs images of at least 2 categories; the index holds {len(names)} ({names}); "
            "add images of other categories first"
        )


def _with_augmentation(
    store: Any,
    ids: np.ndarray,
    vectors: np.ndarray,
    labels: np.ndarray,
    settings: ClassifySettings,
    embed: EmbedImages | None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    if settings.augment_copies == 0:
        return vectors, labels, []
    if embed is None:
        raise LookalikeError(
            "classify.augment_copies > 0 needs the images embedded: train through Engine.train_classifier"
        )
    items = store.get_many(ids.tolist())
    paths = [items[int(i)].path for i in ids]
    extra, sources, failed = augmented_vectors(paths, settings, embed)
    if len(extra) == 0:
        return vectors, labels, failed
    return np.concatenate([vectors, extra]), np.concatenate([labels, labels[sources]]), failed


class IndexClassifier:
    """The classifier saved in an index folder: loaded on first use, replaced atomically on save."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._model: Classifier | None = None
        self._mtime: float | None = None

    def model(self) -> Classifier | None:
        """The trained classifier, or None when none was trained; reloaded when its files change."""
        stamp = self._stamp()
        if stamp is None:
            self._model, self._mtime = None, None
            return None
        if self._model is None or stamp != self._mtime:
            self._model, self._mtime = load_classifier(self.folder), stamp
        return self._model

    def save(self, result: TrainingResult) -> Path:
        """Write the classifier and its training record, replacing any earlier one atomically."""
        staging = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        save_classifier(result.classifier, staging)
        record = {"trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "trained_on": result.trained_on, **result.summary()}
        if result.report is not None:
            record["validation_report"] = result.report.as_dict()
        (staging / TRAINING_FILE).write_text(json.dumps(record, indent=1) + "\n")
        old = self.folder.with_name(self.folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            self.folder.rename(old)
        staging.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)
        self._model, self._mtime = result.classifier, self._stamp()
        return self.folder

    def record(self) -> dict[str, Any] | None:
        path = self.folder / TRAINING_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def status(self, store: Any) -> dict[str, Any]:
        """{"state": "absent" | "fresh" | "stale" | "unreadable", "reason": ..., and training facts}."""
        if self._stamp() is None:
            return {"state": "absent", "reason": f"no classifier trained; {TRAIN_HINT}"}
        try:
            record = self.record()
            self.model()
        except (LookalikeError, OSError, ValueError) as exc:
            return {"state": "unreadable", "reason": f"{exc}; retrain it ({TRAIN_HINT})"}
        if record is None:
            return {"state": "stale", "reason": f"{TRAINING_FILE} is missing, so freshness is unknown; {TRAIN_HINT}"}
        facts = {key: record.get(key) for key in ("kind", "categories", "trained_at", "validation_accuracy")}
        why = stale_reason(record["trained_on"], store)
        if why is None:
            return {"state": "fresh", "reason": "trained on the current catalogue", **facts}
        return {"state": "stale", "reason": f"{why}; retrain it ({TRAIN_HINT})", **facts}

    def _stamp(self) -> float | None:
        path = self.folder / "classifier.json"
        return path.stat().st_mtime if path.is_file() else None


def stale_reason(trained_on: dict[str, Any], store: Any) -> str | None:
    """Why the catalogue differs from the one the classifier was trained on, or None when it does not."""
    if trained_on.get("generation") == store.generation:
        return None
    now = catalogue_snapshot(store)
    before, after = trained_on.get("category_counts", {}), now["category_counts"]
    changes = _count_changes(before, after)
    if changes:
        return "the catalogue changed since training: " + "; ".join(changes)
    if now["features"] != trained_on.get("features"):
        return "the stored features changed since training (another embedder, or an embedding head trained)"
    if now["signature"] != trained_on.get("signature"):
        return "images were replaced since training (same number per category)"
    return None


def _count_changes(before: dict[str, int], after: dict[str, int]) -> list[str]:
    changes = []
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    if added:
        changes.append(f"new categories {added}")
    if removed:
        changes.append(f"categories removed {removed}")
    counts = [f"{c} {before[c]} -> {after[c]}" for c in sorted(set(before) & set(after)) if before[c] != after[c]]
    if counts:
        changes.append("images per category changed: " + ", ".join(counts))
    return changes
