"""The last queries' cut-outs, masks and silhouettes, kept in memory for the page to fetch."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class QueryRecord:
    """What the engine saw of one query; images are downscaled previews."""

    name: str
    cutout: Image.Image | None = None  # the square cut-out the engine embedded
    mask: Image.Image | None = None  # the object mask over the whole photo (L: 255 = object)
    silhouette: bytes | None = None  # packed, as stored for catalogue images


class QueryCache:
    """A thread-safe LRU of `QueryRecord`s keyed by a random query id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, QueryRecord] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, record: QueryRecord) -> str:
        query_id = uuid.uuid4().hex
        with self._lock:
            self._records[query_id] = record
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)
        return query_id

    def get(self, query_id: str) -> QueryRecord | None:
        with self._lock:
            record = self._records.get(query_id)
            if record is not None:
                self._records.move_to_end(query_id)
            return record

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def record_of(name: str, localization: Any, silhouette: bytes | None, preview_size: int) -> QueryRecord:
    """A record from a search's `Localization` (or None), with previews at most `preview_size` a side."""
    if localization is None:
        return QueryRecord(name, silhouette=silhouette)
    cutout = _shrunk(localization.cutout, preview_size, Image.Resampling.LANCZOS)
    mask = Image.fromarray(np.asarray(localization.mask, dtype=np.uint8) * 255)
    mask = _shrunk(mask, preview_size, Image.Resampling.NEAREST)
    return QueryRecord(name, cutout, mask, silhouette or localization.silhouette)


def _shrunk(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    copy = image.copy()
    copy.thumbnail((size, size), resample)
    return copy
