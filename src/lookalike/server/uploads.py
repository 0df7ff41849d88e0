"""Uploaded photos: copied to disk in chunks within the size limit, checked to be images, saved
inside the index folder.

An upload is never held in memory whole: `stage_upload` copies the client's (spooled) file into a
staging folder beside the uploads while hashing it; `check_upload` reads its size from the header,
decodes it once at a reduced size (the io layer's draft decoding) to check it, and lets the picture go
before the next file is read.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from lookalike.io.images import bytes_hash, load_image
from lookalike.server.errors import ApiError

UPLOADS_DIR = "uploads"
STAGING_PREFIX = ".incoming-"  # staging folders inside the index folder, removed after each request
CHUNK_BYTES = 1024 * 1024
CHECK_SIDE = 512  # uploads are decoded at most this many pixels a side to check them (JPEG: draft mode)
_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")
# the file name an upload is saved under comes from its decoded format (GIF: its first frame is indexed;
# MPO: the multi-picture JPEG some phones write)
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tiff",
               "GIF": ".gif"}  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_CATEGORY_LENGTH = 100


@dataclass(frozen=True)
class StagedUpload:
    """One uploaded photo, copied to a staging file; its pixels are never kept."""

    name: str  # the client's file name, without folders
    path: Path  # the staging copy
    digest: str  # SHA-256 of its bytes
    extension: str = ".img"  # from the decoded format, not from the client's name (set by `check_upload`)


class PixelBudget:
    """The decoded pixels one request may hold in all (`max_pixels_per_request`): 413 beyond."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, name: str, size: tuple[int, int]) -> int:
        pixels = size[0] * size[1]
        self.used += pixels
        if self.used > self.limit:
            raise ApiError(
                413,
                "too_large",
                f"upload {name!r} ({size[0]}x{size[1]}) brings this request to {self.used:,} pixels, over the "
                f"limit of {self.limit:,} per request; send fewer or smaller photos per request",
            )
        return pixels


def too_large(name: str, limit: int) -> ApiError:
    return ApiError(
        413, "too_large", f"upload {name!r} is larger than the limit of {limit:,} bytes; send a smaller photo"
    )


def read_limited(stream: BinaryIO, name: str, limit: int) -> bytes:
    """At most `limit` bytes of an upload; 413 when there are more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise too_large(name, limit)
    return data


def check_pixels(data: bytes, name: str, budget: PixelBudget) -> None:
    """Counts an encoded photo's pixels against `budget` from its header (not decoded); an unreadable
    header is left for the decoder to report."""
    size = _header_size(io.BytesIO(data))
    if size is not None:
        budget.spend(name, size)


@contextmanager
def staging_folder(index_path: Path) -> Iterator[Path]:
    """A private folder inside the index folder (same file system: files move in by renaming), removed after."""
    folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=index_path))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stage_upload(stream: BinaryIO, filename: str | None, folder: Path, limit: int) -> StagedUpload:
    """Copy an upload of at most `limit` bytes (413 beyond) into `folder` in chunks while hashing it.

    Not yet checked to be an image: `check_upload` does that (skipped for a repeat of an earlier upload).
    """
    name = client_name(filename)
    suffix = Path(name).suffix.lower()  # a hint for the decoder's messages (.heic, .svg...), never trusted
    suffix = suffix if _SUFFIX.fullmatch(suffix) else ""
    handle, temporary = tempfile.mkstemp(dir=folder, prefix="upload-", suffix=suffix)
    digest, size = hashlib.sha256(), 0
    with os.fdopen(handle, "wb") as out:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            size += len(chunk)
            if size > limit:
                raise too_large(name, limit)
            digest.update(chunk)
            out.write(chunk)
    return StagedUpload(name, Path(temporary), digest.hexdigest())


def check_upload(upload: StagedUpload, budget: PixelBudget) -> StagedUpload:
    """`upload` with the extension of its format, once its pixels are counted against `budget` from the
    header (413 beyond) and it is decoded, at most `CHECK_SIDE` a side, to check it (422 naming the
    upload when it is not a readable image). The decoded picture is let go at once."""
    with upload.path.open("rb") as stream:
        header = _header(stream)
    if header is not None:
        budget.spend(upload.name, header[1])
    load_image(upload.path, name=f"upload {upload.name!r}", max_side=CHECK_SIDE)
    return replace(upload, extension=_EXTENSIONS.get(header[0] if header else "", ".img"))


def client_name(filename: str | None) -> str:
    """The client's file name reduced to its last part (never a path), printable, at most 100 characters."""
    raw = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C")
    return printable[:100] or "upload"


def check_category(category: str | None) -> str | None:
    """A category label from a client: stripped, printable, short; None when empty."""
    if category is None or not category.strip():
        return None
    label = category.strip()
    if len(label) > MAX_CATEGORY_LENGTH or any(unicodedata.category(ch)[0] == "C" for ch in label):
        raise ApiError(
            422, "invalid_request", f"category must be printable and at most {MAX_CATEGORY_LENGTH} characters"
        )
    return label


def save_upload(upload: StagedUpload, folder: Path, category: str | None) -> tuple[Path, bool]:
    """Move `upload` to `folder/<category>/`, named by its content: (its path, whether it is new).

    Folder and file names are made from safe characters only, so no client input can escape `folder`.
    `folder` itself is made only inside an existing index folder (never its missing parents).
    """
    name = f"{_slug(Path(upload.name).stem)[:60]}_{upload.digest[:12]}{upload.extension}"
    target = folder / _folder_name(category) / name
    if target.is_file():
        return target, False
    folder.mkdir(exist_ok=True)
    target.parent.mkdir(exist_ok=True)
    os.replace(upload.path, target)
    return target, True


def _folder_name(category: str | None) -> str:
    """The category's folder: its name when that is safe, else a safe name plus a hash of the label."""
    if category is None:
        return "_uncategorised"
    slug = _slug(category)
    return slug if slug == category else f"{slug}_{bytes_hash(category.encode())[:8]}"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("-", ascii_text).strip(".-")
    return slug or "upload"


def _header(stream: BinaryIO) -> tuple[str, tuple[int, int]] | None:
    """(format, (width, height)) from an image's header, without decoding it; None if Pillow cannot tell."""
    try:
        with Image.open(stream) as probe:
            return probe.format or "", probe.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # reported by the decoder next, with the io layer's message


def _header_size(stream: BinaryIO) -> tuple[int, int] | None:
    header = _header(stream)
    return header[1] if header else None
