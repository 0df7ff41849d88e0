"""The measured precision/recall curve behind the default near-duplicate threshold.

Measured by `benchmarks/health.py` (results in benchmarks/results/health.json) on pairs built from
real photos (grocery-store and eth80-dev): duplicates made by resizing, re-compression, crops,
flips, rotations, colour shifts, watermarks and screenshots; non-duplicates including other views
of the same object and other products of the same category. Valid for the embedder it was measured
with (`MODEL`); another model or a fine-tuned head has other scores: re-run the benchmark there.
"""

from __future__ import annotations

MODEL = "efficientnet-lite0"  # pretrained, whole image (no localisation), GeM pooling
# (threshold, precision, recall) on the benchmark's 1,666 pairs (960 duplicates), from
# benchmarks/results/health.json (`pairs.methods[0].curve`)
CURVE: tuple[tuple[float, float, float], ...] = (
    (0.800, 0.9456, 0.9594),
    (0.810, 0.9510, 0.9510),
    (0.820, 0.9595, 0.9375),
    (0.830, 0.9631, 0.9240),
    (0.840, 0.9680, 0.9146),
    (0.850, 0.9687, 0.9031),
    (0.860, 0.9717, 0.8948),
    (0.870, 0.9746, 0.8802),
    (0.880, 0.9797, 0.8562),
    (0.885, 0.9819, 0.8479),
    (0.890, 0.9817, 0.8396),
    (0.900, 0.9861, 0.8125),
    (0.910, 0.9866, 0.7667),
    (0.920, 0.9886, 0.7229),
    (0.930, 0.9969, 0.6802),
    (0.940, 0.9967, 0.6281),
    (0.950, 1.0000, 0.5406),
    (0.960, 1.0000, 0.4521),
    (0.970, 1.0000, 0.3458),
    (0.980, 1.0000, 0.2260),
    (0.990, 1.0000, 0.1083),
    (1.000, 1.0000, 0.0000),
)
DEFAULT_THRESHOLD = 0.885  # the lowest threshold whose measured precision is at least TARGET_PRECISION
TARGET_PRECISION = 0.98


def expected_precision(threshold: float) -> float | None:
    """The measured precision at the curve's nearest point at or below `threshold` (precision grows
    with the threshold, so this errs low); None below the measured curve."""
    point = _point(threshold)
    return None if point is None else point[1]


def expected_recall(threshold: float) -> float | None:
    point = _point(threshold)
    return None if point is None else point[2]


def _point(threshold: float) -> tuple[float, float, float] | None:
    at_or_below = [point for point in CURVE if point[0] <= threshold + 1e-9]
    return max(at_or_below, key=lambda point: point[0]) if at_or_below else None
