"""Who may change the catalogue, and from where: the write guard, trusted hosts, loopback addresses.

Both guards are plain ASGI middleware, so a refused request is answered before its body is read
(no 200 MB upload just to learn that the key was wrong). Reads (searches included) stay open.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lookalike.server.config import ServerSettings
from lookalike.server.errors import error_response

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# POST /api/items, DELETE /api/items/{id}, POST and DELETE /api/archive and /api/views: everything under them that
# is not a read
WRITE_ROUTES = ("/api/items", "/api/archive", "/api/views")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_ECHO_LIMIT = 200  # characters of a client's header quoted back in a message


def is_write(method: str, path: str) -> bool:
    """Whether a request changes the catalogue (and so passes the write guard)."""
    if method.upper() not in WRITE_METHODS:
        return False
    return any(path == route or path.startswith(route + "/") for route in WRITE_ROUTES)


class WriteGuardMiddleware:
    """Refuses writes unless enabled, from another site's page, and without the API key (when one is set)."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_write(scope["method"], scope["path"]):
            refusal = write_refusal(scope, self.settings)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def write_refusal(scope: Scope, settings: ServerSettings) -> JSONResponse | None:
    """The answer refusing this write request, or None when it may go on."""
    if not settings.allow_writes:
        return error_response(
            403,
            "writes_disabled",
            "adding and removing catalogue images is turned off on this server; start it with "
            "`lookalike serve --allow-writes` (add --api-key KEY or LOOKALIKE_API_KEY to require a key), "
            "or build the app with ServerSettings(allow_writes=True)",
        )
    headers = Headers(scope=scope)
    foreign = _foreign_origin(scope, headers, settings)
    if foreign is not None:
        return error_response(
            403,
            "cross_origin",
            f"write requests from another site's page are refused ({foreign}); use the page this server "
            "serves, a client that sends no Origin header, or start the server with --cors-origin ORIGIN "
            "to let that site's page write",
        )
    if settings.api_key is None:
        return None
    given = presented_key(headers)
    if given is None:
        return error_response(
            401,
            "unauthorized",
            "this server needs an API key for writes: send the header `Authorization: Bearer <key>` "
            "(or `X-API-Key: <key>`) with the key given to `lookalike serve --api-key` or LOOKALIKE_API_KEY",
            headers={"WWW-Authenticate": 'Bearer realm="lookalike"'},
        )
    if not hmac.compare_digest(given.encode("latin-1"), settings.api_key.encode("ascii")):
        return error_response(
            403,
            "forbidden",
            "the API key sent is not this server's: check the key (the server never shows it) and send it "
            "as `Authorization: Bearer <key>`",
        )
    return None


def presented_key(headers: Headers) -> str | None:
    """The key in `Authorization: Bearer <key>`, else in `X-API-Key`; None when neither holds one."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def own_origin(scope: Scope, headers: Headers) -> str:
    """scheme://host[:port] of this request, as a browser on this server's page would send it."""
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
    return f"{scope.get('scheme', 'http')}://{host}"


def same_origin(origin: str, own: str) -> bool:
    """Whether two origins name the same scheme, host and port (default ports filled in)."""
    try:
        a, b = urlsplit(origin.strip()), urlsplit(own)
        a_port = a.port or _DEFAULT_PORTS.get(a.scheme.lower())
        b_port = b.port or _DEFAULT_PORTS.get(b.scheme.lower())
    except ValueError:
        return False
    return bool(a.hostname) and (a.scheme.lower(), a.hostname, a_port) == (b.scheme.lower(), b.hostname, b_port)


def _foreign_origin(scope: Scope, headers: Headers, settings: ServerSettings) -> str | None:
    """Why the request comes from another site's page, or None when it does not."""
    origin = headers.get("origin")
    if origin is not None:
        if origin.rstrip("/") in settings.cors_origins:
            return None
        own = own_origin(scope, headers)
        if not same_origin(origin, own):
            return f"Origin {origin[:_ECHO_LIMIT]!r} is not this server's {own[:_ECHO_LIMIT]!r}"
        return None
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return "Sec-Fetch-Site: cross-site"
    return None


class TrustedHostsMiddleware:
    """Answers only requests whose `Host` is one of `hosts` (against DNS rebinding); JSON 400 otherwise.

    Starlette's TrustedHostMiddleware does the same check but answers in plain text; this one keeps
    the API's error format and names the option that fixes it. "*.example.com" matches sub-domains.
    """

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = tuple(_host_name(name) for name in hosts)
        self.allow_any = "*" in self.hosts

    def allows(self, host_header: str | None) -> bool:
        if self.allow_any:
            return True
        host = _host_name(host_header or "")
        return bool(host) and any(
            host == name or (name.startswith("*.") and host.endswith(name[1:])) for name in self.hosts
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host")
            if not self.allows(host):
                names = ", ".join(self.hosts)
                response = error_response(
                    400,
                    "untrusted_host",
                    f"this server answers only for the host names {names}, got Host {(host or '')[:_ECHO_LIMIT]!r}; "
                    "reach it by one of those names, or start it with --trusted-host NAME",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """'Example.com:8000' -> 'example.com', '[::1]:8000' -> '::1', '*.Example.com' -> '*.example.com'."""
    host = host.strip().lower()
    if host.startswith("*"):
        return host
    if host.startswith("[") or host.count(":") <= 1:
        return urlsplit(f"//{host}").hostname or ""
    return host  # a bare IPv6 address
