"""A request-size limit applied before any body is parsed: 413 instead of spooling huge uploads."""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.server.errors import error_response


class BodyLimitMiddleware:
    """Refuses bodies larger than `limit_for(path)`: at once from Content-Length, else while reading."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = error_response(413, "too_large", _message(f"{int(declared):,} bytes", limit))
            await response(scope, receive, send)
            return
        await self.app(scope, _counting(receive, limit), send)


def _counting(receive: Receive, limit: int) -> Receive:
    """`receive` that raises 413 once more than `limit` body bytes have arrived (chunked uploads)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _message(f"more than {limit:,} bytes", limit))
        return message

    return wrapped


def _message(size: str, limit: int) -> str:
    return (
        f"request body of {size} exceeds the limit of {limit:,} bytes; "
        "send smaller photos (the server's max_upload_bytes setting)"
    )
