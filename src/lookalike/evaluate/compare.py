"""The headline figures of an evaluation, its results file, and the deltas against an older one.

`headline(summary)` flattens one configuration's summary (`ConfigResult.summary()`, or an entry
of a results.json) into the figures of the report's main table; `compare(old, new)` pairs two
results files by configuration name and gives old, new and delta for each of those figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.errors import LookalikeError

RESULTS_FORMAT = 1


@dataclass(frozen=True)
class Metric:
    name: str  # column title
    higher_is_better: bool
    digits: int = 3


METRICS = (
    Metric("mAP", True),
    Metric("mAP@10", True),
    Metric("R@1", True),
    Metric("R@5", True),
    Metric("R@10", True),
    Metric("R@20", True),
    Metric("P@5", True),
    Metric("R-prec", True),
    Metric("p50 ms", False, 1),
    Metric("p95 ms", False, 1),
    Metric("index img/s", True, 1),
    Metric("index MB", False, 2),
    Metric("accuracy", True),
    Metric("macro F1", True),
    Metric("IoU mean", True),
    Metric("IoU>=0.9", True),
)
METRIC_BY_NAME = {metric.name: metric for metric in METRICS}


def _at(values: dict[Any, Any] | None, k: int) -> float | None:
    """values[k], whether the keys are ints (fresh) or strings (read back from JSON)."""
    if not values:
        return None
    value = values.get(k, values.get(str(k)))
    return None if value is None else float(value)


def headline(summary: dict[str, Any]) -> dict[str, float | None]:
    """The main-table figures of one configuration; None where a figure does not apply."""
    retrieval = summary.get("retrieval") or {}
    total = (summary.get("latency_ms") or {}).get("total") or {}
    indexing = summary.get("indexing") or {}
    classification = summary.get("classification") or {}
    segmentation = summary.get("segmentation") or {}
    index_bytes = indexing.get("index_bytes")
    figures = {
        "mAP": retrieval.get("map"),
        "mAP@10": _at(retrieval.get("map_at_k"), 10),
        **{f"R@{k}": _at(retrieval.get("recall_at_k"), k) for k in (1, 5, 10, 20)},
        "P@5": _at(retrieval.get("precision_at_k"), 5),
        "R-prec": retrieval.get("r_precision"),
        "p50 ms": total.get("p50_ms"),
        "p95 ms": total.get("p95_ms"),
        "index img/s": indexing.get("images_per_second"),
        "index MB": None if index_bytes is None else index_bytes / 1e6,
        "accuracy": classification.get("accuracy"),
        "macro F1": classification.get("macro_f1"),
        "IoU mean": segmentation.get("mean"),
        "IoU>=0.9": segmentation.get("fraction_above"),
    }
    return {name: _number(value) for name, value in figures.items()}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def format_value(metric: str, value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    digits = METRIC_BY_NAME[metric].digits if metric in METRIC_BY_NAME else 3
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# Results files
# ---------------------------------------------------------------------------------------------


def save_results(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a results payload as JSON (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(payload), indent=2) + "\n")
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_results(path: str | Path) -> dict[str, Any]:
    """A results file written by `save_results` (results.json of `lookalike evaluate`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LookalikeError(
            f"{path}: no such results file; expected the results.json of an earlier evaluation"
        ) from None
    except json.JSONDecodeError as exc:
        raise LookalikeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list):
        raise LookalikeError(f"{path}: not an evaluation results file; expected a 'configs' list")
    return data


# ---------------------------------------------------------------------------------------------
# Deltas
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """One figure of one configuration in two results files."""

    config: str
    metric: str
    old: float | None
    new: float | None

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old

    @property
    def improved(self) -> bool | None:
        """True when the change is for the better, False for the worse, None when unchanged or unknown."""
        metric = METRIC_BY_NAME[self.metric]
        if self.delta is None or round(self.delta, metric.digits) == 0:  # no change at the shown precision
            return None
        return (self.delta > 0) == metric.higher_is_better

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "metric": self.metric, "old": self.old, "new": self.new, "delta": self.delta}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Delta]:
    """Old, new and delta per configuration (matched by name) and figure; figures absent from
    both sides are left out; a configuration present on one side only has None on the other."""
    old_by_name = {entry["name"]: headline(entry) for entry in old["configs"]}
    new_by_name = {entry["name"]: headline(entry) for entry in new["configs"]}
    names = [entry["name"] for entry in new["configs"]]
    names += [name for name in old_by_name if name not in new_by_name]
    rows = []
    for name in names:
        before, after = old_by_name.get(name, {}), new_by_name.get(name, {})
        for metric in METRICS:
            a, b = before.get(metric.name), after.get(metric.name)
            if a is not None or b is not None:
                rows.append(Delta(name, metric.name, a, b))
    return rows


def comparison_rows(deltas: list[Delta]) -> list[list[str]]:
    """Table cells (config, metric, old, new, delta, better/worse) for printing; a configuration
    found in one file only gets a single row saying so."""
    verdict = {True: "better", False: "worse", None: ""}
    one_sided = {d.config: "new" if d.old is None else "gone" for d in deltas}
    for d in deltas:
        if d.old is not None and d.new is not None:
            one_sided.pop(d.config, None)
    rows, said = [], set()
    for d in deltas:
        if d.config in one_sided:
            if d.config not in said:
                note = "only in the new results" if one_sided[d.config] == "new" else "only in the old results"
                rows.append([d.config, "-", "-", "-", "-", note])
                said.add(d.config)
            continue
        old, new = format_value(d.metric, d.old), format_value(d.metric, d.new)
        delta = format_value(d.metric, d.delta, signed=True)
        rows.append([d.config, d.metric, old, new, delta, verdict[d.improved]])
    return rows


COMPARISON_COLUMNS = ("config", "metric", "old", "new", "delta", "")
