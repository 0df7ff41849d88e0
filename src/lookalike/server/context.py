"""What every request shares: the engine, the server's settings, the query cache and the write lock.

Searches run concurrently (the engine guards its index with a readers-writer lock; torch in
inference mode and onnxruntime sessions may be called from several threads). Additions and removals
go through `writing`, one at a time, so two uploads never race for the same file or row; the engine
blocks searches only while it commits, not while it embeds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.pipeline import Engine
from lookalike.server.config import ServerSettings
from lookalike.server.errors import ApiError, index_unavailable, not_found
from lookalike.server.jobs import BackgroundJob
from lookalike.server.queries import QueryCache
from lookalike.server.uploads import UPLOADS_DIR

THUMBNAILS_DIR = "thumbnails"
log = logging.getLogger("lookalike.server")


@dataclass
class ServerContext:
    engine: Engine
    settings: ServerSettings
    queries: QueryCache
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    _search_slots: threading.BoundedSemaphore = field(init=False)
    views_job: BackgroundJob = field(default_factory=lambda: BackgroundJob("making the catalogue views"))

    def __post_init__(self) -> None:
        self._search_slots = threading.BoundedSemaphore(self.settings.search_concurrency or 2 * (os.cpu_count() or 1))

    @classmethod
    def create(cls, engine: Engine, settings: ServerSettings) -> ServerContext:
        return cls(engine, settings, QueryCache(settings.query_cache_size))

    @contextmanager
    def search_slot(self) -> Iterator[None]:
        """Hold one of the `search_concurrency` slots while a search runs its models (waits for one)."""
        with self._search_slots:
            yield

    @property
    def uploads_dir(self) -> Path:
        return Path(self.engine.path) / UPLOADS_DIR

    @property
    def thumbnails_dir(self) -> Path:
        return Path(self.engine.path) / THUMBNAILS_DIR

    @property
    def localization(self) -> bool:
        return bool(self.engine.settings.localize.enabled)

    @property
    def rerankers(self) -> list[str]:
        return self.engine.rerankers

    def index_present(self) -> bool:
        """Whether the index folder is still there with its database and settings (someone may have
        deleted or moved it while the server runs: the open database would then take writes and lose them)."""
        return self.engine.present()

    def check_index(self) -> None:
        """503 when the index folder is gone (see `index_present`)."""
        if not self.index_present():
            log.error("the index folder %s is missing its files; refusing writes", self.engine.path)
            raise index_unavailable()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Serialises additions and removals (searches go on meanwhile)."""
        with self._write_lock:
            yield

    def item_or_404(self, item_id: int) -> Any:
        item = self.engine.item(item_id)
        if item is None:
            raise not_found(f"no catalogue image with id {item_id}")
        return item

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise ApiError(422, "invalid_request", f"k must be between 1 and {self.settings.max_k}, got {k}")

    def search_options(self, rerank: bool, gating: bool | None) -> dict[str, Any]:
        """Keyword arguments for `Engine.search` and `Engine.search_by_id`."""
        return {"rerank": rerank, "gating": gating}

    def warm_up(self) -> None:
        """Load the models and the vector index now, once, rather than in the first searches at once."""
        try:
            self.engine.search(Image.new("RGB", (64, 64), "white"), k=1, name="<warm-up>")
        except LookalikeError as exc:
            log.warning("warm-up search failed: %s", exc)


def get_context(request: Request) -> ServerContext:
    return request.app.state.context


ContextDep = Depends(get_context)
