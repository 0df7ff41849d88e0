"""Audit: images whose neighbours vote for another label (likely filed under the wrong category or
product), and outliers (least like their own category, in the sparsest neighbourhoods).

Votes are similarity-weighted over each image's k nearest other images; a product vote counts only
neighbours that carry a product id (`item.extra["item"]`, from a manifest's `item` column).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import SettingsError
from lookalike.health.neighbours import Neighbours, neighbour_chunks

if TYPE_CHECKING:
    from lookalike.pipeline import Engine


@dataclass(frozen=True)
class AuditSettings:
    """`k`: neighbours that vote; `min_share`: a suspect's neighbours give at least this share of their
    (similarity-weighted) vote to one other label; `outlier_fraction`: the share of images listed as
    outliers (the least typical first)."""

    k: int = 10
    min_share: float = 0.5
    outlier_fraction: float = 0.02
    batch: int = 1024

    def __post_init__(self) -> None:
        if self.k < 1:
            raise SettingsError(f"k (voting neighbours) must be >= 1, got {self.k}")
        if not 0.0 < self.min_share <= 1.0:
            raise SettingsError(f"min_share is a vote share in (0, 1], got {self.min_share}")
        if not 0.0 <= self.outlier_fraction <= 1.0:
            raise SettingsError(f"outlier_fraction is a fraction in [0, 1], got {self.outlier_fraction}")


@dataclass
class Suspect:
    """An image whose neighbours vote for another label than its own."""

    id: int
    path: str
    label: str  # "category" or "item"
    current: str | None
    voted: str | None  # the label the neighbours vote for
    share: float  # the voted label's share of the vote
    own_share: float  # the image's own label's share
    neighbours: list[int] = field(default_factory=list)


@dataclass
class Outlier:
    id: int
    path: str
    category: str | None
    centroid_similarity: float  # to its own category's mean vector (itself left out)
    density: float  # mean similarity to its k nearest neighbours
    score: float  # higher = less typical: 1 - mean of the two


@dataclass
class AuditReport:
    settings: AuditSettings
    mislabelled: list[Suspect]  # flagged, most confident first
    outliers: list[Outlier]  # least typical first
    suspicion: dict[int, float]  # every image: 1 - its own category's vote share (for ranking)
    images: int
    seconds: float
    labels: list[str] = field(default_factory=list)  # which labels were audited

    def ranked(self) -> list[int]:
        """Every image, the most suspicious (least supported by its neighbours) first."""
        return sorted(self.suspicion, key=lambda i: (-self.suspicion[i], i))

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload.pop("suspicion")
        return payload


def audit(engine: Engine, settings: AuditSettings | None = None) -> AuditReport:
    """Likely mislabelled images (by category, and by product where images carry one) and outliers.

    Memory stays at a few numbers per image (labels by id, one score each); only the images listed
    are read in full."""
    settings = settings or AuditSettings()
    started = time.perf_counter()
    categories, sums = _category_pass(engine)
    products = _products(engine)
    mislabelled: list[Suspect] = []
    suspicion: dict[int, float] = {}
    typicality: list[tuple[float, int, float, float]] = []  # (-score, id, centroid similarity, density)
    for chunk in neighbour_chunks(engine, settings.k, batch=settings.batch):
        for row, item_id in enumerate(chunk.ids.tolist()):
            category = chunk.categories[row]
            votes = _votes(chunk, row, categories.get)
            suspicion[item_id] = 1.0 - votes.get(category, 0.0)
            mislabelled += _suspect(item_id, "category", category, votes, chunk, row, settings)
            if item_id in products:
                product_votes = _votes(chunk, row, products.get)
                mislabelled += _suspect(item_id, "item", products[item_id], product_votes, chunk, row, settings)
            typicality.append(_typicality(item_id, category, chunk, row, sums))
    mislabelled.sort(key=lambda s: (-s.share, s.own_share, s.id))
    listed = sorted(typicality)[: int(np.ceil(settings.outlier_fraction * len(typicality)))]
    items = engine.store.get_many({s.id for s in mislabelled} | {row[1] for row in listed})
    for suspect in mislabelled:
        suspect.path = items[suspect.id].path if suspect.id in items else ""
    outliers = [
        Outlier(i, items[i].path if i in items else "", categories.get(i), round(similarity, 4), round(density, 4),
                round(-negative, 4))
        for negative, i, similarity, density in listed
    ]  # fmt: skip
    labels = ["category"] + (["item"] if products else [])
    seconds = round(time.perf_counter() - started, 3)
    return AuditReport(settings, mislabelled, outliers, suspicion, len(suspicion), seconds, labels)


def _votes(chunk: Neighbours, row: int, label_of: Callable[[int], str | None]) -> dict[str | None, float]:
    """Each label's share of the neighbours' similarity-weighted vote (neighbours without a label skipped)."""
    totals: dict[str | None, float] = {}
    for neighbour, score in zip(chunk.neighbour_ids[row], chunk.scores[row], strict=True):
        if neighbour < 0:
            continue
        label = label_of(int(neighbour))
        if label is None:
            continue
        totals[label] = totals.get(label, 0.0) + max(float(score), 0.0)
    whole = sum(totals.values())
    return {label: weight / whole for label, weight in totals.items()} if whole > 0 else {}


def _suspect(
    item_id: int,
    kind: str,
    current: str | None,
    votes: dict[str | None, float],
    chunk: Neighbours,
    row: int,
    settings: AuditSettings,
) -> list[Suspect]:
    others = {label: share for label, share in votes.items() if label != current}
    if not others:
        return []
    voted, share = max(others.items(), key=lambda pair: (pair[1], str(pair[0])))
    own = votes.get(current, 0.0)
    if share < settings.min_share or share <= own:
        return []
    neighbours = [int(i) for i in chunk.neighbour_ids[row] if i >= 0]
    return [Suspect(item_id, "", kind, current, voted, round(share, 4), round(own, 4), neighbours)]


def _category_pass(engine: Engine) -> tuple[dict[int, str | None], dict[str | None, tuple[np.ndarray, int]]]:
    """Each image's category, and each category's vector sum and size (one pass over the stored vectors)."""
    categories: dict[int, str | None] = {}
    sums: dict[str | None, tuple[np.ndarray, int]] = {}
    for ids, vectors, labels in engine.store.vectors(engine.catalog.dim):
        categories.update(zip(ids.tolist(), labels, strict=True))
        for label in set(labels):
            rows = np.array([found == label for found in labels])
            total, count = sums.get(label, (np.zeros(vectors.shape[1], dtype=np.float64), 0))
            sums[label] = (total + vectors[rows].sum(axis=0, dtype=np.float64), count + int(rows.sum()))
    return categories, sums


def _products(engine: Engine, page: int = 10_000) -> dict[int, str]:
    """The product id of every image that has one (`extra["item"]`), read page by page."""
    products: dict[int, str] = {}
    offset = 0
    while True:
        items = engine.items(limit=page, offset=offset)
        products.update({item.id: item.extra["item"] for item in items if item.extra and item.extra.get("item")})
        if len(items) < page:
            return products
        offset += page


def _typicality(
    item_id: int, category: str | None, chunk: Neighbours, row: int, sums: dict[str | None, tuple[np.ndarray, int]]
) -> tuple[float, int, float, float]:
    vector = chunk.vectors[row].astype(np.float64)
    total, count = sums.get(category, (vector, 1))
    rest = total - vector  # leave the image itself out of its category's centroid
    norm = np.linalg.norm(rest)
    centroid_similarity = float(vector @ rest / norm) if count > 1 and norm > 0 else 0.0
    scores = chunk.scores[row][np.isfinite(chunk.scores[row])]
    density = float(scores.mean()) if len(scores) else 0.0
    return -(1.0 - (centroid_similarity + density) / 2), item_id, centroid_similarity, density
