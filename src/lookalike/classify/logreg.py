"""The linear baseline: multinomial logistic regression on standardised features.

Fitted by scikit-learn's L-BFGS (imported only by `fit`); prediction is numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lookalike.classify.base import (
    EpochProgress,
    FittedMixin,
    check_training_data,
    register_classifier,
    softmax,
    standardizer,
)
from lookalike.errors import MissingDependency
from lookalike.settings import ClassifySettings

MAX_ITER = 2000


@register_classifier("logreg")
class LogisticClassifier(FittedMixin):
    """L2-regularised multinomial logistic regression (`settings.logreg_c` = inverse strength).

    Uses every sample of (X, y); `validation` is accepted for a uniform interface and ignored.
    Learned attributes: `classes_`, `n_features_in_`, `mean_`, `scale_`, `coef_` (n_classes, d),
    `intercept_`, `n_iter_`, and an empty `history_` (L-BFGS has no epochs).
    """

    kind = "logreg"

    def __init__(self, settings: ClassifySettings | None = None) -> None:
        self.settings = settings or ClassifySettings()

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        validation: tuple[ArrayLike, ArrayLike] | None = None,
        progress: EpochProgress | None = None,
    ) -> LogisticClassifier:
        features, labels = check_training_data(X, y)
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise MissingDependency("scikit-learn", "the logreg classifier") from None
        mean, scale = standardizer(features, self.settings.standardize)
        model = LogisticRegression(C=self.settings.logreg_c, max_iter=MAX_ITER, random_state=self.settings.seed)
        model.fit((features - mean) / scale, labels)
        coef, intercept = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
        if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: softmax of (-z/2, z/2)
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        self.classes_ = model.classes_
        self.n_features_in_ = features.shape[1]
        self.mean_, self.scale_ = mean, scale
        self.coef_, self.intercept_ = coef, intercept
        self.n_iter_ = int(np.max(model.n_iter_))
        self.history_: dict[str, list[float]] = {}
        if progress:
            progress(1, 1)  # one solver run
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        standardised = (self._check_features(X) - self.mean_) / self.scale_
        return softmax(standardised @ self.coef_.T + self.intercept_)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        arrays = {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_}
        return {"n_features": self.n_features_in_, "n_iter": self.n_iter_}, arrays

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mean_, self.scale_ = arrays["mean"].astype(np.float32), arrays["scale"].astype(np.float32)
        self.coef_, self.intercept_ = arrays["coef"].astype(np.float32), arrays["intercept"].astype(np.float32)
        self.n_features_in_ = int(facts["n_features"])
        self.n_iter_ = int(facts.get("n_iter", 0))
        self.history_ = {}
        self.classes_ = np.asarray(facts["classes"])
