"""One call that measures configurations on a data set and writes a report people will look at.

`run(dataset, configs, out=...)` builds a fresh index from the gallery (one per distinct build
settings), runs the queries, and writes a self-contained folder: report.md, report.html (the same
content, styled), PNG figures and results.json. With `compare_to`, the deltas against an older
results.json are computed, printed by the CLI and added to the report.
"""

from __future__ import annotations

import datetime
import json
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lookalike.evaluate.compare import (
    COMPARISON_COLUMNS,
    METRICS,
    RESULTS_FORMAT,
    Delta,
    compare,
    comparison_rows,
    format_value,
    headline,
    load_results,
    save_results,
)
from lookalike.evaluate.configs import load_dataset, resolve_configs, subsample
from lookalike.evaluate.datasets import Dataset
from lookalike.evaluate.harness import Config, ConfigResult, Progress, count_top1_changes, evaluate
from lookalike.settings import Settings

KS = (1, 5, 10, 20)
OPTIONAL_METRICS = ("accuracy", "macro F1", "IoU mean", "IoU>=0.9")  # columns only when some config has them


def _machine() -> dict[str, Any]:
    import os

    from lookalike import __version__

    return {
        "lookalike": __version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


@dataclass
class Evaluation:
    """What `run` measured: the data set, one result per configuration, and the comparison."""

    dataset: dict[str, Any]  # Dataset.describe(), plus the queries evaluated
    results: list[ConfigResult]
    options: dict[str, Any]
    date: str
    comparison: list[Delta] | None = None
    compared_to: str | None = None
    label_of: dict[str, str] = field(default_factory=dict, repr=False)  # gallery path -> label
    n_relevant: list[int] = field(default_factory=list, repr=False)  # per evaluated query
    files: list[Path] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=_machine)  # taken when the run ends

    def payload(self) -> dict[str, Any]:
        """The content of results.json."""
        return {
            "format": RESULTS_FORMAT,
            "date": self.date,
            "machine": self.machine,
            "dataset": self.dataset,
            "options": self.options,
            "configs": [result.summary() for result in self.results],
        }

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The main ablation table: columns, then one row of formatted figures per configuration."""
        figures = [headline(result.summary()) for result in self.results]
        columns = [
            m.name for m in METRICS if m.name not in OPTIONAL_METRICS or any(f[m.name] is not None for f in figures)
        ]
        rows = [[r.name] + [format_value(c, f[c]) for c in columns] for r, f in zip(self.results, figures, strict=True)]
        return ["config", *columns], rows


def run(
    dataset: str | Path | Dataset,
    configs: Sequence[str | Config] = ("baseline",),
    *,
    config_file: str | Path | None = None,
    data_root: str | Path | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    compare_to: str | Path | None = None,
    latency_queries: int = 100,
    work_dir: str | Path | None = None,
    samples: int = 6,
    progress: Progress | None = None,
    relevance: Literal["item", "category"] | None = None,
) -> Evaluation:
    """Evaluate configurations (preset names or `Config`s, then those of `config_file`) on a data
    set (a name such as "grocery-photo2photo", a manifest path, or a `Dataset`).

    `limit` keeps that many evenly spaced queries; `latency_queries` queries are searched again at
    k=10 for the latency figures. Indexes are built under `work_dir` (default: a temporary folder).
    With `out`, the report is written there; with `compare_to`, deltas against that results.json.
    `relevance` ("item" or "category") overrides what makes a gallery image relevant to a query.
    """
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_root, relevance)
    if relevance is not None and data.relevance != relevance:
        data = replace(data, relevance=relevance)
    chosen = subsample(data, limit)
    config_list = resolve_configs(configs, config_file)
    old = load_results(compare_to) if compare_to else None  # before `out` may overwrite it
    options = {"limit": limit or None, "latency_queries": latency_queries, "ks": list(KS)}
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as scratch:
        results = evaluate(
            chosen, config_list, work_dir or scratch, ks=KS, latency_queries=latency_queries, progress=progress
        )
    count_top1_changes(results)
    evaluation = Evaluation(
        dataset={**chosen.describe(), "n_queries_total": len(data.queries)},
        results=results,
        options=options,
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        compared_to=None if compare_to is None else str(compare_to),
        label_of=_gallery_labels(chosen),
        n_relevant=chosen.n_relevant(),
    )
    if old is not None:
        evaluation.comparison = compare(old, evaluation.payload())
    if out is not None:
        write_report(evaluation, out, samples=samples)
    return evaluation


def _gallery_labels(dataset: Dataset) -> dict[str, str]:
    return {
        str(entry.path.resolve()): label for entry, label in zip(dataset.gallery, dataset.gallery_labels(), strict=True)
    }


# ---------------------------------------------------------------------------------------------
# Writing the report
# ---------------------------------------------------------------------------------------------


def write_report(evaluation: Evaluation, out: str | Path, *, samples: int = 6) -> list[Path]:
    """Write results.json, the PNG figures, report.md and report.html into `out`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [save_results(out / "results.json", evaluation.payload())]
    figures = _figures(evaluation, out, samples)
    files += [path for path in figures.values() if path is not None]
    markdown = render_markdown(evaluation, {k: v.name for k, v in figures.items() if v is not None})
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(render_html(markdown, _title(evaluation)))
    files += [out / "report.md", out / "report.html"]
    evaluation.files = files
    return files


def _figures(evaluation: Evaluation, out: Path, samples: int) -> dict[str, Path | None]:
    from lookalike.evaluate import figures

    results = evaluation.results
    made: dict[str, Path | None] = {
        "recall": figures.plot_recall_curves(
            results, evaluation.n_relevant, int(evaluation.dataset["n_gallery"]), out / "recall-at-k.png"
        ),
        "categories": figures.plot_categories(results, out / "per-category.png"),
    }
    for i, result in enumerate(results):
        slug = f"{i + 1}-{_slug(result.name)}"
        if result.classification:
            made[f"confusion:{result.name}"] = figures.plot_confusion(
                result.classification, result.name, out / f"confusion-{slug}.png"
            )
        if samples > 0 and result.queries:
            made.update(_grids(evaluation, result, out, slug, samples))
        if samples > 0 and i > 0 and result.queries and results[0].queries:
            made[f"changes:{result.name}"] = _changes_grid(evaluation, results[0], result, out / f"changes-{slug}.png")
    return made


def _changes_grid(evaluation: Evaluation, reference: ConfigResult, result: ConfigResult, path: Path) -> Path | None:
    """Queries whose top-1 changed from the first configuration to this one; the counts go to the result."""
    from lookalike.evaluate.figures import render_changes

    grid, _ = render_changes(reference.queries, result.queries, (reference.name, result.name),
                             evaluation.label_of.get, path)  # fmt: skip
    return grid


def _grids(evaluation: Evaluation, result: ConfigResult, out: Path, slug: str, count: int) -> dict[str, Path]:
    from lookalike.evaluate.figures import render_grid

    title = f"{result.name}: sample queries and their top hits (green = right, red = wrong)"
    made = {
        f"samples:{result.name}": render_grid(
            _samples(result, count), evaluation.label_of.get, out / f"samples-{slug}.png", title=title
        )
    }
    failures = worst_failures(result, count)
    if failures:
        title = f"{result.name}: worst failures (the first right hit ranked lowest)"
        made[f"failures:{result.name}"] = render_grid(
            failures, evaluation.label_of.get, out / f"failures-{slug}.png", title=title
        )
    return made


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]


def _samples(result: ConfigResult, count: int) -> list[Any]:
    from lookalike.evaluate.harness import evenly_spaced

    return [result.queries[i] for i in evenly_spaced(len(result.queries), count)]


def worst_failures(result: ConfigResult, count: int) -> list[Any]:
    """The queries whose first relevant hit ranks lowest (never found = lowest of all), worst
    first; queries answered right at rank 1 are never failures."""
    failed = [q for q in result.queries if q.first_relevant_rank != 1]
    failed.sort(key=lambda q: -(q.first_relevant_rank or len(q.relevance) + 1))
    return failed[:count]


def _title(evaluation: Evaluation) -> str:
    return f"Evaluation: {evaluation.dataset['name']}, {evaluation.dataset['protocol']}"


# ---------------------------------------------------------------------------------------------
# Markdown and HTML
# ---------------------------------------------------------------------------------------------


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: bool = True) -> str:
    """A Markdown table; with `numeric`, every column after the first is right-aligned."""
    rule = ["---"] + ["---:" if numeric else "---"] * (len(columns) - 1)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _bold_best(columns: list[str], rows: list[list[str]]) -> list[list[str]]:
    """Bold the best value of each metric column when there are several configurations."""
    if len(rows) < 2:
        return rows
    from lookalike.evaluate.compare import METRIC_BY_NAME

    marked = [list(row) for row in rows]
    for c, name in enumerate(columns[1:], 1):
        values = [float(row[c]) for row in rows if row[c] != "-"]
        if not values or name not in METRIC_BY_NAME or len(set(values)) == 1:
            continue
        best = max(values) if METRIC_BY_NAME[name].higher_is_better else min(values)
        for row in marked:
            if row[c] != "-" and float(row[c]) == best:
                row[c] = f"**{row[c]}**"
    return marked


def render_markdown(evaluation: Evaluation, figures: dict[str, str]) -> str:
    """The report as Markdown; `figures` maps figure keys (see `_figures`) to PNG file names."""
    sections = [
        _md_header(evaluation),
        _md_main(evaluation),
        _md_comparison(evaluation),
        _md_figures(figures),
        _md_latency(evaluation),
        _md_training(evaluation),
        _md_classification(evaluation, figures),
        _md_segmentation(evaluation),
        _md_grids(evaluation, figures),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _md_header(evaluation: Evaluation) -> str:
    d, machine = evaluation.dataset, evaluation.machine
    subset = "" if d["n_queries"] == d["n_queries_total"] else f" (of {d['n_queries_total']}, evenly spaced)"
    queries = (
        f"- **Queries**: {d['n_queries']}{subset}; **gallery**: {d['n_gallery']} images, "
        f"{d['n_gallery_labels']} distinct labels; relevant = same {d['relevance']}"
    )
    if d.get("n_queries_without_relevant"):
        queries += f"; {d['n_queries_without_relevant']} queries have no relevant item and are left out"
    timed = evaluation.options["latency_queries"]
    latency = (
        f"- **Latency**: {timed} evenly spaced queries searched again at k=10 (the metric pass asks for the full "
        "ranking, whose metadata lookup would inflate the timings)"
        if timed
        else "- **Latency**: from the metric pass (k = gallery size: the metadata stage is inflated)"
    )
    date = (
        f"- **Date**: {evaluation.date}; lookalike {machine['lookalike']}, Python {machine['python']}, "
        f"{machine['cores']} cores, load average {machine['load_average']} (timings depend on it)"
    )
    return "\n".join([f"# {_title(evaluation)}", "", queries, latency, date])


def _md_main(evaluation: Evaluation) -> str:
    columns, rows = evaluation.table()
    parts = ["## Configurations", "", _md_table(columns, _bold_best(columns, rows)), ""]
    parts += ["What each configuration changes from the defaults:", ""]
    defaults = Settings().to_dict()
    change_rows = [[r.name, _changes(r, defaults), r.index] for r in evaluation.results]
    parts.append(_md_table(["config", "settings and search options", "index"], change_rows, numeric=False))
    return "\n".join(parts)


def _changes(result: ConfigResult, defaults: dict[str, Any]) -> str:
    changed = [
        f"`{section}.{key}={json.dumps(value)}`"
        for section, values in result.settings.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if defaults.get(section, {}).get(key) != value
    ]
    changed += [f"`search {key}={value!r}`" for key, value in result.search.items()]
    changed += [f"`prepare {step}`" for step in result.prepare]
    return ", ".join(changed) or "defaults"


def _md_comparison(evaluation: Evaluation) -> str:
    if evaluation.comparison is None:
        return ""
    rows = comparison_rows(evaluation.comparison)
    return "\n".join([f"## Against `{evaluation.compared_to}`", "", _md_table(list(COMPARISON_COLUMNS), rows)])


def _md_figures(figures: dict[str, str]) -> str:
    parts = ["## Retrieval", "", f"![Recall@K per configuration]({figures['recall']})"]
    if "categories" in figures:
        parts += ["", f"![mAP and R@1 per category]({figures['categories']})"]
    return "\n".join(parts)


def _md_latency(evaluation: Evaluation) -> str:
    stages = sorted({s for r in evaluation.results for s in r.latency_ms}, key=lambda s: (s == "total", s))
    if not stages:
        return ""
    rows = []
    for result in evaluation.results:
        cells = [result.latency_ms.get(stage) for stage in stages]
        rows.append([result.name] + [f"{c['p50_ms']:.1f} / {c['p95_ms']:.1f}" if c else "-" for c in cells])
    return "\n".join(["## Latency per stage (ms, p50 / p95)", "", _md_table(["config", *stages], rows)])


def _md_training(evaluation: Evaluation) -> str:
    """What the training steps inside the configurations measured on their own held-out data."""
    trained = [r for r in evaluation.results if r.training]
    if not trained:
        return ""
    parts = ["## Training inside the configurations (their own held-out validation)", ""]
    for result in trained:
        embedding = result.training.get("train_embedding")
        if embedding:
            parts += _md_embedding_training(result.name, embedding)
        classifier = result.training.get("train_classifier")
        if classifier:
            accuracy = classifier.get("validation_accuracy")
            parts += [
                f"- **{result.name}**, category classifier ({classifier['kind']}, {classifier['categories']} "
                f"categories): trained on {classifier['n_train']} images, best epoch {classifier.get('best_epoch')}, "
                f"validation accuracy {'-' if accuracy is None else f'{accuracy:.3f}'} on {classifier['n_validation']}",
                "",
            ]
    return "\n".join(parts).rstrip()


def _md_embedding_training(name: str, facts: dict[str, Any]) -> list[str]:
    history = facts.get("history") or {}
    val_map = [value for value in history.get("val_map", []) if value is not None]
    epochs = len(history.get("loss", [])) or len(val_map)
    chosen = facts.get("best_epoch")
    lines = [
        f"- **{name}**, embedding `{facts['kind']}` ({facts['dim']}-d): {facts['n_train_images']} images of "
        f"{facts['n_train_products']} products to train, {facts['n_validation_images']} images of "
        f"{facts['n_validation_products']} held-out products to validate; "
        + (f"{epochs} epochs run, epoch {chosen} chosen by the validation mAP" if chosen else "no epochs chosen")
        + (", then trained again on every product" if facts.get("refit") else "")
        + f" ({facts.get('seconds', 0):.0f} s)",
        "",
    ]
    if val_map:
        rows = [["validation mAP", *(f"{value:.4f}" for value in val_map)]]
        lines += [_md_table(["epoch", *(str(i) for i in range(1, len(val_map) + 1))], rows), ""]
    if facts.get("before") and facts.get("after"):
        rows = [
            [metric, f"{facts['before'][metric]:.4f}", f"{facts['after'][metric]:.4f}"] for metric in facts["before"]
        ]
        lines += ["Held-out products (each image queries the others), before and after:", ""]
        lines += [_md_table(["metric", "before", "after"], rows), ""]
    return lines


def _md_classification(evaluation: Evaluation, figures: dict[str, str]) -> str:
    classified = [r for r in evaluation.results if r.classification]
    if not classified:
        return ""
    parts = ["## Classification (predicted category of each query)", ""]
    keys = ("accuracy", "macro_f1", "mean_class_accuracy")
    rows = [
        [r.name, *(f"{r.classification[k]:.3f}" for k in keys), str(sum(r.classification["support"]))]
        for r in classified
    ]
    parts.append(_md_table(["config", "accuracy", "macro F1", "mean class accuracy", "queries"], rows))
    for result in classified:
        parts += ["", f"![confusion matrix of {result.name}]({figures[f'confusion:{result.name}']})"]
    return "\n".join(parts)


def _md_segmentation(evaluation: Evaluation) -> str:
    measured = [r for r in evaluation.results if r.segmentation]
    if not measured:
        return ""
    rows = [
        [r.name, str(s["n"]), f"{s['mean']:.3f}", f"{s['median']:.3f}", f"{s['fraction_above']:.3f}"]
        for r in measured
        for s in [r.segmentation]
    ]
    header = ["config", "queries with a ground-truth mask", "IoU mean", "IoU median", "IoU >= 0.9"]
    return "\n".join(["## Segmentation (predicted query masks against the ground truth)", "", _md_table(header, rows)])


def _md_grids(evaluation: Evaluation, figures: dict[str, str]) -> str:
    parts = ["## Sample queries", ""]
    parts += [
        f"![{r.name}]({figures[f'samples:{r.name}']})\n" for r in evaluation.results if f"samples:{r.name}" in figures
    ]
    changed = [r for r in evaluation.results[1:] if r.top1_changes]
    if changed:
        parts += [f"## Top-1 changes against {evaluation.results[0].name}", ""]
        for result in changed:
            counts = result.top1_changes
            line = f"{result.name}: {counts['fixed']} queries fixed (wrong -> right), {counts['broken']} broken."
            key = f"changes:{result.name}"
            parts.append(line + (f"\n\n![{result.name} changes]({figures[key]})\n" if key in figures else "\n"))
    parts += ["## Worst failures", ""]
    for result in evaluation.results:
        key = f"failures:{result.name}"
        if key in figures:
            parts.append(f"![{result.name} failures]({figures[key]})\n")
        else:
            parts.append(f"{result.name}: no failures, every query's first hit is right.\n")
    return "\n".join(parts)


CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: .3em .6em; }
th { background: #f4f6f8; }
tr:nth-child(even) td { background: #fafbfc; }
td strong { color: #0a6b2a; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code { background: #f4f4f4; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
"""


def render_html(markdown: str, title: str) -> str:
    """A standalone HTML page of the Markdown report (figures stay relative PNG links)."""
    from html import escape

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>\n'
        f"<style>{CSS}</style></head>\n<body>\n{body}</body></html>\n"
    )
