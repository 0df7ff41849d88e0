"""Engine objects -> the API's JSON models, with the URLs that reach each file by id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lookalike.server.context import ServerContext
from lookalike.server.queries import QueryRecord
from lookalike.server.schemas import ClassificationOut, HitOut, ItemOut, LocalizationOut, SearchOut

_KNOWN_DETAILS = ("localization", "classification")


def item_urls(item_id: int, silhouettes: bool) -> dict[str, str | None]:
    return {
        "image_url": f"/api/images/{item_id}",
        "thumbnail_url": f"/api/thumbnails/{item_id}",
        "silhouette_url": f"/api/silhouettes/{item_id}" if silhouettes else None,
    }


def item_out(item: Any, silhouettes: bool) -> ItemOut:
    return ItemOut(
        id=item.id,
        name=Path(item.path).name,
        category=item.category,
        added_at=item.added_at,
        **item_urls(item.id, silhouettes),
    )


def hit_out(hit: Any, query_id: str, overlays: bool) -> HitOut:
    return HitOut(
        rank=hit.rank,
        id=hit.id,
        name=Path(hit.path).name,
        category=hit.category,
        score=hit.score,
        scores=hit.scores,
        overlay_url=f"/api/queries/{query_id}/overlay/{hit.id}" if overlays else None,
        **item_urls(hit.id, overlays),
    )


def search_out(
    context: ServerContext, result: Any, query_id: str, record: QueryRecord, *, k: int, category: str | None,
    rerank: bool, gating: bool | None,
) -> SearchOut:  # fmt: skip
    details = jsonable(dict(result.details))
    localization, classification = details.get("localization"), details.get("classification")
    base = f"/api/queries/{query_id}"
    return SearchOut(
        query_id=query_id,
        query=record.name,
        k=k,
        category=category,
        rerank=rerank and bool(context.rerankers),
        gating=gating,
        hits=[hit_out(hit, query_id, record.silhouette is not None) for hit in result.hits],
        searched_categories=result.searched_categories,
        timings_ms={stage: round(seconds * 1000, 3) for stage, seconds in result.timings.items()},
        localization=LocalizationOut(**localization) if isinstance(localization, dict) else None,
        classification=ClassificationOut(**classification) if isinstance(classification, dict) else None,
        cutout_url=f"{base}/cutout" if record.cutout is not None else None,
        mask_url=f"{base}/mask" if record.mask is not None else None,
        silhouette_url=f"{base}/silhouette" if record.silhouette is not None else None,
        details={key: value for key, value in details.items() if key not in _KNOWN_DETAILS},
    )


def jsonable(value: Any) -> Any:
    """`value` with numpy scalars and arrays (and tuples) turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value
