"""Run the server with Uvicorn: what `lookalike serve` calls, with its start-up safety checks."""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import sys
from pathlib import Path

from lookalike.errors import MissingDependency, SettingsError
from lookalike.server.config import ServerSettings

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")  # the Host names answered by default on loopback


def check_server_dependencies() -> None:
    for package, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python-multipart", "multipart")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(package, "the server", extra="server")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address to listen on) is this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def settings_for_host(host: str, settings: ServerSettings) -> ServerSettings:
    """`settings` checked for listening on `host`: writes without an API key are refused unless `host`
    is loopback; on loopback, trusted hosts default to the loopback names (against DNS rebinding)."""
    loopback = is_loopback(host)
    if settings.allow_writes and not settings.key_required and not loopback:
        raise SettingsError(
            f"refusing to allow writes on {host} without an API key: anyone who can reach this address could "
            "add and remove catalogue images. Give a key with --api-key KEY or the LOOKALIKE_API_KEY "
            "environment variable (e.g. `export LOOKALIKE_API_KEY=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')`), or drop --allow-writes, or listen on 127.0.0.1"
        )
    if loopback and settings.trusted_hosts is None:
        settings = dataclasses.replace(settings, trusted_hosts=LOOPBACK_HOSTS)
    return settings


def startup_notes(host: str, settings: ServerSettings) -> list[tuple[str, str]]:
    """(level, message) lines saying what the server allows, for its start-up log; never the key."""
    notes: list[tuple[str, str]] = []
    if not settings.allow_writes:
        notes.append(
            ("INFO", "writes are off: the catalogue is read-only (--allow-writes turns adding and removing on)")
        )
        if settings.key_required:
            notes.append(("WARNING", "an API key was given but writes are off: add --allow-writes to use it"))
    elif settings.key_required:
        notes.append(("INFO", "writes are on and need the API key (Authorization: Bearer <key>)"))
    else:
        unguarded = (
            f"writes are on without an API key: on {host} (this machine only) a key is optional, but any local "
            "program can change the catalogue; --api-key or LOOKALIKE_API_KEY requires one"
        )
        notes.append(("WARNING", unguarded))
    origins = ", ".join(settings.cors_origins) or "none (no CORS headers)"
    notes.append(("INFO", f"pages of other sites allowed to call the API (CORS): {origins}"))
    hosts = ", ".join(settings.trusted_hosts) if settings.trusted_hosts is not None else "any (no --trusted-host)"
    notes.append(("INFO", f"Host names answered: {hosts}"))
    return notes


def page_url(host: str, port: int) -> str:
    """The address to open in a browser: a wildcard address (0.0.0.0, ::) is reached as localhost."""
    shown = "localhost" if host.strip() in ("", "0.0.0.0", "::", "[::]") else host.strip()
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"  # an IPv6 address
    return f"http://{shown}:{port}/"


def run(index_path: str | Path, *, host: str, port: int, settings: ServerSettings | None = None) -> None:
    """Open the index, serve it until interrupted, then close it."""
    check_server_dependencies()
    settings = settings_for_host(host, settings or ServerSettings())
    import uvicorn

    from lookalike.pipeline import Engine
    from lookalike.server.app import create_app

    with Engine.open(index_path, lock_timeout=settings.write_lock_timeout, threads=settings.model_threads) as engine:
        for level, note in startup_notes(host, settings):
            print(f"{level + ':':<9} {note}", file=sys.stderr, flush=True)  # as Uvicorn's log lines look
        print(f"{'INFO:':<9} the web page: {page_url(host, port)} (the REST API's docs: /docs); Ctrl-C stops it",
              file=sys.stderr, flush=True)  # fmt: skip
        uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="info")
