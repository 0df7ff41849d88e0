"""Every error leaves the server as JSON: {"error": {"type": ..., "message": ...}}."""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.errors import (
    DiskFullError,
    ImageError,
    IndexBusyError,
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    LookalikeError,
    MissingDependency,
    SettingsError,
    UnknownNameError,
)

log = logging.getLogger("lookalike.server")

# lookalike's errors, most specific first: (class, HTTP status, type)
_LIBRARY_ERRORS: list[tuple[type[LookalikeError], int, str]] = [
    (ImageError, 422, "invalid_image"),
    (SettingsError, 422, "invalid_setting"),
    (UnknownNameError, 422, "unknown_name"),
    (IndexMismatchError, 409, "index_mismatch"),
    (MissingDependency, 501, "missing_dependency"),
    (LookalikeError, 400, "bad_request"),
]
_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
    507: "insufficient_storage",
}
DISK_FULL_MESSAGE = (
    "the server's disk is full: nothing of this request was kept; free some space on the server "
    "(its administrator) and send it again"
)
INDEX_GONE_MESSAGE = (
    "the index folder this server serves is missing or unreadable, so nothing can be written; "
    "restore the index (or restart the server on a valid one)"
)


class ApiError(Exception):
    """An error the routes raise on purpose, with its status, type and message."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def index_unavailable(message: str = INDEX_GONE_MESSAGE) -> ApiError:
    return ApiError(503, "index_unavailable", message)


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(kind, message), status_code=status, headers=headers)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says the disk is full (OSError ENOSPC or EDQUOT,
    SQLite's "database or disk is full", lookalike's DiskFullError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.OperationalError) and "disk is full" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(LookalikeError, _library_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OverflowError, _overflow_error)
    app.add_exception_handler(OSError, _storage_error)
    app.add_exception_handler(sqlite3.Error, _storage_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.kind, exc.message, exc.headers)


async def _library_error(request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):
        return _disk_full(request, exc)
    if isinstance(exc, IndexCorruptError | IndexNotFoundError):
        log.error("index unavailable in %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "index_unavailable", INDEX_GONE_MESSAGE)
    if isinstance(exc, IndexBusyError):
        message = "another process is writing to the index; try again in a moment"
        return error_response(503, "index_busy", message, {"Retry-After": "5"})
    for cls, status, kind in _LIBRARY_ERRORS:
        if isinstance(exc, cls):
            return error_response(status, kind, str(exc))
    return error_response(400, "bad_request", str(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path} (see /docs for the API)"
    headers = dict(exc.headers or {})
    allowed = _documented_methods(request) if exc.status_code == 405 else []
    if allowed:  # every method of the path, not only those of the first route that matched it
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed on {request.url.path}; it takes {', '.join(allowed)}"
    kind = _HTTP_TYPES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(kind, message), status_code=exc.status_code, headers=headers)


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _documented_methods(request: Request) -> list[str]:
    """The methods the OpenAPI schema documents for the request's path (HEAD with GET), sorted."""
    table = getattr(request.app.state, "documented_methods", None)
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            literal = re.split(r"\{[^/{}]+\}", template)
            pattern = re.compile("[^/]+".join(re.escape(part) for part in literal))
            methods = {method.upper() for method in operations if method in _HTTP_METHODS}
            table.append((pattern, methods | ({"HEAD"} if "GET" in methods else set())))
        request.app.state.documented_methods = table
    path = request.url.path
    return sorted({method for pattern, methods in table if pattern.fullmatch(path) for method in methods})


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_describe_problem(problem) for problem in exc.errors()]
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


async def _overflow_error(request: Request, exc: Exception) -> JSONResponse:
    """A number too large for the index (ids and offsets are 64-bit integers)."""
    log.warning("number out of range in %s %s: %s", request.method, request.url.path, exc)
    return error_response(422, "invalid_request", "a number in the request is out of range (at most 2**63 - 1)")


def _disk_full(request: Request, exc: BaseException) -> JSONResponse:
    log.error("disk full in %s %s: %s", request.method, request.url.path, exc)
    return error_response(507, "insufficient_storage", DISK_FULL_MESSAGE)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """A file-system or database failure: 507 when the disk is full, else a plain 500."""
    if is_disk_full(exc):
        return _disk_full(request, exc)
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):
        return _disk_full(request, exc)
    log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    message = f"unexpected server error ({type(exc).__name__}); the server log has the details"
    return error_response(500, "internal_error", message)


def _describe_problem(problem: dict[str, Any]) -> str:
    """'query parameter k: Input should be less than or equal to 100'."""
    where = [str(part) for part in problem.get("loc", ())]
    places = {"query": "query parameter", "path": "path parameter", "body": "form field", "header": "header"}
    if where and where[0] in places:
        label = f"{places[where[0]]} {'.'.join(where[1:])!r}" if where[1:] else places[where[0]]
    else:
        label = ".".join(where) or "request"
    return f"{label}: {problem.get('msg', 'invalid value')}"
