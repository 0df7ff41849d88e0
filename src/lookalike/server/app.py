"""`create_app(engine)`: the FastAPI app over one engine, with its API, its web page and its docs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from lookalike import __version__
from lookalike.server.config import ServerSettings
from lookalike.server.context import ServerContext
from lookalike.server.errors import install_error_handlers
from lookalike.server.limits import BodyLimitMiddleware
from lookalike.server.routes import ROUTERS
from lookalike.server.routes.page import STATIC_DIR
from lookalike.server.security import TrustedHostsMiddleware, WriteGuardMiddleware

DESCRIPTION = """
Search a catalogue of product photos with a photo, and see why each result matched.

Files are reached by catalogue id only. Errors answer `{"error": {"type": ..., "message": ...}}`.
Writes (`POST /api/items`, `DELETE /api/items/{id}`) are off unless the server allows them; with an
API key they need `Authorization: Bearer <key>`. The web page is at [/](/).
"""


def create_app(engine: Any, settings: ServerSettings | None = None) -> FastAPI:
    """The app serving `engine` (an open `lookalike.Engine`); the caller keeps and closes the engine."""
    settings = settings or ServerSettings()
    context = ServerContext.create(engine, settings)
    app = FastAPI(
        title="lookalike",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(context),
    )
    app.state.context = context
    install_error_handlers(app)
    # the last added runs first: trusted hosts, then CORS (so refusals carry its headers), then writes
    app.add_middleware(BodyLimitMiddleware, limit_for=settings.request_limit)
    app.add_middleware(WriteGuardMiddleware, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            max_age=600,
        )
    if settings.trusted_hosts is not None:
        app.add_middleware(TrustedHostsMiddleware, hosts=settings.trusted_hosts)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _lifespan(context: ServerContext) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if context.settings.warm_up:
            context.warm_up()
        yield
        context.views_job.stop()  # before the engine closes under it

    return lifespan
