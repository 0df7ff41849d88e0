"""Uploaded photos: read within the size limit, checked to be images, saved inside the index folder."""

from __future__ import annotations

import io
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from lookalike.io.images import bytes_hash, load_image
from lookalike.server.errors import ApiError

UPLOADS_DIR = "uploads"
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tiff"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_CATEGORY_LENGTH = 100


@dataclass(frozen=True)
class Upload:
    """One uploaded photo, read and decoded."""

    name: str  # the client's file name, without folders
    data: bytes
    image: Image.Image
    extension: str  # from the decoded format, not from the client's name


def read_limited(stream: BinaryIO, name: str, limit: int) -> bytes:
    """At most `limit` bytes of an upload; 413 when there are more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413, "too_large", f"upload {name!r} is larger than the limit of {limit:,} bytes; send a smaller photo"
        )
    return data


def read_upload(stream: BinaryIO, filename: str | None, limit: int) -> Upload:
    """Read an upload of at most `limit` bytes (413 beyond) and decode it (422 if not an image)."""
    name = client_name(filename)
    data = read_limited(stream, name, limit)
    image = load_image(data, name=f"upload {name!r}")
    return Upload(name, data, image, _EXTENSIONS.get(_format_of(data) or "", ".img"))


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


def save_upload(upload: Upload, folder: Path, category: str | None) -> tuple[Path, bool]:
    """Write `upload` under `folder/<category>/`, named by its content: (its path, whether it is new).

    Folder and file names are made from safe characters only, so no client input can escape `folder`.
    """
    name = f"{_slug(Path(upload.name).stem)[:60]}_{bytes_hash(upload.data)[:12]}{upload.extension}"
    target = folder / _folder_name(category) / name
    if target.is_file():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(upload.data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
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


def _format_of(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as probe:
        return probe.format
