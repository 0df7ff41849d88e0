"""An index's stored images: the metadata store and the vector store, kept in step.

`open_catalog` picks the backend the index was created with (`index.backend`): `LocalCatalog` (SQLite
and FAISS partitions in the index folder, below) or `MilvusCatalog` (a Milvus collection, shared by
replicas). The engine uses only the `Catalog` interface.

For the local backend:

The database is the source of truth. The partitions live in memory, tagged with the database
generation they reflect, and on disk as a snapshot tagged the same way: a snapshot can only claim a
generation whose every row it holds. A missing, damaged or older snapshot is rebuilt from the
database in memory; only writers save snapshots, so read-only commands never write. When another
process commits, `sync` catches up from the database's change log (or reloads everything after a
new embedding). Searches read concurrently; each write commits one transaction, then updates the
partitions, under the write lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lookalike._locks import ReadWriteLock
from lookalike._timing import Timer
from lookalike.index.partitioned import PartitionedIndex
from lookalike.index.rebuild import build_from_store
from lookalike.index.store import RESET, MetadataStore, NewItem
from lookalike.index.vectorstore import VectorStore
from lookalike.settings import IndexSettings

DATABASE_FILE = "catalog.sqlite"
VECTORS_DIR = "vectors"
CHANGES_KEPT = 1000  # generations of change log kept behind the snapshot, for other processes to catch up


class Catalog:
    """What the engine asks of an index's storage, whatever the backend."""

    store: Any  # MetadataStore's reading interface
    dim: int
    generation: int  # the store's generation the vectors in this process reflect

    def __init__(self, folder: Path, settings: IndexSettings) -> None:
        self.folder = folder
        self.settings = settings
        self._lock = ReadWriteLock()
        self._vectors: VectorStore | None = None
        self.generation = -1

    # -- the interface each backend implements
    def close(self) -> None:
        raise NotImplementedError

    def vectors(self) -> VectorStore:
        raise NotImplementedError

    def initialise(self, dim: int, fingerprint: dict[str, Any]) -> None:
        """A new index's vector dimension and model fingerprint (at creation)."""
        raise NotImplementedError

    def sync(self) -> str:
        raise NotImplementedError

    def commit(self, new: Sequence[NewItem], replaced: dict[int, str | None]) -> list[int]:
        raise NotImplementedError

    def save_snapshot(self) -> None:
        raise NotImplementedError

    def rebuild(self, settings: IndexSettings) -> VectorStore:
        raise NotImplementedError

    def reset(self, dim: int) -> None:
        """Forget the loaded vectors (call inside `writing()` after the stored vectors were rewritten)."""
        self._vectors, self.dim, self.generation = None, dim, -1

    def snapshot_state(self) -> dict[str, object]:
        raise NotImplementedError

    def check_kind(self, settings: IndexSettings) -> None:
        """Refuse an index kind this backend does not build, listing those it does."""
        raise NotImplementedError

    def backend(self) -> dict[str, Any]:
        """Which backend holds the vectors, for `info`."""
        return {"backend": self.settings.backend}

    # -- shared
    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock.reading():
            yield

    @contextmanager
    def searching(self) -> Iterator[VectorStore]:
        """The loaded vectors, held for reading (commits and swaps wait until the block ends)."""
        while True:
            self.vectors()  # loading takes the write lock: outside the read lock
            with self._lock.reading():
                vectors = self._vectors
                if vectors is not None:  # not swapped out in between
                    yield vectors
                    return

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Holds searches back: for commits and for swapping what the vectors mean."""
        with self._lock.writing():
            yield

    def partition_names(self) -> list[str]:
        with self.searching() as vectors:
            return list(vectors.sizes())

    def candidates(
        self,
        vectors: VectorStore,
        query: np.ndarray,
        depth: int,
        categories: Sequence[str | None] | None,
        timer: Timer,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top `depth` (scores, ids) over the categories (all when None), best first.

        `vectors` comes from `searching()`. Stores that declare approximate search fetch
        `shortlist_factor` times more; those whose scores are approximate (PQ, SQ8 codes) have the
        shortlist re-scored exactly from the stored full vectors.
        """
        plan = vectors.plan(categories)
        fetch = depth * self.settings.shortlist_factor if plan.approximate else depth
        with timer.stage("search"):
            scores, ids = vectors.search(query[None, :], fetch, categories)
        if not plan.rescore:
            return scores[0][:depth], ids[0][:depth]
        from lookalike.index.ann import rescore

        with timer.stage("rescore"):
            found = ids[0][ids[0] >= 0]
            return rescore(query, found, self.store.vectors_of(found, self.dim), depth)


def open_catalog(folder: Path, settings: IndexSettings, *, create: bool = False) -> Catalog:
    """The catalogue of the index at `folder`, on the backend `settings.backend`."""
    if settings.backend == "milvus":
        from lookalike.index.milvus_catalog import MilvusCatalog

        return MilvusCatalog(folder, settings, create=create)
    return LocalCatalog(folder, settings, create=create)


class LocalCatalog(Catalog):
    """The SQLite store and the FAISS partitions of one index folder."""

    store: MetadataStore
    _vectors: PartitionedIndex | None

    def __init__(self, folder: Path, settings: IndexSettings, *, create: bool = False) -> None:
        super().__init__(folder, settings)
        self.store = MetadataStore(folder / DATABASE_FILE, create=create)
        self.dim = int(self.store.get_meta("dim") or 0)

    def close(self) -> None:
        self.store.close()

    def initialise(self, dim: int, fingerprint: dict[str, Any]) -> None:
        self.dim = dim
        self.store.set_meta("dim", dim)
        self.store.set_meta("embedder", fingerprint)

    def check_kind(self, settings: IndexSettings) -> None:
        from lookalike.index import INDEX_KINDS

        INDEX_KINDS.get(settings.kind)

    # -- the vector partitions
    def vectors(self) -> PartitionedIndex:  # type: ignore[override]
        """The partitions, loaded from the snapshot or rebuilt from the database on first use."""
        if self._vectors is None:
            with self._lock.writing():
                if self._vectors is None:
                    self._vectors = self._load_or_rebuild()
        return self._vectors

    def sync(self) -> str:
        """Catch up with transactions committed by other processes since the partitions were loaded:
        "current" (nothing to do), "caught up" (their additions and removals applied), or "reloaded"
        (a new embedding rewrote every vector, or the change log no longer reaches back: the
        partitions and `dim` are read again on next use)."""
        if self._vectors is None or self.store.generation == self.generation:
            return "current"
        with self._lock.writing():
            with self.store.consistent_read():
                now = self.store.generation
                changes = self.store.changes_since(self.generation) if now != self.generation else []
            if now == self.generation:
                return "current"
            if changes is None or any(op == RESET for _, op, _, _ in changes):
                self._vectors, self.generation = None, -1
                self.dim = int(self.store.get_meta("dim") or 0)
                return "reloaded"
            self._apply(self._vectors, changes)
            self.generation = now
        return "caught up"

    def _apply(self, vectors: PartitionedIndex, changes: list[tuple[int, str, int, str | None]]) -> None:
        added = [item_id for _, op, item_id, _ in changes if op == "add"]
        removed = {item_id: category for _, op, item_id, category in changes if op == "remove"}
        gone = [(item_id, category) for item_id, category in removed.items() if item_id not in set(added)]
        if gone:
            vectors.remove(np.array([i for i, _ in gone], dtype=np.int64), [c for _, c in gone])
        still_there = [item_id for item_id in added if item_id not in removed]  # ids are never reused
        rows = self.store.get_many(still_there)
        stored = self.store.vectors_of(list(rows), self.dim)
        if stored:
            ids = np.array(list(stored), dtype=np.int64)
            vectors.add(ids, np.stack([stored[int(i)] for i in ids]), [rows[int(i)].category for i in ids])

    # -- writes
    def commit(self, new: Sequence[NewItem], replaced: dict[int, str | None]) -> list[int]:
        """Write new items and delete replaced ones (id -> category) in one transaction, then update
        the partitions; returns the new items' ids. Callers hold the index's write lock."""
        self.vectors()  # loaded, so that `sync` can bring it up to date
        self.sync()
        vectors = self.vectors()
        with self._lock.writing():
            with self.store.transaction() as db:
                self.store.delete(db, replaced)
                ids = [self.store.insert(db, item) for item in new]
            if self.store.last_generation != self.generation + 1:  # another writer came between: replay the log
                self._vectors, self.generation = None, -1
                return ids
            self.generation = self.store.last_generation
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
        """Write the partitions as the snapshot of the generation they reflect (writers only)."""
        vectors = self.vectors()
        with self._lock.reading():
            vectors.save(self.folder / VECTORS_DIR, self.generation)
            self.store.prune_changes(self.generation - CHANGES_KEPT)

    def rebuild(self, settings: IndexSettings) -> PartitionedIndex:
        """New partitions of kind `settings.kind` from every stored vector, saved and swapped in;
        searches wait meanwhile. Callers hold the index's write lock."""
        with self._lock.writing():
            vectors, generation = self._build(settings)
            self.store.set_meta("vectors_rebuilt_at", time.time())  # a new generation: the old snapshot is stale
            if self.store.last_generation == generation + 1:
                generation = self.store.last_generation
            vectors.save(self.folder / VECTORS_DIR, generation)
            self.settings, self._vectors, self.generation = settings, vectors, generation
        return vectors

    def snapshot_state(self) -> dict[str, object]:
        """What `lookalike check` reports of the snapshot on disk: its generation, kind and whether it loads."""
        return PartitionedIndex.inspect(self.folder / VECTORS_DIR, self.settings, self.dim, self.store.generation)

    def _load_or_rebuild(self) -> PartitionedIndex:
        """The snapshot of the database's generation, or partitions rebuilt from the database (in
        memory only: a reader never writes)."""
        generation = self.store.generation
        loaded = PartitionedIndex.load(self.folder / VECTORS_DIR, self.settings, self.dim, generation)
        if loaded is not None:
            self.generation = generation
            return loaded
        vectors, self.generation = self._build(self.settings)
        return vectors

    def _build(self, settings: IndexSettings) -> tuple[PartitionedIndex, int]:
        """Partitions of every stored vector, and the generation they reflect (read as one state)."""
        with self.store.consistent_read():
            return build_from_store(self.store, settings, self.dim), self.store.generation
