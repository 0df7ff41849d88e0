"""The "faiss" backend: one FAISS index per category, saved as a snapshot tagged with the database's generation."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index._threads import faiss_threads, threads_for
from lookalike.index.base import INDEX_KINDS, VectorIndex, create_index, load_index
from lookalike.index.vectorstore import VECTOR_STORES, SearchPlan, StoreCapabilities
from lookalike.settings import IndexSettings

ALL = ""  # the partition of every vector when partitioning is off, or of uncategorised images
_MANIFEST = "current.json"


class PartitionedIndex:
    """Routes vectors to per-category indexes and merges their results (the `VectorStore` of the
    "faiss" backend). It lives in one process's memory; `flush` saves it as the snapshot of
    `generation` in `folder` when it has one."""

    def __init__(self, settings: IndexSettings, dim: int, folder: Path | None = None, generation: int = 0) -> None:
        self.settings = settings
        self.dim = dim
        self.folder = folder
        self.generation = generation
        self.partitions: dict[str, VectorIndex] = {}

    @property
    def capabilities(self) -> StoreCapabilities:
        declared = [p.capabilities for p in self.partitions.values()]
        return StoreCapabilities(
            backend="faiss",
            kinds=tuple(INDEX_KINDS.names()),
            exact=all(c.exact for c in declared),
            exact_scores=all(c.exact_scores for c in declared),
        )

    def key(self, category: str | None) -> str:
        return (category or ALL) if self.settings.partition_by_category else ALL

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        categories: Sequence[str | None],
        payload: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """New ids into their categories' partitions (`payload` is the SQLite store's to keep)."""
        for key, rows in _group(self.key(c) for c in categories).items():
            if key not in self.partitions:
                self.partitions[key] = create_index(self.settings.kind, self.dim, self.settings)
            self.partitions[key].add(np.asarray(ids)[rows], np.asarray(vectors)[rows])

    def remove(self, ids: np.ndarray, categories: Sequence[str | None]) -> None:
        for key, rows in _group(self.key(c) for c in categories).items():
            partition = self.partitions.get(key)
            if partition is not None:
                partition.remove(np.asarray(ids)[rows])
                if len(partition) == 0:
                    del self.partitions[key]

    def search(
        self, queries: np.ndarray, k: int, categories: Iterable[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k over the given categories' partitions (all when None), best first."""
        keys = self.partitions.keys() if categories is None else {self.key(c) for c in categories}
        searched = [self.partitions[key] for key in keys if key in self.partitions]
        with faiss_threads(threads_for(len(queries), sum(len(p) for p in searched))):
            found = [partition.search(queries, k) for partition in searched]
        if not found:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        scores = np.concatenate([s for s, _ in found], axis=1)
        ids = np.concatenate([i for _, i in found], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    # -- VectorStore
    def upsert(self, ids: np.ndarray, vectors: np.ndarray, categories: Sequence[str | None]) -> None:
        """Add, replacing any vector these ids hold in the same categories' partitions (an id moving
        to another category is `delete`d from its old one first). `add` is for ids known to be new."""
        self.remove(ids, categories)
        self.add(ids, vectors, categories)

    def delete(self, ids: np.ndarray, categories: Sequence[str | None]) -> None:
        self.remove(ids, categories)

    def plan(self, categories: Sequence[str | None] | None = None) -> SearchPlan:
        """What a search over these categories' partitions (all when None) must do, from their capabilities."""
        keys = self.partitions.keys() if categories is None else {self.key(c) for c in categories}
        declared = [self.partitions[key].capabilities for key in keys if key in self.partitions]
        return SearchPlan(
            approximate=any(not c.exact for c in declared), rescore=any(not c.exact_scores for c in declared)
        )

    def count(self) -> int:
        return len(self)

    def describe(self) -> dict[str, Any]:
        """Per partition: kind, vectors, state (exact or approximate, and why), tunables, tombstones."""
        return {key: dict(partition.describe()) for key, partition in sorted(self.partitions.items())}

    def flush(self) -> None:
        if self.folder is not None:
            self.save(self.folder, self.generation)

    def close(self) -> None:
        """Nothing to release: the partitions are plain memory (or read-only memory maps)."""

    def __len__(self) -> int:
        return sum(len(p) for p in self.partitions.values())

    def sizes(self) -> dict[str, int]:
        return {key: len(index) for key, index in sorted(self.partitions.items())}

    # -- snapshots
    def save(self, folder: Path, generation: int) -> None:
        """Write every partition under folder/gen-<generation>, then switch the manifest atomically."""
        target = folder / f"gen-{generation}"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        files = {}
        for number, (key, index) in enumerate(sorted(self.partitions.items())):
            name = f"part-{number}.faiss"
            index.save(target / name)
            files[key] = name
        manifest = {"generation": generation, "kind": self.settings.kind, "dim": self.dim, "partitions": files}
        _write_atomic(folder / _MANIFEST, json.dumps(manifest, indent=1))
        _remove_old_snapshots(folder, keep=target.name)
        self.folder, self.generation = folder, generation

    @classmethod
    def load(cls, folder: Path, settings: IndexSettings, dim: int, generation: int) -> PartitionedIndex | None:
        """The saved snapshot, or None when it is missing, older than the database or damaged (a
        garbled manifest, a missing or truncated partition file): the caller rebuilds it."""
        state = cls.inspect(folder, settings, dim, generation)
        return state.get("index") if state["state"] == "current" else None  # type: ignore[return-value]

    @classmethod
    def inspect(cls, folder: Path, settings: IndexSettings, dim: int, generation: int) -> dict[str, object]:
        """The snapshot's state ("missing", "stale", "damaged" or "current", with the reason) and,
        when current, the loaded `index`."""
        manifest_path = folder / _MANIFEST
        if not manifest_path.exists():
            return {"state": "missing", "reason": f"no {manifest_path.name}"}
        try:
            manifest = json.loads(manifest_path.read_text())
            saved, files = manifest["generation"], dict(manifest["partitions"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"state": "damaged", "reason": f"{manifest_path}: unreadable manifest ({exc!r:.80})"}
        if saved != generation or manifest.get("kind") != settings.kind or manifest.get("dim", dim) != dim:
            found = f"generation {saved}, kind {manifest.get('kind')}"
            return {
                "state": "stale",
                "reason": f"{found}; the database is at generation {generation}, kind {settings.kind}",
            }
        index = cls(settings, dim, folder, generation)
        target = folder / f"gen-{generation}"
        for key, name in files.items():
            try:
                index.partitions[key] = load_index(settings.kind, target / str(name), dim, settings)
            except Exception as exc:  # FAISS raises RuntimeError on truncated files; anything unreadable is damage
                return {"state": "damaged", "reason": f"{target / str(name)}: {exc!s:.120}"}
        return {"state": "current", "reason": f"generation {generation}", "index": index}


def _group(keys: Iterable[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return groups


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _remove_old_snapshots(folder: Path, keep: str) -> None:
    for old in folder.glob("gen-*"):
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


@VECTOR_STORES.register("faiss")
def open_faiss_store(folder: Path, dim: int, settings: IndexSettings, *, create: bool = False) -> PartitionedIndex:
    """A new, empty store whose snapshots go to `folder`, or the snapshot saved there last (an empty
    store when there is none). The catalogue loads snapshots by the database's generation instead."""
    if not create:
        manifest_path = folder / _MANIFEST
        if manifest_path.exists():
            generation = json.loads(manifest_path.read_text())["generation"]
            loaded = PartitionedIndex.load(folder, settings, dim, generation)
            if loaded is not None:
                return loaded
    return PartitionedIndex(settings, dim, folder)
