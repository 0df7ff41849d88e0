"""Gated search: predict the query's category and decide which partitions to search.

A confident prediction (top probability >= `threshold` and lead over the second >= `min_margin`)
searches only that category. Otherwise the search widens to the top `fallback_k` categories or to
every category (`fallback`). Categories the classifier has never seen (added after training) and
uncategorised images are always searched, so gating never hides them.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.classify.base import Classifier
from lookalike.settings import ClassifySettings

TOP_REPORTED = 5


@dataclass(frozen=True)
class GateDecision:
    """Which categories to search (None = all; None inside the list = uncategorised images) and why."""

    searched: list[str | None] | None
    details: dict[str, Any] = field(default_factory=dict)  # SearchResult.details["classification"]

    @property
    def categories(self) -> list[str] | None:
        """The named categories searched, for `SearchResult.searched_categories`."""
        return None if self.searched is None else [c for c in self.searched if c is not None]


@functools.lru_cache(maxsize=1)
def _blas_threads() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread() -> Any:
    """One BLAS thread for a query's small matrix products.

    With more, OpenBLAS's threads keep spinning after the product and take the cores from the
    embedding and the vector search that follow: on 2 cores a query with a classifier went from
    28 to 135 ms (`lookalike evaluate` on the sample catalogue).
    """
    return _blas_threads().limit(limits=1, user_api="blas")


def predict_category(classifier: Classifier, vector: np.ndarray, top: int = TOP_REPORTED) -> dict[str, Any]:
    """The query's most probable category, its probability, the margin to the second, the `top` best."""
    with _one_blas_thread():
        proba = classifier.predict_proba(np.asarray(vector, dtype=np.float32)[None, :])[0]
    order = np.argsort(-proba, kind="stable")
    classes = np.asarray(classifier.classes_)
    first = float(proba[order[0]])
    second = float(proba[order[1]]) if len(order) > 1 else 0.0
    return {
        "category": str(classes[order[0]]),
        "probability": first,
        "margin": first - second,
        "top": [{"category": str(classes[i]), "probability": float(proba[i])} for i in order[:top]],
    }


def plan_search(
    classifier: Classifier,
    vector: np.ndarray,
    settings: ClassifySettings,
    *,
    partitions: Collection[str | None] | None,
    category: str | None = None,
    gating: bool | None = None,
) -> GateDecision:
    """Predict, then choose the partitions to search.

    `partitions`: the categories the index holds (None when it is not partitioned by category, so
    gating could not save any work). `category` forces one category; `gating=False` (or
    `settings.gating` False when `gating` is None) searches every category. The prediction is
    reported in every case.
    """
    expected, dim = int(getattr(classifier, "n_features_in_", 0)), int(np.asarray(vector).shape[-1])
    if expected != dim:  # features changed since training (e.g. an embedding head): no prediction
        reason = f"the classifier takes {expected}-d vectors but the index now holds {dim}-d ones: retrain it"
        searched: list[str | None] | None = None if category is None else [category]
        return GateDecision(searched, {"category": None, "gated": False, "reason": reason})
    predicted = predict_category(classifier, vector, max(TOP_REPORTED, settings.fallback_k))
    ranked = [entry["category"] for entry in predicted["top"]]
    predicted["top"] = predicted["top"][:TOP_REPORTED]
    if category is not None:
        return GateDecision([category], {**predicted, "gated": False, "reason": "category given by the caller"})
    if not (settings.gating if gating is None else gating):
        return GateDecision(None, {**predicted, "gated": False, "reason": "gating off: searched every category"})
    if partitions is None:
        return GateDecision(None, {**predicted, "gated": False, "reason": "index not partitioned by category"})
    chosen, reason = _choose(predicted, ranked, settings)
    searched = _within(chosen, classifier, partitions)
    if searched is None:
        if chosen is not None:
            reason += "; none of those categories is in the index any more: searched every category"
        return GateDecision(None, {**predicted, "gated": False, "reason": reason})
    return GateDecision(searched, {**predicted, "gated": True, "reason": reason})


def _choose(predicted: dict[str, Any], ranked: list[str], s: ClassifySettings) -> tuple[list[str] | None, str]:
    probability, margin = predicted["probability"], predicted["margin"]
    if probability >= s.threshold and margin >= s.min_margin:
        return [predicted["category"]], (
            f"confident: probability {probability:.3f} >= {s.threshold} and margin {margin:.3f} >= {s.min_margin}"
        )
    why = f"probability {probability:.3f} < {s.threshold}" if probability < s.threshold else ""
    why = why or f"margin {margin:.3f} < {s.min_margin}"
    if s.fallback == "all":
        return None, f"low confidence ({why}): searched every category"
    if s.fallback_k >= len(ranked):
        return None, f"low confidence ({why}): searched every category (fallback_k >= the number of categories)"
    return ranked[: s.fallback_k], f"low confidence ({why}): searched the top {s.fallback_k} categories"


def _within(
    chosen: list[str] | None, classifier: Classifier, partitions: Collection[str | None]
) -> list[str | None] | None:
    """The chosen categories the index holds, plus those the classifier does not know."""
    if chosen is None:
        return None
    present = {None if p in ("", None) else str(p) for p in partitions}
    known = {str(c) for c in np.asarray(classifier.classes_).tolist()}
    unknown = sorted(c for c in present if c is not None and c not in known)
    searched: list[str | None] = [c for c in chosen if c in present] + unknown
    if not any(c is not None for c in searched):
        return None  # nothing predicted is in the index any more: search everything
    if None in present:
        searched.append(None)
    return searched
