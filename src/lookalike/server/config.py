"""The server's own settings: limits and caches. The engine's settings stay in the index."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.errors import SettingsError

MB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Limits of the REST server; every one is checked when the app is built."""

    max_upload_bytes: int = 10 * MB  # per uploaded photo; larger ones get 413
    max_files_per_add: int = 20  # photos per POST /api/items
    max_k: int = 100  # largest k a search may ask for
    default_k: int = 10
    query_cache_size: int = 64  # recent queries whose cut-out, mask and silhouette are kept in memory
    preview_size: int = 512  # cut-outs and masks kept for the page are at most this many pixels a side
    thumbnail_size: int = 256  # default thumbnail side; thumbnails are JPEGs cached in the index folder
    thumbnail_sizes: tuple[int, ...] = (128, 256, 512)  # the sizes a client may ask for
    warm_up: bool = True  # load the models at start-up rather than on the first search

    def __post_init__(self) -> None:
        checks = [
            (self.max_upload_bytes >= 1024, f"max_upload_bytes must be >= 1024, got {self.max_upload_bytes}"),
            (self.max_files_per_add >= 1, f"max_files_per_add must be >= 1, got {self.max_files_per_add}"),
            (self.max_k >= 1, f"max_k must be >= 1, got {self.max_k}"),
            (1 <= self.default_k <= self.max_k, f"default_k must be in [1, max_k={self.max_k}], got {self.default_k}"),
            (self.query_cache_size >= 1, f"query_cache_size must be >= 1, got {self.query_cache_size}"),
            (self.preview_size >= 16, f"preview_size must be >= 16, got {self.preview_size}"),
            (
                self.thumbnail_size in self.thumbnail_sizes,
                f"thumbnail_size {self.thumbnail_size} must be one of thumbnail_sizes {self.thumbnail_sizes}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(f"server settings: {message}")

    def request_limit(self, path: str) -> int:
        """The most bytes a request body to `path` may hold: its photos plus room for the form."""
        files = self.max_files_per_add if path.rstrip("/") == "/api/items" else 1
        return files * self.max_upload_bytes + MB
