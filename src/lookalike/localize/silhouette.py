"""Silhouettes: the object's mask in its square cut-out, small, bit-packed for storage, compared by IoU.

Conventions: an unpacked silhouette is a bool array (size, size); a packed one is the bytes (or a
uint8 array) of `np.packbits` over its rows, size * size / 8 bytes. Many silhouettes stack as
(n, size, size) bool or (n, size * size / 8) uint8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PackedOrMask = bytes | np.ndarray
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.int64)


def make_silhouette(mask: np.ndarray, size: int) -> np.ndarray:
    """A square mask resized to size x size (area-averaged, then thresholded at one half)."""
    import cv2

    mask = np.asarray(mask, dtype=bool)
    if mask.shape[0] != mask.shape[1]:
        raise ValueError(f"a silhouette is made from a square mask, got shape {mask.shape}")
    resized = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return resized >= 0.5


def pack_silhouette(silhouette: np.ndarray) -> bytes:
    """size x size bool -> size * size / 8 bytes."""
    silhouette = np.asarray(silhouette)
    if silhouette.ndim != 2 or silhouette.shape[0] != silhouette.shape[1] or silhouette.shape[0] % 8:
        raise ValueError(f"expected a square silhouette whose side is a multiple of 8, got shape {silhouette.shape}")
    return np.packbits(silhouette.astype(bool), axis=None).tobytes()


def unpack_silhouette(packed: bytes | np.ndarray, size: int | None = None) -> np.ndarray:
    """Packed bytes -> size x size bool; `size` defaults to sqrt(8 x number of bytes)."""
    data = np.frombuffer(packed, dtype=np.uint8) if isinstance(packed, bytes) else np.asarray(packed, np.uint8)
    size = size or _side(data.size)
    if data.size * 8 != size * size:
        raise ValueError(f"{data.size} packed bytes hold {data.size * 8} pixels, not a {size} x {size} silhouette")
    return np.unpackbits(data, count=size * size).reshape(size, size).astype(bool)


def silhouette_iou(query: PackedOrMask, others: PackedOrMask | Sequence[bytes]) -> float | np.ndarray:
    """Intersection over union of `query` with one silhouette (a float) or many (an (n,) float64 array).

    Each argument is packed (bytes, uint8 arrays, a list of bytes) or unpacked (bool arrays). Two
    empty silhouettes have nothing to compare: their IoU is 0.
    """
    single = isinstance(others, bytes) or (isinstance(others, np.ndarray) and _is_single(others))
    a = _packed_rows(query)
    b = _packed_rows(others)
    if a.shape[0] != 1:
        raise ValueError(f"query must be one silhouette, got {a.shape[0]}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"silhouettes differ in size: the query has {a.shape[1] * 8} pixels, the others {b.shape[1] * 8}"
        )
    intersection = _POPCOUNT[a & b].sum(axis=1)
    union = _POPCOUNT[a | b].sum(axis=1)
    iou = np.where(union > 0, intersection / np.maximum(union, 1), 0.0)
    return float(iou[0]) if single else iou


def _packed_rows(value: PackedOrMask | Sequence[bytes]) -> np.ndarray:
    """(n, bytes) uint8 from any accepted form."""
    if isinstance(value, bytes):
        return np.frombuffer(value, dtype=np.uint8)[None]
    if isinstance(value, np.ndarray):
        if value.dtype == bool:
            flat = value.reshape(1 if value.ndim == 2 else value.shape[0], -1)
            return np.packbits(flat, axis=1)
        if value.dtype == np.uint8:
            return value.reshape(1, -1) if value.ndim == 1 else value
        raise TypeError(f"silhouettes are bool (unpacked) or uint8 (packed) arrays, got dtype {value.dtype}")
    rows = [np.frombuffer(item, dtype=np.uint8) for item in value]
    if not rows:
        raise ValueError("no silhouettes to compare with")
    if len({row.size for row in rows}) > 1:
        raise ValueError(f"packed silhouettes differ in length: {sorted({row.size for row in rows})} bytes")
    return np.stack(rows)


def _is_single(value: np.ndarray) -> bool:
    return value.ndim == 1 if value.dtype == np.uint8 else value.ndim == 2


def _side(count: int) -> int:
    side = math.isqrt(count * 8)
    if side * side != count * 8:
        raise ValueError(f"{count} packed bytes are not a square silhouette; pass its size")
    return side
