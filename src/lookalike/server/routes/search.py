"""Search by an uploaded photo or by a catalogue image's id."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from lookalike.server.context import ServerContext
from lookalike.server.errors import ApiError
from lookalike.server.queries import QueryRecord, record_of
from lookalike.server.respond import search_out
from lookalike.server.routes.common import (
    CategoryFilter,
    Context,
    Gating,
    ItemId,
    K,
    MaybeRerank,
    Rerank,
    errors,
    optional,
    resolve_k,
)
from lookalike.server.schemas import SearchOut
from lookalike.server.uploads import PixelBudget, check_pixels, client_name, read_limited

router = APIRouter(prefix="/api", tags=["search"])
Photo = Annotated[UploadFile, File(description="the query photo (JPEG, PNG, WebP, BMP or TIFF)")]
SAME = "; the same as the query parameter, which may be sent instead"
FormK = Annotated[int | None, Form(alias="k", ge=1, description="how many results" + SAME)]
FormCategory = Annotated[str | None, Form(alias="category", description="search only this category" + SAME)]
FormRerank = Annotated[bool | None, Form(alias="rerank", description="apply the re-ranking chain" + SAME)]
FormGating = Annotated[bool | None, Form(alias="gating", description="search only the predicted categories" + SAME)]
SEARCH_FIELDS = ("file", "k", "category", "rerank", "gating")


async def known_form_fields(request: Request) -> None:
    """A multipart field the route does not know (a typo such as `topk`) is refused, never ignored."""
    form = await request.form()  # parsed once: Starlette keeps it for the route's own parameters
    unknown = sorted(set(form.keys()) - set(SEARCH_FIELDS))
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown form field(s) {', '.join(map(repr, unknown))}; expected {', '.join(SEARCH_FIELDS)} "
            "(each option may also be sent in the query string)",
        )


def either(name: str, query: Any, field: Any) -> Any:
    """An option sent in the query string or as a form field; both, with different values: 422."""
    if query is not None and field is not None and query != field:
        raise ApiError(
            422,
            "invalid_request",
            f"{name} sent twice with different values ({query!r} in the query string, {field!r} as a form "
            "field); send it once",
        )
    return query if query is not None else field


@router.post(
    "/search", response_model=SearchOut, responses=errors(400, 413, 422), dependencies=[Depends(known_form_fields)]
)
def search_upload(
    file: Photo,
    context: Context,
    k: K = None,
    category: CategoryFilter = None,
    rerank: MaybeRerank = None,
    gating: Gating = None,
    k_field: FormK = None,
    category_field: FormCategory = None,
    rerank_field: FormRerank = None,
    gating_field: FormGating = None,
) -> SearchOut:
    """The catalogue images most like the uploaded photo, with why each matched.

    `k`, `category`, `rerank` and `gating` may be sent in the query string or as multipart form
    fields beside `file` (the same value twice is fine; two different values, or a field the route
    does not know, are refused with 422).

    The answer's `query_id` names the query's cut-out, mask and silhouette (when localisation is on)
    at `/api/queries/{query_id}/...` while the query is among the server's recent ones.
    """
    k, category = either("k", k, k_field), either("category", optional(category), optional(category_field))
    rerank, gating = either("rerank", rerank, rerank_field), either("gating", gating, gating_field)
    rerank = True if rerank is None else rerank
    k = resolve_k(context, k)
    name = client_name(file.filename)
    data = read_limited(file.file, name, context.settings.max_upload_bytes)
    check_pixels(data, name, PixelBudget(context.settings.max_pixels_per_request))
    options = context.search_options(rerank, gating)
    with context.search_slot():
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
    with context.search_slot():
        result = context.engine.search_by_id(item_id, k, category=category, **options)
    silhouette = context.engine.silhouette(item_id)
    record = QueryRecord(Path(item.path).name, silhouette=silhouette)
    return _answer(context, result, record, k=k, category=category, rerank=rerank, gating=gating)


def _answer(context: ServerContext, result: Any, record: QueryRecord, **request: Any) -> SearchOut:
    query_id = context.queries.put(record)
    return search_out(context, result, query_id, record, **request)
