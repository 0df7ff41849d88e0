"""The catalogue of a Milvus-backed index: every per-image fact in Milvus (see lookalike.index.milvus).

There is no local copy to keep in step: each search asks Milvus, so a replica sees another's writes
at once (with Strong consistency). `sync` only notices that training an embedding switched the
vectors collection, and reloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import SettingsError
from lookalike.index.catalog import Catalog
from lookalike.index.milvus import MILVUS_KINDS, PATHS_READY, MilvusItemStore, MilvusSpace, MilvusVectorStore
from lookalike.index.store import NewItem
from lookalike.settings import IndexSettings


class MilvusCatalog(Catalog):
    store: MilvusItemStore
    _vectors: MilvusVectorStore | None

    def __init__(self, folder: Path, settings: IndexSettings, *, create: bool = False) -> None:
        super().__init__(folder, settings)
        self.space = MilvusSpace(settings, create=create)
        self.store = MilvusItemStore(self.space)
        self.dim = int(self.store.get_meta("dim") or 0)

    def close(self) -> None:
        self.store.close()

    def initialise(self, dim: int, fingerprint: dict[str, Any]) -> None:
        self.check_kind(self.settings)
        self.dim = dim
        MilvusVectorStore(self.space, self.store.collection, dim, create=True)
        self.store.set_many({"dim": dim, "embedder": fingerprint, "generation": 0, PATHS_READY: True})

    def check_kind(self, settings: IndexSettings) -> None:
        if settings.kind not in MILVUS_KINDS:
            raise SettingsError(
                f"index.kind {settings.kind!r} is not offered on the milvus backend; "
                f"expected one of {', '.join(MILVUS_KINDS)}"
            )

    def backend(self) -> dict[str, Any]:
        return {"backend": "milvus", "uri": self.settings.uri, "collection": self.store.collection}

    def vectors(self) -> MilvusVectorStore:  # type: ignore[override]
        if self._vectors is None:
            with self._lock.writing():
                if self._vectors is None:
                    self._vectors = MilvusVectorStore(self.space, self.store.collection, self.dim)
                    self.generation = self.store.generation
        return self._vectors

    def sync(self) -> str:
        """ "current", or "reloaded" when a new embedding switched the vectors collection."""
        if self._vectors is None or self.store.current_collection() == self._vectors.collection:
            return "current"
        with self._lock.writing():
            self._vectors, self.generation = None, -1
            self.dim = int(self.store.get_meta("dim") or 0)
        return "reloaded"

    def commit(self, new: Sequence[NewItem], replaced: dict[int, str | None]) -> list[int]:
        """Delete the replaced images, then write the new ones' paths, blobs and rows (a row is
        searchable only once its blobs are stored; a path row names an image only once that image's
        row is there). Reads and writes only these images' rows: the cost does not grow with the
        catalogue. Callers hold the index's write lock."""
        vectors = self.vectors()
        with self._lock.writing():
            self.store.ensure_paths()
            if replaced:
                gone = [item.path for item in self.store.get_many(replaced).values()]
                vectors.delete(np.array(list(replaced), dtype=np.int64), list(replaced.values()))
                self.store.delete_blobs(replaced)
                readded = {item.path for item in new}  # their path rows are pointed at the new ids below
                self.store.forget_paths(path for path in gone if path not in readded)
            ids = self.store.new_ids(len(new)) if new else []
            if new:
                self.store.record_paths(ids, new)
                self.store.write_blobs(ids, new)
                vectors.add(
                    np.array(ids, dtype=np.int64),
                    np.stack([item.vector for item in new]),
                    [item.category for item in new],
                    [self.store.payload(item) for item in new],
                )
            self.generation = self.store.bump_generation()
        return ids

    def save_snapshot(self) -> None:
        """Milvus keeps the data: flushing seals what was written into persisted segments."""
        self.vectors().flush()

    def rebuild(self, settings: IndexSettings) -> MilvusVectorStore:
        """Rebuild the Milvus index over the collection as `settings.kind` (searches wait here; other
        replicas' searches fail while the collection is released)."""
        self.check_kind(settings)
        current = self.vectors()  # loading takes the lock itself
        with self._lock.writing():
            rebuilt = MilvusVectorStore(self.space, current.collection, self.dim, settings=settings)
            rebuilt.build_index()
            self.settings, self._vectors = settings, rebuilt
            self.store.bump_generation()
        return rebuilt

    def snapshot_state(self) -> dict[str, object]:
        where = f"Milvus collection {self.store.collection} at {self.settings.uri}"
        return {"state": "current", "reason": f"vectors in {where} (no local snapshot)"}
