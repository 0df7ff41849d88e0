"""Build a fresh index from a dataset's gallery, run every query, measure everything.

Configurations that differ only in online settings share one built index. Per configuration:
retrieval metrics over the full ranking, latency per stage, indexing throughput and size, and,
where the results carry them, classification metrics (the predicted category of each query) and
segmentation quality (the query's predicted mask against the data set's ground-truth mask).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError, SettingsError
from lookalike.evaluate.datasets import Dataset
from lookalike.evaluate.metrics import (
    classification_report,
    latency_summary,
    mask_iou,
    retrieval_report,
    segmentation_report,
)
from lookalike.settings import Settings

Progress = Callable[[str, int, int], None]  # (what, done, total)
# Settings sections read only at search time; every other section (embed, localize, index, and
# any section added later) is assumed to change what is stored, so it gets its own index.
ONLINE_SECTIONS = ("rerank",)
LATENCY_K = 10  # hits asked for in the latency pass, as a user would
MASK_THUMBNAIL = 96  # side (pixels) of the predicted masks kept per query, for the report's grids
# the model-carry route as a prepare step: a model fine-tuned with product ids on the data set's labelled
# training photos (an index of its own, shared by the configurations), then used by the gallery's index
CARRY_STEP = "carry_model"
# label-free adaptation of the gallery, then pseudo-labels on the data set's training photos (their labels unread)
PHOTOS_STEP = "adapt_with_photos"
# the data set's training photos kept beside the gallery's index for the archive re-ranker (their labels unread)
ARCHIVE_STEP = "archive_photos"
# phone-photo views of each gallery image kept beside its index, for the views re-ranker (`lookalike views`)
VIEWS_STEP = "make_views"


@dataclass(frozen=True)
class Config:
    """A named pipeline configuration to evaluate."""

    name: str
    settings: Settings = field(default_factory=Settings)
    search: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of Engine.search
    # Engine methods called without arguments once the gallery is indexed, e.g. ("train_classifier",)
    prepare: tuple[str, ...] = ()

    def build_key(self) -> str:
        """Configurations with equal keys can search the same built index."""
        data = self.settings.to_dict()
        built = {section: value for section, value in data.items() if section not in ONLINE_SECTIONS}
        indexed = _rerankers_with_index_data(self.settings.rerank.chain)
        return json.dumps({"settings": built, "prepare": list(self.prepare), "indexed": indexed}, sort_keys=True)


def _rerankers_with_index_data(chain: Sequence[str]) -> list[str]:
    """Re-rankers of the chain that store something per image at indexing time (SIFT keypoints):
    an index built without them would leave them nothing to compare, so they need their own."""
    from lookalike.rerank.base import RERANKERS

    return sorted({name for name in chain if hasattr(RERANKERS.get(name), "describe")})


@dataclass
class QueryOutcome:
    """One query: where the relevant items landed, its top hits, its timings.

    `mask` is the predicted object mask as a small thumbnail (bool, at most `MASK_THUMBNAIL`
    pixels a side) when localisation ran; `iou` its IoU against the ground-truth mask, if any.
    """

    path: str
    label: str
    category: str | None
    relevance: np.ndarray
    top: list[tuple[str, float]]
    timings: dict[str, float]
    details: dict[str, Any]
    mask: np.ndarray | None = None
    iou: float | None = None

    @property
    def first_relevant_rank(self) -> int | None:
        """1-based rank of the first relevant hit; None when no relevant item was returned."""
        found = np.flatnonzero(self.relevance)
        return int(found[0]) + 1 if found.size else None

    @property
    def predicted_category(self) -> str | None:
        """The category the classification stage predicted for this query, when it ran."""
        predicted = self.details.get("classification")
        return predicted.get("category") if isinstance(predicted, dict) else None


@dataclass
class ConfigResult:
    name: str
    settings: dict[str, Any]
    retrieval: dict[str, Any]
    latency_ms: dict[str, dict[str, float]]
    indexing: dict[str, float]
    queries: list[QueryOutcome] = field(default_factory=list, repr=False)
    index: str = ""  # the folder (under work_dir) of the index it searched
    search: dict[str, Any] = field(default_factory=dict)
    prepare: tuple[str, ...] = ()
    classification: dict[str, Any] | None = None  # metrics.ClassificationReport.as_dict()
    segmentation: dict[str, Any] | None = None  # metrics.SegmentationReport.as_dict()
    training: dict[str, Any] = field(default_factory=dict)  # what each `prepare` step reported (epochs, held out)
    top1_changes: dict[str, Any] = field(default_factory=dict)  # queries fixed and broken against the first config

    def summary(self) -> dict[str, Any]:
        summary = {
            "name": self.name,
            "settings": self.settings,
            "search": self.search,
            "prepare": list(self.prepare),
            "index": self.index,
            "retrieval": self.retrieval,
            "latency_ms": self.latency_ms,
            "indexing": self.indexing,
        }
        if self.classification is not None:
            summary["classification"] = self.classification
        if self.segmentation is not None:
            summary["segmentation"] = self.segmentation
        if self.training:
            summary["training"] = self.training
        if self.top1_changes:
            summary["top1_changes"] = self.top1_changes
        return summary


def evaluate(
    dataset: Dataset,
    configs: Sequence[Config],
    work_dir: str | Path,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    top: int = 10,
    latency_queries: int = 0,
    progress: Progress | None = None,
) -> list[ConfigResult]:
    """Evaluate each configuration on the dataset; indexes are built under `work_dir`.

    The metric pass asks each query for the full ranking (k = gallery size), whose metadata lookup
    inflates the timings; with `latency_queries` = N > 0, N evenly spaced queries are searched
    again at k = 10 (models already loaded) and the latency comes from those.
    """
    from lookalike.pipeline import Engine

    check_configs(dataset, configs)
    work_dir = Path(work_dir)
    built: dict[str, tuple[Path, dict[str, float], dict[str, Any]]] = {}
    results = []
    for config in configs:
        key = config.build_key()
        if key not in built:
            built[key] = _build(dataset, config, work_dir / f"index-{len(built)}", progress)
        path, indexing, training = built[key]
        engine = Engine(path, config.settings)
        try:
            outcomes = _run_queries(engine, dataset, config, top, progress)
            timings = _time_queries(engine, dataset, config, latency_queries, progress)
        finally:
            engine.close()
        timings = timings or [o.timings for o in outcomes]
        result = _result(config, dataset, outcomes, timings, indexing, ks)
        result.index, result.training = path.name, training
        results.append(result)
    return results


def check_configs(dataset: Dataset, configs: Sequence[Config]) -> None:
    """Every configuration's needs against the data set, before any work starts: one error listing
    the configurations that cannot run, and why."""
    problems = [f"{config.name}: {why}" for config in configs for why in unmet_needs(dataset, config)]
    if problems:
        raise LookalikeError(
            f"{dataset.name}: {len(problems)} configuration(s) cannot run on this data set; nothing was done:\n  "
            + "\n  ".join(problems)
        )


def unmet_needs(dataset: Dataset, config: Config) -> list[str]:
    """Why `config` cannot run on `dataset` (empty when it can): labels its training steps need."""
    needs = []
    if "train_classifier" in config.prepare:
        categories = {entry.category for entry in dataset.gallery if entry.category}
        if len(categories) < 2:
            needs.append(
                "it trains a category classifier, which needs gallery images of at least 2 categories; "
                f"the gallery has {len(categories)} (fill the manifest's category column)"
            )
    if CARRY_STEP in config.prepare and _products(dataset.training, "item") < 2:
        needs.append(
            f"it fine-tunes a model on the data set's labelled training photos ({CARRY_STEP}), which needs at least "
            f"2 products with 2+ of them; the data set has {len(dataset.training)} training photos (a manifest: "
            "rows of split 'training')"
        )
    for step, what in ((PHOTOS_STEP, "adapts the gallery with"), (ARCHIVE_STEP, "keeps beside the gallery")):
        if step in config.prepare and not dataset.training:
            needs.append(
                f"it {what} unlabelled photos ({step}): the data set's training photos, of which it has none "
                "(a manifest: rows of split 'training'; their product ids are not read)"
            )
    # the queries search with the configuration's own chain (indexes are shared across chains), not the one a
    # prepare step saved with the index: a step whose data no re-ranker of the chain reads measures nothing
    for step, reranker in ((ARCHIVE_STEP, "archive"), (VIEWS_STEP, "views")):
        if step in config.prepare and reranker not in config.settings.rerank.chain:
            needs.append(
                f"its step {step} keeps data beside the index for the {reranker!r} re-ranker, which its rerank.chain "
                f"{list(config.settings.rerank.chain)} lacks: add it (`rerank.chain`), or the queries would not use it"
            )
    head = config.settings.head
    if "train_embedding" in config.prepare and head.kind not in ("pca", "self"):
        products = _products(dataset.gallery, head.label)
        if products < 2:
            needs.append(
                f"it trains an embedding ({head.kind}) on product ids (head.label = {head.label!r}), which needs "
                f"at least 2 products with 2+ gallery images each; the gallery has {products}"
            )
    return needs


def _products(entries: Sequence[Any], label: str) -> int:
    """How many products (items or categories) have 2+ of `entries`."""
    counts: dict[str, int] = {}
    for entry in entries:
        name = entry.item if label == "item" else entry.category
        if name:
            counts[name] = counts.get(name, 0) + 1
    return sum(1 for count in counts.values() if count >= 2)


def _build(
    dataset: Dataset, config: Config, path: Path, progress: Progress | None
) -> tuple[Path, dict[str, float], dict[str, Any]]:
    from lookalike.pipeline import Engine

    def report(done: int, total: int) -> None:
        if progress:
            progress(f"{config.name}: indexing", done, total)

    with Engine.create(path, config.settings, overwrite=True) as engine:
        added = engine.add(list(dataset.gallery), progress=report)
        if added.failed:
            raise LookalikeError(f"{len(added.failed)} gallery images failed, first: {added.failed[0]}")
        started = time.perf_counter()
        training = {}
        for step in config.prepare:
            if step == CARRY_STEP:
                training[step] = carry_model(engine, dataset, config, path.parent, progress)
                continue
            if step == PHOTOS_STEP:
                photos = [entry.path for entry in dataset.training]
                outcome = engine.train_embedding(photos=photos, force=True, on_stage=_stage(progress, config.name))
                training[step] = training_facts("train_embedding", outcome)
                continue
            if step == ARCHIVE_STEP:
                photos = [entry.path for entry in dataset.training]
                training[step] = engine.archive_photos(photos, on_stage=_stage(progress, config.name))
                continue
            if step == VIEWS_STEP:
                training[step] = engine.make_views(on_stage=_stage(progress, config.name))
                continue
            facts = training_facts(step, _prepare_step(engine, config, step)())
            if facts is not None:
                training[step] = facts
        prepared = time.perf_counter() - started
        size = engine.info()["size_bytes"]
    return (
        path,
        {
            "images": float(added.embedded),
            "seconds": added.seconds,
            "images_per_second": added.embedded / added.seconds if added.seconds else 0.0,
            "index_bytes": float(size),
            "prepare_seconds": prepared,  # the `prepare` steps (e.g. training a classifier) after indexing
        },
        training,
    )


def carry_model(
    engine: Any, dataset: Dataset, config: Config, work_dir: Path, progress: Progress | None
) -> dict[str, Any]:
    """The model-carry route: fine-tune a model with product ids on `dataset.training` (once per backbone
    setting, in `work_dir`), then `Engine.use_model` it in the gallery's index. Returns its facts."""
    from lookalike.pipeline import Engine

    settings = config.settings.replace(**{"head.kind": "finetune", "head.label": "item"})
    data = settings.to_dict()
    data["head"].pop("adapt")  # the configurations that carry the same model share it
    key = json.dumps({name: data[name] for name in ("embed", "localize", "head")}, sort_keys=True)
    source = work_dir / f"carry-{hashlib.sha256(key.encode()).hexdigest()[:10]}.index"
    facts: dict[str, Any] = {"source": source.name, "n_training_images": len(dataset.training)}
    if not (source / "settings.json").is_file():
        with Engine.create(source, settings, overwrite=True) as trainer:
            trainer.add(list(dataset.training), progress=_reporter(progress, f"{config.name}: carry indexing"))
            facts["fine_tuning"] = training_facts("train_embedding", trainer.train_embedding(force=True))
    engine.use_model(
        source, on_stage=lambda stage, done, total: _reporter(progress, f"{config.name}: {stage}")(done, total)
    )
    return facts


def _stage(progress: Progress | None, name: str) -> Callable[[str, int, int], None]:
    return lambda stage, done, total: _reporter(progress, f"{name}: {stage}")(done, total)


def _reporter(progress: Progress | None, what: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if progress:
            progress(what, done, total)

    return report


def training_facts(step: str, outcome: Any) -> dict[str, Any] | None:
    """What the report keeps of a prepare step's own validation: an embedding's validation curve,
    chosen epochs and held-out before/after; a classifier's summary."""
    if step == "train_embedding":
        report = outcome.to_dict()
        keep = ("kind", "dim", "n_train_images", "n_train_products", "n_validation_images", "n_validation_products",
                "before", "after", "history", "best_epoch", "refit", "seconds", "current", "verdict",
                "rounds")  # fmt: skip
        return {key: report[key] for key in keep if key in report}
    if step == "train_classifier":
        return dict(outcome.summary())
    return None


def _prepare_step(engine: Any, config: Config, step: str) -> Callable[[], Any]:
    method = getattr(engine, step, None)
    if step.startswith("_") or not callable(method):
        public = sorted(name for name in dir(engine) if not name.startswith("_") and callable(getattr(engine, name)))
        raise SettingsError(
            f"configuration {config.name!r}: prepare step {step!r} is not an Engine method; "
            f"expected one of: {', '.join(public)}"
        )
    if step == "train_embedding":  # a preset is measured as configured, never left out for not helping
        return functools.partial(method, force=True)
    return method


def _run_queries(
    engine: Any, dataset: Dataset, config: Config, top: int, progress: Progress | None
) -> list[QueryOutcome]:
    gallery = zip(dataset.gallery, dataset.gallery_labels(), strict=True)
    label_of = {str(entry.path.resolve()): label for entry, label in gallery}
    outcomes = []
    queries = list(zip(dataset.queries, dataset.query_labels(), strict=True))
    for done, (entry, label) in enumerate(queries, 1):
        result = engine.search(entry.path, k=len(dataset.gallery), **config.search)
        relevance = np.array([label_of.get(hit.path) == label for hit in result], dtype=bool)
        mask = predicted_mask(result)
        outcomes.append(
            QueryOutcome(
                path=str(entry.path),
                label=label,
                category=entry.category,
                relevance=relevance,
                top=[(hit.path, hit.score) for hit in result.hits[:top]],
                timings=dict(result.timings),
                details=dict(result.details),
                mask=None if mask is None else _thumbnail(mask),
                iou=None if mask is None or entry.mask is None else _iou_against(mask, entry.mask),
            )
        )
        if progress:
            progress(f"{config.name}: querying", done, len(queries))
    return outcomes


def predicted_mask(result: Any) -> np.ndarray | None:
    """Hook for the localisation stage: the query's predicted object mask (bool, at the image's
    resolution), read from `SearchResult.localization.mask`; None when localisation did not run.

    Segmentation metrics and the cut-outs in the report's grids come from this one function.
    """
    located = getattr(result, "localization", None)
    if located is None and isinstance(result.details.get("localization"), dict):
        located = result.details["localization"]  # a mask placed in the details also counts
    mask = located.get("mask") if isinstance(located, dict) else getattr(located, "mask", None)
    return None if mask is None else np.asarray(mask).astype(bool)


def _iou_against(mask: np.ndarray, truth_path: Path) -> float:
    """IoU of a predicted mask against a ground-truth mask file (white = object), at the truth's size."""
    from PIL import Image

    with Image.open(truth_path) as image:
        truth = np.asarray(image.convert("L")) > 127
    if mask.shape != truth.shape:
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(truth.shape[::-1], Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 127
    return mask_iou(mask, truth)


def _thumbnail(mask: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(mask.astype(np.uint8) * 255)
    image.thumbnail((MASK_THUMBNAIL, MASK_THUMBNAIL), Image.Resampling.NEAREST)
    return np.asarray(image) > 127


def top1_changes(before: Sequence[QueryOutcome], after: Sequence[QueryOutcome]) -> tuple[list[int], list[int]]:
    """Queries (positions) whose top hit was wrong before and right after ("fixed"), and the reverse
    ("broken"); the two runs must hold the same queries in the same order."""
    if [o.path for o in before] != [o.path for o in after]:
        raise ValueError("top-1 changes compare two runs of the same queries, in the same order")
    right = [(b.first_relevant_rank == 1, a.first_relevant_rank == 1) for b, a in zip(before, after, strict=True)]
    fixed = [i for i, (was, now) in enumerate(right) if not was and now]
    broken = [i for i, (was, now) in enumerate(right) if was and not now]
    return fixed, broken


def count_top1_changes(results: Sequence[ConfigResult]) -> None:
    """Fill each result's `top1_changes` against the first configuration (same queries, same order)."""
    for result in results[1:]:
        if result.queries and results[0].queries:
            fixed, broken = top1_changes(results[0].queries, result.queries)
            result.top1_changes = {"against": results[0].name, "fixed": len(fixed), "broken": len(broken)}


def evenly_spaced(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n), first and last included; all when count >= n."""
    if count >= n:
        return list(range(n))
    if count <= 0:
        return []
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))


def _time_queries(
    engine: Any, dataset: Dataset, config: Config, count: int, progress: Progress | None
) -> list[dict[str, float]]:
    chosen = evenly_spaced(len(dataset.queries), count)
    k = min(LATENCY_K, len(dataset.gallery))
    timings = []
    for done, index in enumerate(chosen, 1):
        timings.append(dict(engine.search(dataset.queries[index].path, k=k, **config.search).timings))
        if progress:
            progress(f"{config.name}: timing", done, len(chosen))
    return timings


def _result(
    config: Config,
    dataset: Dataset,
    outcomes: list[QueryOutcome],
    timings: list[dict[str, float]],
    indexing: dict[str, float],
    ks: Sequence[int],
) -> ConfigResult:
    report = retrieval_report(
        [o.relevance for o in outcomes],
        dataset.n_relevant(),
        ks=ks,
        categories=[o.category or "-" for o in outcomes],
    )
    stages = sorted({stage for t in timings for stage in t})
    latency = {stage: latency_summary([t[stage] for t in timings if stage in t]).as_dict() for stage in stages}
    return ConfigResult(
        config.name,
        config.settings.to_dict(),
        report.as_dict(),
        latency,
        indexing,
        outcomes,
        search=dict(config.search),
        prepare=config.prepare,
        classification=_classification(outcomes),
        segmentation=_segmentation(outcomes),
    )


def _classification(outcomes: list[QueryOutcome]) -> dict[str, Any] | None:
    """Metrics of the predicted categories, over the queries that have both a true and a predicted one."""
    pairs = [(o.category, o.predicted_category) for o in outcomes if o.category and o.predicted_category]
    if not pairs:
        return None
    truth, predicted = zip(*pairs, strict=True)
    return classification_report(list(truth), list(predicted)).as_dict()


def _segmentation(outcomes: list[QueryOutcome]) -> dict[str, Any] | None:
    ious = [o.iou for o in outcomes if o.iou is not None]
    return segmentation_report(ious).as_dict() if ious else None
