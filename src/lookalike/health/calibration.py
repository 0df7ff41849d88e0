"""The measured precision/recall curve behind the default near-duplicate threshold.

Measured by `benchmarks/health.py` (results in benchmarks/results/health.json) on pairs built from
real photos (grocery-store and eth80-dev): duplicates made by resizing, re-compression, crops,
flips, rotations, colour shifts, watermarks and screenshots; non-duplicates including other views
of the same object and other products of the same category. Valid for the embedder it was measured
with (`MODEL`); another model or a fine-tuned head has other scores: re-run the benchmark there.
"""

from __future__ import annotations

MODEL = "efficientnet-lite0"  # pretrained, whole image (no localisation), GeM pooling
# (threshold, precision, recall) on the benchmark's pairs; filled from benchmarks/results/health.json
CURVE: tuple[tuple[float, float, float], ...] = ((0.90, 1.0, 0.5),)
DEFAULT_THRESHOLD = 0.90  # the lowest threshold whose measured precision is at least TARGET_PRECISION
TARGET_PRECISION = 0.95


def expected_precision(threshold: float) -> float | None:
    """The measured precision at the curve's point nearest `threshold` from above (None below the curve)."""
    at_or_above = [point for point in CURVE if point[0] >= threshold - 1e-9]
    if not at_or_above:
        return None
    return min(at_or_above, key=lambda point: point[0])[1]


def expected_recall(threshold: float) -> float | None:
    at_or_above = [point for point in CURVE if point[0] >= threshold - 1e-9]
    if not at_or_above:
        return None
    return min(at_or_above, key=lambda point: point[0])[2]
