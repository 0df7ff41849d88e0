"""Metrics against hand-computed answers (and scikit-learn / brute force where they apply)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from lookalike.errors import LookalikeError
from lookalike.evaluate.metrics import (
    MetricInputError,
    accuracy,
    average_precision,
    average_precision_at_k,
    classification_report,
    confusion_matrix,
    count_relevant,
    latency_summary,
    mask_iou,
    precision_at_k,
    r_precision,
    rank_with_ties,
    ranked_order,
    recall_at_k,
    relevance_from_labels,
    retrieval_report,
    segmentation_report,
    tie_aware_average_precision,
)

# Relevant at ranks 1, 3 and 6: precision there is 1, 2/3 and 1/2.
RANKING = [True, False, True, False, False, True]


# --- one query --------------------------------------------------------------------------------


def test_average_precision_hand_computed() -> None:
    assert average_precision(RANKING) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    # A truncated ranking: a fourth relevant item was never retrieved and adds 0.
    assert average_precision(RANKING, n_relevant=4) == pytest.approx((1 + 2 / 3 + 1 / 2) / 4)


def test_perfect_and_worst_rankings() -> None:
    perfect, worst = [1, 1, 1, 0, 0], [0, 0, 0, 1, 1]
    assert average_precision(perfect) == 1.0
    assert r_precision(perfect) == 1.0
    assert average_precision_at_k(perfect, 3, [1, 3, 5]) == {1: 1.0, 3: 1.0, 5: 1.0}
    assert average_precision(worst) == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert r_precision(worst) == 0.0
    assert recall_at_k(worst, [1, 3, 4]) == {1: 0.0, 3: 0.0, 4: 1.0}


def test_average_precision_at_k_uses_min_of_relevant_and_k() -> None:
    got = average_precision_at_k(RANKING, 3, [1, 3, 5, 10])
    assert got[1] == 1.0  # 1 / min(3, 1)
    assert got[3] == pytest.approx((1 + 2 / 3) / 3)
    assert got[5] == pytest.approx((1 + 2 / 3) / 3)
    assert got[10] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert average_precision_at_k(RANKING, 3, 3) == {3: pytest.approx((1 + 2 / 3) / 3)}


def test_recall_and_precision_at_k() -> None:
    assert recall_at_k([0, 0, 1], [1, 2, 3, 10]) == {1: 0.0, 2: 0.0, 3: 1.0, 10: 1.0}
    assert precision_at_k(RANKING, [1, 2, 3, 10]) == {1: 1.0, 2: 0.5, 3: pytest.approx(2 / 3), 10: 0.3}
    assert r_precision(RANKING) == pytest.approx(2 / 3)
    assert r_precision(RANKING, n_relevant=4) == pytest.approx(2 / 4)


def test_k_larger_than_the_ranking() -> None:
    assert precision_at_k([1, 1], 5) == {5: 0.4}  # missing positions count as misses
    assert recall_at_k([1, 1], 5) == {5: 1.0}
    assert average_precision_at_k([1, 1], 2, 5) == {5: 1.0}
    assert average_precision([], n_relevant=2) == 0.0
    assert recall_at_k([], [1, 5]) == {1: 0.0, 5: 0.0}


def test_no_relevant_item_gives_nan() -> None:
    empty = [False, False, False]
    assert math.isnan(average_precision(empty))
    assert math.isnan(average_precision(empty, n_relevant=0))
    assert math.isnan(r_precision(empty))
    assert all(math.isnan(v) for v in average_precision_at_k(empty, 0, [1, 5]).values())
    assert all(math.isnan(v) for v in recall_at_k(empty, [1, 5], n_relevant=0).values())
    assert recall_at_k(empty, [1]) == {1: 0.0}  # without n_relevant there is nothing to tell


def test_relevance_from_labels_and_counts() -> None:
    ranked = np.array(["cat", "dog", "cat"])
    assert relevance_from_labels(ranked, "cat").tolist() == [True, False, True]
    assert count_relevant(["cat", "cow", "dog"], ["cat", "cat", "dog"]).tolist() == [2, 0, 1]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(MetricInputError, match="n_relevant = 1 is smaller than the 3 relevant"):
        average_precision(RANKING, n_relevant=1)
    with pytest.raises(MetricInputError, match="relevance_from_labels"):
        average_precision(["cat", "dog"])
    with pytest.raises(MetricInputError, match="1-D relevance array"):
        precision_at_k([[1, 0], [0, 1]], 1)
    with pytest.raises(MetricInputError, match="k >= 1"):
        recall_at_k(RANKING, [0, 5])
    with pytest.raises(MetricInputError, match="k >= 1"):
        precision_at_k(RANKING, [])
    assert issubclass(MetricInputError, LookalikeError) and issubclass(MetricInputError, ValueError)


# --- ties -------------------------------------------------------------------------------------


def test_ranked_order_is_stable_and_deterministic() -> None:
    scores = [0.5, 0.9, np.nan, 0.5, 0.9]
    assert ranked_order(scores).tolist() == [1, 4, 0, 3, 2]  # ties keep gallery order, NaN last
    assert ranked_order(scores, higher_is_better=False).tolist() == [0, 3, 1, 4, 2]
    assert rank_with_ties(scores, ["a", "b", "c", "d", "e"]).tolist() == ["b", "e", "a", "d", "c"]
    with pytest.raises(MetricInputError, match="one label per score"):
        rank_with_ties([0.1, 0.2], ["a"])


def test_tie_aware_average_precision_is_the_expectation_over_tie_orders() -> None:
    # One relevant and one non-relevant item tied: AP is 1 or 1/2 with equal chance.
    assert tie_aware_average_precision([1.0, 1.0], [False, True]) == pytest.approx(0.75)
    assert tie_aware_average_precision([1.0, 1.0], [True, False]) == pytest.approx(0.75)
    # The stable policy instead depends on the gallery order.
    assert average_precision(relevance_from_labels(rank_with_ties([1.0, 1.0], [0, 1]), 1)) == 0.5
    assert math.isnan(tie_aware_average_precision([1.0, 2.0], [False, False]))


def test_tie_aware_average_precision_without_ties_equals_average_precision() -> None:
    scores, rel = np.array([0.3, 0.9, 0.1, 0.7]), np.array([True, False, False, True])
    ranked = rel[ranked_order(scores)]
    assert tie_aware_average_precision(scores, rel) == pytest.approx(average_precision(ranked))
    assert tie_aware_average_precision(scores, rel, n_relevant=3) == pytest.approx(average_precision(ranked, 3))


def test_tie_aware_average_precision_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 3, size=6).astype(float)
        rel = rng.random(6) < 0.5
        rel[0] = True
        orders = [p for p in itertools.permutations(range(6)) if np.all(np.diff(scores[list(p)]) <= 0)]
        expected = np.mean([average_precision(rel[list(p)]) for p in orders])
        assert tie_aware_average_precision(scores, rel) == pytest.approx(expected)


# --- many queries -----------------------------------------------------------------------------


def _three_queries() -> tuple[list[list[bool]], list[int]]:
    return [RANKING, [False, False, False], [False, True]], [3, 0, 1]


def test_retrieval_report_skips_queries_without_relevant_items() -> None:
    rankings, totals = _three_queries()
    report = retrieval_report(rankings, totals, ks=(1, 2, 10))
    ap1 = (1 + 2 / 3 + 1 / 2) / 3
    assert report.n_queries == 3 and report.n_skipped == 1
    assert report.map == pytest.approx((ap1 + 0.5) / 2)
    assert report.recall_at_k == {1: 0.5, 2: 1.0, 10: 1.0}
    assert report.precision_at_k == pytest.approx({1: 0.5, 2: 0.5, 10: (0.3 + 0.1) / 2})
    assert report.map_at_k[1] == pytest.approx((1 + 0) / 2)
    assert report.map_at_k[10] == pytest.approx(report.map)
    assert report.r_precision == pytest.approx((2 / 3 + 0) / 2)
    assert report.per_category == {}


def test_retrieval_report_per_category() -> None:
    rankings, totals = _three_queries()
    report = retrieval_report(rankings, totals, ks=(1,), categories=["a", "b", "a"])
    assert sorted(report.per_category) == ["a", "b"]
    a, b = report.per_category["a"], report.per_category["b"]
    assert (a.n_queries, a.n_skipped, b.n_queries, b.n_skipped) == (2, 0, 1, 1)
    assert a.map == pytest.approx(report.map)
    assert math.isnan(b.map) and math.isnan(b.recall_at_k[1])
    json.dumps(report.as_dict())  # plain data, nested per category


def test_retrieval_report_defaults_and_shapes() -> None:
    matrix = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)  # full rankings: counts come from them
    report = retrieval_report(matrix, ks=[1])
    assert report.map == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    with pytest.raises(MetricInputError, match="one n_relevant per query: 2 queries, 1 counts"):
        retrieval_report(matrix, [1])
    with pytest.raises(MetricInputError, match="one category per query: 2 queries, 3 categories"):
        retrieval_report(matrix, categories=["a", "b", "c"])
    empty = retrieval_report([[False]], ks=[1])
    assert empty.n_skipped == 1 and math.isnan(empty.map)


# --- classification ---------------------------------------------------------------------------

Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]


def test_confusion_matrix_hand_computed() -> None:
    assert confusion_matrix(Y_TRUE, Y_PRED).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert confusion_matrix(Y_TRUE, Y_PRED, labels=["c", "b", "a", "z"]).tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 2, 0],
        [0, 0, 0, 0],
    ]
    with pytest.raises(MetricInputError, match=r"Labels \['c'\] occur in y_true or y_pred but not in the given"):
        confusion_matrix(Y_TRUE, Y_PRED, labels=["a", "b"])
    with pytest.raises(MetricInputError, match="equal length"):
        confusion_matrix(["a"], ["a", "b"])
    with pytest.raises(MetricInputError, match="at least one labelled sample"):
        accuracy([], [])


def test_classification_report_hand_computed() -> None:
    report = classification_report(Y_TRUE, Y_PRED)
    assert report.labels == ["a", "b", "c"]
    assert report.accuracy == pytest.approx(4 / 6) == accuracy(Y_TRUE, Y_PRED)
    assert report.precision == pytest.approx([1.0, 0.5, 0.5])
    assert report.recall == pytest.approx([2 / 3, 0.5, 1.0])
    assert report.f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert report.support == [3, 2, 1]
    assert report.macro_precision == pytest.approx(2 / 3)
    assert report.macro_recall == pytest.approx(13 / 18) == report.mean_class_accuracy
    assert report.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report.class_accuracy_variance == pytest.approx(np.var([2 / 3, 0.5, 1.0]))
    json.dumps(report.as_dict())


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_classification_report_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 5, 200), rng.integers(0, 6, 200)  # class 5 is never true
    report = classification_report(y_true, y_pred)
    p, r, f, s = metrics.precision_recall_fscore_support(y_true, y_pred, labels=report.labels, zero_division=0)
    assert report.precision == pytest.approx(p.tolist())
    assert report.recall == pytest.approx(r.tolist())
    assert report.f1 == pytest.approx(f.tolist())
    assert report.support == s.tolist()
    assert report.macro_f1 == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert report.accuracy == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert report.confusion == metrics.confusion_matrix(y_true, y_pred).tolist()
    # Average per-class accuracy leaves out class 5, which has no true sample.
    assert report.mean_class_accuracy == pytest.approx(metrics.balanced_accuracy_score(y_true, y_pred))


# --- segmentation and latency -----------------------------------------------------------------


def test_mask_iou() -> None:
    pred = np.array([[1, 1], [0, 0]], dtype=bool)
    truth = np.array([[0, 255], [255, 0]], dtype=np.uint8)  # non-zero = object
    assert mask_iou(pred, truth) == pytest.approx(1 / 3)
    assert mask_iou(pred, pred) == 1.0
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # both empty: they agree
    assert mask_iou(pred, np.zeros((2, 2))) == 0.0
    with pytest.raises(MetricInputError, match=r"same shape; got \(2, 2\) \(pred\) and \(3, 2\) \(truth\)"):
        mask_iou(pred, np.zeros((3, 2)))


def test_segmentation_report() -> None:
    report = segmentation_report([0.95, 0.9, 0.5, 1.0])
    assert (report.n, report.threshold) == (4, 0.9)
    assert report.mean == pytest.approx(0.8375)
    assert report.median == pytest.approx(0.925)
    assert report.fraction_above == 0.75
    assert segmentation_report([0.95, 0.5], threshold=0.5).fraction_above == 1.0
    with pytest.raises(MetricInputError, match="one or more IoU values"):
        segmentation_report([])


def test_latency_summary_in_milliseconds() -> None:
    summary = latency_summary([0.01, 0.02, 0.03, 0.04, 0.1])
    assert summary.n == 5
    assert summary.p50_ms == pytest.approx(30.0)
    assert summary.p95_ms == pytest.approx(88.0)  # linear between 40 and 100 ms at 0.8
    assert summary.mean_ms == pytest.approx(40.0)
    assert json.loads(json.dumps(summary.as_dict()))["n"] == 5
    with pytest.raises(MetricInputError, match="one or more durations"):
        latency_summary([])
