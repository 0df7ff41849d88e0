"""The shared fitted check: what counts as fitted, and what its message says."""

from __future__ import annotations

from typing import Any

import pytest

from lookalike._estimator import check_is_fitted, estimator_name
from lookalike.errors import LookalikeError, NotFittedError


class Scaler:
    """A toy estimator: `fit` learns `scale_` and `n_features_in_`."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor
        self._cache: dict[str, Any] = {}

    def fit(self, X: list[float], y: list[float] | None = None) -> Scaler:
        self.scale_ = self.factor / max(X)
        self.n_features_in_ = 1
        return self


class Tagged(Scaler):
    kind = "toy"
    _estimator_type = "scaler"


class Tuner:
    def fit(self, maps: list[float], labels: list[str], *, network: Any, seed: int = 0) -> Tuner:
        self.tuning_ = network
        return self


def test_unfitted_names_the_class_and_how_to_fix_it() -> None:
    with pytest.raises(NotFittedError, match=r"^this Scaler is not fitted yet: call fit\(X, y\) first$") as raised:
        check_is_fitted(Scaler(), "scale_")
    assert isinstance(raised.value, LookalikeError)
    hint = "load a trained one with load_scaler(folder)"
    with pytest.raises(NotFittedError, match=r"call fit\(X, y\) first, or load a trained one with load_scaler"):
        check_is_fitted(Scaler(), ["scale_"], hint=hint)
    with pytest.raises(NotFittedError, match=r"^cannot save an unfitted Scaler: call fit\(X, y\) first$"):
        check_is_fitted(Scaler(), "scale_", action="save")
    with pytest.raises(NotFittedError, match=r"^this Tuner is not fitted yet: call fit\(maps, labels, \.\.\.\) first"):
        check_is_fitted(Tuner(), "tuning_")


def test_kind_and_estimator_type_name_it() -> None:
    assert estimator_name(Tagged()) == "toy scaler" and estimator_name(Scaler()) == "Scaler"
    with pytest.raises(NotFittedError, match="^this toy scaler is not fitted yet"):
        check_is_fitted(Tagged())


def test_the_given_attributes_must_all_be_there() -> None:
    scaler = Scaler().fit([2.0, 4.0])
    check_is_fitted(scaler, "scale_")
    check_is_fitted(scaler, ("scale_", "n_features_in_"))
    with pytest.raises(NotFittedError, match="this Scaler is not fitted yet"):
        check_is_fitted(scaler, ["scale_", "classes_"])


def test_without_attributes_any_trailing_underscore_counts() -> None:
    scaler = Scaler()
    with pytest.raises(NotFittedError):
        check_is_fitted(scaler)  # `factor` and `_cache` are settings and state, not learned
    setattr(scaler, "__secret_", 1)  # a dunder-prefixed name does not count either
    with pytest.raises(NotFittedError):
        check_is_fitted(scaler)
    check_is_fitted(scaler.fit([1.0]))


def test_programming_errors_are_not_not_fitted() -> None:
    with pytest.raises(TypeError, match="expects an estimator instance, got the class Scaler"):
        check_is_fitted(Scaler)
    with pytest.raises(TypeError, match="with a fit method, got str"):
        check_is_fitted("scale_")
    with pytest.raises(ValueError, match=r"fitted attributes end in '_'.*\['factor'\]"):
        check_is_fitted(Scaler(), ["scale_", "factor"])
