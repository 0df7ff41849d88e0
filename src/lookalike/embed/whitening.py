"""Learned whitening of backbone vectors, followed by L2 normalisation.

- "pca": PCA whitening learned on the catalogue itself, no labels (Jegou and Chum, ECCV 2012):
  centre, rotate onto the principal axes, scale each by 1/sqrt(its variance), keep the first `dim`.
- "supervised": the learned whitening Lw of Radenovic, Tolias and Chum ("Fine-tuning CNN Image
  Retrieval with No Human Annotation", TPAMI 2018), from matching pairs (images of one product):
  whiten with the inverse square root of the covariance of matching-pair differences, then rotate
  by the PCA of the whitened training vectors and keep the first `dim` axes. Directions in which
  images of one product differ are shrunk; those that tell products apart are kept.

Both shrink the covariance they invert towards a scaled identity (`settings.shrinkage`), which
keeps them stable when there are fewer images than dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lookalike.embed.transform import FittedTransform, check_training_vectors, output_dim, register_transform
from lookalike.settings import HeadSettings

EIGEN_FLOOR = 1e-9  # eigenvalues below this fraction of the largest are raised to it


def shrink(covariance: np.ndarray, amount: float) -> np.ndarray:
    """(1 - amount) C + amount * mean(diag C) I."""
    scale = float(np.trace(covariance)) / len(covariance)
    return (1.0 - amount) * covariance + amount * scale * np.eye(len(covariance))


def _eigh_descending(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(matrix)
    order = np.argsort(values)[::-1]
    values = values[order]
    return np.maximum(values, EIGEN_FLOOR * max(values[0], EIGEN_FLOOR)), vectors[:, order]


def inverse_sqrt(matrix: np.ndarray) -> np.ndarray:
    """C^(-1/2) of a symmetric positive semi-definite matrix (eigenvalues floored)."""
    values, vectors = _eigh_descending(matrix)
    return (vectors / np.sqrt(values)) @ vectors.T


def pca_whitening(X: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, projection (d, d) with rows = whitened principal axes, eigenvalues), from float64 X."""
    mean = X.mean(axis=0)
    centred = X - mean
    covariance = shrink(centred.T @ centred / len(X), shrinkage)
    values, vectors = _eigh_descending(covariance)
    return mean, (vectors / np.sqrt(values)).T, values


def matching_pair_covariance(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of (x_i - x_j)(x_i - x_j)^T over every pair i < j of one product, without listing pairs.

    Within a product of n images with mean m: sum over its pairs = n * sum_i (x_i - m)(x_i - m)^T.
    """
    scatter = np.zeros((X.shape[1], X.shape[1]))
    pairs = 0
    for label in np.unique(labels):
        rows = X[labels == label]
        if len(rows) < 2:
            continue
        centred = rows - rows.mean(axis=0)
        scatter += len(rows) * (centred.T @ centred)
        pairs += len(rows) * (len(rows) - 1) // 2
    return scatter / pairs


def supervised_whitening(X: np.ndarray, labels: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Radenovic's Lw: (mean, projection (d, d)), rows ordered by the variance they keep."""
    mean = X.mean(axis=0)
    whiten = inverse_sqrt(shrink(matching_pair_covariance(X, labels), shrinkage))
    whitened = (X - mean) @ whiten.T
    _, rotation = _eigh_descending(whitened.T @ whitened / len(X))
    return mean, rotation.T @ whiten


class _Whitening(FittedTransform):
    """x -> l2(P (x - m)) with learned m (`mean_`) and P (`projection_`, dim_ x n_features_in_)."""

    kind = ""

    def __init__(self, settings: HeadSettings | None = None) -> None:
        self.settings = settings or HeadSettings()

    def _learned(self, mean: np.ndarray, projection: np.ndarray, n_features: int) -> None:
        dim = output_dim(self.settings, n_features)
        self.mean_ = mean.astype(np.float32)
        self.projection_ = projection[:dim].astype(np.float32)
        self.n_features_in_ = n_features
        self.dim_ = dim

    def project(self, X: ArrayLike) -> np.ndarray:
        values = self._check_vectors(X)
        return (values - self.mean_) @ self.projection_.T

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        facts = {"n_features_in": self.n_features_in_, "dim": self.dim_}
        return facts, {"mean": self.mean_, "projection": self.projection_}

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mean_, self.projection_ = arrays["mean"], arrays["projection"]
        self.n_features_in_, self.dim_ = int(facts["n_features_in"]), int(facts["dim"])


@register_transform("pca")
class PCAWhitening(_Whitening):
    """PCA whitening learned without labels: identity covariance on the training vectors.

    Learned attributes: `mean_`, `projection_` (dim_ x n_features_in_), `explained_variance_`.
    """

    kind = "pca"

    def fit(self, X: ArrayLike, y: ArrayLike | None = None, **options: Any) -> PCAWhitening:
        vectors, _ = check_training_vectors(X, None, needs_labels=False, kind=self.kind)
        mean, projection, values = pca_whitening(vectors.astype(np.float64), self.settings.shrinkage)
        self._learned(mean, projection, vectors.shape[1])
        self.explained_variance_ = values[: self.dim_].astype(np.float32)
        return self

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        facts, arrays = super().state()
        return facts, {**arrays, "explained_variance": self.explained_variance_}

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().restore(facts, arrays)
        self.explained_variance_ = arrays["explained_variance"]


@register_transform("supervised")
class SupervisedWhitening(_Whitening):
    """Radenovic et al.'s learned whitening Lw from products: `fit(X, y)`, y = product id per row.

    Learned attributes: `mean_`, `projection_` (dim_ x n_features_in_), `n_products_`.
    """

    kind = "supervised"

    def fit(self, X: ArrayLike, y: ArrayLike | None = None, **options: Any) -> SupervisedWhitening:
        vectors, labels = check_training_vectors(X, y, needs_labels=True, kind=self.kind)
        mean, projection = supervised_whitening(vectors.astype(np.float64), labels, self.settings.shrinkage)
        self._learned(mean, projection, vectors.shape[1])
        self.n_products_ = len(np.unique(labels))
        return self

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        facts, arrays = super().state()
        return {**facts, "n_products": self.n_products_}, arrays

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().restore(facts, arrays)
        self.n_products_ = int(facts["n_products"])
