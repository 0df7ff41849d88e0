"""Evaluation metrics: retrieval, classification, segmentation and latency (pure numpy).

Retrieval conventions
---------------------
* A query's *ranking* is a 1-D array in ranked order (best first): either the labels of the
  gallery items it returned, or a boolean *relevance* array. `relevance_from_labels` turns the
  first into the second.
* `n_relevant` is the number of relevant items in the whole gallery for that query. It may exceed
  the relevant items seen in a truncated ranking; those missing items count as never retrieved.
* A query with `n_relevant == 0` has no defined AP, R-precision or recall: the per-query functions
  return NaN, and `retrieval_report` skips such queries and counts them in `n_skipped`.
* `k` larger than the ranking is fine: the missing positions count as non-relevant.

Ties
----
`ranked_order` sorts by descending score with a stable sort, so tied items keep their gallery
order (lowest gallery index first): deterministic, but tied relevant items placed early or late by
that order change the score. `tie_aware_average_precision` gives the expected AP over every order
of the tied items (McSherry & Najork, ECIR 2008), which does not depend on the gallery order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lookalike.errors import LookalikeError


class MetricInputError(LookalikeError, ValueError):
    """Inputs a metric cannot use: wrong shape, empty, or inconsistent with each other."""


# ---------------------------------------------------------------------------------------------
# Retrieval: one query
# ---------------------------------------------------------------------------------------------


def relevance_from_labels(ranked_labels: ArrayLike, query_label: Any) -> np.ndarray:
    """Boolean relevance of a ranking of gallery labels: True where the label equals the query's."""
    return np.asarray(ranked_labels) == query_label


def count_relevant(query_labels: ArrayLike, gallery_labels: ArrayLike) -> np.ndarray:
    """For each query label, how many gallery items carry it (the `n_relevant` of each query)."""
    values, counts = np.unique(np.asarray(gallery_labels), return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return np.array([lookup.get(label, 0) for label in np.asarray(query_labels).tolist()], dtype=np.int64)


def _relevance(relevance: ArrayLike) -> np.ndarray:
    rel = np.asarray(relevance)
    if rel.ndim != 1:
        raise MetricInputError(f"Expected a 1-D relevance array (one query's ranking), got shape {rel.shape}")
    if rel.size and rel.dtype.kind not in "biu":
        raise MetricInputError(
            f"Expected boolean (or 0/1) relevance, got an array of dtype {rel.dtype}; "
            "turn a ranking of labels into relevance with relevance_from_labels(ranked_labels, query_label)"
        )
    return rel.astype(bool)


def _check_n_relevant(rel: np.ndarray, n_relevant: int) -> int:
    hits = int(rel.sum())
    if n_relevant < hits:
        raise MetricInputError(
            f"n_relevant = {n_relevant} is smaller than the {hits} relevant items in the ranking; "
            "n_relevant must count every relevant item in the gallery"
        )
    return int(n_relevant)


def _ks(ks: int | Iterable[int]) -> list[int]:
    values = [ks] if isinstance(ks, int | np.integer) else list(ks)
    if not values or any(int(k) < 1 for k in values):
        raise MetricInputError(f"Expected one or more cut-offs k >= 1, got {ks!r}")
    return [int(k) for k in values]


def _hits_at(rel: np.ndarray, k: int) -> int:
    """Relevant items among the first k (positions past the end of the ranking count as misses)."""
    return int(rel[:k].sum())


def _precision_at_relevant_ranks(rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """Precision@rank at each relevant rank within the first k (all ranks when k is None)."""
    rel = rel if k is None else rel[:k]
    ranks = np.flatnonzero(rel) + 1
    return np.arange(1, ranks.size + 1) / ranks


def average_precision(relevance: ArrayLike, n_relevant: int | None = None) -> float:
    """Average precision of one ranking: sum of precision@rank over relevant ranks / n_relevant.

    `n_relevant` defaults to the relevant items in the ranking (right for a full ranking). Relevant
    items missing from a truncated ranking add 0. Returns NaN when `n_relevant == 0`.
    """
    rel = _relevance(relevance)
    total = _check_n_relevant(rel, int(rel.sum()) if n_relevant is None else n_relevant)
    if total == 0:
        return math.nan
    return float(_precision_at_relevant_ranks(rel).sum() / total)


def average_precision_at_k(relevance: ArrayLike, n_relevant: int, ks: int | Iterable[int]) -> dict[int, float]:
    """AP@k for each k: sum of precision@rank over relevant ranks <= k, divided by min(n_relevant, k).

    The min(n_relevant, k) normaliser makes a perfect top-k score 1 even when fewer than k items
    are relevant (or more than k are). Returns NaN for every k when `n_relevant == 0`.
    """
    rel = _relevance(relevance)
    total = _check_n_relevant(rel, n_relevant)
    if total == 0:
        return {k: math.nan for k in _ks(ks)}
    return {k: float(_precision_at_relevant_ranks(rel, k).sum() / min(total, k)) for k in _ks(ks)}


def recall_at_k(relevance: ArrayLike, ks: int | Iterable[int], n_relevant: int | None = None) -> dict[int, float]:
    """Identical recall (hit rate) for each k: 1.0 if at least one relevant item is in the top k, else 0.0.

    Returns NaN for every k when `n_relevant == 0` (when given; otherwise a ranking without any
    relevant item scores 0.0).
    """
    rel = _relevance(relevance)
    if n_relevant is not None and _check_n_relevant(rel, n_relevant) == 0:
        return {k: math.nan for k in _ks(ks)}
    return {k: float(_hits_at(rel, k) > 0) for k in _ks(ks)}


def precision_at_k(relevance: ArrayLike, ks: int | Iterable[int]) -> dict[int, float]:
    """Precision@k for each k: relevant items in the top k, divided by k (also when k > the ranking)."""
    rel = _relevance(relevance)
    return {k: _hits_at(rel, k) / k for k in _ks(ks)}


def r_precision(relevance: ArrayLike, n_relevant: int | None = None) -> float:
    """Precision at rank R = n_relevant (defaults to the relevant items in the ranking); NaN when R = 0."""
    rel = _relevance(relevance)
    total = _check_n_relevant(rel, int(rel.sum()) if n_relevant is None else n_relevant)
    if total == 0:
        return math.nan
    return _hits_at(rel, total) / total


# ---------------------------------------------------------------------------------------------
# Ties
# ---------------------------------------------------------------------------------------------


def _scores(scores: ArrayLike) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise MetricInputError(f"Expected a 1-D array of scores (one query), got shape {values.shape}")
    return values


def ranked_order(scores: ArrayLike, *, higher_is_better: bool = True) -> np.ndarray:
    """Gallery indices, best first. Stable: tied scores keep gallery order; NaN scores rank last."""
    values = _scores(scores)
    key = -values if higher_is_better else values.copy()
    key[np.isnan(key)] = np.inf
    return np.argsort(key, kind="stable")


def rank_with_ties(scores: ArrayLike, labels: ArrayLike, *, higher_is_better: bool = True) -> np.ndarray:
    """Gallery labels in ranked order, ties broken by gallery index (see `ranked_order`)."""
    labels = np.asarray(labels)
    if labels.shape != np.shape(scores):
        raise MetricInputError(f"Expected one label per score; got {labels.shape} labels and {np.shape(scores)} scores")
    return labels[ranked_order(scores, higher_is_better=higher_is_better)]


def tie_aware_average_precision(
    scores: ArrayLike, relevance: ArrayLike, n_relevant: int | None = None, *, higher_is_better: bool = True
) -> float:
    """Expected AP over all orders of tied scores (McSherry & Najork 2008); NaN when n_relevant = 0.

    `scores` and `relevance` are given in gallery order (not ranked). Without ties this equals
    `average_precision` of the ranked relevance.
    """
    values, rel = _scores(scores), _relevance(relevance)
    if rel.shape != values.shape:
        raise MetricInputError(f"Expected one relevance flag per score; got {rel.shape} and {values.shape}")
    total = _check_n_relevant(rel, int(rel.sum()) if n_relevant is None else n_relevant)
    if total == 0:
        return math.nan
    order = ranked_order(values, higher_is_better=higher_is_better)
    return float(_tie_aware_sum(values[order], rel[order]) / total)


def _tie_aware_sum(sorted_scores: np.ndarray, sorted_rel: np.ndarray) -> float:
    """Sum over positions of E[rel(i) * hits(i)] / (i + 1) with tied groups shuffled uniformly."""
    if sorted_scores.size == 0:
        return 0.0
    a, b = sorted_scores[1:], sorted_scores[:-1]
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    sizes = np.diff(np.append(starts, sorted_scores.size))
    group_rel = np.add.reduceat(sorted_rel.astype(np.float64), starts)
    before = np.concatenate(([0.0], np.cumsum(group_rel)[:-1]))  # relevant items in earlier groups
    position = np.arange(sorted_scores.size)
    group = np.repeat(np.arange(starts.size), sizes)
    t, r, h = sizes[group].astype(np.float64), group_rel[group], before[group]
    offset = position - starts[group]
    others = np.where(t > 1, offset * (r - 1) / np.maximum(t - 1, 1), 0.0)
    return float(np.sum((r / t) * (h + 1 + others) / (position + 1)))


# ---------------------------------------------------------------------------------------------
# Retrieval: many queries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalReport:
    """Mean retrieval metrics over the queries that have at least one relevant gallery item.

    `n_queries` counts every query given; `n_skipped` those with no relevant item, which are left
    out of every mean. `per_category` holds one report per query category (empty when none given).
    """

    n_queries: int
    n_skipped: int
    map: float
    map_at_k: dict[int, float]
    recall_at_k: dict[int, float]
    precision_at_k: dict[int, float]
    r_precision: float
    per_category: dict[str, RetrievalReport] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (nested for categories), ready for `json.dump`."""
        return asdict(self)


def retrieval_report(
    relevances: Sequence[ArrayLike],
    n_relevant: ArrayLike | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    categories: Sequence[str] | None = None,
) -> RetrievalReport:
    """mAP, mAP@k, Recall@k, P@k and R-precision over queries, with a per-category breakdown.

    `relevances` holds one boolean ranking per query (lengths may differ); `n_relevant` one count
    per query, defaulting to the relevant items in each ranking (right for full rankings).
    `categories` holds one category per query.
    """
    rels = [_relevance(r) for r in relevances]
    totals = _totals(rels, n_relevant)
    ks = _ks(ks)
    report = _report(rels, totals, ks)
    if categories is None:
        return report
    if len(categories) != len(rels):
        raise MetricInputError(f"Expected one category per query: {len(rels)} queries, {len(categories)} categories")
    per_category = {}
    for category in sorted({str(c) for c in categories}):
        chosen = [i for i, c in enumerate(categories) if str(c) == category]
        per_category[category] = _report([rels[i] for i in chosen], totals[chosen], ks)
    return replace(report, per_category=per_category)


def _totals(rels: list[np.ndarray], n_relevant: ArrayLike | None) -> np.ndarray:
    if n_relevant is None:
        return np.array([int(r.sum()) for r in rels], dtype=np.int64)
    totals = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    if totals.size != len(rels):
        raise MetricInputError(f"Expected one n_relevant per query: {len(rels)} queries, {totals.size} counts")
    return totals


def _report(rels: list[np.ndarray], totals: np.ndarray, ks: list[int]) -> RetrievalReport:
    kept = [(rel, int(total)) for rel, total in zip(rels, totals, strict=True) if total > 0]
    rows = [_query_row(rel, total, ks) for rel, total in kept]

    def mean(key: str, k: int | None = None) -> float:
        values = [row[key] if k is None else row[key][k] for row in rows]
        return float(np.mean(values)) if values else math.nan

    return RetrievalReport(
        n_queries=len(rels),
        n_skipped=len(rels) - len(kept),
        map=mean("ap"),
        map_at_k={k: mean("ap@k", k) for k in ks},
        recall_at_k={k: mean("recall@k", k) for k in ks},
        precision_at_k={k: mean("p@k", k) for k in ks},
        r_precision=mean("r-precision"),
    )


def _query_row(rel: np.ndarray, total: int, ks: list[int]) -> dict[str, Any]:
    return {
        "ap": average_precision(rel, total),
        "ap@k": average_precision_at_k(rel, total, ks),
        "recall@k": recall_at_k(rel, ks, total),
        "p@k": precision_at_k(rel, ks),
        "r-precision": r_precision(rel, total),
    }


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def _label_arrays(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.ndim != 1 or true.shape != pred.shape:
        raise MetricInputError(f"Expected two 1-D label arrays of equal length; got {true.shape} and {pred.shape}")
    if true.size == 0:
        raise MetricInputError("Expected at least one labelled sample; got none")
    return true, pred


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose predicted label equals the true label."""
    true, pred = _label_arrays(y_true, y_pred)
    return float(np.mean(true == pred))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike | None = None) -> np.ndarray:
    """Counts: row = true label, column = predicted label, in the order of `labels`.

    `labels` defaults to the sorted union of both arrays; a label outside the given `labels` raises.
    """
    true, pred = _label_arrays(y_true, y_pred)
    names = _labels(true, pred, labels)
    index = {label: i for i, label in enumerate(names.tolist())}
    matrix = np.zeros((names.size, names.size), dtype=np.int64)
    np.add.at(matrix, ([index[t] for t in true.tolist()], [index[p] for p in pred.tolist()]), 1)
    return matrix


def _labels(true: np.ndarray, pred: np.ndarray, labels: ArrayLike | None) -> np.ndarray:
    if labels is None:
        return np.unique(np.concatenate([true, pred]))
    names = np.asarray(labels)
    allowed = set(names.tolist())
    if names.ndim != 1 or len(allowed) != names.size:
        raise MetricInputError(f"Expected a 1-D list of distinct labels; got {names.tolist()}")
    unknown = sorted((set(true.tolist()) | set(pred.tolist())) - allowed, key=str)
    if unknown:
        raise MetricInputError(
            f"Labels {unknown[:10]} occur in y_true or y_pred but not in the given labels; "
            "add them to `labels` or leave `labels` out to infer it"
        )
    return names


@dataclass(frozen=True)
class ClassificationReport:
    """Accuracy, per-class precision / recall / F1 / support, their macro means and the confusion matrix.

    Undefined ratios (a class never predicted, or with no true sample) are 0, as scikit-learn's
    `zero_division=0`; macro means are over every label. The per-class accuracy of a class is its
    recall; `mean_class_accuracy` and `class_accuracy_variance` (population variance, ddof=0) are
    over the classes with at least one true sample, as in the grocery-store paper's tables.
    """

    accuracy: float
    labels: list[Any]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    mean_class_accuracy: float
    class_accuracy_variance: float
    confusion: list[list[int]]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for `json.dump`."""
        return asdict(self)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, 0.0)


def classification_report(
    y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike | None = None
) -> ClassificationReport:
    """Every classification metric at once; `labels` as in `confusion_matrix`."""
    true, pred = _label_arrays(y_true, y_pred)
    names = _labels(true, pred, labels)
    matrix = confusion_matrix(true, pred, names)
    correct = np.diag(matrix).astype(np.float64)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    precision, recall = _ratio(correct, predicted), _ratio(correct, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = recall[support > 0]
    return ClassificationReport(
        accuracy=float(correct.sum() / matrix.sum()),
        labels=names.tolist(),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=support.tolist(),
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        mean_class_accuracy=float(present.mean()),
        class_accuracy_variance=float(present.var()),
        confusion=matrix.tolist(),
    )


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def mask_iou(pred: ArrayLike, truth: ArrayLike) -> float:
    """Intersection over union of two masks (non-zero = object). Both empty -> 1.0 (they agree)."""
    a, b = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if a.shape != b.shape:
        raise MetricInputError(f"Expected masks of the same shape; got {a.shape} (pred) and {b.shape} (truth)")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


@dataclass(frozen=True)
class SegmentationReport:
    """Summary of per-image IoUs: mean, median and the fraction at or above `threshold`."""

    n: int
    mean: float
    median: float
    threshold: float
    fraction_above: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for `json.dump`."""
        return asdict(self)


def segmentation_report(ious: ArrayLike, *, threshold: float = 0.9) -> SegmentationReport:
    """Mean, median and fraction of IoUs >= `threshold` (0.9 by default)."""
    values = np.asarray(ious, dtype=np.float64).reshape(-1)
    if values.size == 0 or np.isnan(values).any():
        raise MetricInputError(f"Expected one or more IoU values without NaN; got {values.size} values")
    return SegmentationReport(
        n=int(values.size),
        mean=float(values.mean()),
        median=float(np.median(values)),
        threshold=float(threshold),
        fraction_above=float(np.mean(values >= threshold)),
    )


# ---------------------------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencySummary:
    """Latency percentiles and mean in milliseconds over `n` timed calls."""

    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for `json.dump`."""
        return asdict(self)


def latency_summary(seconds: ArrayLike) -> LatencySummary:
    """p50, p95 (linear interpolation, numpy's default) and mean of durations given in seconds, in ms."""
    values = np.asarray(seconds, dtype=np.float64).reshape(-1) * 1000.0
    if values.size == 0:
        raise MetricInputError("Expected one or more durations; got none")
    p50, p95 = np.percentile(values, [50, 95])
    return LatencySummary(n=int(values.size), p50_ms=float(p50), p95_ms=float(p95), mean_ms=float(values.mean()))
