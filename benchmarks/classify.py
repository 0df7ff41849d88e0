"""Category prediction on frozen backbone features, and gated search.

grocery-store classification: train on the train split, model selection (early stopping of the
paper's head; C of logistic regression) on the val split, accuracy on the test split, for coarse
(43) and fine (81) labels. Published fine-tuned CNNs: about 92% coarse and 86% fine.
eth80-dev: 8 categories, trained on instances 1-3, tested on the unseen instances 4-5.
grocery-store photo->photo retrieval with gating off / on: queries = test, gallery = train,
relevant = same fine class; the gate is the coarse classifier's prediction, the gallery's
partitions its coarse classes (what the engine does with one flat partition per category),
computed with numpy from cached features; `--engine N` re-runs N queries through a real Engine.

Features come from `benchmarks/cache` (efficientnet-lite0, 224 px, GeM p=3 unless told).
Variants (`--variants flip,crop,size320,lite2`) embed extra feature sets once (cached) and
report what they reach.
Prints tables and writes benchmarks/results/classify.json.
Usage: python benchmarks/classify.py [--variants flip,crop] [--engine 200] [--only grocery|eth80|gating]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from _common import ROOT, progress_printer, require, save, table
from lookalike.settings import EmbedSettings

CACHE = ROOT / "benchmarks" / "cache"
LITE2 = EmbedSettings(model="efficientnet-lite2", input_size=260)  # lite2's native input size
KS = (1, 5, 20)
PUBLISHED = {"coarse": 0.92, "fine": 0.86}  # fine-tuned CNNs on grocery-store (data README)
TARGETS = {"coarse": 0.93, "fine": 0.87}  # the project's targets
LOGREG_C = (0.01, 0.03, 0.1, 0.3, 1.0)
GATES = [  # (name, threshold, min_margin, fallback, fallback_k)
    ("top-1 always", 0.0, 0.0, "top_k", 3),
    ("p>=0.5, margin>=0.1, else top-3", 0.5, 0.1, "top_k", 3),
    ("p>=0.8, margin>=0.2, else top-3", 0.8, 0.2, "top_k", 3),
    ("p>=0.9, margin>=0.3, else top-5", 0.9, 0.3, "top_k", 5),
    ("p>=0.5, margin>=0.1, else all", 0.5, 0.1, "all", 3),
]
CLASS_COLUMNS = ["features", "labels", "classifier", "val acc", "test acc", "mean class acc", "class acc var", "s"]


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def embed(entries: Sequence[Any], embed_settings: Any, what: str) -> np.ndarray:
    from lookalike.evaluate.features import embed_entries

    report = progress_printer()
    return embed_entries(entries, embed_settings, cache_dir=CACHE, progress=lambda d, t: report(what, d, t))


def embed_transformed(entries: Sequence[Any], embed_settings: Any, transform: str, what: str) -> np.ndarray:
    """Vectors of transformed images ("flip": mirrored; "crop": the central 80%), cached here."""
    from PIL import ImageOps

    from lookalike.embed import create_embedder
    from lookalike.io.images import load_image

    embedder = create_embedder(embed_settings)
    digest = hashlib.sha256(f"{embedder.fingerprint()}|{transform}".encode())
    for entry in entries:
        digest.update(str(entry.path).encode())
    cache = CACHE / f"{transform}-{digest.hexdigest()[:20]}.npy"
    if cache.exists():
        return np.load(cache)

    def change(image: Any) -> Any:
        if transform == "flip":
            return ImageOps.mirror(image)
        width, height = image.size
        dx, dy = round(width * 0.1), round(height * 0.1)
        return image.crop((dx, dy, width - dx, height - dy))

    report = progress_printer()
    vectors = np.zeros((len(entries), embedder.dim), dtype=np.float32)
    for start in range(0, len(entries), 16):
        chunk = entries[start : start + 16]
        vectors[start : start + len(chunk)] = embedder.embed([change(load_image(e.path)) for e in chunk])
        report(what, start + len(chunk), len(entries))
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def normalise(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class GroceryFeatures:
    """Train / val / test vectors of one feature variant, with fine and coarse labels."""

    def __init__(self, root: Any, variant: str) -> None:
        from lookalike.evaluate.datasets import grocery_store_entries

        self.variant = variant
        self.splits = {split: grocery_store_entries(root, split) for split in ("train", "val", "test")}
        base = EmbedSettings()
        if variant == "size320":
            base = replace(base, input_size=320)
        if variant == "lite2":
            base = LITE2
        self.settings = base
        self.vectors = {split: self._vectors(split, entries) for split, entries in self.splits.items()}

    def _vectors(self, split: str, entries: list[Any]) -> np.ndarray:
        if self.variant == "lite0+lite2":  # both backbones' vectors, concatenated
            lite0 = embed(entries, EmbedSettings(), f"grocery {split} (base)")
            lite2 = embed(entries, LITE2, f"grocery {split} (lite2)")
            return normalise(np.hstack([lite0, lite2]))
        plain = embed(entries, self.settings, f"grocery {split} ({self.variant})")
        if self.variant == "flip":  # test-time and train-time flip: mean of the image and its mirror
            return normalise(plain + embed_transformed(entries, self.settings, "flip", f"grocery {split} flipped"))
        if self.variant == "crop":  # whole image and centre crop, concatenated
            crop = embed_transformed(entries, self.settings, "crop", f"grocery {split} centre crop")
            return normalise(np.hstack([plain, crop]))
        return plain

    def labels(self, split: str, level: str) -> np.ndarray:
        key = "item" if level == "fine" else "category"
        return np.asarray([getattr(entry, key) for entry in self.splits[split]])


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def fit_mlp(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], **changes: Any) -> Any:
    from lookalike.classify import create_classifier
    from lookalike.settings import ClassifySettings

    return create_classifier("mlp", replace(ClassifySettings(), **changes)).fit(*train, validation=val)


def fit_logreg(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]) -> tuple[Any, float]:
    """Logistic regression with C chosen on the validation split."""
    from lookalike.classify import create_classifier
    from lookalike.settings import ClassifySettings

    best: tuple[float, Any, float] | None = None
    for c in LOGREG_C:
        model = create_classifier("logreg", ClassifySettings(logreg_c=c)).fit(*train)
        score = float(np.mean(model.predict(val[0]) == val[1]))
        if best is None or score > best[0]:
            best = (score, model, c)
    assert best is not None
    return best[1], best[2]


def classification_row(features: GroceryFeatures, level: str, kind: str) -> tuple[dict[str, Any], Any]:
    from lookalike.evaluate.metrics import classification_report

    data = {split: (features.vectors[split], features.labels(split, level)) for split in ("train", "val", "test")}
    started = time.perf_counter()
    note = ""
    if kind == "mlp":
        model = fit_mlp(data["train"], data["val"])
        note = f"mlp (best epoch {model.best_epoch_})"
    else:
        model, c = fit_logreg(data["train"], data["val"])
        note = f"logreg (C={c})"
    seconds = time.perf_counter() - started
    test = classification_report(data["test"][1], model.predict(data["test"][0]), labels=model.classes_)
    row = {
        "features": features.variant,
        "labels": level,
        "classifier": note,
        "val acc": float(np.mean(model.predict(data["val"][0]) == data["val"][1])),
        "test acc": test.accuracy,
        "mean class acc": test.mean_class_accuracy,
        "class acc var": test.class_accuracy_variance,
        "s": seconds,
    }
    return row, model


def grocery_classification(root: Any, variants: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for variant in ["base", *variants]:
        features = GroceryFeatures(root, variant)
        for level in ("coarse", "fine"):
            for kind in ("mlp", "logreg"):
                row, model = classification_row(features, level, kind)
                rows.append(row)
                print(table([row], CLASS_COLUMNS), flush=True)
                if variant == "base":
                    models[f"{level}/{kind}"] = model
    return rows, models


def eth80_classification() -> list[dict[str, Any]]:
    from lookalike.classify import create_classifier
    from lookalike.evaluate.datasets import eth80_classification_split
    from lookalike.evaluate.metrics import classification_report
    from lookalike.settings import EmbedSettings

    train, test = eth80_classification_split(require("eth80-dev"))
    x_train, x_test = embed(train, EmbedSettings(), "eth80 train"), embed(test, EmbedSettings(), "eth80 test")
    y_train = np.asarray([e.category for e in train])
    y_test = np.asarray([e.category for e in test])
    rows = []
    for kind in ("mlp", "logreg"):
        started = time.perf_counter()
        model = create_classifier(kind).fit(x_train, y_train)  # mlp: 20% of the training views held out
        report = classification_report(y_test, model.predict(x_test), labels=model.classes_)
        rows.append(
            {
                "features": "base",
                "labels": "eth80 category (unseen objects)",
                "classifier": kind,
                "test acc": report.accuracy,
                "mean class acc": report.mean_class_accuracy,
                "class acc var": report.class_accuracy_variance,
                "s": time.perf_counter() - started,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Gated retrieval
# ---------------------------------------------------------------------------------------------


def gated_retrieval(features: GroceryFeatures, coarse_model: Any) -> list[dict[str, Any]]:
    """photo->photo mAP and Recall@k with gating off and on (several gates), and the gallery scanned."""
    from lookalike.classify import plan_search
    from lookalike.settings import ClassifySettings

    queries, gallery = features.vectors["test"], features.vectors["train"]
    q_fine, g_fine = features.labels("test", "fine"), features.labels("train", "fine")
    g_coarse = features.labels("train", "coarse")
    q_coarse = features.labels("test", "coarse")
    partitions = sorted(set(g_coarse.tolist()))
    scores = queries @ gallery.T
    rows = [retrieval_row("gating off", scores, q_fine, g_fine, None, g_coarse, q_coarse)]
    for name, threshold, margin, fallback, k in GATES:
        settings = ClassifySettings(threshold=threshold, min_margin=margin, fallback=fallback, fallback_k=k)  # type: ignore[arg-type]
        searched = [plan_search(coarse_model, vector, settings, partitions=partitions).categories for vector in queries]
        rows.append(retrieval_row(name, scores, q_fine, g_fine, searched, g_coarse, q_coarse))
    return rows


def retrieval_row(
    name: str,
    scores: np.ndarray,
    q_fine: np.ndarray,
    g_fine: np.ndarray,
    searched: list[list[str] | None] | None,
    g_coarse: np.ndarray,
    q_coarse: np.ndarray,
) -> dict[str, Any]:
    from lookalike.evaluate.metrics import count_relevant, retrieval_report

    relevances, scanned, covered = [], [], []
    for row in range(len(scores)):
        allowed = (
            np.ones(len(g_fine), bool)
            if searched is None or searched[row] is None
            else np.isin(g_coarse, searched[row])
        )
        candidates = np.flatnonzero(allowed)
        order = candidates[np.argsort(-scores[row, candidates], kind="stable")]
        relevances.append(g_fine[order] == q_fine[row])
        scanned.append(allowed.mean())
        covered.append(bool(allowed[g_coarse == q_coarse[row]].all()))
    report = retrieval_report(relevances, count_relevant(q_fine, g_fine), ks=KS)
    return {
        "gate": name,
        "mAP": report.map,
        **{f"R@{k}": report.recall_at_k[k] for k in KS},
        "gallery scanned": float(np.mean(scanned)),
        "true category searched": float(np.mean(covered)),
    }


def engine_equivalence(features: GroceryFeatures, n_queries: int, work: Any) -> dict[str, Any]:
    """The same gated searches through a real Engine (flat partitions) as with numpy: identical hits?

    The gallery's cached vectors go straight into the index (no re-embedding); the engine trains
    its own coarse classifier on them, and numpy gating uses that same classifier.
    """
    from lookalike.index import NewItem
    from lookalike.pipeline import Engine
    from lookalike.settings import Settings

    gallery, g_coarse = features.vectors["train"], features.labels("train", "coarse")
    engine = Engine.create(work / "grocery.index", Settings(), overwrite=True)
    items = [
        NewItem(str(entry.path), str(category), f"cached-{row}", vector)
        for row, (entry, category, vector) in enumerate(zip(features.splits["train"], g_coarse, gallery, strict=True))
    ]
    ids = engine._commit(items, {})  # cached vectors, as `add` would store them after embedding
    engine.train_classifier("logreg")  # the gate, not the classifier, is checked here: the fast kind
    classifier = engine._category_classifier().model()
    step = max(1, len(features.vectors["test"]) // n_queries)
    same, started = 0, time.perf_counter()
    for vector in features.vectors["test"][::step][:n_queries]:
        result = engine.search_vector(vector, 20)
        expected = numpy_gated_top(classifier, vector, engine.settings.classify, gallery, g_coarse, np.asarray(ids))
        same += [hit.id for hit in result] == expected
    engine.close()
    return {"queries": n_queries, "identical top-20": same, "seconds": time.perf_counter() - started}


def numpy_gated_top(
    classifier: Any, vector: np.ndarray, settings: Any, gallery: np.ndarray, g_coarse: np.ndarray, ids: np.ndarray
) -> list[int]:
    from lookalike.classify import plan_search

    categories = plan_search(classifier, vector, settings, partitions=sorted(set(g_coarse.tolist()))).categories
    allowed = np.ones(len(gallery), bool) if categories is None else np.isin(g_coarse, categories)
    rows = np.flatnonzero(allowed)
    order = rows[np.argsort(-(gallery[rows] @ vector), kind="stable")][:20]
    return ids[order].tolist()


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="", help="comma-separated: flip, crop, size320, lite2, lite0+lite2")
    parser.add_argument("--engine", type=int, default=200, help="queries re-run through a real Engine (0 = none)")
    parser.add_argument("--only", choices=["grocery", "eth80", "gating"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a busy 2-core machine)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # this script's own process; with 2 busy cores, 2 threads ran 7x slower
    root = require("grocery-store")
    variants = [v for v in args.variants.split(",") if v]
    payload: dict[str, Any] = {
        "features": "efficientnet-lite0, 224 px, GeM p=3 (base)",
        "variants": variants,
        "torch_threads": args.threads,
    }

    if args.only in (None, "grocery", "gating"):
        run_grocery(root, variants if args.only != "gating" else [], payload, args)
    if args.only in (None, "eth80"):
        rows = eth80_classification()
        print("\neth80-dev category prediction (train: instances 1-3, test: unseen instances 4-5)")
        print(table(rows, ["classifier", "test acc", "mean class acc", "class acc var", "s"]))
        payload["eth80"] = rows
    path = save("classify", payload)
    print(f"\nsaved {path}")


def run_grocery(root: Any, variants: list[str], payload: dict[str, Any], args: Any) -> None:
    rows, models = grocery_classification(root, variants)
    print("\ngrocery-store classification (train; model selection on val; accuracy on test)")
    print(table(rows, CLASS_COLUMNS))
    print_gap(rows)
    payload["grocery_classification"] = rows
    features = GroceryFeatures(root, "base")
    gating = gated_retrieval(features, models["coarse/mlp"])
    print("\ngrocery-store photo->photo retrieval (fine labels), gate = predicted coarse class (paper's head)")
    print(table(gating, ["gate", "mAP", "R@1", "R@5", "R@20", "gallery scanned", "true category searched"]))
    payload["gated_retrieval"] = gating
    if args.engine:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as work:
            check = engine_equivalence(features, args.engine, Path(work))
        print(f"\nengine check: {check['identical top-20']}/{check['queries']} queries with identical top-20 hits")
        payload["engine_equivalence"] = check


def print_gap(rows: list[dict[str, Any]]) -> None:
    for level in ("coarse", "fine"):
        best = max((r for r in rows if r["labels"] == level), key=lambda r: r["test acc"])
        print(
            f"{level}: best {best['test acc']:.3f} ({best['features']}, {best['classifier']}); "
            f"published fine-tuned CNNs ~{PUBLISHED[level]:.2f} ({best['test acc'] - PUBLISHED[level]:+.3f}); "
            f"target {TARGETS[level]:.2f} ({best['test acc'] - TARGETS[level]:+.3f})"
        )


if __name__ == "__main__":
    main()
