"""Learned transforms of backbone vectors (whitening, trained heads): protocol, registry, files.

Every transform follows the estimator contract: `__init__` only stores settings, `fit(X, y)` sets
the learned attributes (ending in `_`: `mean_`, `projection_`, `n_features_in_`, `dim_`...), and
`transform` before `fit` raises `NotFittedError`. `transform` is plain numpy and returns
L2-normalised float32 rows, so searching an index with a head needs no training library.

A fitted transform is saved as `transform.json` (kind, settings, facts) beside `weights.npz`
(never a pickle); its `fingerprint()` hashes both, and an index records the fingerprint of the
transform that made its vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from lookalike._estimator import check_is_fitted
from lookalike._files import read_component
from lookalike._registry import Registry
from lookalike.errors import IndexMismatchError, LookalikeError, SettingsError
from lookalike.settings import HeadSettings, Settings

MODEL_FILE = "transform.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1


@runtime_checkable
class VectorTransform(Protocol):
    """Maps (n, n_features_in_) vectors to L2-normalised (n, dim_) vectors."""

    kind: str
    settings: HeadSettings

    def fit(self, X: ArrayLike, y: ArrayLike | None = None, **options: Any) -> Any: ...

    def transform(self, X: ArrayLike) -> np.ndarray: ...

    def fingerprint(self) -> str: ...

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What `restore` needs: JSON-able facts and named arrays."""
        ...

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...


TRANSFORMS: Registry[VectorTransform] = Registry("embedding transform kind")
register_transform = TRANSFORMS.register


def _load_builtins() -> None:
    from lookalike.embed import head, whitening  # noqa: F401  (they register their kinds)


def create_transform(kind: str | None = None, settings: HeadSettings | None = None) -> VectorTransform:
    """An unfitted transform: "pca", "supervised" (whitening) or "linear", "mlp" (trained heads)."""
    _load_builtins()
    settings = settings or HeadSettings()
    return TRANSFORMS.get(kind or settings.kind)(settings)


def available_transforms() -> list[str]:
    _load_builtins()
    return TRANSFORMS.names()


class FittedTransform:
    """Shared by every transform: the fitted check, input checks, numpy `transform`, the fingerprint."""

    kind: str
    settings: HeadSettings
    _estimator_type = "transform"  # messages name it "this <kind> transform"

    def _check_fitted(self) -> None:
        check_is_fitted(self, "dim_", hint="load a trained one with load_transform(folder)")

    def _check_vectors(self, X: ArrayLike) -> np.ndarray:
        self._check_fitted()
        values = np.asarray(X, dtype=np.float32)
        if values.ndim == 1:
            values = values[None, :]
        expected = int(self.n_features_in_)  # type: ignore[attr-defined]
        if values.ndim != 2 or values.shape[1] != expected:
            raise IndexMismatchError(
                f"expected vectors of {expected} features (what the {self.kind} transform was fitted on), "
                f"got shape {values.shape}"
            )
        return values

    def project(self, X: ArrayLike) -> np.ndarray:
        """The transform before L2 normalisation."""
        raise NotImplementedError

    def transform(self, X: ArrayLike) -> np.ndarray:
        """(n, dim_) float32 rows of unit length."""
        from lookalike.embed.base import l2_normalize

        return l2_normalize(self.project(self._check_vectors(X)))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of the kind and the learned arrays: same head, same fingerprint."""
        self._check_fitted()
        _, arrays = self.state()
        digest = hashlib.sha256(self.kind.encode())
        for name in sorted(arrays):
            array = np.ascontiguousarray(arrays[name])
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]


def check_training_vectors(X: ArrayLike, y: ArrayLike | None, *, needs_labels: bool, kind: str) -> tuple[Any, Any]:
    """Float32 (n, d) vectors and, when given or needed, 1-D labels with a product of 2+ images."""
    vectors = np.asarray(X, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise LookalikeError(f"expected X of shape (n, d) with n >= 2, got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise LookalikeError("X holds NaN or infinite values; expected finite feature vectors")
    if y is None:
        if needs_labels:
            raise LookalikeError(f"the {kind} transform learns from products: pass y, one product id per row")
        return vectors, None
    labels = np.asarray(y)
    if labels.shape != (len(vectors),):
        raise LookalikeError(f"expected one product id per row of X ({len(vectors)}), got y of shape {labels.shape}")
    _, counts = np.unique(labels, return_counts=True)
    if needs_labels and (len(counts) < 2 or counts.max() < 2):
        raise LookalikeError(
            f"the {kind} transform needs at least 2 products and a product with 2+ images; "
            f"got {len(counts)} product(s), at most {counts.max()} image(s) each"
        )
    return vectors, labels


def output_dim(settings: HeadSettings, n_features: int) -> int:
    """settings.dim (0 = the input's), checked against the input's width."""
    dim = settings.dim or n_features
    if dim > n_features:
        raise SettingsError(
            f"head.dim = {dim} is larger than the input's {n_features} features; expected <= {n_features}"
        )
    return dim


# -- saving and loading


def save_transform(transform: VectorTransform, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write `transform.json` (kind, settings, fingerprint, facts) and `weights.npz` into `folder`."""
    check_is_fitted(transform, "dim_", action="save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    facts, arrays = transform.state()
    model = {
        "format": FORMAT_VERSION,
        "kind": transform.kind,
        "fingerprint": transform.fingerprint(),
        "settings": dataclasses.asdict(transform.settings),
        "facts": facts,
        **(extra or {}),
    }
    np.savez(folder / WEIGHTS_FILE, **arrays)
    (folder / MODEL_FILE).write_text(json.dumps(model, indent=1) + "\n")
    return folder


def load_transform(folder: str | Path) -> VectorTransform:
    """A transform saved by `save_transform`, ready to apply; a changed weights file is refused."""
    folder = Path(folder)
    model = read_model_file(folder)
    try:
        settings = Settings.from_dict({"head": model["settings"]}).head
    except SettingsError as exc:
        raise LookalikeError(f"{folder / MODEL_FILE}: its settings do not fit this version ({exc})") from None
    transform = create_transform(model["kind"], settings)
    with np.load(folder / WEIGHTS_FILE, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    transform.restore(model["facts"], arrays)
    if transform.fingerprint() != model["fingerprint"]:
        raise IndexMismatchError(
            f"{folder / WEIGHTS_FILE}: its arrays hash to {transform.fingerprint()}, but {MODEL_FILE} "
            f"records {model['fingerprint']}; the files do not belong together: train the head again"
        )
    return transform


def read_model_file(folder: Path) -> dict[str, Any]:
    return read_component(folder, MODEL_FILE, WEIGHTS_FILE, "embedding transform", FORMAT_VERSION)
