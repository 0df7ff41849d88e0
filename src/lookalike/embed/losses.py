"""Metric-learning losses on L2-normalised vectors, and the hard-negative mining that feeds them.

- contrastive (Radenovic, Tolias, Chum, "Fine-tuning CNN Image Retrieval with No Human
  Annotation", TPAMI 2018): 0.5 d^2 for a matching pair, 0.5 max(0, margin - d)^2 otherwise;
- triplet on squared distances: max(0, d(a, p)^2 - d(a, n)^2 + margin);
- second-order similarity, SOS (Ng, Balntas, Tian, Mikolajczyk, "SOLAR: Second-Order Loss and
  Attention for Image Retrieval", ECCV 2020): sqrt(sum_i (d(a_i, n_i)^2 - d(p_i, n_i)^2)^2) / N,
  which asks an anchor and its positive to stand at the same distance from each negative.

d is the Euclidean distance. Every loss is the mean over its pairs or tuples (SOS: as in SOLAR).
torch is imported by the functions, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-12  # inside square roots: keeps the gradient finite at distance 0


def _distance(a: Any, b: Any) -> Any:
    return ((a - b).pow(2).sum(dim=1) + EPS).sqrt()


def _squared_distance(a: Any, b: Any) -> Any:
    return (a - b).pow(2).sum(dim=1)


def contrastive_loss(anchors: Any, others: Any, same: Any, margin: float) -> Any:
    """Mean contrastive loss of pairs (anchors[i], others[i]); `same[i]` is True for a matching pair."""
    distance = _distance(anchors, others)
    matching = 0.5 * distance.pow(2)
    apart = 0.5 * (margin - distance).clamp(min=0.0).pow(2)
    return (same.float() * matching + (1.0 - same.float()) * apart).mean()


def triplet_loss(anchors: Any, positives: Any, negatives: Any, margin: float) -> Any:
    """Mean of max(0, d(a, p)^2 - d(a, n)^2 + margin) over the triplets."""
    gap = _squared_distance(anchors, positives) - _squared_distance(anchors, negatives) + margin
    return gap.clamp(min=0.0).mean()


def sos_loss(anchors: Any, positives: Any, negatives: Any) -> Any:
    """SOLAR's second-order similarity: sqrt(sum (d(a, n)^2 - d(p, n)^2)^2) / number of tuples."""
    difference = _squared_distance(anchors, negatives) - _squared_distance(positives, negatives)
    return (difference.pow(2).sum() + EPS).sqrt() / len(anchors)


@dataclass(frozen=True)
class Mined:
    """Row indices into a batch: matching pairs, and (anchor, positive, negative) triplets.

    Each anchor is paired with every other image of its product; each of those pairs is joined by
    the anchor's `hard_negatives` nearest images of other products.
    """

    pair_anchor: np.ndarray
    pair_other: np.ndarray
    pair_same: np.ndarray
    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray


def mine(distances: np.ndarray, labels: np.ndarray, hard_negatives: int) -> Mined:
    """Matching pairs, hard-negative pairs and triplets of a batch, from its distance matrix."""
    labels = np.asarray(labels)
    n = len(labels)
    same_label = labels[:, None] == labels[None, :]
    matching = same_label & ~np.eye(n, dtype=bool)
    negative_distances = np.where(same_label, np.inf, np.asarray(distances, dtype=np.float64))
    n_neg = min(hard_negatives, n)
    nearest = np.argsort(negative_distances, axis=1, kind="stable")[:, :n_neg]
    valid = np.isfinite(np.take_along_axis(negative_distances, nearest, axis=1))
    pos_a, pos_p = np.nonzero(matching)
    neg_a = np.repeat(np.arange(n), n_neg)[valid.ravel()]
    counts = valid.sum(axis=1)[pos_a]
    triplet_negatives = [nearest[a][valid[a]] for a in pos_a]
    return Mined(
        pair_anchor=np.concatenate([pos_a, neg_a]).astype(np.int64),
        pair_other=np.concatenate([pos_p, nearest[valid]]).astype(np.int64),
        pair_same=np.concatenate([np.ones(len(pos_a), bool), np.zeros(len(neg_a), bool)]),
        anchor=np.repeat(pos_a, counts).astype(np.int64),
        positive=np.repeat(pos_p, counts).astype(np.int64),
        negative=np.concatenate(triplet_negatives).astype(np.int64) if triplet_negatives else np.zeros(0, np.int64),
    )


def combined_loss(vectors: Any, mined: Mined, weights: tuple[float, float, float], margins: tuple[float, float]) -> Any:
    """weights = (contrastive, triplet, sos), margins = (contrastive, triplet): their weighted sum."""
    import torch

    total = vectors.new_zeros(())
    w_contrastive, w_triplet, w_sos = weights
    if w_contrastive and len(mined.pair_anchor):
        a, o = vectors[torch.from_numpy(mined.pair_anchor)], vectors[torch.from_numpy(mined.pair_other)]
        total = total + w_contrastive * contrastive_loss(a, o, torch.from_numpy(mined.pair_same), margins[0])
    if (w_triplet or w_sos) and len(mined.anchor):
        a, p, n = (vectors[torch.from_numpy(rows)] for rows in (mined.anchor, mined.positive, mined.negative))
        if w_triplet:
            total = total + w_triplet * triplet_loss(a, p, n, margins[1])
        if w_sos:
            total = total + w_sos * sos_loss(a, p, n)
    return total
