"""One suite run over every registered classifier: the estimator contract, probabilities, saving
and input checks, on a small separable problem. A new classifier kind gets these tests for free.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lookalike._estimator import check_is_fitted
from lookalike.classify import CLASSIFIERS, Classifier, create_classifier, load_classifier, save_classifier
from lookalike.errors import IndexMismatchError, NotFittedError, UnknownNameError
from lookalike.settings import ClassifySettings

KINDS = CLASSIFIERS.names()
FEATURES = 16
CATEGORIES = np.array(["Banana", "Apple", "Milk"])  # not in sorted order: classes_ must be sorted
# small and quick for the mlp; logreg reads only logreg_c, standardize and seed
SETTINGS = ClassifySettings(
    hidden=(32,), max_epochs=60, learning_rate=0.05, batch_size=16, plateau_patience=5, early_stopping_patience=10
)


def blobs(seed: int, per_class: int = 30, labels: np.ndarray = CATEGORIES) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian clusters, one per label, the same centres for every seed."""
    centres = 3.0 * np.random.default_rng(7).standard_normal((len(labels), FEATURES))
    rng = np.random.default_rng(seed)
    codes = np.tile(np.arange(len(labels)), per_class)  # interleaved: every class in any slice
    return (centres[codes] + rng.standard_normal((len(codes), FEATURES))).astype(np.float32), labels[codes]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return blobs(0)


@pytest.fixture(scope="module", params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def fitted(kind: str, data: tuple[np.ndarray, np.ndarray]) -> Classifier:
    """Fitted once per kind for the module: tests must not change it."""
    return create_classifier(kind, SETTINGS).fit(*data)


def test_init_only_stores_the_settings(kind: str) -> None:
    classifier = create_classifier(kind, SETTINGS)
    assert classifier.kind == kind and classifier.settings is SETTINGS
    assert [name for name in vars(classifier) if not name.startswith("_")] == ["settings"]
    assert not [name for name in vars(classifier) if name.endswith("_")]


def test_using_it_before_fit_raises_not_fitted(kind: str, tmp_path: Path) -> None:
    classifier = create_classifier(kind, SETTINGS)
    X = np.zeros((2, FEATURES), np.float32)
    fix = r"call fit\(X, y\) first, or load a trained one with load_classifier\(folder\)"
    with pytest.raises(NotFittedError, match=f"^this {kind} classifier is not fitted yet: {fix}$"):
        classifier.predict_proba(X)
    with pytest.raises(NotFittedError, match=f"this {kind} classifier is not fitted yet"):
        classifier.predict(X)
    with pytest.raises(NotFittedError, match=rf"^cannot save an unfitted {kind} classifier: call fit\(X, y\) first$"):
        save_classifier(classifier, tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(NotFittedError, match=f"this {kind} classifier is not fitted yet"):
        check_is_fitted(classifier)


def test_fit_returns_self_and_learns_the_classes(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    classifier = create_classifier(kind, SETTINGS)
    assert classifier.fit(*data) is classifier
    assert isinstance(classifier, Classifier)  # the protocol declares classes_: only a fitted one is a Classifier
    check_is_fitted(classifier)
    check_is_fitted(classifier, ["classes_", "n_features_in_"])
    assert classifier.classes_.tolist() == ["Apple", "Banana", "Milk"]
    assert classifier.n_features_in_ == FEATURES  # type: ignore[attr-defined]
    assert classifier.settings is SETTINGS


def test_probabilities_and_predictions(fitted: Classifier) -> None:
    X, _ = blobs(1, per_class=10)
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 3) and proba.dtype == np.float32
    assert np.isfinite(proba).all() and proba.min() >= 0.0
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    predicted = fitted.predict(X)
    assert predicted.shape == (len(X),)
    np.testing.assert_array_equal(predicted, fitted.classes_[np.argmax(proba, axis=1)])
    # a row alone, the same answer (to float32 rounding: BLAS sums a batch and a single row in other orders)
    np.testing.assert_allclose(fitted.predict_proba(X[3:4])[0], proba[3], rtol=1e-5, atol=1e-7)


def test_a_separable_problem_is_learned(fitted: Classifier) -> None:
    X, y = blobs(2, per_class=20)
    accuracy = float(np.mean(fitted.predict(X) == y))
    assert accuracy >= 0.95, f"accuracy {accuracy:.2f} on separable held-out data (chance: 0.33)"


def test_save_load_round_trip(fitted: Classifier, tmp_path: Path) -> None:
    save_classifier(fitted, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["classifier.json", "weights.npz"]
    loaded = load_classifier(tmp_path / "model")
    assert type(loaded) is type(fitted) and loaded.kind == fitted.kind and loaded.settings == fitted.settings
    np.testing.assert_array_equal(loaded.classes_, fitted.classes_)
    X, _ = blobs(3, per_class=5)
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


def test_integer_labels_stay_integers(kind: str, tmp_path: Path) -> None:
    X, y = blobs(4, labels=np.array([30, 10, 20]))
    classifier = create_classifier(kind, replace(SETTINGS, max_epochs=5)).fit(X, y)
    assert classifier.classes_.tolist() == [10, 20, 30]
    loaded = load_classifier(save_classifier(classifier, tmp_path / "model"))
    assert loaded.classes_.tolist() == [10, 20, 30] and np.issubdtype(loaded.classes_.dtype, np.integer)
    assert set(loaded.predict(X).tolist()) <= {10, 20, 30}


def test_wrong_input_width_says_expected_and_got(fitted: Classifier) -> None:
    with pytest.raises(IndexMismatchError, match=rf"expected vectors of {FEATURES} features .*got shape \(2, 15\)"):
        fitted.predict_proba(np.zeros((2, FEATURES - 1), np.float32))


def test_unknown_kind_lists_every_registered_one() -> None:
    with pytest.raises(UnknownNameError, match="Unknown classifier kind 'svm'; expected one of: ") as raised:
        create_classifier("svm")
    assert all(kind in str(raised.value) for kind in KINDS)
