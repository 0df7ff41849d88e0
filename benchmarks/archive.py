"""What the photo archive costs a query, through the Engine (`lookalike archive`, the "archive" re-ranker).

grocery-store: an index of the 81 iconic studio images (pretrained EfficientNet-Lite0), the 2,640 train
photos kept as its photo archive; then `--queries` test photos searched with the re-ranker and without
(`rerank=False`), interleaved query by query so that both see the same machine. Wall time per query
(decode, embed, search, re-rank) and the re-rank stage alone, p50 and p95; the time to embed the archive and
the first query's matrix build are recorded too. Figures: Recall@1 over the same queries, for a look only
(the accuracy benchmark is benchmarks/adapt.py --only archive). Writes benchmarks/results/archive.json, .md.

Usage: nice python benchmarks/archive.py [--queries 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, require, save, table


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from lookalike import Engine, Settings
    from lookalike.evaluate.datasets import grocery_store_entries

    root = require("grocery-store")
    splits = {name: grocery_store_entries(root, name) for name in ("iconic", "train", "test")}
    rng = np.random.default_rng(0)
    queries = [splits["test"][i] for i in sorted(rng.choice(len(splits["test"]), args.queries, replace=False))]
    folder = Path(tempfile.mkdtemp(prefix="lookalike-archive-bench-"))
    try:
        settings = Settings().replace(**{"embed.threads": args.threads, "localize.threads": args.threads})
        with Engine.create(folder / "studio.index", settings) as engine:
            engine.add([entry.path for entry in splits["iconic"]])
            started = time.perf_counter()
            engine.archive_photos([entry.path for entry in splits["train"]])
            archive_seconds = time.perf_counter() - started
            started = time.perf_counter()
            engine.search(queries[0].path, k=10)  # builds the joint matrix
            first_query = time.perf_counter() - started
            product = {str(Path(e.path).resolve()): e.item for e in splits["iconic"]}
            walls: dict[str, list[float]] = {"without": [], "with": []}
            rerank_ms, right = [], {"without": 0, "with": 0}
            for entry in queries:
                for mode in ("without", "with"):
                    started = time.perf_counter()
                    result = engine.search(entry.path, k=10, rerank=mode == "with")
                    walls[mode].append(1000 * (time.perf_counter() - started))
                    right[mode] += product.get(str(Path(result.hits[0].path).resolve())) == entry.item
                    if mode == "with":
                        rerank_ms.append(1000 * result.timings.get("rerank", 0.0))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = [
        {"search": f"{mode} the archive re-ranker", **{f"wall_ms_{k}": v for k, v in percentiles(walls[mode]).items()},
         "recall_at_1": right[mode] / len(queries)}
        for mode in ("without", "with")
    ]  # fmt: skip
    rows[1].update({f"rerank_ms_{k}": v for k, v in percentiles(rerank_ms).items()})
    payload = {
        "queries": len(queries), "archive_photos": len(splits["train"]), "catalogue_images": len(splits["iconic"]),
        "threads": args.threads, "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "archive_embedding_seconds": archive_seconds, "first_query_seconds_with_matrix_build": first_query,
        "rows": rows,
    }  # fmt: skip
    path = save("archive", payload)
    columns = ["search", "wall_ms_p50", "wall_ms_p95", "rerank_ms_p50", "rerank_ms_p95", "recall_at_1"]
    text = table(rows, columns)
    facts = (f"{len(queries)} grocery test photos against 81 studio images with {len(splits['train'])} archive "
             f"photos (pretrained Lite0, {args.threads} thread(s)); archive embedded in {archive_seconds:.0f} s, "
             f"first query (matrix build) {first_query:.2f} s; load average {payload['load_average']}")  # fmt: skip
    (RESULTS / "archive.md").write_text(f"# The archive re-ranker's cost per query\n\n{facts}\n\n{text}\n")
    print(f"{facts}\n\n{text}\n\nsaved {path}")


if __name__ == "__main__":
    main()
