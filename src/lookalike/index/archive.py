"""The index's photo archive: unlabelled photos of the catalogue's products kept beside it.

A shop often has far more photos of its products (past queries, a photo archive with no product ids)
than catalogue images. They are never search results; the "archive" re-ranker (`lookalike.rerank.archive`)
uses them as extra nodes of its diffusion graph, so that a phone photo reaches the studio image of its
product through photos like it.

Stored as one file, `<index>/archive/archive.npz`, replaced atomically: `vectors` (float32, one row per
photo, made by the index's featurizer), `paths` (each photo's file) and `meta` (JSON: format, the
featurizer fingerprint the vectors were made with, when it was written). A new embedding re-embeds the
photos from their files (`Engine._install`); vectors of another featurizer are never mixed with the
index's (`current_for`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.index._sidecar import SidecarFile, read_npz, write_npz

FOLDER = "archive"
FILE = "archive.npz"


@dataclass
class PhotoArchive(SidecarFile):
    """The archive's photos, their vectors and the fingerprint of the featurizer that made them."""

    folder: ClassVar[str] = FOLDER
    file: ClassVar[str] = FILE
    what: ClassVar[str] = "the photo archive"
    renewal: ClassVar[str] = "embeds its photos again"

    paths: list[str]
    vectors: np.ndarray
    embedder: Any

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.vectors):
            raise LookalikeError(f"photo archive: {len(self.paths)} paths but {len(self.vectors)} vectors")

    def __len__(self) -> int:
        return len(self.paths)

    def merged(self, other: PhotoArchive) -> PhotoArchive:
        """This archive with `other`'s photos added; a photo already here takes `other`'s vector."""
        if not self.current_for(other.embedder):
            raise LookalikeError("photo archive: cannot merge vectors made by different featurizers")
        replaced = set(other.paths)
        kept = np.array([path not in replaced for path in self.paths], dtype=bool)
        paths = [path for path, keep in zip(self.paths, kept, strict=True) if keep] + list(other.paths)
        vectors = np.concatenate([self.vectors[kept].reshape(-1, other.vectors.shape[1]), other.vectors])
        return PhotoArchive(paths, vectors.astype(np.float32), self.embedder)

    def save(self, index_folder: Path) -> None:
        meta = {"embedder": self.embedder, "written_at": time.time()}
        vectors, paths = self.vectors.astype(np.float32), np.array(self.paths, dtype=str)
        write_npz(self.path_in(index_folder), meta, vectors=vectors, paths=paths)

    @classmethod
    def load(cls, index_folder: Path) -> PhotoArchive | None:
        """The saved archive, or None when the index has none."""

        def read(data: Any, meta: dict[str, Any]) -> PhotoArchive:
            return cls([str(p) for p in data["paths"]], data["vectors"].astype(np.float32), meta["embedder"])

        fix = "; remove it with `lookalike archive --clear` and add the photos again"
        return read_npz(cls.path_in(index_folder), cls.what, read, fix)

    @classmethod
    def summary(cls, index_folder: Path) -> tuple[int, Any] | None:
        """How many photos the saved archive holds and its fingerprint, without reading the vectors."""

        def read(data: Any, meta: dict[str, Any]) -> tuple[int, Any]:
            return len(data["paths"]), meta["embedder"]

        return read_npz(cls.path_in(index_folder), cls.what, read)
