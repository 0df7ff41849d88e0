"""Run the server with Uvicorn: what `lookalike serve` calls."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lookalike.errors import MissingDependency
from lookalike.server.config import ServerSettings


def check_server_dependencies() -> None:
    for package, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python-multipart", "multipart")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(package, "the server", extra="server")


def run(index_path: str | Path, *, host: str, port: int, settings: ServerSettings | None = None) -> None:
    """Open the index, serve it until interrupted, then close it."""
    check_server_dependencies()
    import uvicorn

    from lookalike.pipeline import Engine
    from lookalike.server.app import create_app

    with Engine.open(index_path) as engine:
        uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="info")
