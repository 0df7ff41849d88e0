"""Learned whitening and trained heads on frozen backbone vectors, before and after.

grocery-store photo->photo: queries = the test split, gallery = the train split, relevant = the
same fine class (product).
  - closed set: every transform is fitted on the train split (the gallery: the catalogue's own
    images and product ids); trained heads stop early on the val split (other photos of the same
    products). This is the use case of `lookalike train-embedding` on a labelled catalogue.
  - held-out products (the honest figure): products are split, seeded, into training products
    (60%) and evaluation products (40%); transforms learn from the train-split images of the
    training products only (heads hold out a further 20% of those products for early stopping),
    and retrieval is restricted to the evaluation products' test queries and train gallery.
eth80-dev: transforms learn from instances 1-3 (product = object instance; heads hold out 20% of
those objects for early stopping); cross-view instance retrieval on instances 4-5.

Backbone vectors come from `benchmarks/cache` (efficientnet-lite0, 224 px, GeM p=3 by default),
shared with benchmarks/classify.py, whose feature variants `--variant` reuses: "flip" (mean of the
image's and its mirror's vectors), "crop" (whole image and central 80% concatenated), "lite2"
(efficientnet-lite2 at 260 px), "size320" (lite0 at 320 px); eth80 runs for plain and lite2.
Prints tables and writes benchmarks/results/head.json (head-<variant>.json for a variant).
Usage: python benchmarks/head.py [--variant flip|crop|lite2|size320] [--only grocery|eth80] [--set key=value]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import numpy as np

from _common import ROOT, progress_printer, require, save, table

CACHE = ROOT / "benchmarks" / "cache"
KS = (1, 5, 20)
COLUMNS = ["transform", "dim", "mAP", "R@1", "R@5", "R@20", "best epoch", "fit s"]


def embed(entries: list[Any], embed_settings: Any, what: str) -> np.ndarray:
    from lookalike.evaluate.features import embed_entries

    report = progress_printer()
    return embed_entries(entries, embed_settings, cache_dir=CACHE, progress=lambda d, t: report(what, d, t))


def rank_report(queries: np.ndarray, q_labels: np.ndarray, gallery: np.ndarray, g_labels: np.ndarray) -> dict:
    """mAP and Recall@k of queries against the gallery (inner product of unit vectors)."""
    from lookalike.evaluate.metrics import retrieval_report

    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    relevances = list(g_labels[order] == q_labels[:, None])
    report = retrieval_report(relevances, ks=KS)
    return {"mAP": report.map, **{f"R@{k}": report.recall_at_k[k] for k in KS}}


def transforms(base: Any) -> list[tuple[str, Any]]:
    """(name, HeadSettings) of every transform compared; base carries the training defaults."""
    return [
        ("pca whitening", replace(base, kind="pca", dim=512)),
        ("pca whitening", replace(base, kind="pca", dim=256)),
        ("supervised whitening (Lw)", replace(base, kind="supervised", dim=512)),
        ("supervised whitening (Lw)", replace(base, kind="supervised", dim=256)),
        ("supervised whitening (Lw)", replace(base, kind="supervised", dim=128)),
        ("linear head, Lw start", replace(base, kind="linear", dim=256)),
        ("linear head, random start", replace(base, kind="linear", dim=256, init="random")),
        ("mlp head, Lw start", replace(base, kind="mlp", dim=256)),
    ]


def evaluate(
    name: str,
    settings: Any,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    evaluation: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Fit one transform and measure retrieval with it."""
    from lookalike.embed.train import fit_transform
    from lookalike.embed.transform import create_transform

    started = time.perf_counter()
    if validation is None:  # the transform holds products out itself (settings.validation_fraction)
        transform, _ = fit_transform(train[0], list(train[1]), settings)
    elif settings.kind in ("linear", "mlp"):
        transform = create_transform(settings.kind, settings).fit(*train, validation=validation)
    else:
        transform = create_transform(settings.kind, settings).fit(*train)
    seconds = time.perf_counter() - started
    queries, q_labels, gallery, g_labels = evaluation
    metrics = rank_report(transform.transform(queries), q_labels, transform.transform(gallery), g_labels)
    row = {"transform": name, "dim": transform.dim_, **metrics, "fit s": seconds}
    row["best epoch"] = getattr(transform, "best_epoch_", None)
    print(_line(row), flush=True)
    return {**row, "settings": settings.__dict__, "val_map": getattr(transform, "history_", {}).get("val_map")}


def run_all(
    base: Any,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    evaluation: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    title: str,
) -> list[dict[str, Any]]:
    print(f"\n{title}", flush=True)
    queries, q_labels, gallery, g_labels = evaluation
    raw = {"transform": "none (backbone)", "dim": queries.shape[1], **rank_report(queries, q_labels, gallery, g_labels)}
    print(_line(raw), flush=True)
    rows = [raw, *(evaluate(name, s, train, validation, evaluation) for name, s in transforms(base))]
    print(table(rows, COLUMNS), flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    """One row as it is measured (the aligned table follows each section)."""
    return "  ".join(f"{c} {row[c]:.3f}" if isinstance(row.get(c), float) else f"{c} {row.get(c)}" for c in COLUMNS)


def grocery(root: Any, variant: str, base: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from classify import GroceryFeatures  # the feature variants of benchmarks/classify.py, same cache

    features = GroceryFeatures(root, variant)
    vectors = features.vectors
    labels = {split: features.labels(split, "fine") for split in ("train", "val", "test")}
    evaluation = (vectors["test"], labels["test"], vectors["train"], labels["train"])
    closed = run_all(
        base,
        (vectors["train"], labels["train"]),
        (vectors["val"], labels["val"]),
        evaluation,
        "grocery-store photo->photo, closed set (fitted on the train split = the gallery, 81 products)",
    )
    held = grocery_held_out(vectors, labels, base)
    return closed, held


def grocery_held_out(vectors: dict, labels: dict, base: Any, fraction: float = 0.4) -> list[dict[str, Any]]:
    products = np.unique(labels["train"])
    evaluated = set(np.random.default_rng(base.seed).permutation(products)[: round(fraction * len(products))])
    train_rows = ~np.isin(labels["train"], list(evaluated))
    query_rows = np.isin(labels["test"], list(evaluated))
    evaluation = (vectors["test"][query_rows], labels["test"][query_rows], vectors["train"][~train_rows],
                  labels["train"][~train_rows])  # fmt: skip
    title = (
        f"grocery-store photo->photo, held-out products: fitted on {len(products) - len(evaluated)} products, "
        f"evaluated on the other {len(evaluated)} ({query_rows.sum()} queries, {(~train_rows).sum()} gallery)"
    )
    return run_all(base, (vectors["train"][train_rows], labels["train"][train_rows]), None, evaluation, title)


def eth80_dev(root: Any, embed_settings: Any, base: Any) -> list[dict[str, Any]]:
    from lookalike.evaluate.datasets import eth80, eth80_classification_split

    train_entries, test_entries = eth80_classification_split(root)
    train = embed(train_entries, embed_settings, "eth80 instances 1-3")
    test = embed(test_entries, embed_settings, "eth80 instances 4-5")
    row_of = {str(e.path): i for i, e in enumerate(test_entries)}
    dataset = eth80(root, instances=[4, 5])
    q_rows = [row_of[str(e.path)] for e in dataset.queries]
    g_rows = [row_of[str(e.path)] for e in dataset.gallery]
    evaluation = (test[q_rows], np.array(dataset.query_labels()), test[g_rows], np.array(dataset.gallery_labels()))
    title = "eth80-dev cross-view instance retrieval on instances 4-5 (fitted on instances 1-3, 24 objects)"
    return run_all(base, (train, np.array([e.item for e in train_entries])), None, evaluation, title)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["plain", "flip", "crop", "lite2", "size320"], default="plain")
    parser.add_argument("--only", choices=["grocery", "eth80"], default=None)
    parser.add_argument("--set", action="append", default=[], help="head setting, e.g. --set sos_weight=0.5")
    args = parser.parse_args()

    import json

    from lookalike.settings import EmbedSettings, HeadSettings

    base = replace(HeadSettings(), **{k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)})
    results: dict[str, Any] = {"variant": args.variant, "head_defaults": base.__dict__}
    if args.only in (None, "grocery"):
        results["grocery_closed_set"], results["grocery_held_out_products"] = grocery(
            require("grocery-store"), args.variant, base
        )
    if args.only in (None, "eth80") and args.variant in ("plain", "lite2"):
        lite2 = EmbedSettings(model="efficientnet-lite2", input_size=260)
        results["eth80"] = eth80_dev(require("eth80-dev"), lite2 if args.variant == "lite2" else EmbedSettings(), base)
    name = "head" if args.variant == "plain" else f"head-{args.variant}"
    print(f"\nsaved {save(name, results)}")


if __name__ == "__main__":
    main()
