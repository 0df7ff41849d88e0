"""What the photo archive or the catalogue views cost a query, through the Engine (`lookalike archive`, the
"archive" re-ranker; `lookalike views`, the "views" re-ranker).

grocery-store: an index of the 81 iconic studio images (pretrained EfficientNet-Lite0), with the 2,640 train
photos kept as its photo archive (`--reranker archive`) or 24 phone-photo views of each image (`--reranker
views`); then `--queries` test photos searched with the re-ranker and without (`rerank=False`), interleaved
query by query so that both see the same machine. Wall time per query (decode, embed, search, re-rank) and the
re-rank stage alone, p50 and p95; the time to make the archive or views and the first query (the archive's
matrix build) are recorded too. Figures: Recall@1 over the same queries, for a look only (the accuracy
benchmark is benchmarks/adapt.py --only archive views). Writes benchmarks/results/<reranker>.json, .md.

Usage: nice python benchmarks/archive.py [--reranker archive] [--queries 300] [--threads 1]
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
    parser.add_argument("--reranker", choices=("archive", "views"), default="archive")
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
            if args.reranker == "archive":
                engine.archive_photos([entry.path for entry in splits["train"]])
            else:
                engine.make_views()
            making_seconds = time.perf_counter() - started
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
        {"search": f"{mode} the {args.reranker} re-ranker",
         **{f"wall_ms_{k}": v for k, v in percentiles(walls[mode]).items()}, "recall_at_1": right[mode] / len(queries)}
        for mode in ("without", "with")
    ]  # fmt: skip
    rows[1].update({f"rerank_ms_{k}": v for k, v in percentiles(rerank_ms).items()})
    made = {"archive": f"{len(splits['train'])} archive photos",
            "views": f"{settings.rerank.views.count} views of each"}[args.reranker]  # fmt: skip
    payload = {
        "reranker": args.reranker, "queries": len(queries), "catalogue_images": len(splits["iconic"]), "made": made,
        "threads": args.threads, "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"{args.reranker}_making_seconds": making_seconds, "first_query_seconds": first_query, "rows": rows,
    }  # fmt: skip
    if args.reranker == "archive":  # the names of the first results
        payload.update(archive_photos=len(splits["train"]), archive_embedding_seconds=making_seconds,
                       first_query_seconds_with_matrix_build=first_query)  # fmt: skip
    path = save(args.reranker, payload)
    columns = ["search", "wall_ms_p50", "wall_ms_p95", "rerank_ms_p50", "rerank_ms_p95", "recall_at_1"]
    text = table(rows, columns)
    facts = (f"{len(queries)} grocery test photos against 81 studio images with {made} (pretrained Lite0, "
             f"{args.threads} thread(s)); made in {making_seconds:.0f} s, first query {first_query:.2f} s; load "
             f"average {payload['load_average']}")  # fmt: skip
    (RESULTS / f"{args.reranker}.md").write_text(
        f"# The {args.reranker} re-ranker's cost per query\n\n{facts}\n\n{text}\n"
    )
    print(f"{facts}\n\n{text}\n\nsaved {path}")


if __name__ == "__main__":
    main()
