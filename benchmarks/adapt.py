"""Label-free adaptation (`train-embedding --kind self`) measured on real phone photos.

grocery-store (all 2,485 test photos are the queries, relevant = same product):
  catalog   photo->catalogue: the 81 iconic studio images are the catalogue, adapted with no labels;
  ablation  the same with one augmentation off at a time (lookalike.embed.views.AUGMENTATIONS);
  carry     the model-carry route: the backbone fine-tuned with product ids on the 2,640 train photos
            (`--kind finetune`), searched against the catalogue; and both routes combined: that model
            adapted label-free on the catalogue (`head.adapt.start=current`);
  pseudo    the catalogue adapted label-free, then pseudo-label rounds on the 2,640 train photos used as an
            unlabelled archive (`--photos`; their product ids are never read);
  archive   the pseudo part's model with the engine's "archive" re-ranker: the same 2,640 unlabelled photos kept
            beside the index (`lookalike archive`) as extra nodes of its diffusion graph; on the test photos
            and on the 296 val photos its settings were chosen on; also over the label-free teacher;
  photos    photo->photo with no labels at all: the 2,640 train photos, an unlabelled archive, adapted;
            each model also with the engine's label-free re-rankers (query expansion, diffusion);
eth80-dev (eth80): cross-view instance retrieval (queries: the 66-degree ring), the gallery adapted.

How it measures: only the tail of the network changes, so the frozen stages' maps of every query
photo are computed once (cached in benchmarks/cache/adapt/) and each model's tail runs on them;
`check` compares those vectors with `Engine.embed` of an index holding the adapted backbone. The
wall time of each adaptation (views and frozen maps, then training) is recorded with the load average.
Writes benchmarks/results/adapt.json and adapt.md; grids of queries whose top-1 changed go to
benchmarks/results/adapt-grids/ (git-ignored).

Usage: nice python benchmarks/adapt.py [--only catalog ablation carry pseudo archive photos eth80 check]
                                       [--threads 2] [--set head.key=value]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS, ROOT, machine, progress_printer, require, table

KS = (1, 5, 10, 20)
CACHE = Path(os.environ.get("LOOKALIKE_ADAPT_CACHE", ROOT / "benchmarks" / "cache" / "adapt"))
PARTS = ("catalog", "ablation", "carry", "pseudo", "archive", "views", "photos", "eth80", "check")
# photo->photo: 2,640 images; fewer views keep the views, maps and training near one hour on 2 cores
PHOTO_CHANGES = {
    "head.adapt.views": 4,
    "head.adapt.epochs": 3,
    "head.adapt.validation_views": 1,
    "head.adapt.neighbours": 5,
}
PHOTO_RERANKERS = ("qe", "diffusion")  # label-free re-ranking, also measured on photo->photo
ETH80_CHANGES = {"head.adapt.views": 6, "head.adapt.epochs": 4, "head.adapt.neighbours": 5}


# -- shared pieces


class Context:
    """The pretrained embedder, where the tail starts, the map cache and the results so far."""

    def __init__(self, settings: Any) -> None:
        from lookalike.embed import create_embedder
        from lookalike.embed.finetune import tail_start

        self.settings = settings
        self.embedder = create_embedder(settings.embed)
        self.first = tail_start(self.embedder.network(), settings.head.finetune_stages)
        self.results: dict[str, Any] = {}
        self.masks: dict[str, np.ndarray | None] = {}
        self.part_changes: dict[str, dict[str, Any]] = {}  # --part-set: photos / eth80 settings

    def maps(self, name: str, paths: Sequence[Path]) -> np.ndarray:
        """(n, 1, c, h, w) float16 frozen maps of images, cached on disk by name."""
        from lookalike.embed.finetune import MAP_BATCH, trunk_maps
        from lookalike.io.images import load_image

        file = CACHE / f"{name}-{self.embedder.name}-b{self.first}.npy"
        if file.is_file():
            return np.load(file)[:, None]
        report, network = progress_printer(), self.embedder.network()
        chunks = []
        for start in range(0, len(paths), MAP_BATCH):
            images = [load_image(p) for p in paths[start : start + MAP_BATCH]]
            chunks.append(trunk_maps(network, self.embedder.pixels(images), self.first))
            report(f"frozen maps of {name}", min(start + MAP_BATCH, len(paths)), len(paths))
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(file, np.concatenate(chunks))
        return np.load(file)[:, None]

    def mirrored_maps(self, name: str, paths: Sequence[Path]) -> np.ndarray:
        """(n, 2, c, h, w) float16 frozen maps of images and their mirrors (what fine-tuning trains on), cached."""
        from lookalike.embed.finetune import images_maps
        from lookalike.io.images import load_image

        file = CACHE / f"{name}-mirrored-{self.embedder.name}-b{self.first}.npy"
        if not file.is_file():
            report = progress_printer()
            maps = images_maps(self.embedder, lambda a, b: [load_image(p) for p in paths[a:b]], len(paths), self.first,
                               lambda d, t: report(f"mirrored maps of {name}", d, t))  # fmt: skip
            CACHE.mkdir(parents=True, exist_ok=True)
            np.save(file, maps)
        return np.load(file, mmap_mode="r")

    def tail(self, tuning: Any = None) -> Any:
        """The tail of the pretrained network, or of `tuning`."""
        from lookalike.embed.finetune import _tail_module, apply_tuning

        network = copy.deepcopy(self.embedder.network())
        if tuning is not None:
            apply_tuning(network, tuning)
        return _tail_module(network, self.first, self.settings.embed.gem_p if tuning is None else tuning.gem_p)

    def segment(self) -> Callable[[Any], np.ndarray | None]:
        from lookalike.embed.adapt import segmenter_masks
        from lookalike.localize import Localizer

        return segmenter_masks(Localizer(self.settings.localize))


def vectors(tail: Any, maps: np.ndarray) -> np.ndarray:
    from lookalike.embed.finetune import tail_vectors

    return tail_vectors(tail, maps)


def retrieval(queries: np.ndarray, q_labels: np.ndarray, gallery: np.ndarray, g_labels: np.ndarray) -> dict:
    from lookalike.evaluate.metrics import count_relevant, retrieval_report

    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    relevances = list(g_labels[order] == q_labels[:, None])
    report = retrieval_report(relevances, count_relevant(q_labels, g_labels), ks=KS)
    return {"mAP": report.map, **{f"R@{k}": report.recall_at_k[k] for k in KS}}


def reranked(
    queries: np.ndarray,
    q_labels: np.ndarray,
    gallery: np.ndarray,
    g_labels: np.ndarray,
    chain: Sequence[str],
    archive: np.ndarray | None = None,
    views: tuple[np.ndarray, np.ndarray] | None = None,
    settings: Any = None,
) -> dict:
    """`retrieval` after the engine's re-rankers `chain` (lookalike.rerank, `settings` or the defaults)
    re-score each query's top candidates, as `Engine.search` applies them to an index holding `gallery`
    (and `archive`, unlabelled photos' vectors, as its photo archive; `views`, (owners, vectors), as its
    catalogue views)."""
    import tempfile

    from lookalike.evaluate.metrics import count_relevant, retrieval_report
    from lookalike.index.archive import PhotoArchive
    from lookalike.index.views import CatalogueViews
    from lookalike.rerank import Candidate, QueryData, apply_chain, create_reranker
    from lookalike.settings import Settings

    settings = settings or Settings()
    rerankers, store = [create_reranker(name, settings) for name in chain], _Vectors(gallery)
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")
    with tempfile.TemporaryDirectory(prefix="lookalike-rerank-") as folder:  # the index folder, while queries run
        if archive is not None:
            paths = [f"photo-{i}" for i in range(len(archive))]
            PhotoArchive(paths, archive, store.get_meta("embedder")).save(Path(folder))
        if views is not None:
            CatalogueViews(*views, store.get_meta("embedder"), 0, "").save(Path(folder))
        for reranker in rerankers:
            if reranker.needs.catalogue:  # e.g. the diffusion matrix, built from the stored vectors
                reranker.refresh(store, gallery.shape[1], Path(folder), 0)
        for row, query in enumerate(queries):
            candidates = [
                Candidate(int(i), float(scores[row, i]), {"vector": float(scores[row, i])}) for i in order[row]
            ]
            chained = apply_chain(rerankers, QueryData(query, {}, store, gallery.shape[1]), candidates)
            order[row] = [c.id for c in chained]
    relevances = list(g_labels[order] == q_labels[:, None])
    report = retrieval_report(relevances, count_relevant(q_labels, g_labels), ks=KS)
    return {"mAP": report.map, **{f"R@{k}": report.recall_at_k[k] for k in KS}}


class _Vectors:
    """What re-rankers read of a MetadataStore (vectors by id, all vectors), over an array."""

    def __init__(self, vectors: np.ndarray) -> None:
        self._vectors = vectors

    def vectors_of(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        return {i: self._vectors[i] for i in ids}

    def vectors(self, dim: int) -> Any:
        yield np.arange(len(self._vectors)), self._vectors, [None] * len(self._vectors)

    def get_meta(self, key: str) -> Any:
        return {"embedder": "the benchmark's tail"}.get(key)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def printer(what: str) -> Callable[[int, int, dict[str, Any]], None]:
    def show(epoch: int, epochs: int, values: dict[str, Any]) -> None:
        val = "-" if values["val_map"] is None else f"{values['val_map']:.4f}"
        print(f"  {what} epoch {epoch}/{epochs}: loss {values['loss']:.4f}, view mAP {val}", flush=True)

    return show


def cache_views() -> None:
    """Keep every run's view maps on disk (benchmarks/cache/adapt/views/), keyed by what makes them:
    runs that differ only in training settings then skip the views. `load` must carry `paths`."""
    import hashlib
    from dataclasses import asdict

    from lookalike.embed import adapt as module

    make = module.make_view_maps

    def cached(embedder: Any, network: Any, first: int, load: Any, n: int, settings: Any, *rest: Any) -> Any:
        making = {k: v for k, v in asdict(settings.adapt).items() if k not in ("epochs", "lr", "start", "negatives",
                  "momentum", "neighbours")}  # fmt: skip
        key = json.dumps([embedder.fingerprint(), first, settings.seed, making, [str(p) for p in load.paths]])
        folder = CACHE / "views" / hashlib.sha256(key.encode()).hexdigest()[:16]
        if (folder / "done").is_file():
            print(f"  views from {folder}", flush=True)
            return module.ViewMaps(np.load(folder / "train.npy", mmap_mode="r"), np.load(folder / "validation.npy"),
                                   np.load(folder / "rows.npy"), int((folder / "done").read_text()))  # fmt: skip
        maps = make(embedder, network, first, load, n, settings, *rest)
        folder.mkdir(parents=True, exist_ok=True)
        for file, array in (("train", maps.train), ("validation", maps.validation), ("rows", maps.validation_rows)):
            np.save(folder / f"{file}.npy", array)
        (folder / "done").write_text(str(maps.masked))
        return maps

    module.make_view_maps = cached


class Loader:
    """`load(row)` of image files, with the paths at hand (the view cache's key)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __call__(self, row: int) -> Any:
        from lookalike.io.images import load_image

        return load_image(self.paths[row])


def adapt(ctx: Context, name: str, paths: Sequence[Path], settings: Any, start: Any = None) -> dict[str, Any]:
    """Label-free adaptation on image files, through `lookalike.embed.adapt.fit_adaptation`."""
    from lookalike.embed.adapt import fit_adaptation
    from lookalike.embed.finetune import BackboneTuning

    saved = CACHE / "tunings" / name.replace(" ", "-")
    if name in os.environ.get("LOOKALIKE_ADAPT_REUSE", "").split(",") and (saved / "backbone.json").is_file():
        print(f"{name}: reusing the adaptation saved in {saved} (LOOKALIKE_ADAPT_REUSE): no wall time measured")
        return {"tuning": BackboneTuning.load(saved), "facts": None, "wall": None, "reused": str(saved)}
    report = progress_printer()
    load_before = load_average()
    started = time.perf_counter()
    tuning, facts, _ = fit_adaptation(
        ctx.embedder, Loader(paths), len(paths), settings.head, start=start,
        segment=ctx.segment() if settings.head.adapt.background or settings.head.adapt.pile else None,
        progress=printer(name), on_maps=lambda d, t: report(f"{name}: views and maps", d, t),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    tuning.save(saved)  # for a later look, or LOOKALIKE_ADAPT_REUSE (benchmarks/cache is git-ignored)
    timings = facts["timings"]
    print(f"{name}: adapted {len(paths)} images in {seconds:.0f} s ({timings}), best epoch {facts['best_epoch']}")
    return {
        "tuning": tuning,
        "facts": {key: facts[key] for key in ("before", "after", "history", "best_epoch")},
        "wall": {
            "images": len(paths), "views": settings.head.adapt.views, "epochs": settings.head.adapt.epochs,
            "seconds": seconds, **timings, "seconds_per_1000_images": 1000 * seconds / len(paths),
            "load_average_before": load_before, "load_average_after": load_average(),
        },
    }  # fmt: skip


# -- grocery-store


def grocery(ctx: Context) -> dict[str, Any]:
    from lookalike.evaluate.datasets import grocery_store_entries

    root = require("grocery-store")
    splits = {s: grocery_store_entries(root, s) for s in ("train", "test", "iconic")}
    labels = {s: np.array([e.item for e in entries]) for s, entries in splits.items()}
    maps = {s: ctx.maps(f"grocery-{s}", [e.path for e in entries]) for s, entries in splits.items() if s != "train"}
    return {"splits": splits, "labels": labels, "maps": maps}


def catalog_route(ctx: Context, data: dict[str, Any], settings: Any, tuning: Any = None) -> dict[str, Any]:
    """photo->catalogue figures of a tail: every test photo against the 81 iconic images."""
    tail = ctx.tail(tuning)
    queries, gallery = vectors(tail, data["maps"]["test"]), vectors(tail, data["maps"]["iconic"])
    return {
        "figures": retrieval(queries, data["labels"]["test"], gallery, data["labels"]["iconic"]),
        "scores": queries @ gallery.T,
    }


def diagnose(ctx: Context, data: dict[str, Any]) -> None:
    """Print each epoch's photo->catalogue figures on the 296 photos of the val split (a look only, for
    choosing settings without the test photos: the epoch kept is still the one the views chose)."""
    from lookalike.embed import adapt as module
    from lookalike.evaluate.datasets import grocery_store_entries

    val = grocery_store_entries(require("grocery-store"), "val")
    maps, labels = ctx.maps("grocery-val", [e.path for e in val]), np.array([e.item for e in val])
    measure = module._view_figures

    def both(tail: Any, views: np.ndarray, validation: Any) -> Any:
        queries, gallery = vectors(tail, maps), vectors(tail, data["maps"]["iconic"])
        figures = retrieval(queries, labels, gallery, data["labels"]["iconic"])
        print(f"    val photos ({len(val)}): mAP {figures['mAP']:.3f}, R@1 {figures['R@1']:.3f}", flush=True)
        return measure(tail, views, validation)

    module._view_figures = both


def run_catalog(ctx: Context, data: dict[str, Any]) -> None:
    iconic = [e.path for e in data["splits"]["iconic"]]
    if os.environ.get("LOOKALIKE_ADAPT_DIAGNOSE"):
        diagnose(ctx, data)
    before = catalog_route(ctx, data, ctx.settings)
    adapted = adapt(ctx, "catalogue", iconic, ctx.settings)
    after = catalog_route(ctx, data, ctx.settings, adapted["tuning"])
    rows = [{"model": "pretrained", **before["figures"]}, {"model": "label-free (self)", **after["figures"]}]
    print("\ngrocery-store photo->catalogue, 2,485 queries, 81 iconic images\n" + table(rows, list(rows[0])))
    ctx.results["photo2catalog"] = {"rows": rows, "adaptation": {k: v for k, v in adapted.items() if k != "tuning"}}
    ctx.results["_catalog"] = {"before": before, "after": after, "tuning": adapted["tuning"],
                               "view_map": adapted["facts"]["after"]["map"]}  # fmt: skip
    changed_grids(ctx, data, before["scores"], after["scores"], ("pretrained", "self"))


def run_ablation(ctx: Context, data: dict[str, Any]) -> None:
    from dataclasses import replace

    from lookalike.embed.views import AUGMENTATIONS, without

    iconic = [e.path for e in data["splits"]["iconic"]]
    if "_catalog" not in ctx.results:  # the reference: every augmentation on (its views cached, when asked)
        full = adapt(ctx, "all on", iconic, ctx.settings)
        figures = catalog_route(ctx, data, ctx.settings, full["tuning"])["figures"]
        rows = [{"without": "(nothing: all on)", **figures, "view mAP": full["facts"]["after"]["map"]}]
    else:
        full = ctx.results["photo2catalog"]["rows"][1]
        rows = [{"without": "(nothing: all on)", **_strip(full), "view mAP": ctx.results["_catalog"]["view_map"]}]
    for name in AUGMENTATIONS:
        head = replace(ctx.settings.head, adapt=without(ctx.settings.head.adapt, name))
        adapted = adapt(ctx, f"without {name}", iconic, replace(ctx.settings, head=head))
        figures = catalog_route(ctx, data, ctx.settings, adapted["tuning"])["figures"]
        rows.append({"without": name, **figures, "view mAP": adapted["facts"]["after"]["map"]})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\nablation: photo->catalogue with one augmentation off\n" + table(rows, list(rows[-1])))
    ctx.results["ablation"] = rows


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "model"}


def run_carry(ctx: Context, data: dict[str, Any]) -> None:
    """Fine-tune with product ids on the train photos (the model-carry route), then combine."""
    from dataclasses import replace

    from lookalike.embed.finetune import BackboneTuning, tune_on_files
    from lookalike.settings import HeadSettings

    train = data["splits"]["train"]
    # the fine-tuning defaults, for the epochs the validation curve chose in benchmarks/results/finetune.json
    head = HeadSettings(kind="finetune", label="item", validation_fraction=0.0, finetune_epochs=4,
                        finetune_stages=ctx.settings.head.finetune_stages)  # fmt: skip
    report = progress_printer()
    started = time.perf_counter()
    saved = CACHE / "tunings" / f"carry-finetune-{ctx.embedder.name}-s{head.finetune_stages}"
    if (saved / "backbone.json").is_file():  # fine-tuned by an earlier run: the combination is what changes
        tuning = BackboneTuning.load(saved)
    else:
        tuning, _ = tune_on_files(
            ctx.embedder, [str(e.path) for e in train], [e.item for e in train], head, printer("finetune"),
            on_maps=lambda d, t: report("finetune maps", d, t),
        )  # fmt: skip
        tuning.save(saved)
    seconds = time.perf_counter() - started
    carried = catalog_route(ctx, data, ctx.settings, tuning)
    iconic = [e.path for e in data["splits"]["iconic"]]
    both = replace(ctx.settings.head, adapt=replace(ctx.settings.head.adapt, start="current"))
    combined = adapt(ctx, "combined", iconic, replace(ctx.settings, head=both), start=tuning)
    after = catalog_route(ctx, data, ctx.settings, combined["tuning"])
    rows = [
        {"model": "model carry (finetune on labelled photos)", **carried["figures"]},
        {"model": "carry + label-free on the catalogue", **after["figures"]},
    ]
    print("\nphoto->catalogue, model-carry route and combined\n" + table(rows, list(rows[0])))
    ctx.results["carry"] = {"rows": rows, "finetune_seconds": seconds, "combined": _public(combined)}
    pretrained = ctx.results.get("_catalog", {}).get("before") or catalog_route(ctx, data, ctx.settings)
    changed_grids(ctx, data, pretrained["scores"], carried["scores"], ("pretrained", "carry"))
    changed_grids(ctx, data, pretrained["scores"], after["scores"], ("pretrained", "carry+self"))


def run_pseudo(ctx: Context, data: dict[str, Any]) -> None:
    """The catalogue adapted label-free, then pseudo-labels on the 2,640 train photos as an unlabelled
    archive (their product ids are never read): `train-embedding --kind self --photos DIR`."""
    from lookalike.embed.adapt import fit_pseudo_labels

    iconic = [e.path for e in data["splits"]["iconic"]]
    catalog = ctx.results.get("_catalog")
    teacher = catalog["tuning"] if catalog else adapt(ctx, "all on", iconic, ctx.settings)["tuning"]
    photo_maps = ctx.mirrored_maps("grocery-train", [e.path for e in data["splits"]["train"]])
    catalogue_maps = ctx.mirrored_maps("grocery-iconic", iconic)
    rows = [
        {
            "model": "label-free on the catalogue (the teacher)",
            **catalog_route(ctx, data, ctx.settings, teacher)["figures"],
        }
    ]

    labels = [{"labels_for_round": 1, "labelled_by": "the teacher", **label_accuracy(ctx, data, teacher, photo_maps,
                                                                                      catalogue_maps)}]  # fmt: skip

    def measured(number: int, tuning: Any) -> None:
        rows.append(
            {"model": f"+ pseudo-labels, round {number}", **catalog_route(ctx, data, ctx.settings, tuning)["figures"]}
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
        accuracy = label_accuracy(ctx, data, tuning, photo_maps, catalogue_maps)
        labels.append({"labels_for_round": number + 1, "labelled_by": f"round {number}", **accuracy})

    started, load_before = time.perf_counter(), load_average()
    tuning, rounds = fit_pseudo_labels(ctx.embedder, teacher, catalogue_maps, photo_maps, ctx.settings.head,
                                       printer("pseudo"), on_round=measured)  # fmt: skip
    seconds = time.perf_counter() - started
    print("\nphoto->catalogue with pseudo-labels on unlabelled photos\n" + table(rows, list(rows[0])))
    print("\npseudo-labels against the train photos' product ids (read by the benchmark only)\n"
          + table(labels, list(labels[0])))  # fmt: skip
    ctx.results["pseudo"] = {
        "rows": rows, "rounds": rounds, "labels": labels, "settings": _settings(ctx.settings)["head"]["adapt"],
        "wall": {"photos": len(photo_maps), "seconds_rounds_and_measuring": seconds, "load_average_before": load_before,
                 "load_average_after": load_average()},
    }  # fmt: skip
    ctx.results["_pseudo"] = {"teacher": teacher, "tuning": tuning}
    tuning.save(CACHE / "tunings" / "pseudo-last-round")  # for `--only archive` later (benchmarks/cache is git-ignored)
    after = catalog_route(ctx, data, ctx.settings, tuning)
    changed_grids(
        ctx, data, catalog_route(ctx, data, ctx.settings)["scores"], after["scores"], ("pretrained", "pseudo")
    )


def label_accuracy(
    ctx: Context, data: dict[str, Any], tuning: Any, photo_maps: np.ndarray, catalogue_maps: np.ndarray
) -> dict[str, Any]:
    """How right the pseudo-labels made with `tuning`'s vectors are (the engine never reads the photos'
    product ids; the benchmark does, here only): on every photo, on the photos kept, products reached."""
    from lookalike.embed.adapt import most_confident, pseudo_labels

    tail, own = ctx.tail(tuning), ctx.settings.head.adapt
    assigned, margin = pseudo_labels(vectors(tail, photo_maps), vectors(tail, catalogue_maps), own)
    kept = most_confident(assigned, margin, own.pseudo_per_image)
    right = data["labels"]["iconic"][assigned] == data["labels"]["train"]
    return {"accuracy_all": float(right.mean()), "accuracy_kept": float(right[kept].mean()), "kept": len(kept),
            "products_kept": len(set(assigned[kept].tolist()))}  # fmt: skip


def run_archive(ctx: Context, data: dict[str, Any]) -> None:
    """The "archive" re-ranker (default settings, chosen on the val photos) over the pseudo part's last
    round and over its teacher, with the 2,640 train photos as the index's photo archive."""

    _pseudo_models(ctx, data, "archive")
    query_sets = _query_sets(ctx, data)
    photo_maps = ctx.maps("grocery-train", [e.path for e in data["splits"]["train"]])
    rows = []
    for model in ("teacher", "tuning"):
        tail = ctx.tail(ctx.results["_pseudo"][model])
        name = "label-free teacher" if model == "teacher" else "+ pseudo-labels, last round"
        gallery, photos = vectors(tail, data["maps"]["iconic"]), vectors(tail, photo_maps)
        for split, (maps, labels) in query_sets.items():
            queries = vectors(tail, maps)
            g_labels = data["labels"]["iconic"]
            for chain, archive in (((), None), (("archive",), None), (("archive",), photos)):
                started = time.perf_counter()
                figures = reranked(queries, labels, gallery, g_labels, chain, archive)
                per_query = 1000 * (time.perf_counter() - started) / len(queries)
                photos_note = "2,640 photos" if archive is not None else "no photos (catalogue diffusion)"
                what = f" + archive re-ranker, {photos_note}" if chain else ""
                rows.append({"model": name + what, "queries": split, **figures,
                             "ms_per_query_with_build": per_query})  # fmt: skip
                print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\nphoto->catalogue with the archive re-ranker\n" + table(rows, list(rows[0])))
    from lookalike.settings import Settings

    ctx.results["archive"] = {
        "rows": rows,
        "settings": Settings().rerank.archive.__dict__,
        "load_average": load_average(),
    }


def _pseudo_models(ctx: Context, data: dict[str, Any], part: str) -> None:
    """The pseudo part's teacher and last round: from this run, saved ones (LOOKALIKE_ADAPT_REUSE), or run now."""
    from lookalike.embed.finetune import BackboneTuning

    saved = CACHE / "tunings" / "pseudo-last-round"
    if "_pseudo" not in ctx.results and "pseudo" in os.environ.get("LOOKALIKE_ADAPT_REUSE", "").split(","):
        print(f"{part}: reusing the pseudo part's last round saved in {saved} (LOOKALIKE_ADAPT_REUSE)")
        teacher = adapt(ctx, "all on", [e.path for e in data["splits"]["iconic"]], ctx.settings)["tuning"]
        ctx.results["_pseudo"] = {"teacher": teacher, "tuning": BackboneTuning.load(saved)}
    if "_pseudo" not in ctx.results:
        run_pseudo(ctx, data)


def _query_sets(ctx: Context, data: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """grocery's test photos and the val photos that re-ranker settings are chosen on: (maps, labels)."""
    from lookalike.evaluate.datasets import grocery_store_entries

    val = grocery_store_entries(require("grocery-store"), "val")
    return {
        "test": (data["maps"]["test"], data["labels"]["test"]),
        "val": (ctx.maps("grocery-val", [e.path for e in val]), np.array([e.item for e in val])),
    }


def view_maps(ctx: Context, data: dict[str, Any], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The engine's catalogue views of the iconic images (`make_catalogue_views`, keyed by row) through the
    frozen stages, cached: (owners, maps (n * count, c, h, w) float16). Each model's tail runs on them."""
    from lookalike.embed.adapt import make_catalogue_views
    from lookalike.embed.finetune import trunk_maps

    iconic = [e.path for e in data["splits"]["iconic"]]
    file = CACHE / f"views-grocery-iconic-{count}-{ctx.embedder.name}-b{ctx.first}.npy"
    owners = np.repeat(np.arange(len(iconic)), count)
    if not file.is_file():
        network, shape, report = ctx.embedder.network(), [], progress_printer()

        def maps(pictures: list[Any]) -> np.ndarray:
            made = trunk_maps(network, ctx.embedder.pixels(pictures), ctx.first)
            shape[:] = made.shape[1:]
            return made.reshape(len(made), -1)

        started = time.perf_counter()
        rows = range(len(iconic))
        flat = make_catalogue_views(maps, Loader(iconic), len(iconic), rows, rows, ctx.settings.head, count,
                                    ctx.segment(), lambda d, t: report("views", d, t))  # fmt: skip
        print(f"views: {len(flat)} views made and mapped in {time.perf_counter() - started:.0f} s", flush=True)
        np.save(file, flat.astype(np.float16).reshape(len(flat), *shape))
    return owners, np.load(file)[:, None]


def run_views(ctx: Context, data: dict[str, Any]) -> None:
    """The "views" re-ranker (`lookalike views`): rerank.views.count phone-photo views of each iconic image,
    made by the engine; over the pseudo part's last round and its teacher, alone and before the archive
    re-ranker (2,640 unlabelled photos); each `best` on the val photos (settings are chosen there) and test."""
    from lookalike.settings import Settings

    _pseudo_models(ctx, data, "views")
    count = ctx.settings.rerank.views.count
    owners, maps = view_maps(ctx, data, count)
    photo_maps = ctx.maps("grocery-train", [e.path for e in data["splits"]["train"]])
    rows = []
    for model in ("tuning", "teacher"):
        tail = ctx.tail(ctx.results["_pseudo"][model])
        name = "label-free teacher" if model == "teacher" else "+ pseudo-labels, last round"
        gallery, photos, views = vectors(tail, data["maps"]["iconic"]), vectors(tail, photo_maps), vectors(tail, maps)
        for split, (query_maps, labels) in _query_sets(ctx, data).items():
            queries, g_labels = vectors(tail, query_maps), data["labels"]["iconic"]
            for best in (1, 2, 3, 4, 5) if model == "tuning" else (3,):
                settings = Settings().replace(**{"rerank.views.best": best})
                for chain in (("views",), ("views", "archive")):
                    archive = photos if "archive" in chain else None
                    figures = reranked(queries, labels, gallery, g_labels, chain, archive, (owners, views), settings)
                    rows.append({"model": name, "chain": " + ".join(chain), "best": best, "queries": split,
                                 "views": count, **figures})  # fmt: skip
                    print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\nphoto->catalogue with the views re-ranker\n" + table(rows, list(rows[0])))
    ctx.results["views"] = {"rows": rows, "settings": Settings().rerank.views.__dict__, "load_average": load_average()}


def _public(adapted: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in adapted.items() if key != "tuning"}


def run_photos(ctx: Context, data: dict[str, Any]) -> None:
    """photo->photo with no labels: the train photos adapted as an unlabelled archive."""
    changes = {**PHOTO_CHANGES, **ctx.part_changes.get("photos", {})}
    settings = ctx.settings.replace(**changes)
    train = [e.path for e in data["splits"]["train"]]
    train_maps = ctx.maps("grocery-train", train)
    labels = data["labels"]
    pretrained = ctx.tail()

    def figures(tail: Any, name: str) -> list[dict[str, Any]]:
        queries, gallery = vectors(tail, data["maps"]["test"]), vectors(tail, train_maps)
        plain = [{"model": name, **retrieval(queries, labels["test"], gallery, labels["train"])}]
        return plain + [  # the engine's label-free re-rankers, at their default settings
            {"model": f"{name} + {chain}", **reranked(queries, labels["test"], gallery, labels["train"], (chain,))}
            for chain in PHOTO_RERANKERS
        ]

    rows = figures(pretrained, "pretrained")
    print(table(rows, list(rows[0])), flush=True)
    adapted = adapt(ctx, "photos", train, settings)
    rows += figures(ctx.tail(adapted["tuning"]), "label-free (self), no labels")
    print("\ngrocery-store photo->photo, no labels\n" + table(rows, list(rows[0])))
    ctx.results["photo2photo"] = {"rows": rows, "settings": changes, "adaptation": _public(adapted)}


# -- eth80-dev


def run_eth80(ctx: Context) -> None:
    from lookalike.evaluate.datasets import eth80

    dataset = eth80(require("eth80-dev"))
    changes = {**ETH80_CHANGES, **ctx.part_changes.get("eth80", {})}
    settings = ctx.settings.replace(**changes)
    gallery = [e.path for e in dataset.gallery]
    q_maps = ctx.maps("eth80-queries", [e.path for e in dataset.queries])
    g_maps = ctx.maps("eth80-gallery", gallery)
    q_labels, g_labels = np.array(dataset.query_labels()), np.array(dataset.gallery_labels())
    rows = []
    for model, tuning in (("pretrained", None), ("label-free (self)", "adapt")):
        if tuning == "adapt":
            adapted = adapt(ctx, "eth80", gallery, settings)
            tuning = adapted["tuning"]
        tail = ctx.tail(tuning)
        rows.append({"model": model, **retrieval(vectors(tail, q_maps), q_labels, vectors(tail, g_maps), g_labels)})
    print("\neth80-dev cross-view instance retrieval\n" + table(rows, list(rows[0])))
    ctx.results["eth80"] = {"rows": rows, "settings": changes, "adaptation": _public(adapted)}


# -- agreement with the engine, and grids


def run_check(ctx: Context, data: dict[str, Any], count: int = 24) -> None:
    """The cached-map vectors against `Engine.embed` of an index whose backbone is the adapted one."""
    import tempfile

    from lookalike import Engine
    from lookalike.embed.finetune import install_tuning

    tuning = ctx.results.get("_catalog", {}).get("tuning")
    if tuning is None:
        return
    rows = np.linspace(0, len(data["splits"]["test"]) - 1, count).round().astype(int)
    with tempfile.TemporaryDirectory(prefix="lookalike-adapt-") as folder:
        path = Path(folder) / "catalog.index"
        with Engine.create(path, ctx.settings) as engine:
            engine.add(list(data["splits"]["iconic"]))
            engine._reembed(engine.featurizer.with_tuning(tuning), None)
            install_tuning(path, tuning)
            served = engine.embed([data["splits"]["test"][i].path for i in rows])
    cached = vectors(ctx.tail(tuning), data["maps"]["test"][rows])
    worst = float(np.max(np.abs(served - cached)))
    cosine = float(np.min(np.sum(served * cached, axis=1)))
    print(f"cached maps vs Engine.embed on {count} queries: max |difference| {worst:.2e}, min cosine {cosine:.6f}")
    ctx.results["check"] = {"queries": count, "max_abs_difference": worst, "min_cosine": cosine}


def changed_grids(ctx: Context, data: dict[str, Any], before: Any, after: Any, names: tuple[str, str]) -> None:
    """A before/after grid of queries whose top-1 changed (lookalike.evaluate.figures.render_changes)."""
    from lookalike.evaluate.figures import render_changes

    label_of = {str(e.path): e.item for e in data["splits"]["iconic"]}
    out = RESULTS / "adapt-grids"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{names[1].split()[0]}-changes.png"
    grid, counts = render_changes(outcomes(data, before), outcomes(data, after), names, label_of.get, path, count=8)
    ctx.results.setdefault("top1_changes", {})[names[1]] = {"against": names[0], **counts}
    print(f"top-1 changes, {names[0]} -> {names[1]}: {counts} ({grid})", flush=True)


def outcomes(data: dict[str, Any], scores: np.ndarray) -> list[Any]:
    """Each test photo's ranking of the catalogue, as the evaluation harness records it."""
    from lookalike.evaluate.harness import QueryOutcome

    iconic, truth = data["splits"]["iconic"], data["labels"]["test"]
    order = np.argsort(-scores, axis=1, kind="stable")
    relevant = data["labels"]["iconic"][order] == truth[:, None]
    return [
        QueryOutcome(
            str(entry.path),
            truth[i],
            entry.category,
            relevant[i],
            [(str(iconic[j].path), float(scores[i, j])) for j in order[i, :5]],
            {},
            {},
        )
        for i, entry in enumerate(data["splits"]["test"])
    ]


# -- main


def write(ctx: Context, args: argparse.Namespace) -> None:
    public = {key: value for key, value in ctx.results.items() if not key.startswith("_")}
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": load_average(),
               "threads": args.threads, "settings": _settings(ctx.settings), **public}  # fmt: skip
    previous = RESULTS / f"{args.name}.json"
    if args.only and previous.is_file():  # a partial run keeps the other parts of the last full one
        payload = {**json.loads(previous.read_text()), **payload}
    for name in args.merge:  # parts measured by another run: benchmarks/results/<name>.json, or a path
        other = json.loads((Path(name) if name.endswith(".json") else RESULTS / f"{name}.json").read_text())
        parts = ("photo2catalog", "ablation", "carry", "pseudo", "archive", "views", "photo2photo", "eth80", "check")
        payload.update({key: other[key] for key in (*parts, "top1_changes") if key in other})
    previous.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(payload))
    print(f"\nsaved {previous} and {args.name}.md")


def _settings(settings: Any) -> dict[str, Any]:
    data = settings.to_dict()
    return {"embed": data["embed"], "head": data["head"]}


def markdown(payload: dict[str, Any]) -> str:
    lines = ["# Label-free adaptation (`train-embedding --kind self`)\n",
             f"{payload['date']}, {payload['machine']}, torch threads {payload['threads']}, "
             f"load average at the end {payload['load_average']} (2 cores shared).\n"]  # fmt: skip
    for key, title in (("photo2catalog", "grocery-store photo->catalogue (2,485 queries, 81 iconic images)"),
                       ("carry", "photo->catalogue: model-carry route and combined"),
                       ("pseudo", "photo->catalogue: label-free, then pseudo-labels on 2,640 unlabelled photos"),
                       ("archive", "photo->catalogue: archive re-ranker, 2,640 unlabelled photos kept with the index"),
                       ("views", "photo->catalogue: views re-ranker (phone-photo views of each catalogue image)"),
                       ("photo2photo", "grocery-store photo->photo, no labels (2,485 queries, 2,640 photos)"),
                       ("eth80", "eth80-dev cross-view instance retrieval")):  # fmt: skip
        if key in payload:
            lines += [f"## {title}\n", _md(payload[key]["rows"]), ""]
    if payload.get("pseudo", {}).get("labels"):
        lines += ["## Pseudo-labels against the train photos' product ids (read by the benchmark only)\n",
                  _md(payload["pseudo"]["labels"]), ""]  # fmt: skip
    if "ablation" in payload:
        lines += ["## Ablation: photo->catalogue with one augmentation off\n", _md(payload["ablation"]), ""]
    walls = [
        (k, payload[k].get("adaptation") or payload[k].get("combined")) for k in payload if isinstance(payload[k], dict)
    ]
    facts = ("images", "views", "epochs", "seconds", "seconds_per_1000_images", "load_average_before")
    rows = [{"run": k, **{w: wall["wall"][w] for w in facts}} for k, wall in walls if wall and wall["wall"]]
    if rows:
        lines += ["## Wall time\n", _md(rows), ""]
    return "\n".join(lines) + "\n"


def _md(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    cells = [[f"{v:.3f}" if isinstance(v, float) and abs(v) < 100 else f"{v:.0f}" if isinstance(v, float) else str(v)
              for v in (row.get(c) for c in columns)] for row in rows]  # fmt: skip
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] +
                     ["| " + " | ".join(r) + " |" for r in cells])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=PARTS, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="adapt", help="results file name: benchmarks/results/<name>.json and .md")
    parser.add_argument("--merge", nargs="*", default=[], help="copy the parts of these results files into this one")
    parser.add_argument("--set", action="append", default=[], help="a setting, e.g. --set head.adapt.views=16")
    parser.add_argument(
        "--part-set",
        action="append",
        default=[],
        help="a setting for one part only, over its own changes: photos:head.adapt.views=3",
    )
    args = parser.parse_args()

    import torch

    from lookalike.settings import Settings

    torch.set_num_threads(args.threads)
    changes = {"head.kind": "self", **{k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)}}
    ctx = Context(Settings().replace(**changes))
    for given in args.part_set:
        part, assignment = given.split(":", 1)
        key, value = assignment.split("=", 1)
        ctx.part_changes.setdefault(part, {})[key] = json.loads(value)
    if os.environ.get("LOOKALIKE_ADAPT_CACHE_VIEWS"):  # experiments that change training settings only
        cache_views()
    parts = args.only or list(PARTS)
    data = grocery(ctx) if set(parts) - {"eth80"} else {}
    for part in parts:
        if part == "eth80":
            run_eth80(ctx)
        else:
            {"catalog": run_catalog, "ablation": run_ablation, "carry": run_carry, "pseudo": run_pseudo,
             "archive": run_archive, "views": run_views, "photos": run_photos,
             "check": run_check}[part](ctx, data)  # fmt: skip
        write(ctx, args)


if __name__ == "__main__":
    main()
