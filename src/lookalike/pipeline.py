"""The offline stage (catalogue -> stored features) and the online stage (photo -> hits).

Both stages describe an image with the same `_describe` call, so they always share preprocessing.
The engine owns the loaded models, the vector index and the metadata store, and times every stage.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from lookalike._locks import ReadWriteLock
from lookalike.errors import ImageError, IndexMismatchError, IndexNotFoundError, LookalikeError, SettingsError
from lookalike.io.catalog import CatalogEntry, expand_paths
from lookalike.io.images import ImageSource, file_hash, load_image
from lookalike.settings import HeadSettings, Settings

SETTINGS_FILE = "settings.json"
DATABASE_FILE = "catalog.sqlite"
VECTORS_DIR = "vectors"
COMMIT_EVERY = 32  # images per transaction while indexing

ProgressCallback = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True)
class Hit:
    """One search result: a catalogue image, its score and the breakdown of that score."""

    rank: int
    id: int
    path: str
    score: float
    category: str | None
    scores: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult(Sequence[Hit]):
    """The hits of one query (a sequence of `Hit`), with what the engine did to find them."""

    hits: list[Hit]
    timings: dict[str, float]  # seconds per stage, and "total"
    searched_categories: list[str] | None  # None = every category
    query: str = "<image>"
    details: dict[str, Any] = field(default_factory=dict)
    localization: Any = None  # the query's `Localization` (mask, cut-out...) when localisation is on

    @overload
    def __getitem__(self, index: int) -> Hit: ...
    @overload
    def __getitem__(self, index: slice) -> list[Hit]: ...
    def __getitem__(self, index: int | slice) -> Hit | list[Hit]:
        return self.hits[index]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "hits": [hit.to_dict() for hit in self.hits],
            "searched_categories": self.searched_categories,
            "timings_ms": {stage: round(seconds * 1000, 3) for stage, seconds in self.timings.items()},
            **self.details,
        }


@dataclass
class AddReport:
    """What `Engine.add` did with each file."""

    added: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return len(self.added) + len(self.updated)


@dataclass
class RemoveReport:
    removed: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class _Described:
    """The features of one image: its vector and the blobs later stages store (silhouette...)."""

    vector: np.ndarray
    blobs: dict[str, bytes] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    localization: Any = None


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)

    def total(self) -> dict[str, float]:
        self.timings["total"] = time.perf_counter() - self._start
        return self.timings


class _Stage:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.timer.timings[self.name] = self.timer.timings.get(self.name, 0.0) + elapsed


class Engine:
    """An index on disk and the models that fill and search it.

    `Engine.create(path, settings)` makes a new index; `Engine.open(path)` reopens one with the
    settings it was built with. Searches may run from many threads; writes are serialised.
    """

    def __init__(self, path: Path, settings: Settings) -> None:
        from lookalike.index import MetadataStore

        self.path = path
        self.settings = settings
        self.store = MetadataStore(path / DATABASE_FILE)
        self._lock = ReadWriteLock()
        self._embedder: Any = None
        self._localizer: Any = None
        self._rerankers: list[Any] | None = None
        self._refreshed_generation = -1
        self._vectors: Any = None
        self._transform: Any = None  # the learned embedding transform (<index>/head/); False = none
        self._classifier: Any = None  # the category classifier's handle (<index>/classifier/), made on first use
        self._dim = int(self.store.get_meta("dim") or 0)

    # -- life cycle
    @classmethod
    def create(cls, path: str | Path, settings: Settings | None = None, *, overwrite: bool = False) -> Engine:
        """Make a new, empty index at `path` (a folder) built with `settings`."""
        path = Path(path)
        settings = settings or Settings()
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise LookalikeError(
                    f"{path}: already exists and is not empty; open it with Engine.open, "
                    "or pass overwrite=True (CLI: --rebuild) to replace it"
                )
            if not (path / SETTINGS_FILE).exists():
                raise LookalikeError(f"{path}: refusing to overwrite a folder that is not a lookalike index")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        engine = cls(path, settings)
        engine._dim = engine._feature_dim()
        engine.store.set_meta("dim", engine._dim)
        tmp = path / (SETTINGS_FILE + ".tmp")
        settings.to_json(tmp)
        tmp.replace(path / SETTINGS_FILE)
        return engine

    @classmethod
    def open(cls, path: str | Path) -> Engine:
        """Reopen an index with the settings that built it."""
        path = Path(path)
        if not (path / SETTINGS_FILE).is_file() or not (path / DATABASE_FILE).is_file():
            raise IndexNotFoundError(
                f"{path}: no lookalike index here (expected {SETTINGS_FILE} and {DATABASE_FILE}); "
                "create one with `lookalike index CATALOG_DIR --index PATH`"
            )
        return cls(path, Settings.from_json(path / SETTINGS_FILE))

    @classmethod
    def open_or_create(cls, path: str | Path, settings: Settings | None = None) -> Engine:
        path = Path(path)
        if (path / SETTINGS_FILE).exists():
            engine = cls.open(path)
            if settings is not None and settings != engine.settings:
                raise SettingsError(
                    f"{path}: the index was built with other settings; rebuild it (CLI: --rebuild) to change them"
                )
            return engine
        return cls.create(path, settings)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- offline stage
    def add(
        self,
        paths: Iterable[str | Path | CatalogEntry],
        categories: Sequence[str | None] | str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> AddReport:
        """Index images (files, or folders whose sub-folders are categories).

        Unchanged files (same path, same content) are skipped; changed ones are re-embedded.
        Bad files are reported in `AddReport.failed`, never abort the run. Each batch is committed
        atomically, so an interrupted run keeps every complete entry before it.
        """
        entries = self._entries(paths, categories)
        report = AddReport()
        started = time.perf_counter()
        done = 0
        for start in range(0, len(entries), COMMIT_EVERY):
            chunk = entries[start : start + COMMIT_EVERY]
            self._add_chunk(chunk, report)
            done += len(chunk)
            if progress:
                progress(done, len(entries))
        if report.embedded:
            self._save_snapshot()
            self._refresh_rerankers()
        report.seconds = time.perf_counter() - started
        return report

    def remove(self, ids_or_paths: Iterable[int | str | Path]) -> RemoveReport:
        """Remove images by id or by path; unknown ones are listed in `missing`."""
        report = RemoveReport()
        targets: dict[int, str | None] = {}
        for key in ids_or_paths:
            item = self._resolve(key)
            if item is None:
                report.missing.append(str(key))
            else:
                targets[item.id] = item.category
        if targets:
            self._commit(new=[], replaced=targets)
            report.removed = list(targets)
            self._save_snapshot()
            self._refresh_rerankers()
        return report

    # -- online stage
    def search(
        self,
        image: ImageSource,
        k: int = 5,
        *,
        category: str | None = None,
        name: str | None = None,
        rerank: bool = True,
        gating: bool | None = None,
    ) -> SearchResult:
        """The `k` catalogue images most like `image` (a path, encoded bytes or a PIL image).

        `category` restricts the search to one category; `rerank=False` skips the re-ranking chain.
        With a trained classifier the query's category is predicted (`details["classification"]`)
        and only the predicted categories are searched; `gating=False` searches them all
        (None = the `classify.gating` setting).
        """
        if k < 1:
            raise SettingsError(f"k must be >= 1, got {k}")
        timer = _Timer()
        label = name or (str(image) if isinstance(image, str | Path) else "<image>")
        with timer.stage("decode"):
            picture = load_image(image, name=label)
        described = self._describe([picture], timer)[0]
        return self._search_vector(described, k, category, timer, label, rerank=rerank, gating=gating)

    def search_by_id(
        self, item_id: int, k: int = 5, *, category: str | None = None, rerank: bool = True, gating: bool | None = None
    ) -> SearchResult:
        """Search with a catalogue image's stored features; the image itself is left out."""
        item = self.store.get(item_id)
        if item is None:
            raise LookalikeError(f"no catalogue image with id {item_id}")
        timer = _Timer()
        vector = self.store.vectors_of([item_id], self._dim)[item_id]
        blobs = {name: data for name in ("silhouette",) for data in self.store.blobs(name, [item_id]).values()}
        described = _Described(vector, blobs)
        result = self._search_vector(described, k + 1, category, timer, item.path, rerank=rerank, gating=gating)
        result.hits = [hit for hit in result.hits if hit.id != item_id][:k]
        result.hits = [_rerank_position(hit, rank) for rank, hit in enumerate(result.hits, 1)]
        return result

    # -- facts
    def info(self) -> dict[str, Any]:
        from lookalike.index.rebuild import describe_partitions

        vectors = self._vector_index()
        return {
            "path": str(self.path),
            "images": self.store.count(),
            "categories": {str(k): v for k, v in self.store.category_counts().items()},
            "partitions": vectors.sizes(),
            "vector_index": describe_partitions(vectors),
            "dim": self._dim,
            "embedder": self.store.get_meta("embedder"),
            "head": self.store.get_meta("head"),
            "classifier": self._category_classifier().status(self.store),
            "generation": self.store.generation,
            "size_bytes": _folder_size(self.path),
            "settings": self.settings.to_dict(),
        }

    def __len__(self) -> int:
        return self.store.count()

    # -- vector index maintenance
    def rebuild(self, kind: str | None = None, **changes: Any) -> dict[str, Any]:
        """Rebuild the vector index from the stored vectors; searches wait while it runs.

        Re-fits an approximate kind's tunables and quantisers to the current size and drops its
        tombstones. `kind`, and `changes` (other `index` settings by name, e.g. nprobe=32), change the
        settings: they are saved to settings.json, atomically, once the new index is built.
        """
        from lookalike.index import INDEX_KINDS
        from lookalike.index.rebuild import build_from_store, describe_partitions

        dotted = {f"index.{name}": value for name, value in changes.items()}
        if kind is not None:
            dotted["index.kind"] = kind
        settings = self.settings.replace(**dotted) if dotted else self.settings
        INDEX_KINDS.get(settings.index.kind)  # an unknown kind fails here, listing the valid ones
        started = time.perf_counter()
        with self._lock.writing():
            vectors = build_from_store(self.store, settings.index, self._dim)
            self.store.set_meta("vectors_rebuilt_at", time.time())  # a new generation: the old snapshot is stale
            if settings != self.settings:
                temporary = self.path / (SETTINGS_FILE + ".tmp")
                settings.to_json(temporary)
                temporary.replace(self.path / SETTINGS_FILE)
                self.settings = settings
            vectors.save(self.path / VECTORS_DIR, self.store.generation)
            self._vectors = vectors
        seconds = time.perf_counter() - started
        return {"kind": settings.index.kind, "vectors": len(vectors), "seconds": seconds,
                "partitions": describe_partitions(vectors)}  # fmt: skip

    # -- category classifier
    def train_classifier(self, kind: str | None = None, **changes: Any) -> Any:
        """Train the category classifier on the stored vectors and categories; save it with the index.

        `kind` ("mlp", "logreg") and `changes` (any `classify.*` setting by name: seed=1,
        augment_copies=2...) override the index's settings for this run. A stratified, seeded
        `validation_fraction` is held out for early stopping and the report. Returns the
        `TrainingResult` (classifier, validation report, counts); `info()["classifier"]` then says
        "fresh" until images or categories change.
        """
        from lookalike.classify import train_index_classifier

        chosen = {"kind": kind, **changes}
        overrides = {f"classify.{name}": value for name, value in chosen.items() if value is not None}
        settings = self.settings.replace(**overrides).classify if overrides else self.settings.classify
        result = train_index_classifier(self.store, self._dim, settings, embed=self._embed_for_training)
        self._category_classifier().save(result)
        return result

    def embed(self, images: Sequence[ImageSource]) -> np.ndarray:
        """(len(images), dim) vectors of images (paths, encoded bytes or PIL images) exactly as this
        index stores and searches them: same localisation, backbone and learned embedding."""
        pictures = [load_image(image) for image in images]
        return self._embed_for_training(pictures) if pictures else np.zeros((0, self._dim), np.float32)

    def _embed_for_training(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([described.vector for described in self._describe(images, _Timer())])

    # -- learned embedding (opt-in)
    def train_embedding(
        self,
        settings: HeadSettings | None = None,
        *,
        items: Mapping[str | int, str] | None = None,
        progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    ) -> Any:
        """Learn the index's own embedding from its products, then re-embed it.

        `settings` defaults to the index's `settings.head`: kind "finetune" (the default: the
        backbone's last stages trained on the catalogue, every image re-embedded from its file, see
        `lookalike.embed.finetune`), or "pca", "supervised" (whitening), "linear", "mlp" (heads on
        the stored vectors, see `lookalike.embed.train`). Product ids: `items` (path or id ->
        product), else each image's category or item (`settings.label`). Held-out products give the
        validation curve (`progress(epoch, epochs, {"loss", "val_map"})`) and the
        `EmbeddingReport`'s before/after retrieval figures. Queries then get the same embedding.
        """
        from lookalike.embed import train

        settings = settings or self.settings.head
        if settings.kind == "finetune":
            return self._fine_tune(settings, items, progress)
        started = time.perf_counter()
        ids, raw = train.raw_vectors(self.store, self._dim, self._raw_dim(), self._get_transform() is not None)
        labels = train.product_labels(self.store, ids, settings.label, items)
        transform, facts = train.fit_transform(raw, labels, settings, progress)
        report = train.report_from(transform, facts, len(ids), time.perf_counter() - started)
        self._install_transform(transform, train.head_meta(report))
        return report

    def remove_embedding(self) -> bool:
        """Drop the learned transform or fine-tuned backbone and restore the pretrained backbone's
        vectors (a fine-tuned one re-embeds every image from its file); False when there was none."""
        from lookalike.embed.finetune import TUNING_DIR

        if (self.path / TUNING_DIR).exists():
            self._install_tuning(None, None)
            return True
        if self._get_transform() is None:
            return False
        self._install_transform(None, None)
        return True

    def _fine_tune(
        self, settings: HeadSettings, items: Mapping[str | int, str] | None, progress: Callable[..., None] | None
    ) -> Any:
        """`train_embedding` with kind "finetune": train the backbone's last stages, then re-embed."""
        from lookalike.embed import create_embedder, finetune, train

        started = time.perf_counter()
        ids, paths = self._catalogue_paths()
        labels = train.product_labels(self.store, ids, settings.label, items)
        pristine = create_embedder(self.settings.embed)  # fine-tuning always starts from the pretrained weights
        first = finetune.tail_start(pristine.network(), settings.finetune_stages)
        maps = finetune.images_maps(pristine, lambda a, b: [load_image(p) for p in paths[a:b]], len(paths), first)
        tuning, facts = finetune.fit_tuning(pristine, maps, labels, settings, progress)
        del maps
        report = train.EmbeddingReport(
            kind="finetune", fingerprint=tuning.fingerprint(), dim=pristine.dim, n_images=len(ids),
            **facts,
        )  # fmt: skip
        self._install_tuning(tuning, train.head_meta(report))
        report.seconds = time.perf_counter() - started
        return report

    def _catalogue_paths(self) -> tuple[np.ndarray, list[str]]:
        chunks = list(self.store.vectors(self._dim))
        if not chunks:
            raise LookalikeError("the index holds no images: add the catalogue before training an embedding")
        ids = np.concatenate([chunk_ids for chunk_ids, _, _ in chunks])
        known = self.store.get_many(ids.tolist())
        return ids, [known[int(i)].path for i in ids]

    def _install_tuning(self, tuning: Any, meta: dict[str, Any] | None) -> None:
        """Re-embed every image from its file with the (fine-tuned or pretrained) backbone, record it.

        Every vector is computed before anything is written: an unreadable image raises an
        `ImageError` naming it and leaves the index as it was.
        """
        from lookalike.embed import create_embedder, finetune, train

        embedder = create_embedder(self.settings.embed)
        if tuning is not None:
            embedder.set_tuning(tuning)
        with self._lock.writing():
            ids, paths = self._catalogue_paths()
            previous = (self._embedder, self._transform)
            self._embedder, self._transform = embedder, False
            try:
                vectors = self._embed_files(paths)
            except Exception:
                self._embedder, self._transform = previous
                raise
            meta_values = {"dim": int(vectors.shape[1]), "embedder": self._fingerprint(), "head": meta}
            train.rewrite_vectors(self.store, ids, vectors, None, meta_values)
            train.install_head(self.path, None)
            finetune.install_tuning(self.path, tuning)
            self._vectors, self._dim = None, int(vectors.shape[1])
        self._save_snapshot()

    def _embed_files(self, paths: Sequence[str]) -> np.ndarray:
        """Vectors of image files as `_describe` makes them (cut out first when cut-outs are embedded)."""
        localizer = self._get_localizer() if self._embeds_cutouts() else None
        chunks = []
        for start in range(0, len(paths), COMMIT_EVERY):
            images = [load_image(path) for path in paths[start : start + COMMIT_EVERY]]
            cutouts = [localizer.localize(image).cutout for image in images] if localizer is not None else []
            chunks.append(self._embed(images, cutouts))
        return np.concatenate(chunks)

    def _install_transform(self, transform: Any, meta: dict[str, Any] | None) -> None:
        """Re-embed every image (raw vectors re-read under the write lock) and record the transform."""
        from lookalike.embed import train

        had_transform = self._get_transform() is not None
        with self._lock.writing():
            ids, raw = train.raw_vectors(self.store, self._dim, self._raw_dim(), had_transform)
            vectors = raw if transform is None else transform.transform(raw)
            fingerprint = train.with_head(train.base_fingerprint(self._fingerprint()), transform)
            meta_values = {"dim": int(vectors.shape[1]), "embedder": fingerprint, "head": meta}
            train.rewrite_vectors(self.store, ids, vectors, None if transform is None else raw, meta_values)
            train.install_head(self.path, transform)
            self._transform, self._vectors, self._dim = transform or False, None, int(vectors.shape[1])
        self._save_snapshot()

    def _get_transform(self) -> Any:
        """The index's learned embedding transform, or None."""
        if self._transform is None:
            from lookalike.embed.train import load_index_transform

            self._transform = load_index_transform(self.path) or False
        return self._transform or None

    # -- internals: features
    def _feature_dim(self) -> int:
        transform = self._get_transform()
        return self._raw_dim() if transform is None else int(transform.dim_)

    def _raw_dim(self) -> int:
        both = self.settings.localize.enabled and self.settings.localize.features == "both"
        return self._get_embedder().dim * (2 if both else 1)

    def _embeds_cutouts(self) -> bool:
        return self.settings.localize.enabled and self.settings.localize.features != "whole"

    def _get_embedder(self) -> Any:
        if self._embedder is None:
            from lookalike.embed import create_embedder
            from lookalike.embed.finetune import load_index_tuning

            embedder = create_embedder(self.settings.embed)
            tuning = load_index_tuning(self.path)
            if tuning is not None:
                embedder.set_tuning(tuning)
            self._embedder = embedder
        return self._embedder

    def _get_localizer(self) -> Any:
        if self._localizer is None and self.settings.localize.enabled:
            from lookalike.localize import Localizer

            self._localizer = Localizer(self.settings.localize)
        return self._localizer

    def _get_rerankers(self) -> list[Any]:
        if self._rerankers is None:
            from lookalike.rerank import create_reranker

            self._rerankers = [create_reranker(name, self.settings) for name in self.settings.rerank.chain]
        return self._rerankers

    def _refresh_rerankers(self) -> None:
        """Let re-rankers with catalogue-wide data (diffusion) load or rebuild it for this generation."""
        generation = self.store.generation
        for reranker in self._get_rerankers():
            if hasattr(reranker, "refresh"):
                reranker.refresh(self.store, self._dim, self.path, generation)
        self._refreshed_generation = generation

    def _fingerprint(self) -> str:
        """What made the stored vectors: the embedder and, when on, the localiser and feature mode,
        and the learned embedding transform (head) when the index has one."""
        from lookalike.embed.train import with_head

        fingerprint = self._get_embedder().fingerprint()
        localizer = self._get_localizer()
        if localizer is not None:
            fingerprint += f"||{localizer.fingerprint()}|features={self.settings.localize.features}"
        return with_head(fingerprint, self._get_transform())

    def _check_fingerprint(self) -> None:
        fingerprint = self._fingerprint()
        stored = self.store.get_meta("embedder")
        if stored is None:
            self.store.set_meta("embedder", fingerprint)
        elif stored != fingerprint:
            from lookalike.embed.train import mismatch_message

            raise IndexMismatchError(mismatch_message(self.path, stored, fingerprint))

    def _describe(self, images: Sequence[Image.Image], timer: _Timer) -> list[_Described]:
        """The features of images, identical for the catalogue and for queries.

        With localisation on, the object is cut out first; the vector is the cut-out's ("object")
        or the whole image's and the cut-out's concatenated and renormalised ("both"), whose inner
        product is the mean of the two cosine similarities.
        """
        if self._dim and self._feature_dim() != self._dim:
            raise IndexMismatchError(
                f"{self.path}: index holds {self._dim}-d vectors, the models give {self._feature_dim()}"
            )
        localizer = self._get_localizer()
        located = []
        if localizer is not None:
            with timer.stage("localize"):
                located = [localizer.localize(image) for image in images]
        with timer.stage("embed"):
            self._check_fingerprint()
            raw = self._embed(images, [loc.cutout for loc in located] if self._embeds_cutouts() else [])
            transform = self._get_transform()
            vectors = raw if transform is None else transform.transform(raw)
        described = [_Described(vector) for vector in vectors]
        if transform is not None:  # kept to re-embed the index when a head is trained again
            for item, raw_vector in zip(described, raw, strict=True):
                item.blobs["raw"] = np.ascontiguousarray(raw_vector, dtype=np.float32).tobytes()
        for item, loc in zip(described, located, strict=False):
            item.blobs["silhouette"] = loc.silhouette
            item.details.update(_localization_details(loc))
            item.localization = loc
        self._describe_for_rerankers(images, described, timer)
        return described

    def _describe_for_rerankers(
        self, images: Sequence[Image.Image], described: list[_Described], timer: _Timer
    ) -> None:
        """Per-image data of re-rankers that need some (SIFT keypoints...), stored with each image."""
        for reranker in self._get_rerankers():
            if hasattr(reranker, "describe"):
                with timer.stage(f"{reranker.name}_features"):
                    for image, item in zip(images, described, strict=True):
                        item.blobs.update(reranker.describe(image, item.localization))

    def _embed(self, images: Sequence[Image.Image], cutouts: list[Image.Image]) -> np.ndarray:
        embedder = self._get_embedder()
        if not cutouts:
            return embedder.embed(images)
        if self.settings.localize.features == "object":
            return embedder.embed(cutouts)
        from lookalike.embed import l2_normalize

        both = embedder.embed(list(images) + cutouts)
        return l2_normalize(np.hstack([both[: len(images)], both[len(images) :]]))

    # -- internals: search
    def _search_vector(
        self,
        described: _Described,
        k: int,
        category: str | None,
        timer: _Timer,
        label: str,
        *,
        rerank: bool = True,
        gating: bool | None = None,
    ) -> SearchResult:
        from lookalike.rerank import Candidate, QueryContext, apply_chain, chain_depth

        searched, classification = self._plan_categories(described.vector, category, gating, timer)
        chain = self._get_rerankers() if rerank else []
        if chain and self._refreshed_generation != self.store.generation:
            self._refresh_rerankers()
        vectors = self._vector_index()  # outside the read lock: loading takes the write lock
        with self._lock.reading():
            depth = max(k, chain_depth(chain))
            scores, ids = self._vector_candidates(vectors, described.vector, depth, searched, timer)
            candidates = [
                Candidate(int(i), float(s), {"vector": float(s)}) for i, s in zip(ids, scores, strict=True) if i >= 0
            ]
            if chain:
                with timer.stage("rerank"):
                    context = QueryContext(described.vector, described.blobs, self.store, self._dim, described.details)
                    candidates = apply_chain(chain, context, candidates)
            candidates = candidates[:k]
            with timer.stage("metadata"):
                items = self.store.get_many(c.id for c in candidates)
        hits = [
            Hit(rank, c.id, items[c.id].path, c.score, items[c.id].category, c.scores)
            for rank, c in enumerate((c for c in candidates if c.id in items), 1)
        ]
        searched_list = None if searched is None else [c for c in searched if c is not None]
        details = {**described.details, **classification}
        return SearchResult(hits, timer.total(), searched_list, label, details, described.localization)

    def _vector_candidates(
        self, vectors: Any, query: np.ndarray, depth: int, searched: list[str | None] | None, timer: _Timer
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top `depth` (scores, ids) of the vector search, best first.

        Approximate index kinds fetch `index.shortlist_factor` times more; the PQ kinds' scores are
        then re-computed exactly from the stored full vectors (index/ann.py).
        """
        from lookalike.index.rebuild import search_plan

        keys = None if searched is None else [vectors.key(c) for c in searched]
        approximate, quantized = search_plan(vectors, keys)
        fetch = depth * self.settings.index.shortlist_factor if approximate else depth
        with timer.stage("search"):
            scores, ids = vectors.search(query[None, :], fetch, searched)
        if not quantized:
            return scores[0][:depth], ids[0][:depth]
        from lookalike.index.ann import rescore

        with timer.stage("rescore"):
            found = ids[0][ids[0] >= 0]
            return rescore(query, found, self.store.vectors_of(found, self._dim), depth)

    def _categories_to_search(self, category: str | None) -> list[str] | None:
        if category is None:
            return None
        counts = self.store.category_counts()
        if category not in counts:
            known = ", ".join(sorted(str(c) for c in counts if c is not None)) or "none"
            raise LookalikeError(f"unknown category {category!r}; the index holds: {known}")
        return [category]

    def _plan_categories(
        self, vector: np.ndarray, category: str | None, gating: bool | None, timer: _Timer
    ) -> tuple[list[str | None] | None, dict[str, Any]]:
        """The categories to search (None inside = uncategorised images) and, with a trained
        classifier, its prediction for `details["classification"]` (gated search, classify/gate.py)."""
        forced = self._categories_to_search(category)
        searched: list[str | None] | None = None if forced is None else list(forced)
        classifier = self._category_classifier().model()
        if classifier is None:
            return searched, {}
        from lookalike.classify import plan_search

        vectors = self._vector_index()
        with self._lock.reading():
            partitions = list(vectors.sizes()) if self.settings.index.partition_by_category else None
        with timer.stage("classify"):
            decision = plan_search(
                classifier, vector, self.settings.classify, partitions=partitions, category=category, gating=gating
            )
        return decision.searched, {"classification": decision.details}

    def _category_classifier(self) -> Any:
        if self._classifier is None:
            from lookalike.classify import CLASSIFIER_DIR, IndexClassifier

            self._classifier = IndexClassifier(self.path / CLASSIFIER_DIR)
        return self._classifier

    # -- internals: storage
    def _vector_index(self) -> Any:
        if self._vectors is None:
            with self._lock.writing():
                if self._vectors is None:
                    self._vectors = self._load_or_rebuild_vectors()
        return self._vectors

    def _load_or_rebuild_vectors(self) -> Any:
        from lookalike.index import PartitionedIndex

        generation = self.store.generation
        loaded = PartitionedIndex.load(self.path / VECTORS_DIR, self.settings.index, self._dim, generation)
        if loaded is not None:
            return loaded
        from lookalike.index.rebuild import build_from_store

        rebuilt = build_from_store(self.store, self.settings.index, self._dim)
        if self.store.count():
            rebuilt.save(self.path / VECTORS_DIR, generation)
        return rebuilt

    def _save_snapshot(self) -> None:
        vectors = self._vector_index()
        with self._lock.reading():
            vectors.save(self.path / VECTORS_DIR, self.store.generation)

    def _entries(
        self, paths: Iterable[str | Path | CatalogEntry], categories: Sequence[str | None] | str | None
    ) -> list[CatalogEntry]:
        items = list(paths)
        if isinstance(categories, str) or categories is None:
            labels: list[str | None] = [categories] * len(items)
        else:
            labels = list(categories)
            if len(labels) != len(items):
                raise SettingsError(f"expected one category per path ({len(items)}), got {len(labels)}")
        entries: list[CatalogEntry] = []
        for item, label in zip(items, labels, strict=True):
            if isinstance(item, CatalogEntry):
                entries.append(item if label is None else CatalogEntry(item.path, label, item.item))
                continue
            for entry in expand_paths([item], category_depth=self.settings.index.category_depth):
                entries.append(entry if label is None else CatalogEntry(entry.path, label))
        return entries

    def _add_chunk(self, chunk: list[CatalogEntry], report: AddReport) -> None:
        from lookalike.index import NewItem

        known = self.store.known_paths()
        pending: list[tuple[CatalogEntry, str, str, Image.Image]] = []
        for entry in chunk:
            path = str(entry.path.resolve())
            try:
                digest = file_hash(entry.path)
                if path in known and known[path][1] == digest:
                    report.unchanged.append(path)
                    continue
                pending.append((entry, path, digest, load_image(entry.path)))
            except ImageError as exc:
                report.failed.append((str(entry.path), exc.reason))
            except OSError as exc:
                report.failed.append((str(entry.path), f"cannot read the file ({exc.strerror or exc})"))
        if not pending:
            return
        described = self._describe([image for *_, image in pending], _Timer())
        new = [
            NewItem(path, entry.category, digest, features.vector, _item_extra(entry), features.blobs)
            for (entry, path, digest, _), features in zip(pending, described, strict=True)
        ]
        replaced = {known[p][0]: self.store.get(known[p][0]).category for _, p, _, _ in pending if p in known}
        ids = self._commit(new, replaced)
        for item, item_id in zip(new, ids, strict=True):
            (report.updated if item.path in known else report.added).append(item_id)

    def _commit(self, new: list[Any], replaced: dict[int, str | None]) -> list[int]:
        """Write new items and delete replaced ones in one transaction, then update the vectors."""
        vectors = self._vector_index()
        with self._lock.writing():
            with self.store.transaction() as db:
                self.store.delete(db, replaced)
                ids = [self.store.insert(db, item) for item in new]
            if replaced:
                vectors.remove(np.array(list(replaced), dtype=np.int64), list(replaced.values()))
            if new:
                vectors.add(
                    np.array(ids, dtype=np.int64),
                    np.stack([item.vector for item in new]),
                    [item.category for item in new],
                )
        return ids

    def _resolve(self, key: int | str | Path) -> Any:
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            return self.store.get(int(key))
        return self.store.find_by_path(str(Path(key).resolve()))


def _localization_details(located: Any) -> dict[str, Any]:
    return {
        "localization": {
            "found": located.found,
            "reason": located.reason,
            "box": [int(v) for v in located.box],
            "object_fraction": float(located.mask.mean()),
        }
    }


def _item_extra(entry: CatalogEntry) -> dict[str, Any]:
    """Facts kept with an image: its product (`item`) where known, for training an embedding head."""
    return {"item": entry.item} if entry.item else {}


def _rerank_position(hit: Hit, rank: int) -> Hit:
    return Hit(rank, hit.id, hit.path, hit.score, hit.category, hit.scores, hit.extra)


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
