"""The catalogue views: phone-photo views of each catalogue image, kept beside the index for the "views"
re-ranker (`lookalike views`, `Engine.make_views`). Making and clearing them are writes: the same guard as
the catalogue's. Making them embeds `count` views of every catalogue image within the request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lookalike.server.context import ServerContext
from lookalike.server.routes.common import Context, errors
from lookalike.server.schemas import ViewsOut

router = APIRouter(prefix="/api", tags=["views"])
Count = Annotated[int | None, Query(ge=1, le=256, description="views per catalogue image (default rerank.views.count)")]


@router.get("/views", response_model=ViewsOut, responses=errors(503))
def views_info(context: Context) -> ViewsOut:
    """How many catalogue images have views, whether the index's model made them and the re-ranker is on."""
    return _out(context)


@router.post("/views", response_model=ViewsOut, status_code=201, responses=errors(400, 401, 403, 422, 503, 507))
def make_views(context: Context, count: Count = None) -> ViewsOut:
    """Make the views of every catalogue image (again), embedded by the index's model, and switch the
    "views" re-ranker on. A write (403 unless allowed, the API key when set)."""
    with context.writing():
        context.check_index()
        context.engine.make_views(count=count)
    return _out(context)


@router.delete("/views", response_model=ViewsOut, responses=errors(401, 403, 503, 507))
def clear_views(context: Context) -> ViewsOut:
    """Drop the views and switch the re-ranker off. A write."""
    with context.writing():
        context.check_index()
        context.engine.clear_views()
    return _out(context)


def _out(context: ServerContext) -> ViewsOut:
    info = context.engine.views_info() or {"images": 0, "missing": 0, "count": 0, "current": True, "reranker": False}
    return ViewsOut(**info)
