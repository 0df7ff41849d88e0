"""Pictures the server makes: PNGs of masks and silhouettes, silhouette overlays, JPEG thumbnails."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.io.images import load_image
from lookalike.localize.silhouette import unpack_silhouette

# Overlay colours (RGB), as in the paper's Figure 4: the query, the catalogue image, and both.
QUERY_COLOUR = (230, 159, 0)  # orange
ITEM_COLOUR = (86, 180, 233)  # sky blue
BOTH_COLOUR = (60, 40, 120)  # dark violet
BACKGROUND = (255, 255, 255)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def silhouette_image(packed: bytes, scale: int = 1) -> Image.Image:
    """A packed silhouette as an L image: 255 = object, 0 = background, each pixel `scale` x `scale`."""
    mask = unpack_silhouette(packed)
    return _scaled(Image.fromarray(mask.astype(np.uint8) * 255), scale)


def overlay_image(query: bytes, item: bytes, scale: int = 1) -> Image.Image:
    """The two silhouettes over each other: query only, catalogue image only, and overlap in 3 colours."""
    a, b = unpack_silhouette(query), unpack_silhouette(item)
    if a.shape != b.shape:
        raise ValueError(f"silhouettes differ in size: {a.shape} and {b.shape}")
    pixels = np.empty((*a.shape, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND
    pixels[a & ~b] = QUERY_COLOUR
    pixels[b & ~a] = ITEM_COLOUR
    pixels[a & b] = BOTH_COLOUR
    return _scaled(Image.fromarray(pixels), scale)


def ensure_thumbnail(source: Path, target: Path, size: int) -> Path:
    """`target`, a JPEG at most `size` pixels a side of the image at `source`, made unless it exists.

    Written to a temporary file and renamed, so concurrent requests never see half a file.
    """
    if target.is_file():
        return target
    image = load_image(source)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            image.save(out, format="JPEG", quality=85, optimize=True)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _scaled(image: Image.Image, scale: int) -> Image.Image:
    if scale == 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
