"""The evaluation report for every shared data set: grocery-store (both protocols) and eth80-dev.

For each data set: builds a fresh index per distinct build setting from the gallery, runs every
query with each configuration, and writes
- benchmarks/results/report-<dataset>/ (report.md, report.html, PNG figures, results.json),
- benchmarks/results/evaluate-<dataset>.json (the figures, with the machine and date),
and prints the main table and the deltas against the previous evaluate-<dataset>.json, if any.

Data sets: grocery-photo2photo (queries = test photos, gallery = train photos), grocery-photo2catalog
(queries = test photos, gallery = the 81 iconic catalogue images), eth80 (eth80-dev: cross-view
instance retrieval; segmentation IoU where localisation runs). Relevant = same product / object.

Usage: .venv/bin/python benchmarks/evaluate_all.py [--limit N] [--config NAME ...] [--dataset NAME ...]
A run with --limit writes report-<dataset>-limit<N>/ and evaluate-<dataset>-limit<N>.json instead,
so a quick check never replaces the figures of a full run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import RESULTS, progress_printer, require, table

DATASETS = {"grocery-photo2photo": "grocery-store", "grocery-photo2catalog": "grocery-store", "eth80": "eth80-dev"}
# Configurations that cannot run on a data set, and why (printed, and left out of its table).
NOT_APPLICABLE = {
    "grocery-photo2catalog": {
        "whiten": "the gallery holds one catalogue image per product: no matching pairs to learn whitening from",
    },
    "eth80": {
        "carry": "eth80-dev has no labelled training photos apart from its queries and gallery",
        "carry-self": "eth80-dev has no labelled training photos apart from its queries and gallery",
    },
}


def main() -> None:
    from lookalike.evaluate.configs import available_presets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="evaluate only N evenly spaced queries")
    parser.add_argument("--config", action="append", help=f"preset (repeat); default all: {available_presets()}")
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS), help="default: all three")
    parser.add_argument("--latency-queries", type=int, default=100, help="queries timed again at k=10")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for reports and JSON files")
    args = parser.parse_args()
    for name in args.dataset or list(DATASETS):
        skipped = NOT_APPLICABLE.get(name, {})
        for config in sorted(set(args.config or available_presets()) & set(skipped)):
            print(f"{name}: configuration {config!r} left out: {skipped[config]}", flush=True)
        evaluate_one(name, [c for c in args.config or available_presets() if c not in skipped], args)


def evaluate_one(name: str, configs: list[str], args: argparse.Namespace) -> None:
    from lookalike.evaluate.compare import COMPARISON_COLUMNS, comparison_rows, save_results
    from lookalike.evaluate.report import run

    root = require(DATASETS[name]).parent
    suffix = f"-limit{args.limit}" if args.limit else ""
    previous = args.results / f"evaluate-{name}{suffix}.json"
    print(f"\n== {name}: {', '.join(configs)}" + (f" ({args.limit} queries)" if args.limit else ""), flush=True)
    evaluation = run(
        name,
        configs,
        data_root=root,
        limit=args.limit,
        out=args.results / f"report-{name}{suffix}",
        compare_to=previous if previous.is_file() else None,
        latency_queries=args.latency_queries,
        progress=progress_printer(),
    )
    columns, rows = evaluation.table()
    print(table([dict(zip(columns, row, strict=True)) for row in rows], columns))
    if evaluation.comparison:
        cells = [dict(zip(COMPARISON_COLUMNS, c, strict=True)) for c in comparison_rows(evaluation.comparison)]
        print(f"\nagainst {previous.name}\n" + table(cells, list(COMPARISON_COLUMNS)))
    saved = save_results(args.results / f"evaluate-{name}{suffix}.json", evaluation.payload())
    print(f"report: {evaluation.files[-1]}\nsaved {saved}", flush=True)


if __name__ == "__main__":
    main()
