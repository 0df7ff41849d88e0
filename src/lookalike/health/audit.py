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
    from lookalike.index import Item
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
    """Likely mislabelled images (by category, and by product where images carry one) and outliers."""
    settings = settings or AuditSettings()
    started = time.perf_counter()
    items = {item.id: item for item in engine.items()}
    products = {i: item.extra.get("item") for i, item in items.items() if item.extra and item.extra.get("item")}
    centroids = _category_sums(engine)
    mislabelled: list[Suspect] = []
    suspicion: dict[int, float] = {}
    typicality: list[Outlier] = []
    for chunk in neighbour_chunks(engine, settings.k, batch=settings.batch):
        for row, item_id in enumerate(chunk.ids.tolist()):
            item = items.get(item_id)
            if item is None:  # added since `items` was read
                continue
            votes = _votes(chunk, row, lambda i: items[i].category if i in items else None)
            suspicion[item_id] = 1.0 - votes.get(item.category, 0.0)
            mislabelled += _suspect(item, "category", item.category, votes, chunk, row, settings)
            if item_id in products:
                product_votes = _votes(chunk, row, products.get)
                mislabelled += _suspect(item, "item", products[item_id], product_votes, chunk, row, settings)
            typicality.append(_typicality(item, chunk, row, centroids))
    mislabelled.sort(key=lambda s: (-s.share, s.own_share, s.id))
    typicality.sort(key=lambda o: (-o.score, o.id))
    listed = int(np.ceil(settings.outlier_fraction * len(typicality)))
    labels = ["category"] + (["item"] if products else [])
    seconds = round(time.perf_counter() - started, 3)
    return AuditReport(settings, mislabelled, typicality[:listed], suspicion, len(items), seconds, labels)


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
    item: Item,
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
    return [Suspect(item.id, item.path, kind, current, voted, round(share, 4), round(own, 4), neighbours)]


def _category_sums(engine: Engine) -> dict[str | None, tuple[np.ndarray, int]]:
    """Each category's vector sum and size (one streaming pass over the stored vectors)."""
    sums: dict[str | None, tuple[np.ndarray, int]] = {}
    for _, vectors, categories in engine.store.vectors(engine.catalog.dim):
        for vector, category in zip(vectors, categories, strict=True):
            total, count = sums.get(category, (np.zeros_like(vector, dtype=np.float64), 0))
            sums[category] = (total + vector, count + 1)
    return sums


def _typicality(item: Item, chunk: Neighbours, row: int, sums: dict[str | None, tuple[np.ndarray, int]]) -> Outlier:
    vector = chunk.vectors[row].astype(np.float64)
    total, count = sums.get(item.category, (vector, 1))
    rest = total - vector  # leave the image itself out of its category's centroid
    norm = np.linalg.norm(rest)
    centroid_similarity = float(vector @ rest / norm) if count > 1 and norm > 0 else 0.0
    scores = chunk.scores[row][np.isfinite(chunk.scores[row])]
    density = float(scores.mean()) if len(scores) else 0.0
    score = 1.0 - (centroid_similarity + density) / 2
    return Outlier(item.id, item.path, item.category, round(centroid_similarity, 4), round(density, 4), round(score, 4))
