"""The server's own settings: limits, caches and who may write. The engine's settings stay in the index."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lookalike.errors import SettingsError

MB = 1024 * 1024
MIN_API_KEY_LENGTH = 8
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")  # visible ASCII: it travels in an HTTP header
_HOST_NAME = re.compile(r"(\*|(\*\.)?[A-Za-z0-9_.:\[\]-]+)")


@dataclass(frozen=True)
class ServerSettings:
    """Limits of the REST server and its write protection; every one is checked when the app is built.

    Writes (adding and removing catalogue images) are off unless `allow_writes`; with `api_key`
    they need `Authorization: Bearer <key>` (or `X-API-Key`). `cors_origins` lists the other sites'
    pages that may call the API from a browser (none by default); `trusted_hosts`, when given, the
    only `Host` names answered (against DNS rebinding; `lookalike serve` on loopback defaults it).
    """

    max_upload_bytes: int = 10 * MB  # per uploaded photo; larger ones get 413
    max_files_per_add: int = 20  # photos per POST /api/items
    max_pixels_per_request: int = 200_000_000  # decoded pixels of all the photos of one request; 413 beyond
    write_lock_timeout: float = 10.0  # seconds a write waits for another process's writer; then 503 index_busy
    max_k: int = 100  # largest k a search may ask for
    default_k: int = 10
    query_cache_size: int = 64  # recent queries whose cut-out, mask and silhouette are kept in memory
    preview_size: int = 512  # cut-outs and masks kept for the page are at most this many pixels a side
    thumbnail_size: int = 256  # default thumbnail side; thumbnails are JPEGs cached in the index folder
    thumbnail_sizes: tuple[int, ...] = (128, 256, 512)  # the sizes a client may ask for
    warm_up: bool = True  # load the models at start-up rather than on the first search
    model_threads: int | None = 1  # intra-op threads per query (queries run side by side); None: one per core
    # searches running at once; the others wait their turn (None: two per core). Unbounded, 32 clients
    # held 90 req/s against 121 with 8; one slot per core left cores idle while a search waited for the
    # GIL (90 req/s with 8 clients); two per core held 137 and 133 (benchmarks/results/load.json)
    search_concurrency: int | None = None
    allow_writes: bool = False  # POST /api/items and DELETE /api/items/{id}; off: 403
    api_key: str | None = field(default=None, repr=False)  # needed for writes when set; never logged
    cors_origins: tuple[str, ...] = ()  # e.g. ("https://shop.example.com",); none: no CORS headers
    trusted_hosts: tuple[str, ...] | None = None  # Host names answered (None: any); "*.example.com" allowed

    def __post_init__(self) -> None:
        if self.api_key == "":
            object.__setattr__(self, "api_key", None)  # an empty LOOKALIKE_API_KEY means none
        object.__setattr__(self, "cors_origins", tuple(origin.rstrip("/") for origin in self.cors_origins))
        if self.trusted_hosts is not None:
            object.__setattr__(self, "trusted_hosts", tuple(self.trusted_hosts))
        checks = [
            (self.max_upload_bytes >= 1024, f"max_upload_bytes must be >= 1024, got {self.max_upload_bytes}"),
            (self.max_files_per_add >= 1, f"max_files_per_add must be >= 1, got {self.max_files_per_add}"),
            (
                self.max_pixels_per_request >= 1_000_000,
                f"max_pixels_per_request must be >= 1,000,000, got {self.max_pixels_per_request:,}",
            ),
            (self.max_k >= 1, f"max_k must be >= 1, got {self.max_k}"),
            (
                self.search_concurrency is None or self.search_concurrency >= 1,
                f"search_concurrency must be >= 1 or None, got {self.search_concurrency}",
            ),
            (
                self.model_threads is None or self.model_threads >= 1,
                f"model_threads must be >= 1 or None, got {self.model_threads}",
            ),
            (1 <= self.default_k <= self.max_k, f"default_k must be in [1, max_k={self.max_k}], got {self.default_k}"),
            (self.query_cache_size >= 1, f"query_cache_size must be >= 1, got {self.query_cache_size}"),
            (self.preview_size >= 16, f"preview_size must be >= 16, got {self.preview_size}"),
            (
                self.thumbnail_size in self.thumbnail_sizes,
                f"thumbnail_size {self.thumbnail_size} must be one of thumbnail_sizes {self.thumbnail_sizes}",
            ),
            (
                self.api_key is None
                or (len(self.api_key) >= MIN_API_KEY_LENGTH and _KEY_CHARACTERS.fullmatch(self.api_key) is not None),
                f"api_key must be at least {MIN_API_KEY_LENGTH} visible ASCII characters without spaces "
                "(e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
            ),
        ]
        checks += [(_is_origin(origin), _origin_problem(origin)) for origin in self.cors_origins]
        checks += [(_HOST_NAME.fullmatch(name) is not None, _host_problem(name)) for name in self.trusted_hosts or ()]
        for ok, message in checks:
            if not ok:
                raise SettingsError(f"server settings: {message}")

    @property
    def key_required(self) -> bool:
        return self.api_key is not None

    def request_limit(self, path: str) -> int:
        """The most bytes a request body to `path` may hold: its photos plus room for the form."""
        files = self.max_files_per_add if path.rstrip("/") == "/api/items" else 1
        return files * self.max_upload_bytes + MB


def _is_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.path == "" and not parts.query


def _origin_problem(origin: str) -> str:
    return (
        f"CORS origin {origin!r} must be a scheme and host with an optional port, like "
        "https://shop.example.com or http://localhost:3000 (no path, no '*')"
    )


def _host_problem(name: str) -> str:
    return f"trusted host {name!r} must be a host name without scheme or port (example.com, *.example.com, ::1) or '*'"
