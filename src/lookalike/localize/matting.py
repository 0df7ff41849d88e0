"""Edge refinement: a trimap around the mask's edge, alpha matting and foreground colours (pymatting).

Matting runs on the image downscaled to `matting_size` pixels a side at most: the unknown band is
a few pixels wide there, and the solve costs about the band's area. Outside the band the full
resolution mask is kept exactly.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import cv2
import numpy as np

from lookalike.errors import MissingDependency

UNKNOWN = 128


def make_trimap(mask: np.ndarray, band_fraction: float) -> np.ndarray:
    """uint8 trimap: 255 sure object, 0 sure background, 128 unknown within the band around the edge.

    The band's half-width is `band_fraction` x sqrt(object area) pixels, at least one pixel, so it
    scales with the object rather than with the image.
    """
    mask = np.asarray(mask, dtype=bool)
    band = max(band_fraction * np.sqrt(mask.sum()), 1.0)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    trimap = np.where(mask, 255, 0).astype(np.uint8)
    trimap[(mask & (inside <= band)) | (~mask & (outside <= band))] = UNKNOWN
    return trimap


def refine(image: np.ndarray, mask: np.ndarray, band_fraction: float, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha (h, w) float32 in [0, 1] and foreground colours (h, w, 3) uint8 for an RGB image and its mask."""
    alpha_lib, foreground_lib = _require_pymatting()
    height, width = mask.shape
    scale = min(1.0, max_size / max(height, width))
    small = (max(round(width * scale), 1), max(round(height * scale), 1))
    small_image = cv2.resize(image, small, interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    small_mask = cv2.resize(mask.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.5
    small_trimap = make_trimap(small_mask, band_fraction)
    if not ((small_trimap == 0).any() and (small_trimap == 255).any()):
        return mask.astype(np.float32), image  # nothing sure on one side: no matting problem to solve
    small_alpha = alpha_lib.estimate_alpha_cf(small_image, small_trimap.astype(np.float64) / 255.0)
    small_alpha = np.clip(small_alpha, 0.0, 1.0)
    small_foreground = foreground_lib.estimate_foreground_ml(small_image, small_alpha)
    return _upsample(image, make_trimap(mask, band_fraction), small_alpha, small_foreground)


def _upsample(
    image: np.ndarray, trimap: np.ndarray, small_alpha: np.ndarray, small_foreground: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    size = (image.shape[1], image.shape[0])
    alpha = cv2.resize(small_alpha.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    alpha = np.where(trimap == UNKNOWN, np.clip(alpha, 0.0, 1.0), trimap / 255.0).astype(np.float32)
    foreground = cv2.resize((np.clip(small_foreground, 0.0, 1.0) * 255.0).astype(np.float32), size)
    band = trimap == UNKNOWN
    refined = image.copy()
    refined[band] = np.clip(foreground[band] + 0.5, 0, 255).astype(np.uint8)
    return alpha, refined


def _require_pymatting() -> tuple[Any, Any]:
    if importlib.util.find_spec("pymatting") is None:
        raise MissingDependency("pymatting", "alpha matting of the mask's edges (localize.matting)")
    from pymatting import alpha, foreground

    return alpha, foreground
