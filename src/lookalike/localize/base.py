"""The localisation stage's segmenter protocol and its registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from lookalike._registry import Registry
from lookalike.settings import LocalizeSettings


@dataclass(frozen=True, eq=False)
class SaliencyMap:
    """A segmenter's answer for one image.

    `saliency` is (height, width) float32 in [0, 1] at the image's resolution, min-max normalised;
    `peak` is the model's highest raw output before normalisation: close to 0 means "nothing stands
    out", which normalisation alone would hide.
    """

    saliency: np.ndarray
    peak: float


@runtime_checkable
class Segmenter(Protocol):
    """Turns an RGB image into a soft saliency map of the most salient object."""

    name: str

    def predict(self, image: Image.Image) -> SaliencyMap:
        """The saliency of `image`, resized back to `image.size`."""
        ...

    def fingerprint(self) -> str:
        """Identifies the weights and preprocessing: masks with different fingerprints may differ."""
        ...


SEGMENTERS: Registry[Segmenter] = Registry("segmenter")
register_segmenter = SEGMENTERS.register


def create_segmenter(settings: LocalizeSettings, *, cache_dir: str | Path | None = None) -> Segmenter:
    """Build the segmenter named by `settings.model`; its model loads on first use and is kept.

    `cache_dir` is where derived models (int8 quantised) are written; None = the user cache
    (`$LOOKALIKE_CACHE_DIR`, else `$XDG_CACHE_HOME/lookalike`, else `~/.cache/lookalike`).
    """
    settings = resolve_settings(settings)
    return SEGMENTERS.get(settings.model)(settings, cache_dir=cache_dir)


def resolve_settings(settings: LocalizeSettings, like: LocalizeSettings | None = None) -> LocalizeSettings:
    """`settings` with an "auto" precision made concrete: `like`'s (the settings an index was built
    with) when given, else bf16 where OpenVINO computes bf16 natively on this CPU (AMX or
    AVX512-BF16) and the runtime allows it, fp32 elsewhere."""
    if settings.precision != "auto":
        return settings
    precision = like.precision if like is not None else _machine_precision(settings)
    return dataclasses.replace(settings, precision=precision)


def _machine_precision(settings: LocalizeSettings) -> str:
    if settings.quantize or settings.runtime == "onnx":
        return "fp32"
    from lookalike.localize.openvino import cpu_computes_bf16

    return "bf16" if cpu_computes_bf16() else "fp32"


def available_segmenters() -> list[str]:
    return SEGMENTERS.names()
