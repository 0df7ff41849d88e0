"""Typed, frozen settings for every stage, saved as JSON inside each index.

One `Settings` object is passed down the pipeline; an index stores the settings that built it,
so reopening it restores the same models and options.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from lookalike.errors import SettingsError

SETTINGS_VERSION = 1


@dataclass(frozen=True)
class EmbedSettings:
    """Global image features: backbone, preprocessing, pooling."""

    model: str = "efficientnet-lite0"
    weights: str | None = None  # a local weights file; None = the installed package's weights
    input_size: int = 224
    grayscale: bool = False  # "shape only": grey expanded back to three channels
    gem_p: float = 3.0
    batch_size: int = 4  # 1-4 images per batch is fastest per image on a 2-core CPU

    def validate(self) -> None:
        _check(self.input_size >= 32, f"embed.input_size must be >= 32, got {self.input_size}")
        _check(self.gem_p >= 1.0, f"embed.gem_p must be >= 1 (1 = average pooling), got {self.gem_p}")
        _check(self.batch_size >= 1, f"embed.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class LocalizeSettings:
    """Salient-object localisation: segmentation, matting, cut-out, silhouette."""

    enabled: bool = False
    model: str = "u2netp"
    model_path: str | None = None  # an ONNX segmenter from a local path
    input_size: int = 192  # u2netp at 192 is as good as 320 on eth80-dev, 2.5x faster (benchmarks/segmentation.py)
    quantize: bool = False  # int8 (static, cached under ~/.cache/lookalike): ~1.4x faster but IoU drops ~0.05
    threads: int | None = None  # onnxruntime intra-op threads; None = onnxruntime's default
    threshold: float = 0.5  # saliency above this is object
    min_object_fraction: float = 0.01  # smaller masks mean "no salient object": use the whole image
    keep_main_object: bool = True  # largest component plus parts attached to it
    attach_fraction: float = 0.1  # components at least this fraction of the main one are kept...
    attach_distance: float = 0.05  # ...when this close to it (fraction of sqrt(main area)); others dropped
    matting: bool = False
    matting_size: int = 256  # matting runs on the image downscaled to at most this many pixels a side
    trimap_fraction: float = 0.04  # half-width of the trimap's unknown band, as a fraction of sqrt(area)
    margin: float = 0.05  # crop margin, as a fraction of the object's box size
    silhouette_size: int = 64
    features: Literal["object", "both"] = "both"  # embed the cut-out, or whole image + cut-out

    def validate(self) -> None:
        _check(self.input_size >= 64, f"localize.input_size must be >= 64, got {self.input_size}")
        _check(self.threads is None or self.threads >= 1, f"localize.threads must be >= 1 or None, got {self.threads}")
        _check(0.0 < self.threshold < 1.0, f"localize.threshold must be in (0, 1), got {self.threshold}")
        fraction = self.min_object_fraction
        _check(0.0 <= fraction < 1.0, f"localize.min_object_fraction must be in [0, 1), got {fraction}")
        attach = self.attach_fraction
        _check(0.0 <= attach <= 1.0, f"localize.attach_fraction must be in [0, 1], got {attach}")
        _check(self.attach_distance >= 0.0, f"localize.attach_distance must be >= 0, got {self.attach_distance}")
        _check(self.matting_size >= 32, f"localize.matting_size must be >= 32, got {self.matting_size}")
        band = self.trimap_fraction
        _check(0.0 < band < 0.5, f"localize.trimap_fraction must be in (0, 0.5), got {band}")
        _check(self.margin >= 0.0, f"localize.margin must be >= 0, got {self.margin}")
        size = self.silhouette_size
        _check(size >= 8 and size % 8 == 0, f"localize.silhouette_size must be a positive multiple of 8, got {size}")
        features = self.features
        _check(features in ("object", "both"), f"localize.features must be 'object' or 'both', got {features!r}")
        _check(
            self.model != "onnx" or bool(self.model_path),
            "localize.model 'onnx' needs localize.model_path: the path of a .onnx segmenter",
        )


@dataclass(frozen=True)
class IndexSettings:
    """Vector index kind and partitioning."""

    kind: str = "flat"
    partition_by_category: bool = True
    category_depth: int = 1  # category = the first N folders below the catalogue root

    def validate(self) -> None:
        _check(self.category_depth >= 0, f"index.category_depth must be >= 0, got {self.category_depth}")


@dataclass(frozen=True)
class RerankSettings:
    """Re-rankers applied to the top of the vector search, in order."""

    chain: tuple[str, ...] = ()
    mask_iou_top_n: int = 50
    mask_iou_weight: float = 0.2

    def validate(self) -> None:
        _check(self.mask_iou_top_n >= 1, f"rerank.mask_iou_top_n must be >= 1, got {self.mask_iou_top_n}")
        _check(0.0 <= self.mask_iou_weight <= 1.0, "rerank.mask_iou_weight must be in [0, 1]")


@dataclass(frozen=True)
class ClassifySettings:
    """Category classifier (trained on the index's stored vectors) and gated search."""

    kind: str = "mlp"  # "mlp": the paper's head on frozen features; "logreg": the linear baseline
    gating: bool = True  # with a trained classifier, search only the predicted category's partition
    threshold: float = 0.5  # top probability below this: search more categories (fallback)
    min_margin: float = 0.1  # top minus second probability below this: search more categories
    fallback: Literal["top_k", "all"] = "top_k"
    fallback_k: int = 3  # categories searched on fallback "top_k"
    validation_fraction: float = 0.2  # held out (stratified, seeded) for early stopping and the report
    seed: int = 0
    hidden: tuple[int, ...] = (1024, 512)  # Dense 1024 ReLU -> Dropout -> Dense 512 ReLU -> softmax
    dropout: float = 0.5
    learning_rate: float = 1e-3  # SGD, Nesterov momentum
    momentum: float = 0.9
    batch_size: int = 32
    max_epochs: int = 300
    plateau_patience: int = 5  # epochs without a better validation loss before the learning rate is cut
    plateau_factor: float = 0.5
    early_stopping_patience: int = 15  # epochs without a better validation loss before training stops
    standardize: bool = True  # inputs scaled to zero mean, unit variance (learned in fit)
    logreg_c: float = 1.0  # inverse L2 strength of the logistic-regression baseline
    augment_copies: int = 0  # augmented copies of each training image embedded for training (0 = off)
    augment_rotation: float = 15.0  # degrees, uniform in +-
    augment_zoom: float = 0.15  # zoom in by up to this fraction (crop, then resize back)
    augment_flip: bool = True  # horizontal flip with probability 0.5

    def validate(self) -> None:
        _check(0.0 <= self.threshold <= 1.0, f"classify.threshold must be in [0, 1], got {self.threshold}")
        _check(0.0 <= self.min_margin <= 1.0, f"classify.min_margin must be in [0, 1], got {self.min_margin}")
        _check(self.fallback in ("top_k", "all"), f"classify.fallback must be 'top_k' or 'all', got {self.fallback!r}")
        _check(self.fallback_k >= 1, f"classify.fallback_k must be >= 1, got {self.fallback_k}")
        fraction = self.validation_fraction
        _check(0.0 <= fraction < 1.0, f"classify.validation_fraction must be in [0, 1), got {fraction}")
        _check(all(h >= 1 for h in self.hidden), f"classify.hidden must hold sizes >= 1, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, f"classify.dropout must be in [0, 1), got {self.dropout}")
        _check(self.learning_rate > 0.0, f"classify.learning_rate must be > 0, got {self.learning_rate}")
        _check(0.0 <= self.momentum < 1.0, f"classify.momentum must be in [0, 1), got {self.momentum}")
        _check(self.batch_size >= 1, f"classify.batch_size must be >= 1, got {self.batch_size}")
        _check(self.max_epochs >= 1, f"classify.max_epochs must be >= 1, got {self.max_epochs}")
        _check(0.0 < self.plateau_factor < 1.0, f"classify.plateau_factor must be in (0, 1), got {self.plateau_factor}")
        _check(self.plateau_patience >= 0, f"classify.plateau_patience must be >= 0, got {self.plateau_patience}")
        patience = self.early_stopping_patience
        _check(patience >= 1, f"classify.early_stopping_patience must be >= 1, got {patience}")
        _check(self.logreg_c > 0.0, f"classify.logreg_c must be > 0, got {self.logreg_c}")
        _check(self.augment_copies >= 0, f"classify.augment_copies must be >= 0, got {self.augment_copies}")
        _check(0.0 <= self.augment_zoom < 1.0, f"classify.augment_zoom must be in [0, 1), got {self.augment_zoom}")


@dataclass(frozen=True)
class Settings:
    """Everything that decides how an index is built and searched."""

    embed: EmbedSettings = field(default_factory=EmbedSettings)
    localize: LocalizeSettings = field(default_factory=LocalizeSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)
    classify: ClassifySettings = field(default_factory=ClassifySettings)

    def __post_init__(self) -> None:
        for section in fields(self):
            getattr(self, section.name).validate()
        if "mask_iou" in self.rerank.chain and not self.localize.enabled:
            raise SettingsError(
                "rerank.chain has 'mask_iou', which compares object silhouettes, but localize.enabled is False: "
                "turn localisation on (--localize) or drop mask_iou from the chain"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"version": SETTINGS_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        data = dict(data)
        version = data.pop("version", SETTINGS_VERSION)
        if version != SETTINGS_VERSION:
            raise SettingsError(f"settings version {version} is not supported (expected {SETTINGS_VERSION})")
        return _build(cls, data, "settings")

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> Settings:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def replace(self, **dotted: Any) -> Settings:
        """A copy with some values changed, by dotted name: `replace(**{"embed.model": "x"})`."""
        data = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            if section not in data or not isinstance(data[section], dict) or name not in data[section]:
                raise SettingsError(f"unknown setting {key!r}; expected one of: {', '.join(_all_keys(self))}")
            data[section][name] = value
        return Settings.from_dict(data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SettingsError(message)


def _all_keys(settings: Settings) -> list[str]:
    return [f"{s.name}.{f.name}" for s in fields(settings) for f in fields(getattr(settings, s.name))]


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(f"unknown key(s) {unknown} in {where}; expected some of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be an object, got {value!r}")
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple(value)
    if origin in (typing.Union, types.UnionType) and value is None:
        return None
    simple = hint if origin is None else next((a for a in typing.get_args(hint) if a in (int, float, str, bool)), None)
    if simple is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if simple in (int, float, str, bool) and not isinstance(value, simple):
        raise SettingsError(f"{where} must be of type {simple.__name__}, got {value!r}")
    return value
