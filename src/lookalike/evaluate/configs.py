"""What to evaluate: named data sets and named pipeline configurations (presets).

A preset is a name, settings overrides by dotted key and extra `Engine.search` arguments. Add one
with `register_preset("name", {"section.key": value}, description="...")` or an entry in `PRESETS`.
Settings are checked when a preset is turned into a `Config`: a key that does not exist (yet)
raises `SettingsError` naming the valid keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lookalike.errors import LookalikeError, SettingsError
from lookalike.evaluate.datasets import (
    DATA_ENV_VAR,
    Dataset,
    DatasetNotFound,
    eth80,
    from_manifest,
    grocery_store,
    shared_data_dir,
)
from lookalike.evaluate.harness import ARCHIVE_STEP, CARRY_STEP, PHOTOS_STEP, VIEWS_STEP, Config, evenly_spaced
from lookalike.settings import Settings


@dataclass(frozen=True)
class Preset:
    """A named configuration: settings overrides (dotted keys), extra search arguments, and the
    Engine methods to call once the gallery is indexed (e.g. "train_classifier")."""

    overrides: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    prepare: tuple[str, ...] = ()


_SHAPE_ONLY = {"localize.enabled": True, "localize.features": "whole", "rerank.chain": ["mask_iou"]}


def _fine_tuned(overrides: dict[str, Any], description: str) -> Preset:
    """The backbone fine-tuned on the gallery's product ids, then the category classifier trained on
    the tuned vectors (it predicts each query's category; every category is searched)."""
    return Preset(
        {"head.kind": "finetune", "head.label": "item", **overrides},
        search={"gating": False},
        prepare=("train_embedding", "train_classifier"),
        description=description,
    )


PRESETS: dict[str, Preset] = {
    "baseline": Preset(description="defaults: whole image, EfficientNet-Lite0 + GeM, exact search"),
    "grey": Preset({"embed.grayscale": True}, description="shape only: grey images"),
    "lite2": Preset({"embed.model": "efficientnet-lite2"}, description="the larger EfficientNet-Lite2 backbone"),
    "localize": Preset({"localize.enabled": True}, description="salient object cut out; whole image + cut-out"),
    "iou": Preset(
        {"localize.enabled": True, "rerank.chain": ["mask_iou"]},
        description="localize, then re-rank the top by silhouette IoU",
    ),
    "iou-whole": Preset(
        _SHAPE_ONLY, description="whole-image features only; the mask serves the silhouette IoU re-ranking"
    ),
    "classify": Preset(
        search={"gating": False},
        prepare=("train_classifier",),
        description="category classifier trained on the gallery; predicts each query's category, searches all",
    ),
    "gating": Preset(
        prepare=("train_classifier",),
        description="category classifier trained on the gallery; searches only the predicted categories",
    ),
    "qe": Preset({"rerank.chain": ["qe"]}, description="alpha query expansion re-scores the top"),
    "diffusion": Preset({"rerank.chain": ["diffusion"]}, description="diffusion over the gallery's kNN graph"),
    "sift": Preset({"rerank.chain": ["sift"]}, description="SIFT + RANSAC geometric verification of the top"),
    "rerank-all": Preset(
        {"localize.enabled": True, "rerank.chain": ["diffusion", "mask_iou", "sift"]},
        description="localize, then diffusion, silhouette IoU and SIFT verification in turn",
    ),
    "whiten": Preset(
        {"head.kind": "supervised", "head.label": "item"},
        prepare=("train_embedding",),
        description="supervised whitening (Lw, 256-d) learned from the gallery's product ids",
    ),
    "finetune": _fine_tuned(
        {},
        "the backbone's last stages fine-tuned on the gallery's product ids; the category classifier "
        "trained on those vectors predicts each query's category, all categories searched",
    ),
    "finetune-localize": _fine_tuned({"localize.enabled": True}, "fine-tuned backbone, whole image + cut-out"),
    "finetune-iou": _fine_tuned(
        {"localize.enabled": True, "rerank.chain": ["mask_iou"]},
        "fine-tuned backbone, whole image + cut-out, top re-ranked by silhouette IoU",
    ),
    "finetune-iou-whole": _fine_tuned(
        _SHAPE_ONLY, "fine-tuned backbone, whole image only; the mask serves the silhouette IoU re-ranking"
    ),
    # the catalogue with no labels, and models carried from labelled photos (grocery-store: its train split)
    "self": Preset(
        {"head.kind": "self"},
        prepare=("train_embedding",),
        description="label-free adaptation: the backbone's last stages trained on the gallery's own images, "
        "each its own class, made to look like phone photos (no labels)",
    ),
    "self-qe": Preset(
        {"head.kind": "self", "rerank.chain": ["qe"]},
        prepare=("train_embedding",),
        description="label-free adaptation, then alpha query expansion re-scores the top (no labels at all: "
        "for a photo archive with several photos per product)",
    ),
    "self-photos": Preset(
        {"head.kind": "self", "rerank.chain": ["archive"]},
        prepare=(PHOTOS_STEP,),
        description="label-free adaptation, then pseudo-labels on the data set's training photos used as unlabelled "
        "photos of the products (`train-embedding --kind self --photos DIR`; their labels are not read); the photos "
        "then stay beside the index for the archive re-ranker",
    ),
    "archive": Preset(
        {"rerank.chain": ["archive"]},
        prepare=(ARCHIVE_STEP,),
        description="the data set's training photos kept beside the index as unlabelled photos of the products "
        "(`lookalike archive DIR`; their labels are not read), used by the archive re-ranker; no training",
    ),
    "self-archive": Preset(
        {"head.kind": "self", "rerank.chain": ["archive"]},
        prepare=("train_embedding", ARCHIVE_STEP),
        description="label-free adaptation on the gallery's own images, then the data set's training photos kept "
        "beside the index for the archive re-ranker (no pseudo-label training)",
    ),
    "views": Preset(
        {"rerank.chain": ["views"]},
        prepare=(VIEWS_STEP,),
        description="phone-photo views of each gallery image kept beside the index (`lookalike views`), used by the "
        "views re-ranker; no training",
    ),
    "self-views": Preset(
        {"head.kind": "self", "rerank.chain": ["views"]},
        prepare=("train_embedding", VIEWS_STEP),
        description="label-free adaptation on the gallery's own images, then phone-photo views of each for the "
        "views re-ranker",
    ),
    "self-photos-views": Preset(
        {"head.kind": "self", "rerank.chain": ["views", "archive"]},
        prepare=(PHOTOS_STEP, VIEWS_STEP),
        description="the whole label-free route: adaptation, pseudo-labels on the data set's training photos (kept "
        "as the index's photo archive, labels unread), phone-photo views of each gallery image; the views and "
        "archive re-rankers",
    ),
    "carry": Preset(
        prepare=(CARRY_STEP,),
        description="model carry: the backbone fine-tuned with product ids on the data set's labelled training "
        "photos, its model used by the gallery's index (`lookalike model use`)",
    ),
    "carry-self": Preset(
        {"head.kind": "self", "head.adapt.start": "current"},
        prepare=(CARRY_STEP, "train_embedding"),
        description="both routes: the carried model, then adapted label-free on the gallery's own images",
    ),
}


def register_preset(
    name: str,
    overrides: dict[str, Any] | None = None,
    *,
    search: dict[str, Any] | None = None,
    description: str = "",
    prepare: Sequence[str] = (),
) -> None:
    """Add (or replace) a named preset."""
    PRESETS[name] = Preset(dict(overrides or {}), dict(search or {}), description, tuple(prepare))


def available_presets() -> list[str]:
    return sorted(PRESETS)


def create_config(name: str, base: Settings | None = None) -> Config:
    """The `Config` of a registered preset; `SettingsError` if its overrides name an unknown setting."""
    if name not in PRESETS:
        valid = ", ".join(available_presets())
        raise LookalikeError(f"unknown configuration preset {name!r}; expected one of: {valid}")
    preset = PRESETS[name]
    return Config(name, _settings(name, preset.overrides, base), dict(preset.search), preset.prepare)


def _settings(name: str, overrides: dict[str, Any], base: Settings | None) -> Settings:
    settings = base or Settings()
    try:
        return settings.replace(**overrides) if overrides else settings
    except SettingsError as exc:
        raise SettingsError(f"configuration {name!r}: {exc}") from None


def configs_from_file(path: str | Path) -> list[Config]:
    """Configurations from JSON: {"name": {"section.key": value, ..., "search": {...}}, ...}.

    Each entry holds settings overrides by dotted key (applied to the defaults) and, optionally,
    "search": extra keyword arguments of `Engine.search`, and "prepare": a list of Engine methods
    called once the gallery is indexed.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read configurations ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        expected = '{"name": {"section.key": value, ...}, ...}'
        raise SettingsError(f"{path}: expected {expected}; got {json.dumps(data)[:80]}")
    configs = []
    for name, entry in data.items():
        overrides = {key: value for key, value in entry.items() if key not in ("search", "prepare")}
        search, prepare = dict(entry.get("search") or {}), tuple(entry.get("prepare") or ())
        configs.append(Config(name, _settings(name, overrides, None), search, prepare))
    return configs


def resolve_configs(configs: Sequence[str | Config] = (), config_file: str | Path | None = None) -> list[Config]:
    """Configurations in order: presets by name (or `Config`s as given), then those of
    `config_file`; just "baseline" when there are none. Names must be distinct."""
    resolved = [config if isinstance(config, Config) else create_config(config) for config in configs]
    if config_file is not None:
        resolved += configs_from_file(config_file)
    if not resolved:
        resolved = [create_config("baseline")]
    seen: set[str] = set()
    for config in resolved:
        if config.name in seen:
            raise SettingsError(f"configuration {config.name!r} is given twice; names must be distinct")
        seen.add(config.name)
    return resolved


# ---------------------------------------------------------------------------------------------
# Data sets by name
# ---------------------------------------------------------------------------------------------

DATASETS: dict[str, tuple[str, Callable[[Path], Dataset]]] = {
    "grocery-photo2photo": ("grocery-store", lambda root: grocery_store(root, protocol="photo2photo")),
    "grocery-photo2catalog": ("grocery-store", lambda root: grocery_store(root, protocol="photo2catalog")),
    "eth80": ("eth80-dev", eth80),
}


def available_datasets() -> list[str]:
    return sorted(DATASETS)


def load_dataset(
    spec: str | Path, data_root: str | Path | None = None, relevance: Literal["item", "category"] | None = None
) -> Dataset:
    """A data set by name (see `available_datasets`; its folder under `data_root`, default the
    shared data folder) or from a CSV manifest path. `relevance` ("item": same product or object;
    "category": same category) overrides the data set's own; a manifest's default is "item"."""
    dataset = _load(spec, data_root, relevance)
    if relevance is None or relevance == dataset.relevance:
        return dataset
    return replace(dataset, relevance=relevance)  # checked again: every entry needs the label


def _load(spec: str | Path, data_root: str | Path | None, relevance: Literal["item", "category"] | None) -> Dataset:
    if str(spec) in DATASETS:
        folder, loader = DATASETS[str(spec)]
        root = (Path(data_root) if data_root else shared_data_dir()) / folder
        if not root.is_dir():
            raise DatasetNotFound(
                f"data set {str(spec)!r} needs {root}, which is not a folder; pass --data-root "
                f"(the folder holding {folder}/) or set {DATA_ENV_VAR}"
            )
        return loader(root)
    path = Path(spec)
    if path.suffix.lower() == ".csv" or path.is_file():
        return from_manifest(path, relevance=relevance or "item")
    raise LookalikeError(
        f"unknown data set {str(spec)!r}; expected one of: {', '.join(available_datasets())}, "
        "or the path of a CSV manifest (path,item,category,split[,mask])"
    )


def subsample(dataset: Dataset, limit: int | None) -> Dataset:
    """The data set with only `limit` evenly spaced queries (all of them when `limit` is None or 0)."""
    if not limit or limit >= len(dataset.queries):
        return dataset
    if limit < 0:
        raise LookalikeError(f"limit must be >= 0 (0 = every query), got {limit}")
    queries = tuple(dataset.queries[i] for i in evenly_spaced(len(dataset.queries), limit))
    return replace(dataset, queries=queries)
