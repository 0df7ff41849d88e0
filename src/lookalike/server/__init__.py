"""The REST server and its web page: `create_app(engine)` builds the FastAPI app.

FastAPI is an optional dependency (`pip install "lookalike[server]"`), imported only when the app
is built, so `import lookalike.server` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lookalike.server.config import ServerSettings

__all__ = ["ServerSettings", "create_app"]

if TYPE_CHECKING:
    from lookalike.server.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from lookalike.server.app import create_app

        return create_app
    raise AttributeError(f"module 'lookalike.server' has no attribute {name!r}")
