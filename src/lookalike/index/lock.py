"""One writer at a time per index, across processes: an advisory lock on `<index>/write.lock`.

The holder writes its PID (and what it is doing) into the file, so a process that waits can say
who it waits for. The operating system releases the lock when the holder dies, even by SIGKILL.
Within a process the lock is re-entrant (a training run that re-embeds takes it once).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lookalike.errors import IndexBusyError

LOCK_FILE = "write.lock"
POLL_SECONDS = 0.1

WaitCallback = Callable[[dict[str, Any]], None]  # told once who holds the lock, when it must wait


class WriteLock:
    """The inter-process write lock of one index folder, re-entrant within this process."""

    def __init__(self, folder: Path, *, timeout: float | None = None, on_wait: WaitCallback | None = None) -> None:
        self.path = folder / LOCK_FILE
        self.timeout = timeout  # seconds to wait for another process; None = as long as it takes, 0 = not at all
        self.on_wait = on_wait
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._handle: Any = None

    @contextmanager
    def hold(self, what: str = "writing") -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._acquire(what)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now, as it wrote itself in the file (None when nobody or unknown)."""
        try:
            facts = json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None
        return facts if isinstance(facts, dict) else None

    def _acquire(self, what: str) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 (kept open while the lock is held)
        started, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self.holder() or {}
                if self.timeout is not None and time.monotonic() - started >= self.timeout:
                    handle.close()
                    raise IndexBusyError(_busy_message(self.path.parent, holder, self.timeout)) from None
                if not told and self.on_wait is not None:
                    self.on_wait(holder)
                    told = True
                time.sleep(POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "doing": what, "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle

    def _release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


def describe_holder(holder: dict[str, Any] | None) -> str:
    """Who holds the lock, from what it wrote in the lock file: `process 4242 (adding images since ...)`."""
    if not holder:
        return "another process"
    return f"process {holder['pid']} ({holder.get('doing', 'writing')} since {holder.get('since', '?')})"


def _busy_message(folder: Path, holder: dict[str, Any], timeout: float) -> str:
    who = describe_holder(holder)
    waited = f" after waiting {timeout:g} s" if timeout else ""
    return (
        f"{folder}: index busy: {who} is writing to it{waited}; try again when it is done, "
        "or wait for it (CLI: --wait, --timeout SECONDS)"
    )
