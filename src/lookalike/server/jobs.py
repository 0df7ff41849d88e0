"""Long writes a request starts and a thread carries out (making the catalogue views: `count` embeddings per
catalogue image, minutes for a large catalogue): one at a time, with its progress, and stopped when the server
shuts down (before anything of it is written)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("lookalike.server")


class Stopped(Exception):
    """Raised from a job's progress callback once the server is shutting down."""


class BackgroundJob:
    """One named job at a time: `start(work)` runs `work(progress)` in a thread; `progress(done, total)` records
    how far it is and raises `Stopped` after `stop()`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._guard = threading.Lock()
        self.done = 0
        self.total = 0
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, work: Callable[[Callable[[int, int], None]], Any]) -> bool:
        """Start `work` unless this job is running already (then False)."""
        with self._guard:
            if self.running or self._stopping.is_set():
                return False
            self.done, self.total, self.error = 0, 0, None
            self._thread = threading.Thread(target=self._run, args=(work,), name=f"lookalike-{self.name}", daemon=True)
            self._thread.start()
            return True

    def _run(self, work: Callable[[Callable[[int, int], None]], Any]) -> None:
        try:
            work(self._progress)
        except Stopped:
            log.info("%s stopped: the server is shutting down (nothing of it was written)", self.name)
        except Exception as exc:  # the request that started it has been answered: keep the reason for GET
            self.error = str(exc)
            log.exception("%s failed", self.name)

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self._stopping.is_set():
            raise Stopped

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the job to stop at its next progress step and wait for it."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", self.name, timeout)

    def state(self) -> dict[str, Any]:
        return {"making": self.running, "done": self.done, "total": self.total, "error": self.error}
