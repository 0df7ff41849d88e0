"""The classifier protocol, its registry, and saving as JSON + .npz (never a pickle).

Every classifier follows the estimator contract: `__init__` only stores settings, `fit(X, y)` sets
the learned attributes (ending in `_`: `classes_`, `n_features_in_`...), and `predict_proba` /
`predict` before `fit` raise `NotFittedError`. Prediction is plain numpy, so searching an index
with a trained classifier does not import torch or scikit-learn.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from lookalike._estimator import check_is_fitted
from lookalike._files import read_component
from lookalike._registry import Registry
from lookalike.errors import IndexMismatchError, LookalikeError, SettingsError
from lookalike.settings import ClassifySettings, Settings

MODEL_FILE = "classifier.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1
SHRINK_SAMPLES = 10  # pseudo-samples pulling each feature's variance towards the average (standardizer)


EpochProgress = Callable[[int, int], None]  # (epochs done, most epochs)


@runtime_checkable
class Classifier(Protocol):
    """Predicts a category from a feature vector; `fit` sets `classes_` (the labels, in the order of
    `predict_proba`'s columns) and the other learned attributes ending in "_"."""

    kind: str
    settings: ClassifySettings

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        validation: tuple[ArrayLike, ArrayLike] | None = None,
        progress: EpochProgress | None = None,
    ) -> Any:
        """Learn from (X, y); `progress(epoch, most epochs)` follows an iterative fit."""
        ...

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """(n, n_classes) probabilities, columns in the order of `classes_`."""
        ...

    def predict(self, X: ArrayLike) -> np.ndarray: ...

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What `restore` needs: JSON-able facts and named arrays."""
        ...

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...


CLASSIFIERS: Registry[Classifier] = Registry("classifier kind")
register_classifier = CLASSIFIERS.register


def create_classifier(kind: str = "mlp", settings: ClassifySettings | None = None) -> Classifier:
    """An unfitted classifier of the given kind ("mlp", "logreg", "knn"); unknown kinds list the valid ones."""
    return CLASSIFIERS.get(kind)(settings or ClassifySettings())


def available_classifiers() -> list[str]:
    return CLASSIFIERS.names()


# -- shared helpers for implementations


class FittedMixin:
    """`classes_`-based fitted check and `predict`, shared by every classifier."""

    kind: str
    _estimator_type = "classifier"  # messages name it "this <kind> classifier"

    def _check_fitted(self) -> None:
        check_is_fitted(self, "classes_", hint="load a trained one with load_classifier(folder)")

    def _check_features(self, X: ArrayLike) -> np.ndarray:
        self._check_fitted()
        values = np.asarray(X, dtype=np.float32)
        if values.ndim == 1:
            values = values[None, :]
        expected = int(self.n_features_in_)  # type: ignore[attr-defined]
        if values.ndim != 2 or values.shape[1] != expected:
            raise IndexMismatchError(
                f"expected vectors of {expected} features (what the classifier was trained on), "
                f"got shape {values.shape}"
            )
        return values

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)  # raises NotFittedError first when unfitted
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)]  # type: ignore[attr-defined]


def check_training_data(X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Float32 (n, d) features and 1-D labels, checked: same length, at least two classes."""
    features, labels = np.asarray(X, dtype=np.float32), np.asarray(y)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise LookalikeError(
            f"expected X of shape (n, d) and y of shape (n,); got X {features.shape} and y {labels.shape}"
        )
    if not np.isfinite(features).all():
        raise LookalikeError("X holds NaN or infinite values; expected finite feature vectors")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise LookalikeError(
            f"a classifier needs samples of at least 2 classes; got {len(classes)} ({classes.tolist()})"
        )
    return features, labels


def standardizer(X: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale learned from X (zeros and ones when disabled).

    Each feature's variance is shrunk towards the average variance by `SHRINK_SAMPLES`
    pseudo-samples: with thousands of images that is plain standardisation, while a catalogue of
    a few images per category does not blow up features that happen to be near-constant in it
    (on two categories of three sample images, plain standardisation got half the queries wrong).
    """
    if not enabled:
        return np.zeros(X.shape[1], np.float32), np.ones(X.shape[1], np.float32)
    mean, variance = X.mean(axis=0), X.var(axis=0)
    variance = (len(X) * variance + SHRINK_SAMPLES * variance.mean()) / (len(X) + SHRINK_SAMPLES)
    scale = np.sqrt(variance)
    return mean.astype(np.float32), np.where(scale > 1e-8, scale, 1.0).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def json_labels(classes: Sequence[Any]) -> list[Any]:
    """Class labels as JSON values (str or int); anything else is refused with the reason."""
    values = np.asarray(classes).tolist()
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        raise LookalikeError(f"class labels must be strings or integers to be saved, got {values[:5]}")
    return values


# -- saving and loading


def save_classifier(classifier: Classifier, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write `classifier.json` (kind, settings, classes, facts) and `weights.npz` into `folder`."""
    check_is_fitted(classifier, "classes_", action="save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    facts, arrays = classifier.state()
    model = {
        "format": FORMAT_VERSION,
        "kind": classifier.kind,
        "settings": dataclasses.asdict(classifier.settings),
        "classes": json_labels(classifier.classes_),
        "facts": facts,
        **(extra or {}),
    }
    np.savez(folder / WEIGHTS_FILE, **arrays)
    (folder / MODEL_FILE).write_text(json.dumps(model, indent=1) + "\n")
    return folder


def load_classifier(folder: str | Path) -> Classifier:
    """A classifier saved by `save_classifier`, ready to predict."""
    folder = Path(folder)
    model = read_model_file(folder)
    try:
        settings = Settings.from_dict({"classify": model["settings"]}).classify
    except SettingsError as exc:
        raise LookalikeError(f"{folder / MODEL_FILE}: its settings do not fit this version ({exc})") from None
    classifier = create_classifier(model["kind"], settings)
    with np.load(folder / WEIGHTS_FILE, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    classifier.restore({**model["facts"], "classes": model["classes"]}, arrays)
    return classifier


def read_model_file(folder: Path) -> dict[str, Any]:
    return read_component(folder, MODEL_FILE, WEIGHTS_FILE, "classifier", FORMAT_VERSION)
