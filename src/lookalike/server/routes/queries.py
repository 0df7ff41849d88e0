"""What the engine saw of a recent query: its cut-out, mask, silhouette and silhouette overlays."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Response
from PIL import Image

from lookalike.server.context import ServerContext
from lookalike.server.errors import not_found
from lookalike.server.media import overlay_image, png_bytes, silhouette_image
from lookalike.server.queries import QueryRecord
from lookalike.server.routes.common import PNG, Context, ItemId, Scale, errors

router = APIRouter(prefix="/api/queries", tags=["queries"])
QueryId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="the query_id of a search's answer")]
T = TypeVar("T")
RESPONSES = {200: PNG, **errors(404, 422)}
CACHE_PRIVATE = {"Cache-Control": "private, max-age=3600"}


@router.get("/{query_id}/cutout", response_class=Response, responses=RESPONSES)
def cutout(query_id: QueryId, context: Context) -> Response:
    """The square cut-out of the query's main object that the engine embedded."""
    return _png(_part(_record(context, query_id).cutout, query_id, "cut-out"))


@router.get("/{query_id}/mask", response_class=Response, responses=RESPONSES)
def mask(query_id: QueryId, context: Context) -> Response:
    """The query's object mask over the whole photo: white = object."""
    return _png(_part(_record(context, query_id).mask, query_id, "mask"))


@router.get("/{query_id}/silhouette", response_class=Response, responses=RESPONSES)
def silhouette(query_id: QueryId, context: Context, scale: Scale = 1) -> Response:
    """The query's silhouette, as compared with the catalogue's (white object on black)."""
    packed = _part(_record(context, query_id).silhouette, query_id, "silhouette")
    return _png(silhouette_image(packed, scale))


@router.get("/{query_id}/overlay/{item_id}", response_class=Response, responses=RESPONSES)
def overlay(query_id: QueryId, item_id: ItemId, context: Context, scale: Scale = 3) -> Response:
    """The query's silhouette over catalogue image `item_id`'s: orange = query only,
    blue = catalogue image only, dark violet = both."""
    query = _part(_record(context, query_id).silhouette, query_id, "silhouette")
    context.item_or_404(item_id)
    item = context.engine.silhouette(item_id)
    if item is None:
        raise not_found(f"catalogue image {item_id} has no silhouette (the index was built without localisation)")
    return _png(overlay_image(query, item, scale))


def _record(context: ServerContext, query_id: str) -> QueryRecord:
    record = context.queries.get(query_id)
    if record is None:
        raise not_found(
            f"unknown or expired query id {query_id!r}: the server keeps the last "
            f"{context.queries.capacity} queries; search again"
        )
    return record


def _part(value: T | None, query_id: str, what: str) -> T:
    if value is None:
        raise not_found(f"query {query_id} has no {what}: localisation is off, or it searched by catalogue id")
    return value


def _png(image: Image.Image) -> Response:
    return Response(png_bytes(image), media_type="image/png", headers=CACHE_PRIVATE)
