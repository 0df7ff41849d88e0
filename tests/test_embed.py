"""Embedders: registry, GeM, grey "shape only" input, ONNX backbones from a local file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.embed import available_embedders, create_embedder
from lookalike.embed.base import ModelSpec, gem_numpy, preprocess
from lookalike.errors import ModelNotFoundError, UnknownNameError
from lookalike.settings import EmbedSettings


def test_registry_lists_valid_names() -> None:
    assert {"efficientnet-lite0", "efficientnet-lite2", "onnx", "resnet50", "timm"} <= set(available_embedders())
    with pytest.raises(UnknownNameError, match="Unknown embedder 'vgg'; expected one of: efficientnet-lite0"):
        create_embedder(EmbedSettings(model="vgg"))


def test_gem_interpolates_between_average_and_max() -> None:
    fmap = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(gem_numpy(fmap, 1.0), fmap.mean(axis=(2, 3)), rtol=1e-5)
    high = gem_numpy(fmap, 60.0)
    assert np.all(high <= fmap.max(axis=(2, 3)) + 1e-6) and np.all(high > gem_numpy(fmap, 3.0))


def test_grayscale_preprocessing_drops_colour() -> None:
    spec = ModelSpec((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 8)
    red, green = Image.new("RGB", (20, 20), (200, 0, 0)), Image.new("RGB", (20, 20), (0, 102, 0))
    grey = preprocess([red, green], 16, spec, grayscale=True)
    assert np.allclose(grey[:, 0], grey[:, 1]) and np.allclose(grey[0], grey[1], atol=0.02)
    colour = preprocess([red], 16, spec, grayscale=False)
    assert colour.shape == (1, 3, 16, 16) and colour[0, 0, 0, 0] > colour[0, 1, 0, 0]


def test_lite2_and_grey_settings_change_the_fingerprint() -> None:
    base = create_embedder(EmbedSettings())
    assert base.fingerprint() != create_embedder(EmbedSettings(grayscale=True)).fingerprint()
    assert create_embedder(EmbedSettings(model="efficientnet-lite2")).dim == 1280


def test_missing_local_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="resnet50 needs a local weights file"):
        create_embedder(EmbedSettings(model="resnet50")).fingerprint()
    with pytest.raises(ModelNotFoundError, match=r"nothing\.onnx: no weights file"):
        create_embedder(EmbedSettings(model="onnx", weights=str(tmp_path / "nothing.onnx")))


def test_onnx_backbone_from_a_local_path(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, stride=2), torch.nn.ReLU()).eval()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        net, (torch.zeros(1, 3, 32, 32),), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False
    )
    embedder = create_embedder(EmbedSettings(model="onnx", weights=str(path), input_size=32, batch_size=2))
    images = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue", "white")]
    vectors = embedder.embed(images)
    assert vectors.shape == (3, 6) and embedder.dim == 6
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        pixels = torch.from_numpy(preprocess(images[:1], 32, embedder.spec, grayscale=False))
        expected = net(pixels).clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3).numpy()
    np.testing.assert_allclose(vectors[0], expected[0] / np.linalg.norm(expected[0]), atol=1e-4)
    assert embedder.fingerprint().startswith("onnx:tiny.onnx|weights=")
