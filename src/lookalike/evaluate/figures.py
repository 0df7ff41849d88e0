"""The report's pictures: Recall@K curves, per-category bars, confusion matrices (matplotlib, Agg
backend, imported on first use) and grids of queries with their top hits (PIL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from lookalike.evaluate.harness import ConfigResult, QueryOutcome, top1_changes
from lookalike.evaluate.metrics import recall_at_k

CURVE_KS = (1, 2, 3, 5, 10, 15, 20, 30, 50, 100)
RIGHT, WRONG, QUERY = (34, 160, 70), (210, 40, 40), (40, 90, 170)
INK, MUTED, PAPER = (30, 30, 30), (90, 90, 90), (255, 255, 255)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def recall_curve(outcomes: Sequence[QueryOutcome], n_relevant: Sequence[int], ks: Sequence[int]) -> list[float]:
    """Mean Recall@k (a relevant item in the top k) for each k, over queries with a relevant item."""
    rows = [recall_at_k(o.relevance, ks, n) for o, n in zip(outcomes, n_relevant, strict=True) if n > 0]
    return [float(np.mean([row[k] for row in rows])) if rows else float("nan") for k in ks]


def plot_recall_curves(results: Sequence[ConfigResult], n_relevant: Sequence[int], n_gallery: int, path: Path) -> Path:
    """Recall@K against K (log scale), one line per configuration."""
    plt = _pyplot()
    ks = [k for k in CURVE_KS if k <= max(n_gallery, 1)]
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for result in results:
        axes.plot(ks, recall_curve(result.queries, n_relevant, ks), marker="o", markersize=4, label=result.name)
    axes.set_xscale("log")
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()
    axes.set(xlabel="K", ylabel="Recall@K", ylim=(0, 1.02), title="Recall@K: a relevant item in the top K")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_categories(results: Sequence[ConfigResult], path: Path) -> Path | None:
    """Per-category mAP and R@1, horizontal bars grouped by configuration; None without categories."""
    categories = sorted({c for r in results for c in r.retrieval.get("per_category", {})})
    if not categories:
        return None
    plt = _pyplot()
    height = 1.2 + 0.22 * len(categories) * max(1, len(results)) ** 0.5
    figure, panes = plt.subplots(1, 2, figsize=(9.5, height), sharey=True)
    width = 0.8 / len(results)
    rows = np.arange(len(categories))
    for pane, (metric, title) in zip(panes, (("map", "mAP"), ("recall_at_k", "R@1")), strict=True):
        for i, result in enumerate(results):
            values = [_category_value(result, c, metric) for c in categories]
            pane.barh(rows + i * width - 0.4 + width / 2, values, height=width, label=result.name)
        pane.set(title=f"{title} per category", xlim=(0, 1.0))
        pane.grid(axis="x", alpha=0.3)
    panes[0].set_yticks(rows, categories)
    panes[0].invert_yaxis()
    panes[1].legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def _category_value(result: ConfigResult, category: str, metric: str) -> float:
    report = result.retrieval.get("per_category", {}).get(category)
    if report is None:
        return 0.0
    value = report[metric] if metric == "map" else report[metric].get(1, report[metric].get("1"))
    return 0.0 if value is None or np.isnan(value) else float(value)


def plot_confusion(classification: dict[str, Any], title: str, path: Path) -> Path:
    """The confusion matrix (rows = true, columns = predicted), shaded by row share, counts written."""
    plt = _pyplot()
    labels = [str(label) for label in classification["labels"]]
    counts = np.asarray(classification["confusion"], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = 2.5 + 0.32 * len(labels)
    figure, axes = plt.subplots(figsize=(side + 1, side))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize="small")
    axes.set_yticks(range(len(labels)), labels, fontsize="small")
    axes.set(xlabel="predicted", ylabel="true", title=f"{title}: accuracy {classification['accuracy']:.3f}")
    if len(labels) <= 25:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                color = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, int(count), ha="center", va="center", fontsize="x-small", color=color)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Grids of queries and hits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridStyle:
    tile: int = 132  # thumbnail side, pixels
    caption: int = 34  # caption height below each tile
    border: int = 5
    gap: int = 6
    hits: int = 5


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _thumb(path: str | Path, side: int) -> Image.Image:
    """The image fitted in a white square; a grey square when it cannot be read."""
    try:
        with Image.open(path) as image:
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except OSError:
        return Image.new("RGB", (side, side), (200, 200, 200))
    return ImageOps.pad(picture, (side, side), color=PAPER)


def _cutout(path: str, mask: np.ndarray, side: int) -> Image.Image | None:
    """The query with everything outside the predicted mask whitened, fitted in a square."""
    try:
        with Image.open(path) as image:
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except OSError:
        return None
    alpha = Image.fromarray(mask.astype(np.uint8) * 255).resize(picture.size, Image.Resampling.BILINEAR)
    alpha = alpha.filter(ImageFilter.GaussianBlur(max(picture.size) / 250))  # soften the thumbnail's steps
    white = Image.new("RGB", picture.size, PAPER)
    return ImageOps.pad(Image.composite(picture, white, alpha), (side, side), color=PAPER)


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_grid(
    outcomes: Sequence[QueryOutcome],
    label_of: Callable[[str], str | None],
    path: Path,
    *,
    title: str,
    style: GridStyle = GridStyle(),
    notes: Sequence[str] | None = None,
) -> Path:
    """One row per query: the query (blue frame; its cut-out beside it when a mask was predicted),
    then its top hits with their scores, framed green when relevant (same label), red when not.
    `notes`: one line per row, written under the query instead of its first right hit's rank."""
    with_mask = any(o.mask is not None for o in outcomes)
    columns = 1 + int(with_mask) + style.hits
    cell_w, cell_h = style.tile + style.gap, style.tile + style.caption + style.gap
    head = 30
    sheet = Image.new("RGB", (columns * cell_w + style.gap, head + len(outcomes) * cell_h + style.gap), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text((style.gap, 6), title, fill=INK, font=_font(16))
    for row, outcome in enumerate(outcomes):
        note = None if notes is None else notes[row]
        _grid_row(sheet, draw, outcome, label_of, (style.gap, head + row * cell_h), with_mask, style, note)
    sheet.save(path)
    return path


def _grid_row(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    outcome: QueryOutcome,
    label_of: Callable[[str], str | None],
    origin: tuple[int, int],
    with_mask: bool,
    style: GridStyle,
    note: str | None = None,
) -> None:
    x, y = origin
    step = style.tile + style.gap
    rank = outcome.first_relevant_rank
    _framed(sheet, _thumb(outcome.path, style.tile), (x, y), QUERY, style)
    second = note if note is not None else f"first right hit: {rank or 'none'}"
    _caption(draw, (x, y + style.tile), [f"query: {_short(outcome.label, 15)}", second])
    x += step
    if with_mask:
        cut = _cutout(outcome.path, outcome.mask, style.tile) if outcome.mask is not None else None
        if cut is not None:
            sheet.paste(cut, (x, y))
            found = (outcome.details.get("localization") or {}).get("found", True)
            iou = "" if outcome.iou is None else f"  IoU {outcome.iou:.2f}"
            _caption(draw, (x, y + style.tile), ["cut-out" if found else "no object: whole image", iou.strip()])
        x += step
    for number, (hit_path, score) in enumerate(outcome.top[: style.hits], 1):
        label = label_of(hit_path)
        color = RIGHT if label == outcome.label else WRONG
        _framed(sheet, _thumb(hit_path, style.tile), (x, y), color, style)
        _caption(
            draw, (x, y + style.tile), [f"{number}. score {score:.3f}", _short(label or Path(hit_path).stem)], color
        )
        x += step


def _framed(
    sheet: Image.Image, tile: Image.Image, at: tuple[int, int], color: tuple[int, int, int], style: GridStyle
) -> None:
    inner = style.tile - 2 * style.border
    sheet.paste(Image.new("RGB", (style.tile, style.tile), color), at)
    sheet.paste(tile.resize((inner, inner), Image.Resampling.LANCZOS), (at[0] + style.border, at[1] + style.border))


def _caption(
    draw: ImageDraw.ImageDraw, at: tuple[int, int], lines: list[str], second: tuple[int, int, int] = MUTED
) -> None:
    """First line in ink, the second in `second` (the hit's verdict colour, or grey)."""
    font = _font(11)
    for i, line in enumerate(line for line in lines if line):
        draw.text((at[0] + 1, at[1] + 3 + 14 * i), line, fill=INK if i == 0 else second, font=font)


def render_changes(
    before: Sequence[QueryOutcome],
    after: Sequence[QueryOutcome],
    names: tuple[str, str],
    label_of: Callable[[str], str | None],
    path: Path,
    *,
    count: int = 6,
) -> tuple[Path | None, dict[str, int]]:
    """A before/after grid of queries whose top-1 changed: up to `count` fixed ones, then up to `count`
    broken ones (evenly spaced), each as two rows, the run `names[0]` above `names[1]`. Returns the
    grid (None when no top-1 changed) and how many queries were fixed and broken."""
    fixed, broken = top1_changes(before, after)
    rows: list[QueryOutcome] = []
    notes: list[str] = []
    for what, chosen in (("fixed", fixed), ("broken", broken)):
        for i in [chosen[j] for j in _evenly(len(chosen), count)]:
            rows += [before[i], after[i]]
            notes += [f"{what}; {_short(names[0], 14)}:", f"{what}; {_short(names[1], 14)}:"]
    counts = {"fixed": len(fixed), "broken": len(broken)}
    if not rows:
        return None, counts
    title = (
        f"top-1 changed, {names[0]} -> {names[1]}: {len(fixed)} fixed (wrong -> right), {len(broken)} broken "
        f"(right -> wrong); each query's two rows: {names[0]}, then {names[1]}"
    )
    return render_grid(rows, label_of, path, title=title, notes=notes), counts


def _evenly(n: int, count: int) -> list[int]:
    if n <= count:
        return list(range(n))
    return sorted({round(float(v)) for v in np.linspace(0, n - 1, count)})
