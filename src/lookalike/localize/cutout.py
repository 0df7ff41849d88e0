"""The cut-out: background replaced by white, cropped around the object, padded to a square."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.localize.mask import Box

WHITE = 255


def composite_on_white(foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """alpha x foreground + (1 - alpha) x white, as uint8 RGB."""
    weight = np.asarray(alpha, dtype=np.float32)[..., None]
    blended = foreground.astype(np.float32) * weight + WHITE * (1.0 - weight)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def square_box(box: Box, margin: float) -> Box:
    """A square around `box`, centred on it, with `margin` x its longer side added on every side.

    The square may reach outside the image; `crop_square` fills that part.
    """
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    side = max(round(side * (1.0 + 2.0 * margin)), 1)
    x0 = round((left + right - side) / 2.0)
    y0 = round((top + bottom - side) / 2.0)
    return x0, y0, x0 + side, y0 + side


def crop_square(array: np.ndarray, square: Box, fill: int | bool) -> np.ndarray:
    """The part of `array` (h, w[, c]) inside `square`, with `fill` wherever the square leaves the image."""
    x0, y0, x1, y1 = square
    out = np.full((y1 - y0, x1 - x0, *array.shape[2:]), fill, dtype=array.dtype)
    height, width = array.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def extract(
    foreground: np.ndarray, alpha: np.ndarray, mask: np.ndarray, box: Box, margin: float
) -> tuple[Image.Image, np.ndarray]:
    """The white-background square cut-out around `box` and the mask in the same frame."""
    square = square_box(box, margin)
    pixels = crop_square(composite_on_white(foreground, alpha), square, WHITE)
    return Image.fromarray(pixels), crop_square(np.asarray(mask, dtype=bool), square, False)
