"""PNG figures of a training run: the confusion matrix and the per-epoch curves.

matplotlib is imported only here, and only its Agg canvas is used (no pyplot, no global backend
switch), so drawing never changes the caller's matplotlib state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import MissingDependency


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependency("matplotlib", "training plots") from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_confusion_png(labels: list[Any], confusion: list[list[int]], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (row = true category), counts written in small matrices."""
    matrix = np.asarray(confusion, dtype=np.float64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.22 * len(labels) + 2.5)
    figure = _figure(size + 1.0, size)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true category")
    ticks = np.arange(len(labels))
    font = 8 if len(labels) <= 20 else 5
    axes.set_xticks(ticks, [str(v) for v in labels], rotation=90, fontsize=font)
    axes.set_yticks(ticks, [str(v) for v in labels], fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(labels) <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if rates[row, column] > 0.5 else "black"
                axes.text(column, row, int(count), ha="center", va="center", fontsize=7, color=colour)
    axes.set_title(title or "confusion matrix (validation)")
    figure.tight_layout()
    figure.savefig(Path(path))
    return Path(path)


def save_curves_png(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, training and validation, side by side."""
    figure = _figure(10.0, 4.0)
    for column, metric in enumerate(("loss", "accuracy"), start=1):
        axes = figure.add_subplot(1, 2, column)
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            values = history.get(key, [])
            if values:
                axes.plot(np.arange(1, len(values) + 1), values, label=label)
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title or "training curves")
    figure.tight_layout()
    figure.savefig(Path(path))
    return Path(path)


def save_training_figures(result: Any, folder: str | Path) -> dict[str, Path]:
    """A `TrainingResult`'s report.json, confusion.png (validation) and training_curves.png (per-epoch
    loss and accuracy; only for kinds trained in epochs, not the L-BFGS logistic regression)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    validation = None if result.report is None else result.report.as_dict()
    report = {"summary": result.summary(), "validation_report": validation}
    written["report"] = folder / "report.json"
    written["report"].write_text(json.dumps(report, indent=1) + "\n")
    kind = result.classifier.kind
    if result.report is not None:
        title = f"{kind}: validation confusion (accuracy {result.report.accuracy:.3f})"
        labels, confusion = result.report.labels, result.report.confusion
        written["confusion"] = save_confusion_png(labels, confusion, folder / "confusion.png", title)
    history = getattr(result.classifier, "history_", {})
    if history.get("loss"):
        written["curves"] = save_curves_png(history, folder / "training_curves.png", f"{kind}: training curves")
    return written
