"""The "milvus" backend: an index's vectors and everything else it stores, in Milvus.

Chosen at creation (`lookalike index ... --backend milvus --uri URI`); URI is a Milvus server
(`http://host:19530`, shared by every replica) or a Milvus Lite file (`./catalog.db`: one process at a
time). Every replica must reach every per-image fact, so nothing mutable stays in the index folder:

- `<collection>`: one row per image: `id`, `vector`, `category` (the partition key: filtered search
  by category), `path`, `content_hash`, `added_at`, `extra` (JSON);
- `<collection>_blobs`: the re-rankers' per-image data (silhouettes, keypoints, raw vectors) in
  base64 chunks;
- `<collection>_paths`: path (the primary key) -> image id, so that looking up a batch of paths reads
  only those rows, however large the catalogue (a filter on a scalar field scans every row in Milvus
  Lite, and needs a scalar index on a server); a row counts only while the image it names holds that
  path, so a write cut short never leaves a wrong answer;
- `<collection>_meta`: the dimension, the model fingerprint, a generation that changes on every write,
  and which vectors collection is current (training an embedding writes a new one, then switches).

The index folder keeps what does not change between writes: settings.json and the model files (a
fine-tuned backbone, a learned transform, the classifier); replicas get a copy of it. Opening a
collection whose stored fingerprint differs from the folder's models is refused (`Engine.open`).

Searches use `consistency_level` (default "Strong"): a search right after an add sees it. Ids are
allocated by the writer (milliseconds << 12 + a random offset: below 2**53, exact in JavaScript),
checked free before each insert.
The access token, when the server needs one, comes from $LOOKALIKE_MILVUS_TOKEN, never from the
settings file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import IndexMismatchError, LookalikeError, SettingsError
from lookalike.index.base import check_ids, check_vectors
from lookalike.index.store import Item, NewItem
from lookalike.index.vectorstore import VECTOR_STORES, SearchPlan, StoreCapabilities
from lookalike.settings import IndexSettings

TOKEN_VARIABLE = "LOOKALIKE_MILVUS_TOKEN"
_LITE_USERS: dict[str, int] = {}  # open clients per Milvus Lite file in this process
_LITE_LOCK = threading.Lock()
UNCATEGORISED = ""  # a partition key cannot be null: images without a category are filed under ""
BLOB_CHUNK = 45_000  # raw bytes per blob row: base64 stays under VARCHAR's 65,535 bytes
QUERY_BATCH = 4_096
IN_LIST = 1_000  # ids per `id in [...]` expression
PATHS_PER_LOOKUP = 200  # paths per `path in [...]` expression (each up to 4,096 bytes)
PATHS_READY = "paths_index"  # meta key: the _paths collection holds every image's path (absent in older indexes)
ITEM_FIELDS = ["id", "path", "category", "content_hash", "added_at", "extra"]
# index.kind -> Milvus index type. Milvus Lite builds these; it accepts IVF_PQ / HNSW_PQ / DISKANN but
# silently searches by brute force, so they are not offered (a server would build them: not tested here).
MILVUS_KINDS = {"flat": "FLAT", "hnsw": "HNSW", "ivf_flat": "IVF_FLAT", "ivf_sq8": "IVF_SQ8", "auto": "AUTOINDEX"}


class MilvusError(LookalikeError):
    """Milvus refused a request or cannot be reached."""


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def resolve_uri(uri: str) -> str:
    """A Lite file path made absolute (so the index works from any directory); server URIs unchanged."""
    if not is_lite(uri):
        return uri
    if not uri.endswith(".db"):
        raise SettingsError(f"index.uri {uri!r}: a Milvus Lite file must end in .db, or give a server's http:// URI")
    return str(Path(uri).expanduser().resolve())


def connect(settings: IndexSettings) -> Any:
    """A `MilvusClient` for `settings.uri` (token from $LOOKALIKE_MILVUS_TOKEN)."""
    if not settings.uri:
        raise SettingsError("the milvus backend needs index.uri: a server URI (http://host:19530) or a .db file")
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise SettingsError(
            "the milvus backend needs pymilvus (and milvus-lite for a .db file): pip install 'lookalike[scale]'"
        ) from None
    options: dict[str, Any] = {"uri": settings.uri}
    if is_lite(settings.uri):
        # pymilvus pings every 10 s even when idle; Milvus Lite's gRPC server allows fewer, and a loaded
        # test run here lost its connection with "Too many pings": ping less often
        options["grpc_options"] = {"grpc.keepalive_time_ms": 600_000, "grpc.keepalive_permit_without_calls": False}
    if os.environ.get(TOKEN_VARIABLE):
        options["token"] = os.environ[TOKEN_VARIABLE]
    try:
        client = MilvusClient(**options)
    except Exception as exc:
        if is_lite(settings.uri):
            raise MilvusError(
                f"cannot open the Milvus Lite file {settings.uri} ({exc}): a Lite file serves one process at a "
                "time; is another process (`lookalike serve`?) using it? Several processes need a Milvus server"
            ) from None
        raise MilvusError(f"cannot connect to Milvus at {settings.uri}: {exc}") from None
    if is_lite(settings.uri):
        with _LITE_LOCK:
            _LITE_USERS[settings.uri] = _LITE_USERS.get(settings.uri, 0) + 1
    return client


def disconnect(client: Any, uri: str) -> None:
    """Close a client; the last one of a Milvus Lite file in this process also stops its server, which
    frees the file for other processes (Lite serves one process at a time)."""
    client.close()
    if not is_lite(uri):
        return
    with _LITE_LOCK:
        _LITE_USERS[uri] = _LITE_USERS.get(uri, 1) - 1
        last = _LITE_USERS[uri] <= 0
        if last:
            del _LITE_USERS[uri]
    if last:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def collection_name(folder: Path) -> str:
    """A valid collection name from an index folder's name (letters, digits, underscores)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", folder.name) or "lookalike"
    return name if name[0].isalpha() or name[0] == "_" else f"index_{name}"


def literal(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value, ensure_ascii=False)


def _id_list(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _key(category: str | None) -> str:
    return UNCATEGORISED if category is None else category


def _category(key: str) -> str | None:
    return None if key == UNCATEGORISED else key


class MilvusSpace:
    """One client and the collections of one index: `<name>_vN` (the current vectors), `_blobs`, `_meta`."""

    def __init__(self, settings: IndexSettings, *, create: bool | None = False) -> None:
        """create=True makes the side collections, False requires them, None only connects."""
        if not settings.collection:
            raise SettingsError("the milvus backend needs index.collection (the collection's name)")
        self.settings = settings
        self.name = settings.collection
        self.client = connect(settings)
        self.lock = threading.RLock()  # one Lite process per file; pymilvus clients are not documented thread-safe
        self.consistency = settings.consistency
        if create:
            self._create_side_collections()
        elif create is False:
            if not self.client.has_collection(self.meta_name):
                raise MilvusError(
                    f"no lookalike index {self.name!r} at {settings.uri} (no collection {self.meta_name}); "
                    "create it with `lookalike index CATALOG --index PATH --backend milvus --uri URI`"
                )
            self.load(self.meta_name)
            self.load(self.blobs_name)
            if self.client.has_collection(self.paths_name):  # absent in an index made before it: built on write
                self.load(self.paths_name)

    @property
    def meta_name(self) -> str:
        return f"{self.name}_meta"

    @property
    def blobs_name(self) -> str:
        return f"{self.name}_blobs"

    @property
    def paths_name(self) -> str:
        return f"{self.name}_paths"

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client call, its failure a `MilvusError` saying what was being done."""
        try:
            with self.lock:
                return getattr(self.client, method)(*args, **kwargs)
        except LookalikeError:
            raise
        except Exception as exc:
            raise MilvusError(f"Milvus at {self.settings.uri} failed {what}: {exc}") from None

    def close(self) -> None:
        with self.lock:
            disconnect(self.client, self.settings.uri or "")

    def load(self, collection: str) -> None:
        """Load a collection for queries (a restarted server, or Milvus Lite opened by a new process,
        holds collections released; loading a loaded one does nothing)."""
        self.call(f"loading {collection}", "load_collection", collection)

    def exists(self) -> bool:
        return bool(self.call("listing collections", "has_collection", self.meta_name))

    def drop_all(self) -> None:
        """Drop this index's collections (and no other index's)."""
        versions = re.compile(re.escape(self.name) + r"_v\d+")
        for name in self.call("listing collections", "list_collections"):
            if name in (self.meta_name, self.blobs_name, self.paths_name) or versions.fullmatch(name):
                self.call(f"dropping {name}", "drop_collection", name)

    def _create_side_collections(self) -> None:
        from pymilvus import DataType

        for name, fields in (
            (self.meta_name, [("key", DataType.VARCHAR, {"max_length": 256, "is_primary": True}),
                              ("value", DataType.VARCHAR, {"max_length": 65_535})]),
            (self.blobs_name, [("key", DataType.VARCHAR, {"max_length": 128, "is_primary": True}),
                               ("item_id", DataType.INT64, {}), ("name", DataType.VARCHAR, {"max_length": 64}),
                               ("chunk", DataType.INT64, {}), ("data", DataType.VARCHAR, {"max_length": 65_535})]),
        ):  # fmt: skip
            self._create_side_collection(name, fields)
        self.create_paths_collection()

    def create_paths_collection(self) -> None:
        """`<name>_paths`: path (primary key) -> item_id; lookups by primary key read only the rows asked for."""
        from pymilvus import DataType

        fields = [("path", DataType.VARCHAR, {"max_length": 4096, "is_primary": True}), ("item_id", DataType.INT64, {})]
        self._create_side_collection(self.paths_name, fields)

    def _create_side_collection(self, name: str, fields: list[tuple[str, Any, dict[str, Any]]]) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        for field_name, data_type, options in fields:
            schema.add_field(field_name, data_type, **options)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in each collection
        index = self.client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        self.call(f"creating {name}", "create_collection", name, schema=schema, index_params=index,
                  consistency_level=self.consistency)  # fmt: skip

    def query(self, collection: str, expression: str, fields: list[str], what: str) -> list[dict[str, Any]]:
        return list(self.call(what, "query", collection, filter=expression, output_fields=fields))

    def scan(
        self,
        collection: str,
        fields: list[str],
        expression: str = "",
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> Iterator[list[dict[str, Any]]]:
        """The rows matching `expression` in batches, in primary-key order (query_iterator: no
        16,384-row limit); `offset` rows skipped (only their keys are read), at most `limit` returned."""
        options: dict[str, Any] = {"limit": limit} if limit is not None else {}
        if offset:
            options["offset"] = offset
        batch = QUERY_BATCH if limit is None else max(1, min(QUERY_BATCH, limit))
        try:
            with self.lock:
                iterator = self.client.query_iterator(
                    collection, batch_size=batch, filter=expression, output_fields=fields, **options
                )
        except Exception as exc:
            raise MilvusError(f"Milvus at {self.settings.uri} failed reading {collection}: {exc}") from None
        try:
            while True:
                with self.lock:
                    batch = iterator.next()
                if not batch:
                    return
                yield list(batch)
        finally:
            with self.lock:
                iterator.close()


class MilvusVectorStore:
    """The `VectorStore` over one Milvus collection; rows may carry the image's facts (`payload`)."""

    def __init__(
        self,
        space: MilvusSpace,
        collection: str,
        dim: int,
        *,
        create: bool = False,
        settings: IndexSettings | None = None,
    ) -> None:
        self.space = space
        self.collection = collection
        self.dim = dim
        self.settings = settings or space.settings
        self.owns_client = False
        kind = self.settings.kind
        if kind not in MILVUS_KINDS:
            raise SettingsError(
                f"index.kind {kind!r} is not offered on the milvus backend; expected one of {', '.join(MILVUS_KINDS)}"
            )
        if create:
            self._create()
        elif not space.call("listing collections", "has_collection", collection):
            raise MilvusError(f"{space.settings.uri}: collection {collection!r} is missing; rebuild the index")
        else:
            space.load(collection)

    @property
    def capabilities(self) -> StoreCapabilities:
        kind = self.settings.kind
        return StoreCapabilities(
            backend="milvus",
            kinds=tuple(MILVUS_KINDS),
            exact=kind == "flat",
            exact_scores=kind != "ivf_sq8",  # SQ8 scores are computed from 8-bit codes
            read_your_writes=self.settings.consistency == "Strong",
            shared=True,
        )

    def _create(self) -> None:
        from pymilvus import DataType

        client = self.space.client
        schema = client.create_schema(
            auto_id=False, enable_dynamic_field=False, partition_key_field="category", num_partitions=64
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("category", DataType.VARCHAR, max_length=1024)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=128)
        schema.add_field("added_at", DataType.DOUBLE)
        schema.add_field("extra", DataType.JSON)
        index = client.prepare_index_params()
        index.add_index("vector", index_type=MILVUS_KINDS[self.settings.kind], metric_type="IP",
                        params=self._build_params())  # fmt: skip
        self.space.call(f"creating {self.collection}", "create_collection", self.collection, schema=schema,
                        index_params=index, consistency_level=self.settings.consistency)  # fmt: skip

    def build_index(self) -> None:
        """(Re)build the Milvus index over the collection as `settings.kind`; the collection is
        released meanwhile, so searches from other processes fail until it is loaded again."""
        params = self.space.client.prepare_index_params()
        params.add_index("vector", index_type=MILVUS_KINDS[self.settings.kind], metric_type="IP",
                         params=self._build_params())  # fmt: skip
        self.space.call("releasing the collection", "release_collection", self.collection)
        self.space.call("dropping the index", "drop_index", self.collection, "vector")
        self.space.call("building the index", "create_index", self.collection, params)
        self.space.call("loading the collection", "load_collection", self.collection)

    def _build_params(self) -> dict[str, Any]:
        settings = self.settings
        if settings.kind == "hnsw":
            return {"M": settings.hnsw_m or 32, "efConstruction": settings.ef_construction or 200}
        if settings.kind in ("ivf_flat", "ivf_sq8"):
            return {"nlist": settings.nlist or 1024}
        return {}

    def _search_params(self, k: int) -> dict[str, Any]:
        settings = self.settings
        if settings.kind == "hnsw":
            return {"metric_type": "IP", "params": {"ef": max(settings.ef_search or 128, k)}}
        if settings.kind in ("ivf_flat", "ivf_sq8"):
            return {"metric_type": "IP", "params": {"nprobe": settings.nprobe or 32}}
        return {"metric_type": "IP", "params": {}}

    # -- writes
    def _rows(
        self, ids: np.ndarray, vectors: np.ndarray, categories: Sequence[str | None], payload: Sequence[dict] | None
    ) -> list[dict[str, Any]]:
        vectors = check_vectors(vectors, self.dim)
        ids = check_ids(ids, len(vectors))
        if len(categories) != len(ids):
            raise IndexMismatchError(f"expected {len(ids)} categories, got {len(categories)}")
        facts = payload if payload is not None else [{}] * len(ids)
        return [
            {"path": "", "content_hash": "", "added_at": 0.0, "extra": {}, **fact,
             "id": int(i), "vector": vector.tolist(), "category": _key(category)}
            for i, vector, category, fact in zip(ids, vectors, categories, facts, strict=True)
        ]  # fmt: skip

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        categories: Sequence[str | None],
        payload: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Insert new ids (an id already stored would then be held twice: `upsert` replaces)."""
        self._write("insert", self._rows(ids, vectors, categories, payload))

    def upsert(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        categories: Sequence[str | None],
        payload: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self._write("upsert", self._rows(ids, vectors, categories, payload))

    def _write(self, method: str, rows: list[dict[str, Any]]) -> None:
        for chunk in _chunks(rows, 1_000):
            self.space.call(f"{method}ing into {self.collection}", method, self.collection, chunk)

    def delete(self, ids: np.ndarray, categories: Sequence[str | None] | None = None) -> None:
        id_list = [int(i) for i in np.asarray(ids).reshape(-1)]
        for chunk in _chunks(id_list, IN_LIST):
            self.space.call(f"deleting from {self.collection}", "delete", self.collection, ids=chunk)

    # -- reads
    def search(
        self, queries: np.ndarray, k: int, categories: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = check_vectors(queries, self.dim, "queries")
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if k < 1 or (categories is not None and not categories):
            return scores, ids
        expression = "" if categories is None else f"category in [{','.join(literal(_key(c)) for c in categories)}]"
        found = self.space.call(
            "searching", "search", self.collection, data=queries.tolist(), limit=min(k, 16_384),
            filter=expression, output_fields=["id"], search_params=self._search_params(k),
        )  # fmt: skip
        for row, hits in enumerate(found):
            for rank, hit in enumerate(hits):
                scores[row, rank], ids[row, rank] = hit["distance"], hit["id"]
        return scores, ids

    def plan(self, categories: Sequence[str | None] | None = None) -> SearchPlan:
        capabilities = self.capabilities
        return SearchPlan(approximate=not capabilities.exact, rescore=not capabilities.exact_scores)

    def count(self) -> int:
        rows = self.space.query(self.collection, "", ["count(*)"], "counting")
        return int(rows[0]["count(*)"])

    def sizes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for batch in self.space.scan(self.collection, ["category"]):
            for row in batch:
                counts[row["category"]] = counts.get(row["category"], 0) + 1
        return dict(sorted(counts.items()))

    def describe(self) -> dict[str, Any]:
        """One entry, like a FAISS partition's: the collection, its Milvus index type and state."""
        facts = self.space.call("describing the index", "describe_index", self.collection, "vector")
        return {
            self.collection: {
                "kind": self.settings.kind,
                "index": facts.get("index_type"),
                "vectors": self.count(),
                "state": "exact" if self.capabilities.exact else "approximate",
                "uri": self.settings.uri,
                "consistency": self.settings.consistency,
            }
        }

    def flush(self) -> None:
        self.space.call("flushing", "flush", self.collection)

    def close(self) -> None:
        """Close the client when this store opened it (a catalogue closes its own)."""
        if self.owns_client:
            self.space.close()


class MilvusItemStore:
    """The metadata store of a Milvus-backed index, with `MetadataStore`'s reading interface."""

    def __init__(self, space: MilvusSpace) -> None:
        self.space = space
        self.path = f"{space.settings.uri}#{space.name}"
        self._counts: tuple[int, dict[str | None, int]] | None = None
        self._paths_ready = False  # once true, stays true (set when the _paths collection is complete)
        self._generation_seen = 0  # the largest generation this process read or wrote
        self.collection = self.current_collection()
        if space.call("listing collections", "has_collection", self.collection):
            space.load(self.collection)  # metadata reads (paths, items) query it before any search

    def close(self) -> None:
        self.space.close()

    def current_collection(self) -> str:
        """The vectors collection in use now (training an embedding writes a new one, then switches);
        `collection` holds what this process last read, refreshed by the catalogue's `sync`."""
        self.collection = str(self.get_meta("vectors_collection") or f"{self.space.name}_v0")
        return self.collection

    def integrity(self) -> str | None:
        """None when the meta, blobs and current vectors collections are all there, else the problem."""
        try:
            names = set(self.space.call("listing collections", "list_collections"))
            needed = {self.space.meta_name, self.space.blobs_name, self.current_collection()}
            if self.paths_ready:
                needed.add(self.space.paths_name)
        except MilvusError as exc:
            return str(exc)
        missing = needed - names
        if missing:
            return (
                f"{self.path}: collections missing in Milvus: {', '.join(sorted(missing))}; restore them "
                "or rebuild the index (`lookalike index CATALOG --index PATH --rebuild`)"
            )
        return None

    # -- meta
    def get_meta(self, key: str) -> Any:
        # `key in [...]` on the primary key: a point read (`key == ...` is a filter over every row)
        rows = self.space.query(self.space.meta_name, f"key in [{literal(key)}]", ["value"], "reading meta")
        return json.loads(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: Any) -> None:
        self.set_many({key: value})

    def set_many(self, values: dict[str, Any]) -> None:
        rows = [{"key": key, "value": json.dumps(value), "unused": [0.0, 0.0]} for key, value in values.items()]
        self.space.call("writing meta", "upsert", self.space.meta_name, rows)

    @property
    def generation(self) -> int:
        """Changes on every write: the writer's clock in milliseconds, or one more than the last
        generation this process read or wrote when that is later (distinct, not gapless)."""
        generation = int(self.get_meta("generation") or 0)
        self._generation_seen = max(self._generation_seen, generation)
        return generation

    def bump_generation(self) -> int:
        """A new generation, written without reading the stored one first (one request per commit, not
        two): writers of one folder take turns under its lock, so the clock has moved on since the
        last one wrote, and this process's own commits count up from the last value it saw."""
        generation = max(self._generation_seen + 1, time.time_ns() // 1_000_000)
        self.set_many({"generation": generation, "changed_at": time.strftime("%Y-%m-%d %H:%M:%S")})
        self._generation_seen = generation
        return generation

    @contextmanager
    def consistent_read(self) -> Iterator[None]:
        """Strong consistency: each read sees every write acknowledged before it (no snapshot isolation)."""
        yield

    # -- ids and writes
    def new_ids(self, count: int) -> list[int]:
        """`count` ids no stored image holds (see the module's note on allocation)."""
        while True:
            # below 2**53 (until 2039): JavaScript clients (the web page) read ids as exact numbers
            start = ((time.time_ns() // 1_000_000) << 12) + secrets.randbelow(1 << 12)
            ids = list(range(start, start + count))
            if not any(self.space.query(self.collection, f"id in {_id_list(c)}", ["id"], "allocating ids")
                       for c in _chunks(ids, IN_LIST)):  # fmt: skip
                return ids

    # -- the path lookup (`<name>_paths`)
    @property
    def paths_ready(self) -> bool:
        """Whether `<name>_paths` holds every image's path (an index made before it existed has none
        until its next write builds it; lookups meanwhile filter the vectors collection)."""
        if not self._paths_ready:
            self._paths_ready = bool(self.get_meta(PATHS_READY))
        return self._paths_ready

    def ensure_paths(self) -> None:
        """Build `<name>_paths` from the vectors collection when the index predates it (one scan, once;
        writers only, under the index's write lock). Marked complete only once every row is written."""
        if self.paths_ready:
            return
        if not self.space.call("listing collections", "has_collection", self.space.paths_name):
            self.space.create_paths_collection()
        self.space.load(self.space.paths_name)
        if self.space.call("listing collections", "has_collection", self.collection):
            for batch in self.space.scan(self.collection, ["id", "path"]):
                self._write_paths([(row["path"], int(row["id"])) for row in batch])
        self.set_meta(PATHS_READY, True)
        self._paths_ready = True

    def _write_paths(self, rows: Sequence[tuple[str, int]]) -> None:
        records = [{"path": path, "item_id": item_id, "unused": [0.0, 0.0]} for path, item_id in rows]
        for chunk in _chunks(records, 1_000):
            self.space.call("writing paths", "upsert", self.space.paths_name, chunk)

    def record_paths(self, ids: Sequence[int], items: Sequence[NewItem]) -> None:
        """Point each new image's path at its id (before its row is inserted: a path row whose image is
        missing is ignored by `known_paths`)."""
        self._write_paths([(item.path, int(item_id)) for item_id, item in zip(ids, items, strict=True)])

    def forget_paths(self, paths: Iterable[str]) -> None:
        for chunk in _chunks(list(dict.fromkeys(paths)), PATHS_PER_LOOKUP):
            self.space.call("deleting paths", "delete", self.space.paths_name, ids=chunk)

    def payload(self, item: NewItem) -> dict[str, Any]:
        return {"path": item.path, "content_hash": item.content_hash, "added_at": time.time(), "extra": item.extra}

    def write_blobs(self, ids: Sequence[int], items: Sequence[NewItem]) -> None:
        rows = []
        for item_id, item in zip(ids, items, strict=True):
            for name, data in item.blobs.items():
                rows += _blob_rows(int(item_id), name, data)
        for chunk in _chunks(rows, 200):
            self.space.call("writing blobs", "upsert", self.space.blobs_name, chunk)

    def delete_blobs(self, ids: Iterable[int], name: str | None = None) -> None:
        for chunk in _chunks([int(i) for i in ids], IN_LIST):
            expression = f"item_id in {_id_list(chunk)}" + ("" if name is None else f" and name == {literal(name)}")
            self.space.call("deleting blobs", "delete", self.space.blobs_name, filter=expression)

    # -- reads

    def get(self, item_id: int) -> Item | None:
        return self.get_many([item_id]).get(int(item_id))

    def get_many(self, ids: Iterable[int]) -> dict[int, Item]:
        found: dict[int, Item] = {}
        for chunk in _chunks([int(i) for i in ids], IN_LIST):
            for row in self.space.query(self.collection, f"id in {_id_list(chunk)}", ITEM_FIELDS, "reading items"):
                found[int(row["id"])] = _item(row)
        return found

    def find_by_path(self, path: str) -> Item | None:
        if not self.paths_ready:
            rows = self.space.query(self.collection, f"path == {literal(path)}", ITEM_FIELDS, "finding a path")
            return _item(rows[0]) if rows else None
        found = self._look_up([path], ITEM_FIELDS)
        return _item(found[0]) if found else None

    def known_paths(self, paths: Iterable[str] | None = None) -> dict[str, tuple[int, str]]:
        """path -> (id, content hash) of the given paths that are indexed (every image's when None).

        Given paths cost two primary-key reads per 200 (the `_paths` rows, then those images' rows),
        whatever the catalogue's size."""
        fields = ["id", "path", "content_hash"]
        if paths is None:
            rows = [row for batch in self.space.scan(self.collection, fields) for row in batch]
        elif self.paths_ready:
            rows = self._look_up(list(dict.fromkeys(paths)), fields)
        else:  # an index made before `_paths`: a filter over the vectors collection until a writer builds it
            rows = []
            for chunk in _chunks(list(dict.fromkeys(paths)), PATHS_PER_LOOKUP):
                expression = f"path in [{','.join(literal(p) for p in chunk)}]"
                rows += self.space.query(self.collection, expression, fields, "looking up paths")
        return {row["path"]: (int(row["id"]), row["content_hash"]) for row in rows}

    def _look_up(self, paths: list[str], fields: list[str]) -> list[dict[str, Any]]:
        """The image rows holding `paths`, through `_paths` (a path row whose image is gone or holds
        another path, left by a write cut short, is ignored)."""
        found: list[dict[str, Any]] = []
        for chunk in _chunks(paths, PATHS_PER_LOOKUP):
            expression = f"path in [{','.join(literal(p) for p in chunk)}]"
            pointers = self.space.query(self.space.paths_name, expression, ["path", "item_id"], "looking up paths")
            if not pointers:
                continue
            wanted: dict[int, set[str]] = {}
            for row in pointers:
                wanted.setdefault(int(row["item_id"]), set()).add(row["path"])
            rows = self.space.query(self.collection, f"id in {_id_list(wanted)}", fields, "reading items")
            found += [row for row in rows if row["path"] in wanted.get(int(row["id"]), ())]
        return found

    def items(self, category: str | None = None, *, limit: int | None = None, offset: int = 0) -> list[Item]:
        """Images in id order, a page at a time: `offset` skips rows by reading only their ids, and at
        most `limit` rows are read in full (nothing is sorted in memory)."""
        if limit is not None and limit <= 0:
            return []
        expression = "" if category is None else f"category == {literal(_key(category))}"
        return [
            _item(row)
            for batch in self.space.scan(self.collection, ITEM_FIELDS, expression, limit=limit, offset=offset)
            for row in batch
        ]

    def vectors(self, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[str | None]]]:
        for batch in self.space.scan(self.collection, ["id", "vector", "category"]):
            ids = np.array([row["id"] for row in batch], dtype=np.int64)
            vectors = np.array([row["vector"] for row in batch], dtype=np.float32).reshape(len(batch), dim)
            yield ids, vectors, [_category(row["category"]) for row in batch]

    def vectors_of(self, ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for chunk in _chunks([int(i) for i in ids], IN_LIST):
            for row in self.space.query(self.collection, f"id in {_id_list(chunk)}", ["id", "vector"], "reading"):
                found[int(row["id"])] = np.asarray(row["vector"], dtype=np.float32).reshape(dim)
        return found

    def blobs(self, name: str, ids: Iterable[int]) -> dict[int, bytes]:
        """The blobs `name` of `ids`, read by primary key (`<id>:<name>:<chunk>`): chunk 0 of each, then
        the next chunk of those whose last one was full, so a search reads only its shortlist's rows."""
        parts: dict[int, list[bytes]] = {}
        pending, number = list(dict.fromkeys(int(i) for i in ids)), 0
        while pending:
            found: dict[int, bytes] = {}
            for chunk in _chunks([literal(f"{item_id}:{name}:{number}") for item_id in pending], IN_LIST):
                rows = self.space.query(self.space.blobs_name, f"key in [{','.join(chunk)}]", ["item_id", "data"],
                                        "reading blobs")  # fmt: skip
                found.update({int(row["item_id"]): base64.b64decode(row["data"]) for row in rows})
            for item_id, data in found.items():
                parts.setdefault(item_id, []).append(data)
            pending = [item_id for item_id, data in found.items() if len(data) == BLOB_CHUNK]
            number += 1
        return {item_id: b"".join(chunks) for item_id, chunks in parts.items()}

    def count(self) -> int:
        if not self.space.call("listing collections", "has_collection", self.collection):
            return 0
        rows = self.space.query(self.collection, "", ["count(*)"], "counting")
        return int(rows[0]["count(*)"])

    def category_counts(self) -> dict[str | None, int]:
        """Images per category: one scan of the category field per generation (cached between writes)."""
        generation = self.generation
        if self._counts is None or self._counts[0] != generation:
            counts: dict[str | None, int] = {}
            if self.space.call("listing collections", "has_collection", self.collection):
                for batch in self.space.scan(self.collection, ["category"]):
                    for row in batch:
                        key = _category(row["category"])
                        counts[key] = counts.get(key, 0) + 1
            self._counts = (generation, dict(sorted(counts.items(), key=lambda kv: (kv[0] is not None, kv[0]))))
        return dict(self._counts[1])

    def changes_since(self, generation: int) -> None:
        """A shared store has no per-process copy to catch up: callers reload instead."""
        return None

    def rewrite_vectors(
        self, ids: np.ndarray, vectors: np.ndarray, *, blob: str, blob_rows: np.ndarray | None, meta: dict[str, Any]
    ) -> None:
        """Every image's new vector into a new collection, then one meta write switches to it (readers
        see the old vectors or the new, never a mix); the old collection is dropped."""
        old = self.collection
        version = int(old.rsplit("_v", 1)[1]) + 1
        new = f"{self.space.name}_v{version}"
        if self.space.call("listing collections", "has_collection", new):
            self.space.call(f"dropping {new}", "drop_collection", new)
        target = MilvusVectorStore(self.space, new, int(meta["dim"]), create=True)
        position = {int(i): row for row, i in enumerate(ids)}
        for batch in self.space.scan(old, ITEM_FIELDS):
            kept = [row for row in batch if int(row["id"]) in position]
            rows = [position[int(row["id"])] for row in kept]
            target.add(
                np.array([row["id"] for row in kept], dtype=np.int64), np.asarray(vectors)[rows],
                [_category(row["category"]) for row in kept],
                [{key: row[key] for key in ("path", "content_hash", "added_at", "extra")} for row in kept],
            )  # fmt: skip
        self.delete_blobs(ids, blob)
        if blob_rows is not None:
            rows_out: list[dict[str, Any]] = []
            for item_id, row in zip(ids, blob_rows, strict=True):
                rows_out += _blob_rows(int(item_id), blob, np.asarray(row, dtype=np.float32).tobytes())
            for chunk in _chunks(rows_out, 200):
                self.space.call("writing blobs", "upsert", self.space.blobs_name, chunk)
        self.set_many({**meta, "vectors_collection": new})
        self.collection = new
        self.bump_generation()
        self.space.call(f"dropping {old}", "drop_collection", old)


def _blob_rows(item_id: int, name: str, data: bytes) -> list[dict[str, Any]]:
    pieces = [data[start : start + BLOB_CHUNK] for start in range(0, max(len(data), 1), BLOB_CHUNK)]
    return [
        {"key": f"{item_id}:{name}:{number}", "item_id": item_id, "name": name, "chunk": number,
         "data": base64.b64encode(piece).decode("ascii"), "unused": [0.0, 0.0]}
        for number, piece in enumerate(pieces)
    ]  # fmt: skip


def _item(row: dict[str, Any]) -> Item:
    return Item(
        int(row["id"]), row["path"], _category(row["category"]), row["content_hash"], float(row["added_at"]),
        dict(row.get("extra") or {}),
    )  # fmt: skip


@VECTOR_STORES.register("milvus")
def open_milvus_store(folder: Path, dim: int, settings: IndexSettings, *, create: bool = False) -> MilvusVectorStore:
    """The vectors collection `settings.collection` (`folder` is unused: nothing is kept on local disk)."""
    space = MilvusSpace(settings, create=create)
    if create:
        store = MilvusVectorStore(space, f"{space.name}_v0", dim, create=True)
    else:
        store = MilvusVectorStore(space, MilvusItemStore(space).current_collection(), dim)
    store.owns_client = True
    return store
