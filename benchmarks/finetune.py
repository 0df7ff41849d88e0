"""The backbone's last stages fine-tuned on the catalogue (`head.kind = "finetune"`), through the engine.

grocery-store: an index of the train split (the gallery, product = fine class), fine-tuned by
`Engine.train_embedding` (20% of the products held out for the validation curve, the epoch count
and the before/after figures on unseen products; then trained again on every product). Then:
  - photo->photo retrieval: every test image (2,485) queries the re-embedded gallery (exact search);
  - classification on the fine-tuned vectors: logistic regression (C chosen on the val split) and
    the paper's MLP head, trained on the train split, test accuracy on fine (81) and coarse (43)
    labels, the figures of benchmarks/classify.py for the untuned backbone.
eth80-dev: an index of instances 1-3 (product = object instance) fine-tuned the same way; cross-view
instance retrieval on instances 4-5 (queries: the 66-degree ring, gallery: the other views of
instances 4-5, embedded with the tuned backbone: objects it never saw); and category accuracy on
instances 4-5 from a classifier trained on instances 1-3.

Writes benchmarks/results/finetune[-<model>].json and prints tables.
Usage: python benchmarks/finetune.py [--model efficientnet-lite2] [--only grocery|eth80] [--set head.key=value]
                                     [--name finetune-lite2-260]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import ROOT, progress_printer, require, save, table

KS = (1, 5, 10, 20)
LOGREG_C = (0.1, 1.0, 10.0)
CACHE = ROOT / "benchmarks" / "cache"
# `train-classifier --kind knn --augment N`: copies per image measured (coarse, on the index; val chooses N)
AUGMENTED_KNN = (0, 1, 2, 3)


def build(path: Path, entries: list[Any], settings: Any) -> Any:
    from lookalike import Engine

    engine = Engine.create(path, settings, overwrite=True)
    report = progress_printer()
    added = engine.add(entries, progress=lambda d, t: report("indexing", d, t))
    print(f"indexed {added.embedded} images in {added.seconds:.0f} s", flush=True)
    return engine


def fine_tune(engine: Any) -> dict[str, Any]:
    def show(epoch: int, epochs: int, values: dict[str, Any]) -> None:
        print(f"  epoch {epoch}/{epochs}: loss {values['loss']:.4f}, validation mAP {values['val_map']}", flush=True)

    started = time.perf_counter()
    report = engine.train_embedding(progress=show, force=True)  # measured, whatever it gives
    print(f"fine-tuned in {time.perf_counter() - started:.0f} s: best epoch {report.best_epoch}", flush=True)
    print(table([{"": "before", **report.before}, {"": "after", **report.after}], ["", *report.before]), flush=True)
    return report.to_dict()


def stored(engine: Any, entries: list[Any]) -> np.ndarray:
    """The gallery's stored vectors, in the order of `entries`."""
    by_path = {item.path: item.id for item in engine.store.items()}
    ids = [by_path[str(e.path.resolve())] for e in entries]
    vectors = engine.store.vectors_of(ids, engine.info()["dim"])
    return np.stack([vectors[i] for i in ids])


def embed(engine: Any, entries: list[Any], what: str) -> np.ndarray:
    report = progress_printer()
    chunks = []
    for start in range(0, len(entries), 32):
        chunks.append(engine.embed([e.path for e in entries[start : start + 32]]))
        report(what, min(start + 32, len(entries)), len(entries))
    return np.concatenate(chunks)


def retrieval(queries: np.ndarray, q_labels: np.ndarray, gallery: np.ndarray, g_labels: np.ndarray) -> dict:
    from lookalike.evaluate.metrics import count_relevant, retrieval_report

    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    relevances = list(g_labels[order] == q_labels[:, None])
    report = retrieval_report(relevances, count_relevant(q_labels, g_labels), ks=KS)
    return {"mAP": report.map, **{f"R@{k}": report.recall_at_k[k] for k in KS}}


def classify(train: tuple, val: tuple | None, test: tuple, level: str) -> list[dict[str, Any]]:
    """Test accuracy of the paper's MLP head, logistic regression and the nearest photos' labels (knn)."""
    from lookalike.classify import create_classifier
    from lookalike.evaluate.metrics import classification_report
    from lookalike.settings import ClassifySettings

    rows = []
    candidates: list[tuple[str, Any]] = [("mlp", create_classifier("mlp").fit(*train, validation=val))]
    fitted = [(c, create_classifier("logreg", ClassifySettings(logreg_c=c)).fit(*train)) for c in LOGREG_C]
    if val is not None:
        c, best = max(fitted, key=lambda pair: float(np.mean(pair[1].predict(val[0]) == val[1])))
    else:
        c, best = fitted[1]
    candidates.append((f"logreg (C={c})", best))
    candidates.append(("knn", create_classifier("knn").fit(*train)))  # k=5, temperature 0.02
    nearest = create_classifier("knn", ClassifySettings(knn_k=1)).fit(*train)
    candidates.append(("1-NN (the nearest photo's label)", nearest))
    for name, model in candidates:
        report = classification_report(test[1], model.predict(test[0]), labels=model.classes_)
        rows.append(
            {
                "labels": level,
                "classifier": name,
                "test acc": report.accuracy,
                "mean class acc": report.mean_class_accuracy,
                "class acc var": report.class_accuracy_variance,
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def grocery(settings: Any, work: Path, name: str) -> dict[str, Any]:
    from lookalike.evaluate.datasets import grocery_store_entries

    root = require("grocery-store")
    splits = {split: grocery_store_entries(root, split) for split in ("train", "val", "test")}
    fine = {s: np.array([e.item for e in entries]) for s, entries in splits.items()}
    coarse = {s: np.array([e.category for e in entries]) for s, entries in splits.items()}
    engine = build(work / "grocery.index", splits["train"], settings)
    before = {"train": stored(engine, splits["train"]), "test": embed(engine, splits["test"], "test (pretrained)")}
    tuned = fine_tune(engine)
    vectors = {"train": stored(engine, splits["train"])}
    vectors.update({s: embed(engine, splits[s], s) for s in ("val", "test")})
    rows = [
        {"backbone": "pretrained", **retrieval(before["test"], fine["test"], before["train"], fine["train"])},
        {"backbone": "fine-tuned", **retrieval(vectors["test"], fine["test"], vectors["train"], fine["train"])},
    ]
    print("\ngrocery-store photo->photo, all 2,485 test queries against the 2,640 train images")
    print(table(rows, list(rows[0])), flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)  # for classifier experiments without fine-tuning again
    np.savez(CACHE / f"finetune-{name}-grocery.npz", **vectors, **{f"fine_{s}": fine[s] for s in fine},
             **{f"coarse_{s}": coarse[s] for s in coarse})  # fmt: skip
    classification = []
    for level, labels in (("fine", fine), ("coarse", coarse)):
        data = {s: (vectors[s], labels[s]) for s in ("train", "val", "test")}
        classification += classify(data["train"], data["val"], data["test"], level)
    for copies in AUGMENTED_KNN:  # the index's own classifier, with augmented copies of its images as neighbours
        trained = engine.train_classifier("knn", augment_copies=copies, validation_fraction=0.0)
        accuracy = {s: float(np.mean(trained.classifier.predict(vectors[s]) == coarse[s])) for s in ("val", "test")}
        classification.append({"labels": "coarse", "classifier": f"knn, {copies} augmented copies",
                               "test acc": accuracy["test"], "val acc": accuracy["val"],
                               "augmented": trained.n_augmented, "seconds": trained.seconds})  # fmt: skip
        print(table(classification[-1:], list(classification[-1])), flush=True)
    engine.close()
    return {"fine_tuning": tuned, "retrieval": rows, "classification": classification}


def eth80_dev(settings: Any, work: Path) -> dict[str, Any]:
    from lookalike.evaluate.datasets import eth80, eth80_classification_split

    root = require("eth80-dev")
    train_entries, test_entries = eth80_classification_split(root)
    engine = build(work / "eth80.index", train_entries, settings)
    row_of = {str(e.path): i for i, e in enumerate(test_entries)}
    dataset = eth80(root, instances=[4, 5])
    q_rows, g_rows = [row_of[str(e.path)] for e in dataset.queries], [row_of[str(e.path)] for e in dataset.gallery]
    q_labels, g_labels = np.array(dataset.query_labels()), np.array(dataset.gallery_labels())
    categories = {"train": np.array([e.category for e in train_entries]),
                  "test": np.array([e.category for e in test_entries])}  # fmt: skip
    rows, classification, tuned = [], [], None
    for backbone in ("pretrained", "fine-tuned"):
        if backbone == "fine-tuned":
            tuned = fine_tune(engine)
        test = embed(engine, test_entries, f"instances 4-5 ({backbone})")
        rows.append({"backbone": backbone, **retrieval(test[q_rows], q_labels, test[g_rows], g_labels)})
        train = (stored(engine, train_entries), categories["train"])
        for row in classify(train, None, (test, categories["test"]), "category"):
            classification.append({"backbone": backbone, **row})
    print("\neth80-dev cross-view instance retrieval on instances 4-5 (fine-tuned on instances 1-3)")
    print(table(rows, list(rows[0])), flush=True)
    engine.close()
    return {"fine_tuning": tuned, "retrieval": rows, "classification": classification}


def reclassify(name: str) -> None:
    """The classification rows of results/<name>.json measured again on its cached fine-tuned vectors."""
    from _common import RESULTS

    cached = np.load(CACHE / f"finetune-{name}-grocery.npz")
    classification = []
    for level in ("fine", "coarse"):
        data = {s: (cached[s], cached[f"{level}_{s}"]) for s in ("train", "val", "test")}
        classification += classify(data["train"], data["val"], data["test"], level)
    results = json.loads((RESULTS / f"{name}.json").read_text())
    results["grocery"]["classification"] = classification
    results["fine_tuned_on"] = results.get("fine_tuned_on", results["date"])  # "date": when classified again
    print(f"\nsaved {save(name, {k: v for k, v in results.items() if k not in ('machine', 'date')})}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--only", choices=["grocery", "eth80"], default=None)
    parser.add_argument("--set", action="append", default=[], help="a setting, e.g. --set head.finetune_epochs=6")
    parser.add_argument("--name", default=None, help="results file name (default: finetune[-<model>])")
    parser.add_argument("--reclassify", action="store_true",
                        help="only the classifiers again, on the vectors an earlier run of --name cached")  # fmt: skip
    args = parser.parse_args()
    short = args.model.removeprefix("efficientnet-")
    name = args.name or ("finetune" if short == "lite0" else f"finetune-{short}")
    if args.reclassify:
        reclassify(name)
        return

    from lookalike.settings import Settings

    changes = {"embed.model": args.model, "head.kind": "finetune", "head.label": "item"}
    changes.update({k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)})
    settings = Settings().replace(**changes)
    results: dict[str, Any] = {"settings": settings.to_dict()}
    with tempfile.TemporaryDirectory(prefix="lookalike-finetune-") as folder:
        if args.only in (None, "grocery"):
            results["grocery"] = grocery(settings, Path(folder), name)
        if args.only in (None, "eth80"):
            results["eth80"] = eth80_dev(settings, Path(folder))
    print(f"\nsaved {save(name, results)}")


if __name__ == "__main__":
    main()
