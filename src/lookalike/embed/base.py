"""The embedding stage's protocol, its registry and the preprocessing every backbone shares."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from lookalike._registry import Registry
from lookalike.settings import EmbedSettings


@dataclass(frozen=True)
class ModelSpec:
    """What a backbone expects: its input normalisation and the width of its feature map."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int


@runtime_checkable
class Embedder(Protocol):
    """Turns RGB images into L2-normalised float32 vectors of length `dim`."""

    name: str
    dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(len(images), dim) float32, each row of unit length."""
        ...

    def fingerprint(self) -> str:
        """Identifies the weights and preprocessing: vectors with different fingerprints do not mix."""
        ...


EMBEDDERS: Registry[Embedder] = Registry("embedder")
register_embedder = EMBEDDERS.register


def create_embedder(settings: EmbedSettings) -> Embedder:
    """Build the embedder named by `settings.model` (weights load on first use)."""
    family = settings.model if settings.model in EMBEDDERS else settings.model.partition(":")[0]
    return EMBEDDERS.get(family)(settings)


def available_embedders() -> list[str]:
    return EMBEDDERS.names()


def preprocess(images: Sequence[Image.Image], size: int, spec: ModelSpec, *, grayscale: bool) -> np.ndarray:
    """Resize to size x size, optionally grey expanded to 3 channels, normalise: (n, 3, size, size)."""
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    for row, image in enumerate(images):
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        if grayscale:
            resized = resized.convert("L").convert("RGB")
        pixels = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
        batch[row] = (pixels - mean) / std
    return batch


def l2_normalize(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def gem_numpy(feature_map: np.ndarray, p: float, eps: float = 1e-6) -> np.ndarray:
    """Generalised-mean pooling of (n, c, h, w) maps: p = 1 is average, large p tends to max."""
    clipped = np.maximum(feature_map, eps)
    return np.mean(clipped**p, axis=(2, 3)) ** (1.0 / p)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def batched(items: Sequence[Image.Image], size: int) -> list[Sequence[Image.Image]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def settings_fingerprint(name: str, weights_digest: str, settings: EmbedSettings) -> str:
    return (
        f"{name}|weights={weights_digest[:16]}|size={settings.input_size}"
        f"|gem={settings.gem_p:g}|grey={int(settings.grayscale)}"
    )


EmbedderFactory = Callable[[EmbedSettings], Embedder]
