"""One suite run over every registered embedding transform (whitening, trained heads): the estimator
contract, saving, fingerprints and input checks. A new transform kind gets these tests for free.

The data are small but structured: 20 products as points in 64-d, 6 noisy images of each.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lookalike._estimator import check_is_fitted
from lookalike.embed.base import l2_normalize
from lookalike.embed.head import leave_one_out_map
from lookalike.embed.transform import (
    TRANSFORMS,
    VectorTransform,
    available_transforms,
    create_transform,
    load_transform,
    save_transform,
)
from lookalike.errors import IndexMismatchError, NotFittedError, UnknownNameError
from lookalike.settings import HeadSettings

KINDS = available_transforms()  # loads the built-in kinds into TRANSFORMS
FEATURES, DIM = 64, 16
# small and quick for the trained heads; the whitenings read only dim and shrinkage
SETTINGS = HeadSettings(
    dim=DIM, hidden=32, max_epochs=4, early_stopping_patience=2, products_per_batch=8, images_per_product=4
)


def products(seed: int, n_products: int = 20, per_product: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of images: each product's centre plus noise; labels are product ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_products, FEATURES))
    labels = np.repeat([f"product-{n:02d}" for n in range(n_products)], per_product)
    codes = np.repeat(np.arange(n_products), per_product)
    return l2_normalize(centres[codes] + 0.5 * rng.standard_normal((len(codes), FEATURES))), labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return products(0)


@pytest.fixture(scope="module", params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def fitted(kind: str, data: tuple[np.ndarray, np.ndarray]) -> VectorTransform:
    """Fitted once per kind for the module: tests must not change it."""
    return create_transform(kind, replace(SETTINGS, kind=kind)).fit(*data)


def test_init_only_stores_the_settings(kind: str) -> None:
    settings = replace(SETTINGS, kind=kind)
    transform = create_transform(kind, settings)
    assert isinstance(transform, VectorTransform) and transform.kind == kind
    assert transform.settings is settings
    assert [name for name in vars(transform) if not name.startswith("_")] == ["settings"]
    assert not [name for name in vars(transform) if name.endswith("_")]


def test_using_it_before_fit_raises_not_fitted(kind: str, tmp_path: Path) -> None:
    transform = create_transform(kind, replace(SETTINGS, kind=kind))
    X = np.zeros((2, FEATURES), np.float32)
    fix = r"call fit\(X, y\) first, or load a trained one with load_transform\(folder\)"
    with pytest.raises(NotFittedError, match=f"^this {kind} transform is not fitted yet: {fix}$"):
        transform.transform(X)
    with pytest.raises(NotFittedError, match=f"this {kind} transform is not fitted yet"):
        transform.fingerprint()
    with pytest.raises(NotFittedError, match=rf"^cannot save an unfitted {kind} transform: call fit\(X, y\) first$"):
        save_transform(transform, tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(NotFittedError, match=f"this {kind} transform is not fitted yet"):
        check_is_fitted(transform)


def test_fit_returns_self_and_sets_the_learned_attributes(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    settings = replace(SETTINGS, kind=kind)
    transform = create_transform(kind, settings)
    assert transform.fit(*data) is transform
    check_is_fitted(transform)
    check_is_fitted(transform, ["dim_", "n_features_in_"])
    assert transform.dim_ == DIM and transform.n_features_in_ == FEATURES  # type: ignore[attr-defined]
    assert transform.settings is settings


def test_output_is_unit_float32_rows_that_keep_products_apart(
    fitted: VectorTransform, data: tuple[np.ndarray, np.ndarray]
) -> None:
    unseen_x, unseen_y = products(1)
    out = fitted.transform(unseen_x)
    assert out.dtype == np.float32 and out.shape == (len(unseen_x), fitted.dim_)  # type: ignore[attr-defined]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert leave_one_out_map(fitted.transform(data[0]), data[1]) > 0.8
    assert leave_one_out_map(out, unseen_y) > 0.5  # new products (chance: about 0.06)


def test_rows_do_not_depend_on_the_batch(fitted: VectorTransform, data: tuple[np.ndarray, np.ndarray]) -> None:
    X = data[0][:5]
    np.testing.assert_allclose(fitted.transform(X)[2], fitted.transform(X[2:3])[0], atol=1e-6)
    np.testing.assert_array_equal(fitted.transform(X), fitted.transform(X))


def test_save_load_round_trip(fitted: VectorTransform, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    save_transform(fitted, tmp_path / "head")
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["transform.json", "weights.npz"]
    loaded = load_transform(tmp_path / "head")
    assert type(loaded) is type(fitted) and loaded.kind == fitted.kind and loaded.settings == fitted.settings
    assert loaded.fingerprint() == fitted.fingerprint()
    np.testing.assert_array_equal(loaded.transform(data[0]), fitted.transform(data[0]))
    with np.load(tmp_path / "head" / "weights.npz") as saved:
        arrays = {name: saved[name] * 1.01 for name in saved.files}
    np.savez(tmp_path / "head" / "weights.npz", **arrays)
    with pytest.raises(IndexMismatchError, match="do not belong together"):
        load_transform(tmp_path / "head")


def test_fingerprint_follows_the_learned_arrays(fitted: VectorTransform, kind: str) -> None:
    fingerprint = fitted.fingerprint()
    assert isinstance(fingerprint, str) and fingerprint and fitted.fingerprint() == fingerprint
    other = create_transform(kind, replace(SETTINGS, kind=kind)).fit(*products(2))
    assert other.fingerprint() != fingerprint


def test_fitting_again_forgets_the_first_fit(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    settings = replace(SETTINGS, kind=kind)
    refitted = create_transform(kind, settings).fit(*data).fit(*products(2))
    assert refitted.fingerprint() == create_transform(kind, settings).fit(*products(2)).fingerprint()


def test_wrong_input_width_says_expected_and_got(fitted: VectorTransform) -> None:
    with pytest.raises(IndexMismatchError, match=rf"expected vectors of {FEATURES} features .*got shape \(2, 63\)"):
        fitted.transform(np.zeros((2, FEATURES - 1), np.float32))


def test_unknown_kind_lists_every_registered_one() -> None:
    with pytest.raises(UnknownNameError, match="Unknown embedding transform kind 'lda'; expected one of: ") as raised:
        create_transform("lda")
    assert all(kind in str(raised.value) for kind in TRANSFORMS.names())
