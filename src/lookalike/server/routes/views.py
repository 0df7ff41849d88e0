"""The catalogue views: phone-photo views of each catalogue image, kept beside the index for the "views"
re-ranker (`lookalike views`, `Engine.make_views`). Making them embeds `count` views of every catalogue image:
the request starts it (202) and a thread of the server carries it out, one making at a time, while searches and
other writes go on; `GET /api/views` shows how far it is. Making and clearing are writes: the catalogue's guard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from lookalike.server.context import ServerContext
from lookalike.server.errors import ApiError
from lookalike.server.routes.common import Context, errors
from lookalike.server.schemas import ViewsOut

router = APIRouter(prefix="/api", tags=["views"])
MAX_COUNT = 64
Count = Annotated[
    int | None, Query(ge=1, le=MAX_COUNT, description="views per catalogue image (default rerank.views.count)")
]


@router.get("/views", response_model=ViewsOut, responses=errors(503))
def views_info(context: Context) -> ViewsOut:
    """How many catalogue images have views, whether the index's model made them and the re-ranker is on;
    whether views are being made now."""
    return _out(context)


@router.post("/views", response_model=ViewsOut, status_code=202, responses=errors(400, 401, 403, 409, 422, 503, 507))
def make_views(context: Context, count: Count = None) -> ViewsOut:
    """Start making the views of every catalogue image (again), embedded by the index's model; the "views"
    re-ranker is switched on once they are made. A write (403 unless allowed, the API key when set); 409 while
    views are being made already."""
    context.check_index()
    if not len(context.engine):
        raise ApiError(400, "bad_request", "the index holds no images to make views of; add the catalogue first")

    def work(progress: Any) -> None:  # the engine holds its write lock only to save them
        context.engine.make_views(count=count, on_stage=lambda stage, done, total: progress(done, total))

    if not context.views_job.start(work):
        raise ApiError(409, "conflict", "views are being made already: GET /api/views shows how far")
    return _out(context)


@router.delete("/views", response_model=ViewsOut, responses=errors(401, 403, 409, 503, 507))
def clear_views(context: Context) -> ViewsOut:
    """Drop the views and switch the re-ranker off. A write; 409 while views are being made."""
    if context.views_job.running:
        raise ApiError(409, "conflict", "views are being made: wait until GET /api/views says they are done")
    with context.writing():
        context.check_index()
        context.engine.clear_views()
    return _out(context)


def _out(context: ServerContext) -> ViewsOut:
    info = context.engine.views_info() or {"images": 0, "missing": 0, "count": 0, "current": True, "reranker": False}
    return ViewsOut(**info, **context.views_job.state())
