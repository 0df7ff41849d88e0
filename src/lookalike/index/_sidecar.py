"""Files kept beside an index (its photo archive, its catalogue views): one .npz each, replaced atomically,
with a JSON `meta` entry, and a cheap version stamp that a query can check."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np

from lookalike.errors import LookalikeError

FORMAT = 1  # the layout of these files; another is refused with a message
T = TypeVar("T")


def write_npz(path: Path, meta: dict[str, Any], **arrays: np.ndarray) -> None:
    """Write arrays and `meta` (with `FORMAT`) to `path` through a temporary file: readers see the old file or
    the new one."""
    meta = {"format": FORMAT, **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with temporary.open("wb") as out:  # a file object: np.savez would add ".npz" to a name
        np.savez(out, meta=json.dumps(meta), **arrays)
    temporary.replace(path)


def file_version(path: Path) -> tuple[int, int] | None:
    """What changes when the file is written (a stat, cheap enough for every query), or None when it is absent."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def read_npz(path: Path, what: str, read: Callable[[Any, dict[str, Any]], T], fix: str = "") -> T | None:
    """`read(arrays, meta)` of the file at `path` (arrays are read only when asked for); None when there is no
    file. A file that cannot be read, or of another format than `FORMAT`, raises a LookalikeError naming it and
    `what` it holds, with `fix`."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise LookalikeError(f"{path}: {what} format {meta.get('format')!r} is not supported{fix}")
            return read(data, meta)
    except (OSError, ValueError, KeyError) as exc:
        raise LookalikeError(f"{path}: {what} cannot be read ({exc}){fix}") from None


def remove_file(path: Path) -> bool:
    """Delete the file; False when there was none."""
    if not path.is_file():
        return False
    path.unlink()
    return True


class SidecarFile:
    """What every file kept beside an index shares: where it is (`<index>/<folder>/<file>`), its version stamp,
    its removal, and vectors that count only while the index's model is the one that made them (`embedder`)."""

    folder: ClassVar[str]
    file: ClassVar[str]
    what: ClassVar[str]  # what the file holds, for messages: "the photo archive"
    renewal: ClassVar[str]  # what `lookalike check --repair` does about stale vectors: "embeds them again"
    embedder: Any  # the fingerprint of the featurizer that made the vectors (a field of each subclass)

    def current_for(self, embedder: Any) -> bool:
        """Whether these vectors were made by the featurizer whose fingerprint is `embedder`."""
        return bool(self.embedder == embedder)

    @classmethod
    def load(cls, index_folder: Path) -> Self | None:
        raise NotImplementedError

    @classmethod
    def load_current(cls, index_folder: Path, embedder: Any) -> Self | None:
        """The saved file when the model fingerprinted `embedder` made its vectors, else None: vectors of
        another model (copied from elsewhere: a new embedding makes them again) are left out, with a warning."""
        kept = cls.load(index_folder)
        if kept is None or kept.current_for(embedder):
            return kept
        logging.getLogger(cls.__module__).warning(
            "%s: %s was made by another model than the index's and is left out; `lookalike check --repair` %s",
            index_folder, cls.what, cls.renewal,
        )  # fmt: skip
        return None

    @classmethod
    def path_in(cls, index_folder: Path) -> Path:
        return index_folder / cls.folder / cls.file

    @classmethod
    def remove(cls, index_folder: Path) -> bool:
        """Delete the file; False when there was none."""
        return remove_file(cls.path_in(index_folder))

    @classmethod
    def version(cls, index_folder: Path) -> tuple[int, int] | None:
        """What changes when the file is written (a stat, cheap enough for every query), or None."""
        return file_version(cls.path_in(index_folder))
