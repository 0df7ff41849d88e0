"""Decode images into RGB, whatever they arrive as, or fail with an `ImageError` naming the file.

Memory stays bounded whatever the photo: the header is checked against `max_pixels` before any pixel
is decoded, files are decoded from disk (never read whole into memory first), JPEGs are decoded
straight at a reduced scale (Pillow's draft mode) and every decoded image is brought down to at most
`max_side` pixels a side before it is converted or rotated. The engine works at 224-512 pixels, so
nothing downstream needs more.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import io
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from lookalike.errors import ImageError
from lookalike.io.uris import is_uri, read_uri

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000: more is a decompression bomb for a product photo
DEFAULT_MAX_SIDE = 2048  # decoded images are at most this many pixels a side (embedders: 224-320, SIFT: 512)
MIN_SIDE = 8  # smaller images (tracking pixels, placeholders, icons) are refused: too small to describe

_CONVERT = "convert to JPEG or PNG"
# Files named like images that lookalike does not index when it meets them in a catalogue folder, and why.
# Given explicitly (`lookalike add FILE`, a query, an upload) they are still tried by the decoder.
UNSUPPORTED_EXTENSIONS: dict[str, str] = {
    ".gif": f"GIF files are not indexed (often animated or a few colours): {_CONVERT}",
    ".svg": "SVG is a vector format, not a photo: render it to PNG first",
    ".svgz": "SVG is a vector format, not a photo: render it to PNG first",
    ".heic": f"HEIC/HEIF photos (iPhone) need a decoder lookalike does not ship: {_CONVERT}",
    ".heif": f"HEIC/HEIF photos (iPhone) need a decoder lookalike does not ship: {_CONVERT}",
    ".avif": f"AVIF files are not indexed: {_CONVERT}",
    ".jxl": f"JPEG XL files are not indexed: {_CONVERT}",
    ".jp2": f"JPEG 2000 files are not indexed: {_CONVERT}",
    ".j2k": f"JPEG 2000 files are not indexed: {_CONVERT}",
    ".jpx": f"JPEG 2000 files are not indexed: {_CONVERT}",
    ".jpf": f"JPEG 2000 files are not indexed: {_CONVERT}",
    ".ico": f"icons are not indexed: {_CONVERT}",
    ".cur": f"cursors are not indexed: {_CONVERT}",
    ".psd": f"Photoshop files are not indexed: export them ({_CONVERT})",
    ".tga": f"TGA files are not indexed: {_CONVERT}",
    ".dng": f"camera RAW files are not indexed: {_CONVERT}",
    ".cr2": f"camera RAW files are not indexed: {_CONVERT}",
    ".cr3": f"camera RAW files are not indexed: {_CONVERT}",
    ".nef": f"camera RAW files are not indexed: {_CONVERT}",
    ".arw": f"camera RAW files are not indexed: {_CONVERT}",
    ".orf": f"camera RAW files are not indexed: {_CONVERT}",
    ".rw2": f"camera RAW files are not indexed: {_CONVERT}",
    ".raf": f"camera RAW files are not indexed: {_CONVERT}",
}

ImageSource = str | Path | bytes | Image.Image

_READABLE = "expected JPEG, PNG, WebP, BMP or TIFF"
_ORIENTATION = 0x0112
_TRANSPOSE = {  # EXIF orientation -> the transposition that displays the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes that resize well as they are; the others (palette, 1-bit, 16-bit...) are converted to RGB first.
_RESIZABLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"})


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> Image.Image:
    """Return `source` as an 8-bit RGB image with its EXIF orientation applied, at most `max_side`
    pixels a side (None: full size).

    `source` is a path, a URI string (read through fsspec: lookalike.io.uris), the encoded bytes of a
    file, or a PIL image. `name` is used in error
    messages instead of the path (an upload's file name, say). Raises `ImageError` for missing,
    empty, unreadable, truncated, non-image, oversized (more than `max_pixels`, checked from the
    header before decoding) and tiny (under `MIN_SIDE` pixels a side) files.
    """
    if isinstance(source, Image.Image):
        label = name or "<image>"
        _check_size(source.size, label, max_pixels=None)
        return to_rgb(_fit(source, max_side))
    if isinstance(source, bytes):
        return decode_image(source, name or "<bytes>", max_pixels=max_pixels, max_side=max_side)
    if isinstance(source, str) and is_uri(source):  # s3://, https://, file://...: read through fsspec
        return decode_image(read_uri(source), name or source, max_pixels=max_pixels, max_side=max_side)
    path = Path(source)
    label = name or str(source)
    problem = path_problem(path)
    if problem is not None:
        raise ImageError(label, problem)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after decoding
    except OSError as exc:
        raise ImageError(label, f"cannot read the file ({exc.strerror or exc})") from None
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageError(label, "the file is empty (0 bytes)")
        return _decode(handle, label, path.suffix.lower(), max_pixels, max_side)


def decode_image(
    data: bytes, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = DEFAULT_MAX_SIDE
) -> Image.Image:
    """`load_image` for the encoded bytes of a file; `label` names it in errors."""
    if not data:
        raise ImageError(label, "the file is empty (0 bytes)")
    return _decode(io.BytesIO(data), label, Path(label).suffix.lower(), max_pixels, max_side)


def path_problem(path: Path) -> str | None:
    """Why `path` cannot be opened as an image file (missing, a broken or looping symbolic link, a
    folder, not a regular file), or None when it can be tried."""
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link leads back to itself); not followed"
        if path.is_symlink():
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        if exc.errno == errno.ENOENT:
            return "no such file"
        return f"cannot read the file ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, socket or device), expected an image file"
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
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


def hash_and_load(source: str | Path, *, unless: str | None = None) -> tuple[str, Image.Image | None]:
    """The content hash of a file or URI, and its image, not decoded (None) when the hash is `unless`
    (the one indexed: unchanged). A URI is read once, for both; a local file is hashed, then decoded
    from disk. Raises `ImageError` naming the file or URI and the reason."""
    if isinstance(source, str) and is_uri(source):
        data = read_uri(source)
        digest = bytes_hash(data)
        return digest, None if digest == unless else decode_image(data, source)
    try:
        digest = file_hash(source)
    except OSError as exc:
        raise ImageError(str(source), f"cannot read the file ({exc.strerror or exc})") from None
    return digest, None if digest == unless else load_image(source)


def _decode(stream: BinaryIO, label: str, extension: str, max_pixels: int, max_side: int | None) -> Image.Image:
    """Decode `stream` (left open) at most `max_side` a side: header checks, JPEG draft, load, shrink,
    then RGB and EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(stream)
            _check_size(opened.size, label, max_pixels)
            if max_side is not None and max(opened.size) > max_side:
                opened.draft("RGB", _draft_size(opened.size, max_side))  # JPEG: decoded at 1/2, 1/4 or 1/8 scale
            opened.load()
            orientation = _orientation(opened)
            image = _fit(opened, max_side)
            if image is not opened:
                opened.close()  # let the full-size pixels go now
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(label, f"image too large, refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(label, _unidentified(stream, extension)) from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageError(label, f"corrupt or truncated image data ({exc})") from None
    try:
        image = to_rgb(image)
        if orientation in _TRANSPOSE:
            image = image.transpose(_TRANSPOSE[orientation])
        return image.copy() if image is opened else image  # never the opened file's image, tied to `stream`
    except (OSError, ValueError) as exc:
        raise ImageError(label, f"could not convert the image to RGB ({exc})") from None


def _orientation(image: Image.Image) -> int | None:
    """The EXIF (or XMP) orientation tag, read before the image is resized (a TIFF keeps it in its own
    tags, lost by a resize); None when absent or unreadable (the image is then used as stored)."""
    try:
        value = image.getexif().get(_ORIENTATION)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        return None
    return value if isinstance(value, int) else None


def _fit(image: Image.Image, max_side: int | None) -> Image.Image:
    """`image` at most `max_side` pixels a side: reduced by the smallest whole factor that fits (a box
    filter, fast and light; the result is between half of `max_side` and `max_side`). A new image;
    the original is left as it is."""
    if max_side is None or max(image.size) <= max_side:
        return image
    if image.mode not in _RESIZABLE_MODES:
        image = to_rgb(image)
    factor = -(-max(image.size) // max_side)
    if min(image.size) // factor >= MIN_SIDE:
        return _reduce_in_bands(image, factor) if image.mode in ("LA", "RGBA") else image.reduce(factor)
    # a thin strip: keep at least MIN_SIDE pixels across
    width, height = image.size
    scale = max_side / max(width, height)
    size = (max(round(width * scale), min(width, MIN_SIDE)), max(round(height * scale), min(height, MIN_SIDE)))
    return image.resize(size, Image.Resampling.BOX)


def _reduce_in_bands(image: Image.Image, factor: int, rows: int = 512) -> Image.Image:
    """`image.reduce(factor)` a band of rows at a time: Pillow premultiplies the alpha of a whole
    RGBA image into a copy before reducing it, which would double the memory of a big transparent PNG.
    Bands are a whole number of `factor` rows high, so the result is the same."""
    width, height = image.size
    reduced = Image.new(image.mode, (-(-width // factor), -(-height // factor)))
    step = factor * max(1, rows // factor)
    for top in range(0, height, step):
        band = image.crop((0, top, width, min(top + step, height)))
        reduced.paste(band.reduce(factor), (0, top // factor))
    return reduced


def _draft_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size to ask a JPEG's draft mode for, so that it decodes at the largest of 1, 1/2, 1/4 or 1/8
    scale that fits within `max_side` (1/8 when none does; `_fit` then reduces the rest)."""
    scale = next((s for s in (1, 2, 4) if -(-max(size) // s) <= max_side), 8)
    return max(1, size[0] // scale), max(1, size[1] // scale)


def _check_size(size: tuple[int, int], label: str, max_pixels: int | None) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(label, f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            label,
            f"image of {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}; "
            "refused as a possible decompression bomb (resize it, or raise max_pixels)",
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(
            label, f"too small to describe ({width}x{height}); at least {MIN_SIDE}x{MIN_SIDE} pixels expected"
        )


def _unidentified(stream: BinaryIO, extension: str) -> str:
    """Why Pillow could not identify the file, from its first bytes (or its extension)."""
    try:
        stream.seek(0)
        head = stream.read(512)
    except (OSError, ValueError):
        head = b""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text or (text.startswith(b"<?xml") and b"svg" in text):
        return "not an image Pillow can read: the file holds SVG, a vector format (render it to PNG or JPEG first)"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not an image: the file holds an HTML page (a web page saved in place of the image?)"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc"):
        return f"not an image Pillow can read: a HEIC/HEIF photo (iPhone); {_CONVERT}"
    if extension in UNSUPPORTED_EXTENSIONS:
        return f"not an image Pillow can read: {UNSUPPORTED_EXTENSIONS[extension]}"
    if head and _looks_like_text(head):
        return f"not an image: the file holds text ({_READABLE})"
    return f"not an image Pillow can read ({_READABLE})"


def _looks_like_text(head: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character may be cut at the end
    except UnicodeDecodeError:
        return False
    return all(byte >= 0x20 or byte in b"\t\r\n\f" for byte in head)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float32)
    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    if image.mode == "F":
        top = max(float(values.max(initial=0)), 1.0) if values.max(initial=0) > 1.0 else 1.0
    scaled = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)
