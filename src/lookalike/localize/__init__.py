"""Salient-object localisation: segmentation (ONNX models), main object, matting, white cut-out, silhouettes.

`Localizer(settings).localize(image)` is the entry point. Importing this package does not import
onnxruntime, OpenVINO or pymatting: the segmenter's runtime and the matting code load on first use.
"""

from lookalike.localize import u2net as _u2net  # noqa: F401  (registers the built-in segmenters)
from lookalike.localize.base import (
    SaliencyMap,
    Segmenter,
    available_segmenters,
    create_segmenter,
    register_segmenter,
    resolve_settings,
)
from lookalike.localize.localizer import Localization, Localizer
from lookalike.localize.mask import select_main_object
from lookalike.localize.silhouette import pack_silhouette, silhouette_iou, unpack_silhouette

__all__ = [
    "Localization",
    "Localizer",
    "SaliencyMap",
    "Segmenter",
    "available_segmenters",
    "create_segmenter",
    "pack_silhouette",
    "register_segmenter",
    "resolve_settings",
    "select_main_object",
    "silhouette_iou",
    "unpack_silhouette",
]
