"""Every error leaves the server as JSON: {"error": {"type": ..., "message": ...}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.errors import (
    ImageError,
    IndexMismatchError,
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
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


class ApiError(Exception):
    """An error the routes raise on purpose, with its status, type and message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(kind, message), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(LookalikeError, _library_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.kind, exc.message)


async def _library_error(request: Request, exc: Exception) -> JSONResponse:
    for cls, status, kind in _LIBRARY_ERRORS:
        if isinstance(exc, cls):
            return error_response(status, kind, str(exc))
    return error_response(400, "bad_request", str(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path} (see /docs for the API)"
    kind = _HTTP_TYPES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(kind, message), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_describe_problem(problem) for problem in exc.errors()]
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
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
