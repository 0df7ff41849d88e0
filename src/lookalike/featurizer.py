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

The embedder runs where `embed.runtime` says: "onnx" (the default) runs the ONNX export saved in
`<index>/onnx/` with onnxruntime, so a search never imports torch; a featurizer that may write
(`allow_export`: creating an index, training, any write) exports the torch embedder first when the
folder has no export for these weights, and one that only reads falls back to torch with a note
(`runtime_note`). With localisation on, the whole image is embedded on the featurizer's small
thread pool while the segmenter runs (both runtimes release the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from lookalike._timing import Timer
from lookalike.embed.train import RAW_BLOB  # the backbone vector, kept beside a transformed one
from lookalike.errors import MissingDependency
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
        export: Any = None,  # lookalike.embed.runtime.OnnxExport: the embedder exported to ONNX
        export_note: str | None = None,  # why there is no export, when there is none
        may_export: bool = False,
    ) -> None:
        self.settings = settings
        self.tuning = tuning
        self.transform = transform
        self.describers = [d for d in describers if d.needs.describes]
        self.export = export
        self.may_export = may_export  # export the torch embedder when there is no usable export
        self.concurrent = True  # embed the whole image while the segmenter runs (A/B: benchmarks/latency.py)
        self.runtime_note: str | None = None  # why the embedder runs on torch although embed.runtime is "onnx"
        self._export_note = export_note
        self._localizer = localizer
        self._embedder = embedder
        self._embedder_fingerprint = embedder_fingerprint  # the pretrained weights', before any tuning
        self._fingerprint: dict[str, Any] | None = None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, folder: Path, settings: Settings, describers: Sequence[Any] = ()) -> Featurizer:
        """The featurizer of an index folder: its settings' models, its `backbone/`, `head/` and `onnx/`."""
        from lookalike.embed.finetune import load_index_tuning
        from lookalike.embed.runtime import load_index_export
        from lookalike.embed.train import load_index_transform

        export, note = load_index_export(folder) if settings.embed.runtime == "onnx" else (None, None)
        return cls(
            settings,
            tuning=load_index_tuning(folder),
            transform=load_index_transform(folder),
            describers=describers,
            export=export,
            export_note=note,
        )

    def save(self, folder: Path, previous: Featurizer | None = None) -> None:
        """Write the learned parts into an index folder (`backbone/`, `head/`, `onnx/`), removing absent
        ones; parts that `previous` (the featurizer that folder holds) shares with this one are left as they are."""
        from lookalike.embed.finetune import install_tuning
        from lookalike.embed.runtime import install_export
        from lookalike.embed.train import install_head

        if previous is None or previous.transform is not self.transform:
            install_head(folder, self.transform)
        if previous is None or previous.tuning is not self.tuning:
            install_tuning(folder, self.tuning)
        self.embedder  # noqa: B018  (resolves the runtime: exports now when it may and should)
        if previous is None or previous.export is not self.export:
            install_export(folder, self.export)

    def allow_export(self) -> Any:
        """Let this featurizer export its embedder to ONNX (it belongs to a writer); returns a new export
        made now, for the caller to save (`lookalike.embed.runtime.install_export`), or None."""
        self.may_export = True
        before = self.export
        if self._embedder is not None and getattr(self._embedder, "runtime", None) == "torch":
            self._embedder = self._on_runtime(self._embedder)  # the torch embedder chosen when it could not export
        self.embedder  # noqa: B018
        return self.export if self.export is not before else None

    @property
    def loaded(self) -> bool:
        """Whether every model a query needs is loaded (the first query's `load` stage otherwise)."""
        embedder_ready = self._embedder is not None and getattr(self._embedder, "loaded", True)
        segmenter = None if self._localizer is None else self._localizer._segmenter
        return embedder_ready and (not self.localizes or getattr(segmenter, "loaded", segmenter is not None))

    def load_models(self) -> None:
        """Load every model a query needs now: the embedder's network or session, the segmenter's."""
        embedder = self.embedder
        if hasattr(embedder, "load"):
            embedder.load()
        if self.localizes:
            segmenter = self.localizer.segmenter
            if hasattr(segmenter, "load"):
                segmenter.load()

    @property
    def runtime(self) -> str:
        """Where the embedder runs: "onnx" (onnxruntime) or "torch"."""
        return str(getattr(self.embedder, "runtime", "onnx"))

    def close(self) -> None:
        """Stop the thread pool (models stay loaded)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

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
            self._embedder = self._on_runtime(embedder)
        return self._embedder

    def _on_runtime(self, embedder: Any) -> Any:
        """The embedder to run: the ONNX export of `embedder` (a torch one) on onnxruntime when
        `embed.runtime` is "onnx" and there is, or may be made, an export of these weights; else `embedder`."""
        if self.settings.embed.runtime != "onnx" or not hasattr(embedder, "network_module"):
            return embedder  # torch asked for, or an embedder that runs on onnxruntime already (model "onnx")
        from lookalike.embed.runtime import ExportError, OrtEmbedder, export_embedder

        source = embedder.fingerprint()
        if self.export is not None and self.export.source != source:
            self._export_note = (
                f"the ONNX export was made from embedder {self.export.source}, not from {source} (this index's)"
            )
            self.export = None
        if self.export is None and self.may_export:
            try:
                self.export = export_embedder(embedder)
                self._export_note = None
            except (ExportError, MissingDependency) as exc:
                self._export_note = str(exc)
        if self.export is None:
            fix = "" if self.may_export else "; any write (or `lookalike check --repair`) exports it"
            self.runtime_note = f"the embedder runs on torch: {self._export_note}{fix}"
            return embedder
        self.runtime_note = None
        return OrtEmbedder(self.export, self.settings.embed, threads=self.settings.embed.threads)

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
        """The same localiser with a fine-tuned (or, with None, the pretrained) backbone and no transform;
        it belongs to a writer, so it exports its embedder to ONNX on first use (embed.runtime "onnx")."""
        return Featurizer(
            self.settings, tuning=tuning, describers=self.describers, localizer=self._localizer, may_export=True
        )

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
            export=self.export,
            export_note=self._export_note,
            may_export=self.may_export,
        )

    # -- features
    def describe(
        self, images: Sequence[Image.Image], timer: Timer | None = None, describers: Sequence[Any] | None = None
    ) -> list[Features]:
        """The features of decoded images; `describers` (default: this featurizer's) add their blobs."""
        timer = timer or Timer()
        if not self.loaded:
            with timer.stage("load"):
                self.load_models()
        located, raw = self._localize_and_embed(images, timer, localize=self.localizes)
        vectors = raw
        if self.transform is not None:
            with timer.stage("transform"):
                vectors = self.transform.transform(raw)
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

    def _localize_and_embed(
        self, images: Sequence[Image.Image], timer: Timer, *, localize: bool
    ) -> tuple[list[Any], np.ndarray]:
        """(localisations, backbone vectors by the feature mode). The whole images are embedded on the
        thread pool while the segmenter runs, when the mode needs both."""
        if not localize and self.mode == "whole":
            with timer.stage("embed"):
                return [], self.embedder.embed(images)
        whole: Future[np.ndarray] | None = None
        if self.mode != "object" and self.concurrent:
            whole = self._thread_pool().submit(self._timed_embed, images, timer)
        try:
            with timer.stage("localize"):
                located = [self.localizer.localize(image) for image in images]
        finally:
            whole_vectors = whole.result() if whole is not None else None
        if self.mode != "object" and whole_vectors is None:
            whole_vectors = self._timed_embed(images, timer)
        if self.mode == "whole":
            return located, whole_vectors
        cutouts = self._timed_embed([found.cutout for found in located], timer)
        if self.mode == "object":
            return located, cutouts
        from lookalike.embed import l2_normalize

        return located, l2_normalize(np.hstack([whole_vectors, cutouts]))

    def _timed_embed(self, images: Sequence[Image.Image], timer: Timer) -> np.ndarray:
        with timer.stage("embed"):
            return self.embedder.embed(images)

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            workers = min(8, (os.cpu_count() or 1) + 2)  # one per query being localised at once
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-embed")
        return self._pool

    def embed_files(self, paths: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Final vectors of image files, a batch at a time; an unreadable file raises `ImageError` naming it."""
        raw = self.raw_files(paths, progress)
        return raw if self.transform is None else self.transform.transform(raw)

    def raw_files(self, paths: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Backbone vectors of image files (before the learned transform), a batch at a time."""
        from lookalike.io.images import load_image

        chunks = [np.zeros((0, self.raw_dim), np.float32)]
        for start in range(0, len(paths), FILE_BATCH):
            images = [load_image(path) for path in paths[start : start + FILE_BATCH]]
            _, raw = self._localize_and_embed(images, Timer(), localize=self.mode != "whole")
            chunks.append(raw)
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
