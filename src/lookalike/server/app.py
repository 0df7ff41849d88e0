"""`create_app(engine)`: the FastAPI app over one engine, with its API, its web page and its docs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from lookalike import __version__
from lookalike.server.config import ServerSettings
from lookalike.server.context import ServerContext
from lookalike.server.errors import install_error_handlers
from lookalike.server.limits import BodyLimitMiddleware
from lookalike.server.routes import ROUTERS
from lookalike.server.routes.page import STATIC_DIR

DESCRIPTION = """
Search a catalogue of product photos with a photo, and see why each result matched.

Files are reached by catalogue id only. Errors answer `{"error": {"type": ..., "message": ...}}`.
The web page is at [/](/).
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
    app.add_middleware(BodyLimitMiddleware, limit_for=settings.request_limit)
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

    return lifespan
