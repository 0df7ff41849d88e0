"""Vector index kinds (FAISS) and the SQLite metadata store."""

from lookalike.index import ann as _ann  # noqa: F401  (registers hnsw, ivfpq, hnswpq, ivfhnswpq, auto)
from lookalike.index import flat as _flat  # noqa: F401  (registers the "flat" kind)
from lookalike.index.base import INDEX_KINDS, VectorIndex, create_index, load_index
from lookalike.index.partitioned import PartitionedIndex
from lookalike.index.store import Item, MetadataStore, NewItem

__all__ = [
    "INDEX_KINDS",
    "Item",
    "MetadataStore",
    "NewItem",
    "PartitionedIndex",
    "VectorIndex",
    "create_index",
    "load_index",
]
