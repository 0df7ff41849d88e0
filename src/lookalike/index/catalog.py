"""An index folder's stored images: the SQLite store and the vector partitions kept in step with it.

The database is the source of truth. The partitions live in memory and on disk as a snapshot tagged
with the database generation it matches; a missing, damaged or older snapshot is rebuilt from the
database. Searches read concurrently; each write commits one transaction, then updates the
partitions, under the write lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lookalike._locks import ReadWriteLock
from lookalike._timing import Timer
from lookalike.index.partitioned import PartitionedIndex
from lookalike.index.rebuild import build_from_store, search_plan
from lookalike.index.store import MetadataStore, NewItem
from lookalike.settings import IndexSettings

DATABASE_FILE = "catalog.sqlite"
VECTORS_DIR = "vectors"


class Catalog:
    """The metadata store and the vector partitions of one index folder."""

    def __init__(self, folder: Path, settings: IndexSettings) -> None:
        self.folder = folder
        self.settings = settings
        self.store = MetadataStore(folder / DATABASE_FILE)
        self.dim = int(self.store.get_meta("dim") or 0)
        self._lock = ReadWriteLock()
        self._vectors: PartitionedIndex | None = None

    def close(self) -> None:
        self.store.close()

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock.reading():
            yield

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Holds searches back: for commits and for swapping what the vectors mean."""
        with self._lock.writing():
            yield

    # -- the vector partitions
    def vectors(self) -> PartitionedIndex:
        """The partitions, loaded from the snapshot or rebuilt from the database on first use."""
        if self._vectors is None:
            with self._lock.writing():
                if self._vectors is None:
                    self._vectors = self._load_or_rebuild()
        return self._vectors

    def partition_names(self) -> list[str]:
        vectors = self.vectors()
        with self._lock.reading():
            return list(vectors.sizes())

    def candidates(
        self,
        query: np.ndarray,
        depth: int,
        categories: Sequence[str | None] | None,
        timer: Timer,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top `depth` (scores, ids) over the categories' partitions (all when None), best first.

        Call it inside `reading()`. Partitions that declare approximate search fetch
        `shortlist_factor` times more; those whose scores are approximate (PQ codes) have the
        shortlist re-scored exactly from the stored full vectors.
        """
        vectors = self._vectors if self._vectors is not None else self.vectors()
        keys = None if categories is None else [vectors.key(c) for c in categories]
        plan = search_plan(vectors, keys)
        fetch = depth * self.settings.shortlist_factor if plan.approximate else depth
        with timer.stage("search"):
            scores, ids = vectors.search(query[None, :], fetch, categories)
        if not plan.rescore:
            return scores[0][:depth], ids[0][:depth]
        from lookalike.index.ann import rescore

        with timer.stage("rescore"):
            found = ids[0][ids[0] >= 0]
            return rescore(query, found, self.store.vectors_of(found, self.dim), depth)

    # -- writes
    def commit(self, new: Sequence[NewItem], replaced: dict[int, str | None]) -> list[int]:
        """Write new items and delete replaced ones (id -> category) in one transaction, then update
        the partitions; returns the new items' ids."""
        vectors = self.vectors()
        with self._lock.writing():
            with self.store.transaction() as db:
                self.store.delete(db, replaced)
                ids = [self.store.insert(db, item) for item in new]
            if replaced:
                vectors.remove(np.array(list(replaced), dtype=np.int64), list(replaced.values()))
            if new:
                vectors.add(
                    np.array(ids, dtype=np.int64),
                    np.stack([item.vector for item in new]),
                    [item.category for item in new],
                )
        return ids

    def save_snapshot(self) -> None:
        vectors = self.vectors()
        with self._lock.reading():
            vectors.save(self.folder / VECTORS_DIR, self.store.generation)

    def rebuild(self, settings: IndexSettings) -> PartitionedIndex:
        """New partitions of kind `settings.kind` from every stored vector, saved and swapped in;
        searches wait meanwhile."""
        with self._lock.writing():
            vectors = build_from_store(self.store, settings, self.dim)
            self.store.set_meta("vectors_rebuilt_at", time.time())  # a new generation: the old snapshot is stale
            vectors.save(self.folder / VECTORS_DIR, self.store.generation)
            self.settings, self._vectors = settings, vectors
        return vectors

    def reset(self, dim: int) -> None:
        """Forget the loaded partitions (call inside `writing()` after the stored vectors were rewritten)."""
        self._vectors, self.dim = None, dim

    def _load_or_rebuild(self) -> PartitionedIndex:
        generation = self.store.generation
        loaded = PartitionedIndex.load(self.folder / VECTORS_DIR, self.settings, self.dim, generation)
        if loaded is not None:
            return loaded
        rebuilt = build_from_store(self.store, self.settings, self.dim)
        if self.store.count():
            rebuilt.save(self.folder / VECTORS_DIR, generation)
        return rebuilt
