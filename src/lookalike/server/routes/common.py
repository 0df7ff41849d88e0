"""Parameter types and documented error answers shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query

from lookalike.server.context import ContextDep, ServerContext
from lookalike.server.schemas import ErrorOut

Context = Annotated[ServerContext, ContextDep]
MAX_INT64 = 2**63 - 1  # ids and offsets are SQLite integers
ItemId = Annotated[int, Path(ge=1, le=MAX_INT64, description="a catalogue image's id")]
K = Annotated[int | None, Query(ge=1, description="how many results (default: the server's default_k)")]
CategoryFilter = Annotated[str | None, Query(description="search only this category")]
Rerank = Annotated[bool, Query(description="apply the engine's re-ranking chain (false: vector search only)")]
MaybeRerank = Annotated[
    bool | None, Query(description="apply the engine's re-ranking chain (false: vector search only; default: true)")
]
Gating = Annotated[
    bool | None,
    Query(description="with a trained classifier, search only the predicted categories (default: the index's setting)"),
]
Scale = Annotated[int, Query(ge=1, le=16, description="each silhouette pixel becomes scale x scale pixels")]

PNG = {"content": {"image/png": {}}, "description": "a PNG image"}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route may give."""
    return {status: {"model": ErrorOut} for status in statuses}


def resolve_k(context: ServerContext, k: int | None) -> int:
    k = context.settings.default_k if k is None else k
    context.check_k(k)
    return k


def optional(text: str | None) -> str | None:
    """Empty query strings (a form's blank field) mean 'not given'."""
    if text is None:
        return None
    return text.strip() or None
