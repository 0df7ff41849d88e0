"""Grocery-store photo->photo retrieval with the default pipeline (the Foundation protocol).

Queries = the test split (2,485 photos), gallery = the train split (2,640 photos), relevant = the
same fine class (product). Prints mAP, Recall@1/5/20, indexing throughput, query latency per stage,
and writes benchmarks/results/retrieval.json.
Usage: python benchmarks/retrieval.py [--limit N]   (N queries, evenly spaced, for a quick look)
"""

from __future__ import annotations

import argparse
import tempfile

from _common import progress_printer, require, save, table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="evaluate only N evenly spaced queries")
    args = parser.parse_args()
    root = require("grocery-store")

    from dataclasses import replace

    from lookalike.evaluate.datasets import grocery_store
    from lookalike.evaluate.harness import Config, evaluate

    dataset = grocery_store(root, protocol="photo2photo", label="fine")
    if args.limit:
        step = max(1, len(dataset.queries) // args.limit)
        dataset = replace(dataset, queries=dataset.queries[::step][: args.limit])
    with tempfile.TemporaryDirectory() as work:
        [result] = evaluate(dataset, [Config("default")], work, latency_queries=100, progress=progress_printer())
    retrieval = result.retrieval
    row = {
        "config": result.name,
        "queries": retrieval["n_queries"],
        "mAP": retrieval["map"],
        "R@1": retrieval["recall_at_k"][1],
        "R@5": retrieval["recall_at_k"][5],
        "R@20": retrieval["recall_at_k"][20],
        "index img/s": result.indexing["images_per_second"],
    }
    print("\ngrocery-store photo->photo (queries = test, gallery = train, relevant = same product)")
    print(table([row], list(row)))
    latency_rows = [{"stage": stage, **summary} for stage, summary in result.latency_ms.items()]
    print("\nquery latency per stage (ms), 100 queries at k=10")
    print(table(latency_rows, ["stage", "p50_ms", "p95_ms", "mean_ms", "n"]))
    path = save("retrieval", {"protocol": "grocery-store photo2photo, fine labels", "results": [result.summary()]})
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
