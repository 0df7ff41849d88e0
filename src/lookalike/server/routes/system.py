"""Health and status: is the server up, what does the index hold, what are the limits."""

from __future__ import annotations

from fastapi import APIRouter

from lookalike import __version__
from lookalike.server.respond import jsonable
from lookalike.server.routes.common import Context, errors
from lookalike.server.schemas import CategoryOut, HealthOut, ServerInfo, StatusOut, WritesInfo

router = APIRouter(prefix="/api", tags=["status"])


@router.get("/health", response_model=HealthOut, responses=errors(503))
def health(context: Context) -> HealthOut:
    """Cheap health check: the index folder is in place and its database answers (503 otherwise)."""
    context.check_index()
    return HealthOut(images=len(context.engine), version=__version__)


@router.get("/status", response_model=StatusOut)
def status(context: Context) -> StatusOut:
    """The index (counts, models, settings), the classifier's status when present, the server's limits."""
    info = jsonable(context.engine.info())
    settings = context.settings
    server = ServerInfo(
        max_upload_bytes=settings.max_upload_bytes,
        max_files_per_add=settings.max_files_per_add,
        max_k=settings.max_k,
        default_k=settings.default_k,
        thumbnail_size=settings.thumbnail_size,
        localization=context.localization,
        rerankers=context.rerankers,
        rerank_switchable=True,
        gating_switchable=True,
        queries_cached=len(context.queries),
        query_cache_size=context.queries.capacity,
        max_pixels_per_request=settings.max_pixels_per_request,
        writes=WritesInfo(
            enabled=settings.allow_writes, key_required=settings.key_required, cors_origins=list(settings.cors_origins)
        ),
    )
    classifier = info.get("classifier")
    return StatusOut(index=info, classifier=classifier if isinstance(classifier, dict) else None, server=server)


@router.get("/categories", response_model=list[CategoryOut])
def categories(context: Context) -> list[CategoryOut]:
    """Each category with its number of images (uncategorised images under null)."""
    counts = context.engine.categories()
    return [CategoryOut(name=name, count=count) for name, count in sorted(counts.items(), key=lambda c: c[0] or "")]
