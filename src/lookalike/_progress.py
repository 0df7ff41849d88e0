"""Progress of a long run: a live bar on a terminal, plain log lines anywhere else.

Rich's bar only draws at the end when stderr is a file, a pipe or CI's log, so a 30-minute
evaluation would say nothing until it is over. There, `ProgressLog` writes one line per stage and
then at most one every `interval` seconds: stage, done/total, items per second and the time left.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

DEFAULT_INTERVAL = 30.0  # seconds between log lines of one stage; LOOKALIKE_PROGRESS_INTERVAL overrides


class ProgressLog:
    """`update(done, total, stage)` calls become log lines on `stream`, rate-limited per stage."""

    def __init__(self, description: str, *, stream: IO[str] | None = None, interval: float | None = None) -> None:
        self.description = description
        self.stream = stream
        env = os.environ.get("LOOKALIKE_PROGRESS_INTERVAL")
        self.interval = interval if interval is not None else float(env) if env else DEFAULT_INTERVAL
        self._stage: str | None = None
        self._stage_started = 0.0
        self._last_line = 0.0
        self._last_done = -1
        self._last_update = time.monotonic()  # stages run back to back: one starts when the previous reported

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, done: int, total: int | None, stage: str | None = None) -> None:
        now = time.monotonic()
        stage = stage or self.description
        if stage != self._stage:
            self._stage, self._stage_started, self._last_line, self._last_done = stage, self._last_update, 0.0, -1
        self._last_update = now
        finished = total is not None and done >= total
        due = now - self._last_line >= self.interval or self._last_line == 0.0
        if (due or finished) and done != self._last_done:
            self._write(self._line(stage, done, total, now - self._stage_started))
            self._last_line, self._last_done = now, done

    def _line(self, stage: str, done: int, total: int | None, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 and done else 0.0
        parts = [f"{stage}: {done}" + (f"/{total} ({100 * done / total:.0f}%)" if total else "")]
        if rate:
            parts.append(f"{rate:.1f}/s")
            if total and done < total:
                parts.append(f"ETA {_duration((total - done) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return ", ".join(parts)

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
        stream.flush()


def _duration(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_reporter(description: str, console: Any) -> tuple[Any, Any]:
    """(context manager, update(done, total, stage=None)): a Rich bar when `console` is a terminal,
    `ProgressLog` lines otherwise."""
    if not console.is_terminal:
        log = ProgressLog(description)
        return log, log.update
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int | None, stage: str | None = None) -> None:
        bar.update(task, completed=done, total=total, **({"description": stage} if stage else {}))

    return bar, update
