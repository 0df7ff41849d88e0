"""Cached catalogue features for experiments that train on many images (classifiers, heads).

The cache key is the embedder's fingerprint plus the file's content hash, so a cache never serves
vectors from other weights or preprocessing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lookalike.io.catalog import CatalogEntry
from lookalike.io.images import file_hash, load_image
from lookalike.settings import EmbedSettings


def embed_entries(
    entries: Sequence[CatalogEntry],
    settings: EmbedSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(len(entries), dim) vectors of the images, read from and written to `cache_dir` when given."""
    from lookalike.embed import create_embedder

    embedder = create_embedder(settings or EmbedSettings())
    cache = _cache_file(cache_dir, embedder.fingerprint(), entries) if cache_dir else None
    if cache is not None and cache.exists():
        return np.load(cache)
    vectors = np.zeros((len(entries), embedder.dim), dtype=np.float32)
    step = 16
    for start in range(0, len(entries), step):
        chunk = entries[start : start + step]
        vectors[start : start + len(chunk)] = embedder.embed([load_image(e.path) for e in chunk])
        if progress:
            progress(start + len(chunk), len(entries))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return vectors


def _cache_file(cache_dir: str | Path, fingerprint: str, entries: Sequence[CatalogEntry]) -> Path:
    digest = hashlib.sha256(fingerprint.encode())
    for entry in entries:
        digest.update(str(entry.path).encode())
        digest.update(file_hash(entry.path).encode())
    return Path(cache_dir) / f"features-{digest.hexdigest()[:20]}.npy"
