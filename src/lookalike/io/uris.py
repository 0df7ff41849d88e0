"""Images named by URI (`s3://`, `gs://`, `http(s)://`, `file://`, `memory://`...), read through fsspec.

A catalogue may name its images by URI: on the command line, in a manifest's `path` column, or in
a manifest that is itself a URI. Each image's bytes are read whole with fsspec (at most `MAX_BYTES`;
the protocol's own package, s3fs or gcsfs, must be installed, and fsspec says which), then decoded
from memory like an upload. The URI, as given, is the image's stored path. Local paths never come
here: `is_uri` is a pattern match, and fsspec is imported only when a URI is read.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from lookalike.errors import ImageError, LookalikeError, MissingDependency

URI_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # scheme://... (a Windows path C:\ has no //)
MAX_BYTES = 64 * 1024 * 1024  # a product photo is far smaller; more is refused before it is all read


def is_uri(value: object) -> bool:
    """Whether `value` is a string naming a URI (`scheme://...`), not a local path."""
    return isinstance(value, str) and URI_PATTERN.match(value) is not None


def stored_path(path: str | Path) -> str:
    """What an image is stored under: a URI as given, a local file's absolute path."""
    return path if is_uri(path) else str(Path(path).resolve())  # type: ignore[return-value]


def suffix(uri: str) -> str:
    """The URI's file extension, lower case, without any query string (`.jpg`)."""
    return PurePosixPath(uri.split("?", 1)[0].split("#", 1)[0]).suffix.lower()


def join(base: str, relative: str) -> str:
    """`relative` (a manifest row) under the URI folder `base`."""
    return base.rstrip("/") + "/" + relative.lstrip("/")


def parent(uri: str) -> str:
    """The URI of the folder holding `uri`."""
    return uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[0]


def filesystem(uri: str) -> tuple[Any, str]:
    """fsspec's filesystem for `uri`, and the path within it; `LookalikeError` when there is none."""
    try:
        import fsspec
    except ImportError:
        raise MissingDependency("fsspec", "reading images by URI") from None
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:  # the protocol's package: "Install s3fs to access S3"
        raise LookalikeError(f"{uri}: cannot read this URI: {exc}") from None
    except ValueError as exc:  # "Protocol not known: ..."
        raise LookalikeError(f"{uri}: cannot read this URI ({exc}); expected a protocol fsspec knows") from None


def read_uri(uri: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes at `uri`; an `ImageError` naming the URI and the reason when they cannot be read."""
    try:
        fs, path = filesystem(uri)
        with fs.open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except LookalikeError as exc:
        raise ImageError(uri, str(exc).removeprefix(f"{uri}: ")) from None
    except FileNotFoundError:
        raise ImageError(uri, "no such file") from None
    except IsADirectoryError:
        raise ImageError(uri, "is a folder, not an image file") from None
    except Exception as exc:  # each fsspec backend raises its own (OSError, aiohttp's, botocore's...)
        raise ImageError(uri, f"cannot read the URI ({type(exc).__name__}: {exc})") from None
    if len(data) > max_bytes:
        raise ImageError(uri, f"larger than {max_bytes // 2**20} MiB: not read (a product photo is far smaller)")
    return data


def list_folder(uri: str) -> list[str] | None:
    """The URIs of the files below the folder `uri`, sorted; None when `uri` is not a folder.
    Raises `LookalikeError` (with the reason) when it cannot be listed."""
    fs, root = filesystem(uri)
    try:
        if not fs.isdir(root):
            return None
        found = fs.find(root, withdirs=False)
    except Exception as exc:  # each fsspec backend raises its own
        raise LookalikeError(f"{uri}: cannot list the folder ({type(exc).__name__}: {exc})") from None
    prefix = root.rstrip("/") + "/"
    return sorted(join(uri, name[len(prefix) :]) for name in found if name.startswith(prefix))
