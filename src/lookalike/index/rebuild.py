"""Building the partitioned vector index (the faiss backend's store) from the SQLite store."""

from __future__ import annotations

from lookalike.index.base import create_index
from lookalike.index.partitioned import PartitionedIndex
from lookalike.index.store import MetadataStore
from lookalike.settings import IndexSettings


def build_from_store(store: MetadataStore, settings: IndexSettings, dim: int) -> PartitionedIndex:
    """Every stored vector in a new `PartitionedIndex`.

    Each partition is told its final size before the first vector arrives, so an approximate kind
    picks its tunables for that size and trains on a sample of up to `train_size` vectors.
    """
    index = PartitionedIndex(settings, dim)
    sizes: dict[str, int] = {}
    for category, count in store.category_counts().items():
        key = index.key(category)
        sizes[key] = sizes.get(key, 0) + count
    for key, size in sizes.items():
        partition = create_index(settings.kind, dim, settings)
        partition.expect(size)
        index.partitions[key] = partition
    for ids, vectors, categories in store.vectors(dim):
        index.add(ids, vectors, categories)
    return index
