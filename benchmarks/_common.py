"""Shared by the benchmark scripts: where data and results live, and how tables are printed."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))


def require(name: str) -> Path:
    """The data set's folder, or exit 0 with the reason when it is absent (a user's machine)."""
    from lookalike.evaluate.datasets import DatasetNotFound, require_dataset

    try:
        return require_dataset(name)
    except DatasetNotFound as exc:
        print(f"skipped: {exc}")
        raise SystemExit(0) from None


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_fmt(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(r[i]) for r in cells)) for i, column in enumerate(columns)]

    def line(values: list[str]) -> str:
        padded = (v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True)))
        return "  ".join(padded)

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def progress_printer() -> Any:
    state = {"last": 0.0}

    def report(what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - state["last"] > 15:
            state["last"] = now
            print(f"  {what} {done}/{total}", file=sys.stderr, flush=True)

    return report
