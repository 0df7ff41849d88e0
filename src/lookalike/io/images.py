"""Decode images into RGB, whatever they arrive as, or fail with an `ImageError` naming the file."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.errors import ImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000: more is a decompression bomb for a product photo

ImageSource = str | Path | bytes | Image.Image


def load_image(source: ImageSource, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return `source` as an 8-bit RGB image with its EXIF orientation applied.

    `source` is a path, the encoded bytes of a file, or a PIL image. `name` is used in error
    messages for bytes (an upload's file name, say). Raises `ImageError` for empty, unreadable,
    truncated, non-image and oversized files.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = _read_bytes(source, label)
    return decode_image(data, label, max_pixels=max_pixels)


def decode_image(data: bytes, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    if not data:
        raise ImageError(label, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image, label, max_pixels)
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(label, f"image too large, refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(label, "not an image Pillow can read (expected JPEG, PNG, WebP, BMP or TIFF)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(label, f"corrupt or truncated image data ({exc})") from None
    try:
        return to_rgb(ImageOps.exif_transpose(image))
    except (OSError, ValueError) as exc:
        raise ImageError(label, f"could not convert the image to RGB ({exc})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes, the identity of its content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(source: str | Path | bytes | BinaryIO, label: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if not path.exists():
        raise ImageError(label, "no such file")
    if path.is_dir():
        raise ImageError(label, "is a folder, not an image file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(label, f"cannot read the file ({exc.strerror or exc})") from None


def _check_size(image: Image.Image, label: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(label, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            label,
            f"image of {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}; "
            "refused as a possible decompression bomb (resize it, or raise max_pixels)",
        )


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    if image.mode == "F":
        top = max(float(values.max(initial=0)), 1.0) if values.max(initial=0) > 1.0 else 1.0
    scaled = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")
