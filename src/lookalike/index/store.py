"""SQLite metadata and the vectors' source of truth: each write is one transaction.

The FAISS files beside it are snapshots that can always be rebuilt from here, so a crash between
a committed batch and the next snapshot loses nothing. Every transaction bumps the database's
generation and logs which items it added and removed (`changes`), so a process holding the vectors
in memory can catch up with another process's writes without reading the whole catalogue.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import DiskFullError, IndexCorruptError

SCHEMA_VERSION = 1
RESET = "reset"  # a change that rewrote every vector (a new embedding): catch up by reloading everything

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    category TEXT,
    content_hash TEXT NOT NULL,
    added_at REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_category ON items(category);
CREATE INDEX IF NOT EXISTS items_hash ON items(content_hash);
CREATE TABLE IF NOT EXISTS blobs (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (item_id, name)
);
CREATE TABLE IF NOT EXISTS changes (
    generation INTEGER NOT NULL,
    op TEXT NOT NULL,
    item_id INTEGER NOT NULL,
    category TEXT
);
CREATE INDEX IF NOT EXISTS changes_generation ON changes(generation);
"""


@dataclass(frozen=True)
class Item:
    """One indexed image's metadata."""

    id: int
    path: str
    category: str | None
    content_hash: str
    added_at: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewItem:
    """What the offline stage hands to the store for one image."""

    path: str
    category: str | None
    content_hash: str
    vector: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


class MetadataStore:
    """Thread-safe access to the index's SQLite database.

    `create=False` opens an existing database and refuses anything else (an empty or foreign file)
    with an `IndexCorruptError` naming it.
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._pending: int | None = None  # the generation the open transaction will commit
        self.last_generation = 0  # the generation this connection's last transaction committed
        if not create:
            _check_existing(path)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if not create:
                self._check_schema()
            self._db.executescript(_SCHEMA)
            if self.get_meta("schema_version") is None:
                with self.transaction():
                    self._set_meta("schema_version", SCHEMA_VERSION)
                    self._set_meta("generation", 0)
        except sqlite3.DatabaseError as exc:
            raise _readable_error(path, exc) from None

    def _check_schema(self) -> None:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "items", "blobs"} <= tables:
            raise IndexCorruptError(
                f"{self.path}: not a lookalike catalogue database (tables found: {sorted(tables) or 'none'}); "
                "restore it, or build the index again with `lookalike index CATALOG --index PATH --rebuild`"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write; bumps the generation so vector snapshots know they are stale.

        A full disk raises `DiskFullError`; nothing of the transaction is kept.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._pending = self._generation_now() + 1
                yield self._db
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(self._pending),))
                self._set_meta("changed_at", time.strftime("%Y-%m-%d %H:%M:%S"))  # local time, for `info`
                self._db.execute("COMMIT")
                self.last_generation = self._pending
            except BaseException as exc:
                self._rollback()
                readable = _readable_error(self.path, exc)
                if readable is exc:
                    raise
                raise readable from exc
            finally:
                self._pending = None

    def _rollback(self) -> None:
        # SQLite may have rolled back already (a full disk does): the original error is the one to report
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("ROLLBACK")

    def _generation_now(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(json.loads(row[0])) if row else 0

    def integrity(self) -> str | None:
        """SQLite's quick_check: None when the database is sound, else the problem and what to do."""
        try:
            with self._lock:
                rows = self._db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return f"{self.path}: cannot be checked ({exc}); restore it or rebuild the index"
        verdict = [str(row[0]) for row in rows]
        if verdict != ["ok"]:
            return (
                f"{self.path}: SQLite integrity check failed ({'; '.join(verdict[:3])}); restore it from a backup "
                "or rebuild the index (`lookalike index CATALOG --index PATH --rebuild`)"
            )
        return None

    # -- meta
    def get_meta(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    @property
    def generation(self) -> int:
        """The number of transactions committed so far (by any process)."""
        with self._lock:
            return self._generation_now()

    @contextmanager
    def consistent_read(self) -> Iterator[None]:
        """Reads inside see one state of the database, whatever other processes commit meanwhile."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    def changes_since(self, generation: int) -> list[tuple[int, str, int, str | None]] | None:
        """(generation, op, item id, category) of every change committed after `generation`, in order;
        None when the log no longer reaches back that far (then reload everything)."""
        pruned = int(self.get_meta("changes_pruned_through") or 0)
        if generation < pruned:
            return None
        with self._lock:
            rows = self._db.execute(
                "SELECT generation, op, item_id, category FROM changes WHERE generation > ? ORDER BY rowid",
                (generation,),
            ).fetchall()
        return [(int(g), str(op), int(i), c) for g, op, i, c in rows]

    def prune_changes(self, through: int) -> None:
        """Forget the changes up to generation `through` (a snapshot of that generation is on disk)."""
        with self._lock:
            self._db.execute("DELETE FROM changes WHERE generation <= ?", (through,))
            self._set_meta("changes_pruned_through", max(through, int(self.get_meta("changes_pruned_through") or 0)))

    def _log(self, db: sqlite3.Connection, op: str, item_id: int, category: str | None) -> None:
        if self._pending is None:
            raise RuntimeError("store writes must happen inside store.transaction()")
        db.execute(
            "INSERT INTO changes (generation, op, item_id, category) VALUES (?, ?, ?, ?)",
            (self._pending, op, item_id, category),
        )

    # -- writes
    def insert(self, db: sqlite3.Connection, item: NewItem) -> int:
        cursor = db.execute(
            "INSERT INTO items (path, category, content_hash, added_at, extra, vector) VALUES (?, ?, ?, ?, ?, ?)",
            (
                item.path,
                item.category,
                item.content_hash,
                time.time(),
                json.dumps(item.extra),
                _vector_bytes(item.vector),
            ),
        )
        item_id = int(cursor.lastrowid or 0)
        self._log(db, "add", item_id, item.category)
        db.executemany(
            "INSERT INTO blobs (item_id, name, data) VALUES (?, ?, ?)",
            [(item_id, name, data) for name, data in item.blobs.items()],
        )
        return item_id

    def delete(self, db: sqlite3.Connection, ids: Iterable[int]) -> None:
        for item_id in ids:
            row = db.execute("SELECT category FROM items WHERE id = ?", (int(item_id),)).fetchone()
            if row is not None:
                self._log(db, "remove", int(item_id), row[0])
                db.execute("DELETE FROM items WHERE id = ?", (int(item_id),))

    def rewrite_vectors(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        blob: str,
        blob_rows: np.ndarray | None,
        meta: dict[str, Any],
    ) -> None:
        """One transaction: every image's new vector, the blob `blob` of each (its rows; None deletes
        the blob everywhere) and meta values. Used when a new embedding replaces the vectors."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE items SET vector = ? WHERE id = ?",
                [(_vector_bytes(vector), int(i)) for i, vector in zip(ids, vectors, strict=True)],
            )
            if blob_rows is None:
                db.execute("DELETE FROM blobs WHERE name = ?", (blob,))
            else:
                db.executemany(
                    "INSERT OR REPLACE INTO blobs (item_id, name, data) VALUES (?, ?, ?)",
                    [(int(i), blob, _vector_bytes(row)) for i, row in zip(ids, blob_rows, strict=True)],
                )
            for key, value in meta.items():
                self._set_meta(key, value)
            self._log(db, RESET, 0, None)

    # -- reads
    def get(self, item_id: int) -> Item | None:
        rows = self.get_many([item_id])
        return rows.get(item_id)

    def get_many(self, ids: Iterable[int]) -> dict[int, Item]:
        id_list = [int(i) for i in ids]
        found: dict[int, Item] = {}
        for chunk in _chunks(id_list, 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT id, path, category, content_hash, added_at, extra FROM items WHERE id IN ({marks})",
                    chunk,
                ).fetchall()
            found.update({row[0]: _item(row) for row in rows})
        return found

    def find_by_path(self, path: str) -> Item | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, path, category, content_hash, added_at, extra FROM items WHERE path = ?", (path,)
            ).fetchone()
        return None if row is None else _item(row)

    def known_paths(self, paths: Iterable[str] | None = None) -> dict[str, tuple[int, str]]:
        """path -> (id, content hash) of the given paths that are indexed (every item's when None).

        With paths, only those rows are read (by the unique index on path): the cost of a batch does
        not grow with the catalogue.
        """
        if paths is None:
            with self._lock:
                rows = self._db.execute("SELECT path, id, content_hash FROM items").fetchall()
            return {path: (item_id, digest) for path, item_id, digest in rows}
        found: dict[str, tuple[int, str]] = {}
        for chunk in _chunks(list(dict.fromkeys(paths)), 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT path, id, content_hash FROM items WHERE path IN ({marks})", chunk
                ).fetchall()
            found.update({path: (item_id, digest) for path, item_id, digest in rows})
        return found

    def items(self, category: str | None = None, *, limit: int | None = None, offset: int = 0) -> list[Item]:
        query = "SELECT id, path, category, content_hash, added_at, extra FROM items"
        params: list[Any] = []
        if category is not None:
            query += " WHERE category = ?"
            params.append(category)
        query += " ORDER BY id LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        with self._lock:
            return [_item(row) for row in self._db.execute(query, params).fetchall()]

    def vectors(self, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[str | None]]]:
        """All (ids, vectors, categories) in chunks, for rebuilding the vector index."""
        last_id = -1
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, category, vector FROM items WHERE id > ? ORDER BY id LIMIT 4096", (last_id,)
                ).fetchall()
            if not rows:
                return
            ids = np.array([row[0] for row in rows], dtype=np.int64)
            vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vectors, [row[1] for row in rows]
            last_id = int(ids[-1])

    def vectors_of(self, ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(f"SELECT id, vector FROM items WHERE id IN ({marks})", chunk).fetchall()
            found.update({row[0]: np.frombuffer(row[1], dtype=np.float32).reshape(dim) for row in rows})
        return found

    def blobs(self, name: str, ids: Iterable[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT item_id, data FROM blobs WHERE name = ? AND item_id IN ({marks})", [name, *chunk]
                ).fetchall()
            found.update({row[0]: bytes(row[1]) for row in rows})
        return found

    def ids(self) -> np.ndarray:
        """Every item's id, ascending."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM items ORDER BY id").fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def category_counts(self) -> dict[str | None, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT category, COUNT(*) FROM items GROUP BY category ORDER BY category"
            ).fetchall()
        return {category: int(count) for category, count in rows}


def _check_existing(path: Path) -> None:
    if not path.is_file():
        raise IndexCorruptError(f"{path}: missing; an index folder holds catalog.sqlite and settings.json")
    if path.stat().st_size == 0:
        raise IndexCorruptError(
            f"{path}: the catalogue database is empty (0 bytes), so the index lost its contents; restore it "
            "from a backup, or build the index again with `lookalike index CATALOG --index PATH --rebuild`"
        )


def _readable_error(path: Path, exc: BaseException) -> Exception:
    """The lookalike error for a database or file-system failure: a full disk, or an unreadable file."""
    if not isinstance(exc, sqlite3.DatabaseError | OSError):
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in text or "disk I/O" in text:
        return DiskFullError(
            f"{path.parent}: no space left on the device ({text}); nothing of this batch was written and "
            "what was committed before is kept: free some space and run the command again"
        )
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
        return IndexCorruptError(
            f"{path}: the catalogue database cannot be read ({text}); restore it from a backup, or build "
            "the index again with `lookalike index CATALOG --index PATH --rebuild` (`lookalike check` tells more)"
        )
    return exc if isinstance(exc, Exception) else RuntimeError(text)


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _item(row: tuple[Any, ...]) -> Item:
    return Item(id=row[0], path=row[1], category=row[2], content_hash=row[3], added_at=row[4], extra=json.loads(row[5]))


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
