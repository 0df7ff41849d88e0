"""Search by an uploaded photo or by a catalogue image's id."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile

from lookalike.server.context import ServerContext
from lookalike.server.queries import QueryRecord, record_of
from lookalike.server.respond import search_out
from lookalike.server.routes.common import (
    CategoryFilter,
    Context,
    Gating,
    ItemId,
    K,
    Rerank,
    errors,
    optional,
    resolve_k,
)
from lookalike.server.schemas import SearchOut
from lookalike.server.uploads import PixelBudget, check_pixels, client_name, read_limited

router = APIRouter(prefix="/api", tags=["search"])
Photo = Annotated[UploadFile, File(description="the query photo (JPEG, PNG, WebP, BMP or TIFF)")]


@router.post("/search", response_model=SearchOut, responses=errors(400, 413, 422))
def search_upload(
    file: Photo,
    context: Context,
    k: K = None,
    category: CategoryFilter = None,
    rerank: Rerank = True,
    gating: Gating = None,
) -> SearchOut:
    """The catalogue images most like the uploaded photo, with why each matched.

    The answer's `query_id` names the query's cut-out, mask and silhouette (when localisation is on)
    at `/api/queries/{query_id}/...` while the query is among the server's recent ones.
    """
    k, category = resolve_k(context, k), optional(category)
    name = client_name(file.filename)
    data = read_limited(file.file, name, context.settings.max_upload_bytes)
    check_pixels(data, name, PixelBudget(context.settings.max_pixels_per_request))
    options = context.search_options(rerank, gating)
    result = context.engine.search(data, k, category=category, name=f"upload {name!r}", **options)
    record = record_of(name, result.localization, None, context.settings.preview_size)
    return _answer(context, result, record, k=k, category=category, rerank=rerank, gating=gating)


@router.get("/items/{item_id}/similar", response_model=SearchOut, responses=errors(400, 404, 422))
def search_similar(
    item_id: ItemId,
    context: Context,
    k: K = None,
    category: CategoryFilter = None,
    rerank: Rerank = True,
    gating: Gating = None,
) -> SearchOut:
    """The catalogue images most like catalogue image `item_id` (itself left out), from its stored features."""
    k, category = resolve_k(context, k), optional(category)
    item = context.item_or_404(item_id)
    options = context.search_options(rerank, gating)
    result = context.engine.search_by_id(item_id, k, category=category, **options)
    silhouette = context.engine.silhouette(item_id)
    record = QueryRecord(Path(item.path).name, silhouette=silhouette)
    return _answer(context, result, record, k=k, category=category, rerank=rerank, gating=gating)


def _answer(context: ServerContext, result: Any, record: QueryRecord, **request: Any) -> SearchOut:
    query_id = context.queries.put(record)
    return search_out(context, result, query_id, record, **request)
