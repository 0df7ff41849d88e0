"""The index's catalogue views: phone-photo views of each catalogue image, embedded by the index's model.

A catalogue with one studio image per product is searched with phone photos. The views (made by
`lookalike.embed.views.PhotoViews`, the augmentations of label-free adaptation: other backgrounds,
crops, slants, light, blur, hands) are what phone photos of each product may look like; the "views"
re-ranker (`lookalike.rerank.views`) scores a candidate by the query's best matches among its image
and its views. They are never hits and are not in the vector index.

Stored as one file, `<index>/views/views.npz`, replaced atomically: `owners` (the catalogue image
each row is a view of), `vectors` (float32, made by the index's featurizer) and `meta` (JSON: format,
the featurizer fingerprint, views per image, the recipe: augmentation settings and seed). A new
embedding makes the views again (`Engine._install`), added images get theirs when they are added, and
removed images lose theirs; vectors of another featurizer are never mixed with the index's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.index._sidecar import SidecarFile, read_npz, write_npz

FOLDER = "views"
FILE = "views.npz"


@dataclass
class CatalogueViews(SidecarFile):
    """Rows of view vectors, the catalogue image (`owners`) each is a view of, and how they were made."""

    folder: ClassVar[str] = FOLDER
    file: ClassVar[str] = FILE
    what: ClassVar[str] = "the catalogue views"
    renewal: ClassVar[str] = "makes them again"

    owners: np.ndarray  # (m,) int64 catalogue ids
    vectors: np.ndarray  # (m, dim) float32
    embedder: Any  # the fingerprint of the featurizer that made the vectors
    count: int  # views per catalogue image
    recipe: str  # what made the view images (augmentation settings and seed), see `recipe_of`

    def __post_init__(self) -> None:
        if len(self.owners) != len(self.vectors):
            raise LookalikeError(f"catalogue views: {len(self.owners)} owners but {len(self.vectors)} vectors")

    def __len__(self) -> int:
        return len(self.owners)

    @property
    def images(self) -> set[int]:
        """The catalogue ids that have views."""
        return set(np.unique(self.owners).tolist())

    def merged(self, other: CatalogueViews) -> CatalogueViews:
        """These views with `other`'s added; an image in both keeps `other`'s."""
        if not self.current_for(other.embedder) or self.recipe != other.recipe:
            raise LookalikeError("catalogue views: cannot merge views made by different models or recipes")
        kept = ~np.isin(self.owners, other.owners)
        return CatalogueViews(
            np.concatenate([self.owners[kept], other.owners]).astype(np.int64),
            np.concatenate([self.vectors[kept], other.vectors]).astype(np.float32),
            self.embedder,
            self.count,
            self.recipe,
        )

    def keeping(self, ids: set[int] | np.ndarray) -> CatalogueViews:
        """Only the views of catalogue images in `ids`."""
        kept = np.isin(self.owners, np.fromiter(ids, np.int64) if isinstance(ids, set) else ids)
        return CatalogueViews(self.owners[kept], self.vectors[kept], self.embedder, self.count, self.recipe)

    def save(self, index_folder: Path) -> None:
        meta = {"embedder": self.embedder, "count": self.count, "recipe": self.recipe, "written_at": time.time()}
        owners, vectors = self.owners.astype(np.int64), self.vectors.astype(np.float32)
        write_npz(self.path_in(index_folder), meta, owners=owners, vectors=vectors)

    @classmethod
    def load(cls, index_folder: Path) -> CatalogueViews | None:
        """The saved views, or None when the index has none."""

        def read(data: Any, meta: dict[str, Any]) -> CatalogueViews:
            owners, vectors = data["owners"].astype(np.int64), data["vectors"].astype(np.float32)
            return cls(owners, vectors, meta["embedder"], int(meta["count"]), str(meta["recipe"]))

        fix = "; make them again with `lookalike views --index I`"
        return read_npz(cls.path_in(index_folder), cls.what, read, fix)

    @classmethod
    def summary(cls, index_folder: Path) -> tuple[np.ndarray, Any, int] | None:
        """The saved views' owners, fingerprint and views per image, without reading the vectors; None when
        there are none."""

        def read(data: Any, meta: dict[str, Any]) -> tuple[np.ndarray, Any, int]:
            return data["owners"].astype(np.int64), meta["embedder"], int(meta["count"])

        return read_npz(cls.path_in(index_folder), cls.what, read)


def recipe_of(adapt: Any, seed: int) -> str:
    """What decides the view images: the augmentation settings (`head.adapt`, training-only ones aside) and the seed."""
    from dataclasses import asdict

    making = {key: value for key, value in asdict(adapt).items() if not key.startswith("pseudo")}
    for training_only in ("epochs", "lr", "start", "negatives", "momentum", "neighbours", "validation_views", "views"):
        making.pop(training_only, None)
    return json.dumps({"seed": seed, **making}, sort_keys=True)
