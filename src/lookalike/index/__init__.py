"""Vector stores (the "faiss" and "milvus" backends), FAISS index kinds and the SQLite metadata store."""

from lookalike.index import ann as _ann  # noqa: F401  (registers hnsw, ivfpq, hnswpq, ivfhnswpq, auto)
from lookalike.index import flat as _flat  # noqa: F401  (registers the "flat" kind)
from lookalike.index import milvus as _milvus  # noqa: F401  (registers the "milvus" backend; pymilvus loads on use)
from lookalike.index.base import INDEX_KINDS, VectorIndex, create_index, load_index
from lookalike.index.partitioned import PartitionedIndex
from lookalike.index.store import Item, MetadataStore, NewItem
from lookalike.index.vectorstore import VECTOR_STORES, StoreCapabilities, VectorStore, create_vector_store

__all__ = [
    "INDEX_KINDS",
    "VECTOR_STORES",
    "Item",
    "MetadataStore",
    "NewItem",
    "PartitionedIndex",
    "StoreCapabilities",
    "VectorIndex",
    "VectorStore",
    "create_index",
    "create_vector_store",
    "load_index",
]
