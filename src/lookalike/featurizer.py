"""From image to vector: one object owns every model between a decoded photo and its stored features.

A `Featurizer` chains the localiser (when on), the embedder with its fine-tuned tail (`<index>/backbone/`),
the learned transform (`<index>/head/`) and the re-rankers that store per-image data (SIFT keypoints).
It alone decides what is embedded, from `localize.enabled` and `localize.features`:

- "whole": the whole image (localisation off; or on, with the mask feeding the silhouette re-ranker only);
- "object": the cut-out object;
- "both": whole image and cut-out, concatenated and renormalised, so an inner product is the mean
  of the two cosine similarities.

Its fingerprint is a JSON object computed once: which embedder weights, tuning, localiser, feature
mode and transform made a vector. An index records it and refuses vectors from any other. Training
an embedding makes a new featurizer (`with_tuning`, `with_transform`) that the engine swaps in once
every vector is re-embedded; nothing here writes to the index's database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from lookalike._timing import Timer
from lookalike.embed.train import RAW_BLOB  # the backbone vector, kept beside a transformed one
from lookalike.settings import Settings

FeatureMode = Literal["whole", "object", "both"]
SILHOUETTE_BLOB = "silhouette"
FILE_BATCH = 32  # images decoded at once when re-embedding files


@dataclass
class Features:
    """The features of one image: its vector, the blobs stored with it, and what localisation found."""

    vector: np.ndarray
    blobs: dict[str, bytes] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    localization: Any = None  # lookalike.localize.Localization, when localisation is on


class Featurizer:
    """Image -> vector and stored per-image data, identical for the catalogue and for queries.

    Models load lazily, once. `describers` are the re-rankers whose `needs.describes` is set: they
    add their blobs (e.g. SIFT keypoints) to each image's features.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tuning: Any = None,  # lookalike.embed.finetune.BackboneTuning
        transform: Any = None,  # a fitted lookalike.embed.transform.VectorTransform
        describers: Sequence[Any] = (),
        localizer: Any = None,
        embedder: Any = None,
        embedder_fingerprint: str | None = None,
    ) -> None:
        self.settings = settings
        self.tuning = tuning
        self.transform = transform
        self.describers = [d for d in describers if d.needs.describes]
        self._localizer = localizer
        self._embedder = embedder
        self._embedder_fingerprint = embedder_fingerprint  # the pretrained weights', before any tuning
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def load(cls, folder: Path, settings: Settings, describers: Sequence[Any] = ()) -> Featurizer:
        """The featurizer of an index folder: its settings' models, its `backbone/` and `head/`."""
        from lookalike.embed.finetune import load_index_tuning
        from lookalike.embed.train import load_index_transform

        return cls(
            settings, tuning=load_index_tuning(folder), transform=load_index_transform(folder), describers=describers
        )

    def save(self, folder: Path, previous: Featurizer | None = None) -> None:
        """Write the learned parts into an index folder (`backbone/`, `head/`), removing absent ones;
        parts that `previous` (the featurizer that folder holds) shares with this one are left as they are."""
        from lookalike.embed.finetune import install_tuning
        from lookalike.embed.train import install_head

        if previous is None or previous.transform is not self.transform:
            install_head(folder, self.transform)
        if previous is None or previous.tuning is not self.tuning:
            install_tuning(folder, self.tuning)

    # -- what it makes
    @property
    def mode(self) -> FeatureMode:
        return self.settings.localize.features if self.settings.localize.enabled else "whole"

    @property
    def localizes(self) -> bool:
        """Localisation runs (for the cut-out, or only for the silhouette in mode "whole")."""
        return self.settings.localize.enabled

    @property
    def raw_dim(self) -> int:
        """Width of the backbone's vector, before any learned transform."""
        return self.embedder.dim * (2 if self.mode == "both" else 1)

    @property
    def dim(self) -> int:
        return self.raw_dim if self.transform is None else int(self.transform.dim_)

    def fingerprint(self) -> dict[str, Any]:
        """What makes this featurizer's vectors, as a JSON object: vectors of unequal fingerprints never mix."""
        if self._fingerprint is None:
            transform = self.transform
            self._fingerprint = {
                "embedder": self.embedder_fingerprint(),
                "tuning": None if self.tuning is None else self.tuning.fingerprint(),
                "localizer": self.localizer.fingerprint() if self.localizes else None,
                "features": self.mode,
                "transform": None
                if transform is None
                else {"kind": transform.kind, "fingerprint": transform.fingerprint()},
            }
        return self._fingerprint

    def matches(self, stored: Any) -> bool:
        """Whether vectors recorded with fingerprint `stored` (this format or an older index's string) are ours."""
        return self.fingerprint() == (legacy_fingerprint(stored) if isinstance(stored, str) else stored)

    # -- models
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from lookalike.embed import create_embedder

            embedder = create_embedder(self.settings.embed)
            self._embedder_fingerprint = embedder.fingerprint()
            if self.tuning is not None:
                embedder.set_tuning(self.tuning)
            self._embedder = embedder
        return self._embedder

    def embedder_fingerprint(self) -> str:
        """The pretrained embedder's fingerprint (weights, preprocessing), without the tuning."""
        if self._embedder_fingerprint is None:
            self._embedder = None  # an embedder handed in without its pretrained fingerprint: make our own
            return self.embedder and str(self._embedder_fingerprint)
        return self._embedder_fingerprint

    @property
    def localizer(self) -> Any:
        if self._localizer is None and self.localizes:
            from lookalike.localize import Localizer

            self._localizer = Localizer(self.settings.localize)
        return self._localizer

    def pristine_embedder(self) -> Any:
        """A new embedder with the pretrained weights: where fine-tuning starts."""
        from lookalike.embed import create_embedder

        return create_embedder(self.settings.embed)

    # -- new featurizers (training)
    def with_tuning(self, tuning: Any) -> Featurizer:
        """The same localiser with a fine-tuned (or, with None, the pretrained) backbone and no transform."""
        return Featurizer(self.settings, tuning=tuning, describers=self.describers, localizer=self._localizer)

    def with_transform(self, transform: Any) -> Featurizer:
        """The same models with another learned transform (None: the backbone's vectors)."""
        return Featurizer(
            self.settings,
            tuning=self.tuning,
            transform=transform,
            describers=self.describers,
            localizer=self._localizer,
            embedder=self._embedder,
            embedder_fingerprint=self._embedder_fingerprint,
        )

    # -- features
    def describe(
        self, images: Sequence[Image.Image], timer: Timer | None = None, describers: Sequence[Any] | None = None
    ) -> list[Features]:
        """The features of decoded images; `describers` (default: this featurizer's) add their blobs."""
        timer = timer or Timer()
        located = []
        if self.localizes:
            with timer.stage("localize"):
                located = [self.localizer.localize(image) for image in images]
        with timer.stage("embed"):
            raw = self.raw_vectors(images, located)
            vectors = raw if self.transform is None else self.transform.transform(raw)
        features = [Features(vector) for vector in vectors]
        if self.transform is not None:  # kept so that a new transform never needs the image again
            for item, raw_vector in zip(features, raw, strict=True):
                item.blobs[RAW_BLOB] = np.ascontiguousarray(raw_vector, dtype=np.float32).tobytes()
        for item, found in zip(features, located, strict=False):
            item.blobs[SILHOUETTE_BLOB] = found.silhouette
            item.details.update(localization_details(found))
            item.localization = found
        for describer in self.describers if describers is None else describers:
            with timer.stage(f"{describer.name}_features"):
                for image, item in zip(images, features, strict=True):
                    item.blobs.update(describer.describe(image, item.localization))
        return features

    def raw_vectors(self, images: Sequence[Image.Image], located: Sequence[Any] = ()) -> np.ndarray:
        """Backbone vectors by the feature mode; `located` holds each image's localisation when it is on."""
        from lookalike.embed import l2_normalize

        if self.mode == "whole":
            return self.embedder.embed(images)
        cutouts = [found.cutout for found in located]
        if len(cutouts) != len(images):
            raise ValueError(f"feature mode {self.mode!r} needs one localisation per image")
        if self.mode == "object":
            return self.embedder.embed(cutouts)
        both = self.embedder.embed(list(images) + cutouts)
        return l2_normalize(np.hstack([both[: len(images)], both[len(images) :]]))

    def embed_files(self, paths: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Final vectors of image files, a batch at a time; an unreadable file raises `ImageError` naming it."""
        from lookalike.io.images import load_image

        chunks = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(paths), FILE_BATCH):
            images = [load_image(path) for path in paths[start : start + FILE_BATCH]]
            located = [self.localizer.localize(image) for image in images] if self.mode != "whole" else []
            raw = self.raw_vectors(images, located)
            chunks.append(raw if self.transform is None else self.transform.transform(raw))
            if progress:
                progress(min(start + FILE_BATCH, len(paths)), len(paths))
        return np.concatenate(chunks)


def localization_details(found: Any) -> dict[str, Any]:
    return {
        "localization": {
            "found": found.found,
            "reason": found.reason,
            "box": [int(v) for v in found.box],
            "object_fraction": float(found.mask.mean()),
        }
    }


# -- fingerprints: comparing and explaining


def legacy_fingerprint(text: str) -> dict[str, Any]:
    """An index made before fingerprints were JSON recorded one string:
    "<embedder>[|tuned=<t>][||<localizer>|features=<f>][||head=<kind>:<fingerprint>]"; read it as today's object."""
    body, _, head = text.partition("||head=")
    embedder_part, _, localizer_part = body.partition("||")
    embedder, _, tuning = embedder_part.partition("|tuned=")
    localizer, _, features = localizer_part.rpartition("|features=")
    kind, _, transform = head.partition(":")
    return {
        "embedder": embedder,
        "tuning": tuning or None,
        "localizer": localizer or None,
        "features": features if localizer_part else "whole",
        "transform": {"kind": kind, "fingerprint": transform} if head else None,
    }


def mismatch_message(index: Path, stored: Any, current: dict[str, Any]) -> str:
    """Why an index's vectors and today's featurizer do not mix, and what to do about it."""
    made = legacy_fingerprint(stored) if isinstance(stored, str) else dict(stored)
    if made.get("embedder") != current["embedder"]:
        return (
            f"{index}: built with embedder {made.get('embedder')!r} but the installed model is "
            f"{current['embedder']!r}; its vectors cannot be compared: rebuild the index (CLI: --rebuild)"
        )
    if made.get("tuning") != current["tuning"]:
        return (
            f"{index}: its vectors were made with the fine-tuned backbone {made.get('tuning') or 'none'}, but "
            f"{index / 'backbone'} holds {current['tuning'] or 'none'}; vectors of different backbones cannot be "
            "compared: run `lookalike train-embedding --kind finetune` again (or restore the backbone folder "
            "that built the index)"
        )
    if made.get("transform") != current["transform"]:
        return (
            f"{index}: its vectors were made with the embedding head {_head_name(made.get('transform'))}, but "
            f"{index / 'head'} holds {_head_name(current['transform'])}; vectors of different heads cannot be "
            "compared: run `lookalike train-embedding` again (or restore the head folder that built the index)"
        )
    return (
        f"{index}: its vectors were made with localiser {made.get('localizer')!r} and features "
        f"{made.get('features')!r}, the settings now give {current['localizer']!r} and {current['features']!r}; "
        "rebuild the index (CLI: --rebuild)"
    )


def describe_fingerprint(fingerprint: Any) -> str:
    """One line: what made an index's vectors, from its recorded fingerprint."""
    if not isinstance(fingerprint, dict):
        return str(fingerprint)
    parts = [str(fingerprint["embedder"])]
    if fingerprint.get("tuning"):
        parts.append(f"fine-tuned backbone {fingerprint['tuning']}")
    if fingerprint.get("localizer"):
        parts.append(f"localised ({fingerprint['features']} features)")
    if fingerprint.get("transform"):
        parts.append(f"{fingerprint['transform']['kind']} transform {fingerprint['transform']['fingerprint']}")
    return "; ".join(parts)


def _head_name(transform: dict[str, Any] | None) -> str:
    return "no head" if not transform else f"{transform['kind']}:{transform['fingerprint']}"
