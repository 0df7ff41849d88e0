"""Grocery-store photo->photo metrics over all 2,485 queries from cached backbone features.

Exact inner product over L2-normalised vectors, the ranking the engine's flat index gives; the
features come from `lookalike.evaluate.features.embed_entries` (the engine's own embedder and
preprocessing), cached in benchmarks/cache. Writes benchmarks/results/retrieval_features.json.
Usage: python benchmarks/retrieval_features.py
"""

from __future__ import annotations

import numpy as np

from _common import ROOT, progress_printer, require, save, table


def main() -> None:
    root = require("grocery-store")
    from lookalike.evaluate.datasets import grocery_store
    from lookalike.evaluate.features import embed_entries
    from lookalike.evaluate.metrics import retrieval_report

    dataset = grocery_store(root, protocol="photo2photo", label="fine")
    cache = ROOT / "benchmarks" / "cache"
    gallery = embed_entries(
        list(dataset.gallery), cache_dir=cache, progress=lambda d, t: progress_printer()("gallery", d, t)
    )
    queries = embed_entries(
        list(dataset.queries), cache_dir=cache, progress=lambda d, t: progress_printer()("queries", d, t)
    )
    gallery_labels = np.array(dataset.gallery_labels())
    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    relevances = [gallery_labels[row] == label for row, label in zip(order, dataset.query_labels(), strict=True)]
    report = retrieval_report(relevances, dataset.n_relevant(), ks=(1, 5, 10, 20))
    row = {
        "queries": report.n_queries,
        "mAP": report.map,
        "R@1": report.recall_at_k[1],
        "R@5": report.recall_at_k[5],
        "R@10": report.recall_at_k[10],
        "R@20": report.recall_at_k[20],
    }
    print("grocery-store photo->photo, all queries, EfficientNet-Lite0 + GeM(3), 224 px, exact search")
    print(table([row], list(row)))
    path = save(
        "retrieval_features", {"protocol": "grocery-store photo2photo, fine labels", "report": report.as_dict()}
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
