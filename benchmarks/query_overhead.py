"""Warm query time on an index with a learned transform: what the engine adds around the models.

Builds the sample catalogue's index in a temporary folder, installs supervised whitening (256-d,
learned from the stored vectors, no decoding), then searches with every sample query photo for a
few rounds, at k=5, and reports p50/p95 of the whole query and of its stages. Run it from two
checkouts to compare engine versions: each writes `benchmarks/results/query_overhead-<label>.json`.

    .venv/bin/python benchmarks/query_overhead.py --label after --rounds 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, save, table


def sample_folder() -> Path:
    for candidate in (ROOT / "src" / "lookalike" / "samples" / "grocery", ROOT / "samples" / "grocery"):
        if (candidate / "catalog").is_dir():
            return candidate
    raise SystemExit("no sample catalogue found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kind", default="supervised", help="the learned transform: supervised, pca, linear, mlp")
    args = parser.parse_args()

    from lookalike import Engine, Settings
    from lookalike.settings import HeadSettings

    samples = sample_folder()
    queries = sorted((samples / "queries").iterdir())
    with tempfile.TemporaryDirectory() as scratch, Engine.create(Path(scratch) / "q.index", Settings()) as engine:
        engine.add([samples / "catalog"])
        engine.train_embedding(HeadSettings(kind=args.kind, dim=256, max_epochs=5), force=True)
        for query in queries[:5]:  # warm-up: models and the vector index load here
            engine.search(query, k=5)
        totals: list[float] = []
        stages: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for query in queries:
                started = time.perf_counter()
                result = engine.search(query, k=5)
                totals.append(time.perf_counter() - started)
                for stage, seconds in result.timings.items():
                    stages.setdefault(stage, []).append(seconds)
        hashing = _fingerprint_cost(engine)
    rows = [_row("query (wall)", totals)] + [_row(stage, values) for stage, values in stages.items()]
    rows.append(_row("transform fingerprint (one hash)", hashing))
    print(f"{args.label}: {len(totals)} queries, transform {args.kind}, load average {os.getloadavg()}")
    print(table(rows, ["stage", "p50 ms", "p95 ms", "n"]))
    path = save(
        f"query_overhead-{args.label}",
        {"label": args.label, "transform": args.kind, "load_average": os.getloadavg(), "stages": rows},
    )
    print(f"wrote {path}")


def _fingerprint_cost(engine: object) -> list[float]:
    """Seconds of one `fingerprint()` of the installed transform: what an engine that re-checks it per
    query pays per query (engines before the Featurizer did; the Featurizer computes it once)."""
    featurizer = getattr(engine, "featurizer", None)
    transform = featurizer.transform if featurizer is not None else engine._get_transform()  # type: ignore[attr-defined]
    seconds = []
    for _ in range(50):
        started = time.perf_counter()
        transform.fingerprint()
        seconds.append(time.perf_counter() - started)
    return seconds


def _row(stage: str, seconds: list[float]) -> dict[str, object]:
    values = np.asarray(seconds) * 1000
    return {"stage": stage, "p50 ms": float(np.percentile(values, 50)), "p95 ms": float(np.percentile(values, 95)),
            "n": len(values)}  # fmt: skip


if __name__ == "__main__":
    main()
