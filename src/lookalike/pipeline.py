"""The offline stage (catalogue -> stored features) and the online stage (photo -> hits).

The engine orchestrates; each stage is someone else's: the `Featurizer` turns an image into its
vector and stored data (both stages call it, so they always share preprocessing), the vector index
finds candidates, the category classifier narrows the search, the re-rankers re-score the top. The
engine owns the models' and the index's life cycle, serialises writes and times every stage:

    photo -> decode -> featurizer (localise, embed, transform) -> classify -> search -> re-rank -> hits
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lookalike._timing import Timer
from lookalike.errors import ImageError, IndexMismatchError, IndexNotFoundError, LookalikeError, SettingsError
from lookalike.featurizer import (
    RAW_BLOB,
    SILHOUETTE_BLOB,
    Features,
    Featurizer,
    describe_fingerprint,
    mismatch_message,
)
from lookalike.index._threads import faiss_threads
from lookalike.index.catalog import DATABASE_FILE, open_catalog
from lookalike.index.folder import SETTINGS_FILE, folder_state, half_created_message, staging_folder, swap_in
from lookalike.index.lock import WaitCallback, WriteLock
from lookalike.io.catalog import CatalogEntry, entries_for
from lookalike.io.images import ImageSource, hash_and_load, load_image
from lookalike.io.uris import stored_path
from lookalike.results import AddReport, Hit, RemoveReport, SearchResult
from lookalike.settings import HeadSettings, Settings

if TYPE_CHECKING:
    from lookalike.classify import IndexClassifier
    from lookalike.embed.train import EmbeddingReport
    from lookalike.index import Item, MetadataStore
    from lookalike.index.check import CheckReport
    from lookalike.rerank import Reranker

COMMIT_EVERY = 32  # images per transaction while indexing
DISTRIBUTED_COMMIT = 256  # images per transaction while indexing on Ray (results stream in faster)
NO_CATEGORY = "(no category)"  # `info`'s name for images of older indexes stored without one
PER_IMAGE_BLOBS = (RAW_BLOB, SILHOUETTE_BLOB, "sift")  # every blob stored per image ("sift": rerank/sift.py)
MAX_ID = 2**63 - 1  # SQLite's largest integer: larger ids cannot name an image

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (images done, images in all)
StageCallback = Callable[[str, int, int], None]  # (stage, done, total)


class Engine:
    """An index on disk and the models that fill and search it.

    `Engine.create(path, settings)` makes a new index; `Engine.open(path)` reopens one with the
    settings it was built with. Searches may run from many threads; writes (add, remove, rebuild,
    training an embedding) run one at a time and hold searches back only while they commit.
    """

    def __init__(self, path: Path, settings: Settings, *, create: bool = False) -> None:
        self.path = path
        self.settings = settings
        self.catalog = open_catalog(path, settings.index, create=create)  # metadata and vectors, on its backend
        self._write_lock = WriteLock(path)  # one writing operation at a time, across threads and processes
        self._featurizer: Featurizer | None = None
        self._rerankers: list[Reranker] | None = None
        self._refreshed_generation = -1
        self._classifier: IndexClassifier | None = None
        self.threads: int | None = None  # the models' intra-op threads in this process (Engine.open)

    @property
    def store(self) -> MetadataStore:
        """The metadata store (the source of truth for ids, paths, vectors and blobs): SQLite in the
        folder, or the Milvus collections of a Milvus-backed index (same reading interface)."""
        return self.catalog.store

    @property
    def _dim(self) -> int:
        return self.catalog.dim

    # -- life cycle
    @classmethod
    def create(
        cls,
        path: str | Path,
        settings: Settings | None = None,
        *,
        overwrite: bool = False,
        model_from: str | Path | None = None,
        **options: Any,
    ) -> Engine:
        """Make a new, empty index at `path` (a folder) built with `settings`.

        It is built in a staging folder and renamed into place when complete, so an interrupted
        creation leaves no half index; `overwrite=True` replaces an existing (or half-created) index,
        only once the new one is complete. `model_from` (a model folder from `export_model`, or another
        index) carries a tuned model: its backbone, transform and `embed`/`localize` settings.
        `options` are `open`'s (lock_timeout, on_wait).
        """
        path = Path(path)
        settings = _with_defaults(settings or Settings(), path)
        if model_from is not None:
            from lookalike.carry import model_settings

            settings = model_settings(Path(model_from), settings)
        _check_creatable(path, overwrite)
        _check_backend_creatable(settings, overwrite)
        staging = staging_folder(path)
        try:
            engine = cls(staging, settings, create=True)
            with engine:
                if model_from is not None:
                    engine._featurizer = engine._carried_featurizer(Path(model_from), settings)
                featurizer = engine.featurizer
                featurizer.allow_export()  # embed.runtime "onnx": export the embedder with the index
                engine.catalog.initialise(featurizer.dim, featurizer.fingerprint())
                featurizer.save(staging)
                settings.to_json(staging / SETTINGS_FILE)
            swap_in(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        created = cls.open(path, **options)
        created._featurizer = featurizer  # its models do not depend on the folder: keep what was loaded
        return created

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        lock_timeout: float | None = None,
        on_wait: WaitCallback | None = None,
        threads: int | None = None,
    ) -> Engine:
        """Reopen an index with the settings that built it.

        Writes take the index's inter-process lock: `lock_timeout` is how long to wait for another
        writer (None: as long as it takes; 0: fail at once with `IndexBusyError`), `on_wait(holder)`
        is told who holds it when waiting starts. `threads` sets the models' intra-op threads for this
        process (embed.threads, localize.threads) and FAISS's threads per search, without changing the
        index's settings: a server answering many queries at once runs each on one thread.
        """
        path = Path(path)
        state = folder_state(path)
        if state == "half":
            raise IndexNotFoundError(half_created_message(path))
        if state == "file":
            raise IndexNotFoundError(
                f"{path}: is a file, not an index folder; --index takes the folder `lookalike index` made"
            )
        if state != "index" or not _index_files_present(path):
            raise IndexNotFoundError(
                f"{path}: no lookalike index here (expected {SETTINGS_FILE} and {DATABASE_FILE}); "
                "create one with `lookalike index CATALOG_DIR --index PATH`"
            )
        engine = cls(path, Settings.from_json(path / SETTINGS_FILE))
        engine._write_lock.timeout, engine._write_lock.on_wait = lock_timeout, on_wait
        engine.threads = threads
        return engine

    @classmethod
    def open_or_create(cls, path: str | Path, settings: Settings | None = None, **options: Any) -> Engine:
        """Open the index at `path`, or create it when there is none; `settings` must match an existing one's."""
        path = Path(path)
        if (path / SETTINGS_FILE).exists():
            engine = cls.open(path, **options)
            if settings is not None and _with_defaults(settings, path, like=engine.settings) != engine.settings:
                engine.close()
                raise SettingsError(
                    f"{path}: the index was built with other settings; rebuild it (CLI: --rebuild) to change them"
                )
            return engine
        return cls.create(path, settings, **options)

    def close(self) -> None:
        if self._featurizer is not None:
            self._featurizer.close()
        self.catalog.close()

    def present(self) -> bool:
        """Whether the index folder still holds its files (someone may delete or move it while open)."""
        return _index_files_present(self.path)

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
        workers: int | None = None,
        ray_address: str | None = None,
    ) -> AddReport:
        """Index images: files, folders whose sub-folders are categories, or URIs of either (`s3://`,
        `gs://`, `https://`, `file://`...: read through fsspec, each stored under its URI as given).

        Unchanged files (same path, same content) are skipped; changed ones are re-embedded.
        Bad files are reported in `AddReport.failed`, never abort the run. Each batch is committed
        atomically, so an interrupted run keeps every complete entry before it. `workers` (a local
        Ray cluster of that many processes) or `ray_address` (an existing cluster, `auto` to join
        the local one) embed on Ray Data (lookalike.distributed) while this process writes.
        """
        entries, skipped = entries_for(paths, categories, category_depth=self.settings.index.category_depth)
        report = AddReport(failed=list(skipped))
        entries = _distinct_files(entries, report)
        started = time.perf_counter()
        if workers or ray_address:
            with self._writing("adding images"):
                self._add_distributed(entries, report, progress, workers, ray_address)
            report.seconds = time.perf_counter() - started
            return report
        with self._writing("adding images"):
            for start in range(0, len(entries), COMMIT_EVERY):
                chunk = entries[start : start + COMMIT_EVERY]
                self._add_chunk(chunk, report)
                if progress:
                    progress(start + len(chunk), len(entries))
            if report.embedded:
                self._after_change()
        report.seconds = time.perf_counter() - started
        return report

    def remove(self, ids_or_paths: Iterable[int | str | Path]) -> RemoveReport:
        """Remove images by id or by path; unknown ones are listed in `missing`."""
        report = RemoveReport()
        with self._writing("removing images"):
            targets: dict[int, str | None] = {}
            for key in ids_or_paths:
                item = self._resolve(key)
                if item is None:
                    report.missing.append(str(key))
                else:
                    targets[item.id] = item.category
            if targets:
                self.catalog.commit([], targets)
                report.removed = list(targets)
                self._after_change()
        return report

    def set_category(self, ids_or_paths: Iterable[int | str | Path], category: str | None) -> RemoveReport:
        """File images under another category, keeping their stored vectors and data (nothing is
        re-embedded). Each image gets a new id (ids are never reused): `removed` lists the old ids,
        `moved` maps each old id to its new one; unknown images are listed in `missing`."""
        report = RemoveReport()
        with self._writing("changing categories"):
            targets = {}
            for key in ids_or_paths:
                item = self._resolve(key)
                if item is None:
                    report.missing.append(str(key))
                else:
                    targets[item.id] = item
            if targets:
                new = self._refiled(list(targets.values()), category)
                ids = self.catalog.commit(new, {item.id: item.category for item in targets.values()})
                report.removed = list(targets)
                report.moved = dict(zip(targets, ids, strict=True))
                self._after_change()
        return report

    def _refiled(self, items: list[Item], category: str | None) -> list[Any]:
        from lookalike.index import NewItem

        ids = [item.id for item in items]
        vectors = self.store.vectors_of(ids, self._dim)
        blobs = {name: self.store.blobs(name, ids) for name in PER_IMAGE_BLOBS}
        return [
            NewItem(
                item.path,
                category,
                item.content_hash,
                vectors[item.id],
                dict(item.extra),
                {name: found[item.id] for name, found in blobs.items() if item.id in found},
            )
            for item in items
        ]

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
        _check_k(k)
        timer = Timer()
        label = name or (str(image) if isinstance(image, str | Path) else "<image>")
        with timer.stage("decode"):
            picture = load_image(image, name=label)
        self._catch_up()
        chain = self._chain(rerank)
        describers = [reranker for reranker in chain if reranker.needs.describes]
        features = self._describe([picture], timer, describers)[0]
        return self._search_features(features, k, category, timer, label, chain, gating)

    def search_by_id(
        self, item_id: int, k: int = 5, *, category: str | None = None, rerank: bool = True, gating: bool | None = None
    ) -> SearchResult:
        """Search with a catalogue image's stored features (its vector and whatever the re-rankers
        need: silhouette, keypoints); the image itself is left out."""
        _check_k(k)
        self._catch_up()
        item = self.item(item_id)
        if item is None:
            raise LookalikeError(f"no catalogue image with id {item_id}")
        timer = Timer()
        chain = self._chain(rerank)
        with timer.stage("load"):
            from lookalike.rerank import needed_blobs

            vector = self.store.vectors_of([item_id], self._dim)[item_id]
            blobs = {name: data for name in needed_blobs(chain) for data in self.store.blobs(name, [item_id]).values()}
        result = self._search_features(Features(vector, blobs), k + 1, category, timer, item.path, chain, gating)
        result.hits = [hit for hit in result.hits if hit.id != item_id][:k]
        result.hits = [_rerank_position(hit, rank) for rank, hit in enumerate(result.hits, 1)]
        return result

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 5,
        *,
        category: str | None = None,
        rerank: bool = True,
        gating: bool | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> SearchResult:
        """Search with a vector already in this index's space (`embed`'s output, or a stored one);
        re-rankers that need per-image data get what `blobs` holds (nothing by default)."""
        _check_k(k)
        self._catch_up()
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self._dim:
            raise IndexMismatchError(f"expected a vector of {self._dim} features, got {vector.shape[0]}")
        features = Features(vector, dict(blobs or {}))
        return self._search_features(features, k, category, Timer(), "<vector>", self._chain(rerank), gating)

    # -- reading the catalogue (what the CLI and the server show)
    def item(self, item_id: int) -> Item | None:
        """One catalogue image's metadata, or None."""
        return self.store.get(item_id) if 0 <= item_id <= MAX_ID else None

    def items(self, category: str | None = None, *, limit: int | None = None, offset: int = 0) -> list[Item]:
        """A page of the catalogue in id order, optionally of one category."""
        return self.store.items(category, limit=limit, offset=offset)

    def find(self, path: str | Path) -> Item | None:
        """The catalogue image indexed from `path` (resolved), or None."""
        return self.store.find_by_path(stored_path(path))

    def categories(self) -> dict[str | None, int]:
        """Images per category (None: uncategorised)."""
        return self.store.category_counts()

    def silhouette(self, item_id: int) -> bytes | None:
        """The bit-packed silhouette stored for an image (localisation on), or None."""
        return self.store.blobs(SILHOUETTE_BLOB, [item_id]).get(item_id)

    @property
    def rerankers(self) -> list[str]:
        """The re-ranking chain's names, in order."""
        return list(self.settings.rerank.chain)

    @property
    def featurizer(self) -> Featurizer:
        """Image -> vector for this index: its models, fine-tuned backbone and learned transform."""
        if self._featurizer is None:
            settings = self.settings
            if self.threads is not None:
                settings = settings.replace(**{"embed.threads": self.threads, "localize.threads": self.threads})
            self._featurizer = Featurizer.load(self.path, settings, describers=self._get_rerankers())
        return self._featurizer

    def info(self) -> dict[str, Any]:
        self._catch_up()
        with self.catalog.searching() as vectors:
            partitions, described = vectors.sizes(), vectors.describe()
        return {
            "path": str(self.path),
            "images": self.store.count(),
            "categories": {NO_CATEGORY if k is None else k: v for k, v in self.store.category_counts().items()},
            "partitions": partitions,
            "vector_index": described,
            "dim": self._dim,
            "embedder": self.store.get_meta("embedder"),
            "runtime": {"embedder": self.featurizer.runtime, "note": self.featurizer.runtime_note},
            "head": self.store.get_meta("head"),
            "classifier": self._category_classifier().status(self.store),
            "archive": self.archive_info(),
            "views": self.views_info(),
            "generation": self.store.generation,
            "size_bytes": _folder_size(self.path),
            "backend": self.catalog.backend(),
            "changed_at": self.store.get_meta("changed_at") or _modified_at(self.path / DATABASE_FILE),
            "settings": self.settings.to_dict(),
        }

    def __len__(self) -> int:
        return self.store.count()

    def check(self, *, repair: bool = False, hashes: bool = False) -> CheckReport:
        """Is the index whole? The database's integrity, the vector snapshot against the database,
        the learned models against the vectors, every image file (and, with `hashes`, its content).
        `repair` rebuilds what can be rebuilt from the database (the vector snapshot); it writes, so it
        takes the write lock. Reading never writes."""
        from lookalike.index.check import CheckReport, check_database, check_files

        report = CheckReport()
        if not check_database(self.store, report):
            return report
        snapshot = self.catalog.snapshot_state()
        if snapshot["state"] != "current":
            problem = f"vector snapshot {snapshot['state']}: {snapshot['reason']}"
            if repair:
                with self._writing("repairing the index"):
                    self.catalog.rebuild(self.settings.index)
                report.repaired.append(f"{problem}; rebuilt it from the database")
            elif self.store.count():
                report.problems.append(
                    f"{problem}; searches rebuild it in memory each time: run `lookalike check --repair`"
                )
        else:
            report.notes.append(f"vector snapshot: {snapshot['reason']}, matches the database")
        try:
            self._check_featurizer(self.featurizer)
            report.notes.append("models: " + describe_fingerprint(self.featurizer.fingerprint()))
            self._check_runtime(report, repair)
        except LookalikeError as exc:
            report.problems.append(str(exc))
        self._check_archive(report, repair)
        self._check_views(report, repair)
        check_files(self.store, report, hashes=hashes)
        return report

    def _check_archive(self, report: CheckReport, repair: bool) -> None:
        """The photo archive: readable, made by the index's model, its photos still there. `repair`
        embeds a stale archive's photos again with the index's model."""
        from lookalike.index.archive import PhotoArchive

        try:
            archive = PhotoArchive.load(self.path)
        except LookalikeError as exc:
            report.problems.append(str(exc))
            return
        if archive is None:
            return
        if not archive.current_for(self.store.get_meta("embedder")):
            problem = f"photo archive: its {len(archive)} vectors were made by another model than the index's"
            if repair:
                with self._writing("embedding the photo archive again"):
                    renewed = self._archive_for(self._checked_featurizer(), (), None)
                    if renewed is not None:
                        renewed.save(self.path)
                report.repaired.append(f"{problem}; embedded its {len(renewed or ())} readable photos again")
            else:
                report.problems.append(
                    f"{problem}, so the archive re-ranker leaves them out: `lookalike check --repair` embeds them again"
                )
            return
        gone = [path for path in archive.paths if not Path(path).is_file()]
        note = f"photo archive: {len(archive)} photos, made by the index's model"
        report.notes.append(note + (f"; {len(gone)} of their files are gone (the vectors stay)" if gone else ""))

    def _check_views(self, report: CheckReport, repair: bool) -> None:
        """The catalogue views: readable, made by the index's model, one set per catalogue image. `repair`
        makes what is missing or stale."""
        from lookalike.index.views import CatalogueViews

        try:
            info = self.views_info()
        except LookalikeError as exc:
            report.problems.append(str(exc))
            return
        if info is None:
            return
        problem = None
        if not info["current"]:
            problem = "catalogue views: made by another model than the index's, so the views re-ranker leaves them out"
        elif info["missing"]:
            problem = f"catalogue views: {info['missing']} catalogue image(s) have none (they keep their vector score)"
        if problem is None:
            report.notes.append(f"catalogue views: {info['count']} for each of the {info['images']} images")
        elif repair:
            with self._writing("making the catalogue views"):
                kept = CatalogueViews.load(self.path) if info["current"] else None
                self._views_for(self._checked_featurizer(), kept, None).save(self.path)
            report.repaired.append(f"{problem}; made them")
        else:
            report.problems.append(f"{problem}: `lookalike check --repair` makes them")

    def _check_runtime(self, report: CheckReport, repair: bool) -> None:
        """Where queries embed: a missing ONNX export is a note (queries use torch), made by `repair`."""
        featurizer = self.featurizer
        if featurizer.runtime_note is not None and repair and featurizer.settings.embed.runtime == "onnx":
            note = featurizer.runtime_note
            with self._writing("exporting the embedder to ONNX"):
                featurizer = self.featurizer  # a writer exports a missing export (_export_if_missing)
            if featurizer.export is not None:
                report.repaired.append(f"{note}; exported it to {self.path / 'onnx'}")
                return
        if featurizer.runtime_note is not None:
            report.notes.append(featurizer.runtime_note)
        else:
            report.notes.append(f"embedder runtime: {featurizer.runtime}")

    # -- vector index maintenance
    def rebuild(self, kind: str | None = None, **changes: Any) -> dict[str, Any]:
        """Rebuild the vector index from the stored vectors; searches wait while it runs.

        Re-fits an approximate kind's tunables and quantisers to the current size and drops its
        tombstones. `kind`, and `changes` (other `index` settings by name, e.g. nprobe=32), change the
        settings: they are saved to settings.json, atomically, once the new index is built.
        """
        dotted = {f"index.{name}": value for name, value in changes.items()}
        if kind is not None:
            dotted["index.kind"] = kind
        settings = self.settings.replace(**dotted) if dotted else self.settings
        self.catalog.check_kind(settings.index)  # an unknown kind fails here, listing the valid ones
        started = time.perf_counter()
        with self._writing("rebuilding the vector index"):
            vectors = self.catalog.rebuild(settings.index)
            if settings != self.settings:  # after the snapshot: a crash in between rebuilds the old kind
                _save_settings(self.path, settings)
                self.settings = settings
        seconds = time.perf_counter() - started
        return {"kind": settings.index.kind, "vectors": vectors.count(), "seconds": seconds,
                "partitions": vectors.describe()}  # fmt: skip

    # -- category classifier
    def train_classifier(
        self, kind: str | None = None, *, on_stage: StageCallback | None = None, **changes: Any
    ) -> Any:
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
        epochs = (
            None if on_stage is None else (lambda done, most: on_stage("training the classifier (epochs)", done, most))
        )
        with self._writing("training the category classifier"):
            result = train_index_classifier(
                self.store, self._dim, settings, embed=self._vectors_of_images, progress=epochs
            )
            self._category_classifier().save(result)
        return result

    def embed(self, images: Sequence[ImageSource]) -> np.ndarray:
        """(len(images), dim) vectors of images (paths, encoded bytes or PIL images) exactly as this
        index stores and searches them: same localisation, backbone and learned embedding."""
        pictures = [load_image(image) for image in images]
        self._catch_up()
        return self._vectors_of_images(pictures) if pictures else np.zeros((0, self._dim), np.float32)

    def _vectors_of_images(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([features.vector for features in self._describe(images, describers=[])])

    # -- learned embedding (opt-in)
    def train_embedding(
        self,
        settings: HeadSettings | None = None,
        *,
        items: Mapping[str | int, str] | None = None,
        progress: Callable[[int, int, dict[str, Any]], None] | None = None,
        on_stage: StageCallback | None = None,
        force: bool = False,
        photos: Sequence[str | Path] | None = None,
        archive: bool = True,
    ) -> EmbeddingReport:
        """Learn the index's own embedding from its products, then re-embed the index with it if it helps.

        `settings` defaults to the index's `settings.head`: kind "finetune" (the default: the
        backbone's last stages trained on the catalogue, every image re-embedded from its file, see
        `lookalike.embed.finetune`), or "pca", "supervised" (whitening), "linear", "mlp" (heads on
        the stored vectors, see `lookalike.embed.train`). Product ids: `items` (path or id ->
        product), else each image's category or item (`settings.label`). Held-out products give the
        validation curve (`progress(epoch, epochs, {"loss", "val_map"})`) and the
        `EmbeddingReport`'s before/after retrieval figures. `on_stage(stage, done, total)` follows
        the long image passes of "finetune" (the frozen maps, the re-embedding).

        The new embedding is installed (and queries then get it) only when its mAP on the held-out
        products beats the embedding the index uses now (`report.current`), or with `force=True`;
        otherwise the index is left as it was. `report.kept` and `report.verdict` say which and why;
        `report.warnings` notes product ids that cover few of the indexed images.

        `photos` (kind "self" only): unlabelled photos of the catalogue's products, e.g. a shop's photo
        archive or past queries; they are not indexed. After the adaptation, rounds of pseudo-labels
        (`head.adapt.pseudo_*`, `lookalike.embed.adapt.fit_pseudo_labels`) fine-tune the backbone on the
        photos each catalogue image recognises most clearly; `report.rounds` has each round's facts.
        When the new embedding is installed and `archive` is true, the photos also join the index's photo
        archive (`archive_photos`), embedded by the new model, for the "archive" re-ranker.
        """
        from lookalike.embed import train

        settings = settings or self.settings.head
        train.check_kind(settings.kind)
        if photos and settings.kind != "self":
            raise LookalikeError(
                f"photos are used by label-free adaptation only (kind 'self'), not by kind {settings.kind!r}"
            )
        with self._writing(f"training an embedding ({settings.kind})"):
            if settings.kind == "finetune":
                return self._fine_tune(settings, items, progress, on_stage, force)
            if settings.kind == "self":
                return self._adapt(settings, progress, on_stage, force, _checked_photos(photos or ()), archive)
            started = time.perf_counter()
            featurizer = self.featurizer
            ids, raw = train.raw_vectors(self.store, self._dim, featurizer.raw_dim, featurizer.transform is not None)
            labels = train.product_labels(self.store, ids, settings.label, items)
            transform, facts = train.fit_transform(raw, labels, settings, progress)
            report = train.report_from(transform, facts, len(ids), time.perf_counter() - started)
            _, held = train.split_for(labels, settings)
            self._judge(report, ids, labels, held, None, items, force)
            if report.kept:
                vectors = transform.transform(raw)
                self._install(featurizer.with_transform(transform), ids, vectors, raw, train.head_meta(report))
            return report

    def _judge(
        self,
        report: EmbeddingReport,
        ids: np.ndarray,
        labels: list[str | None],
        held: np.ndarray,
        current: dict[str, float] | None,
        items: Mapping[str | int, str] | None,
        force: bool,
    ) -> None:
        """Fill the report's coverage warnings and its verdict against the embedding in use: `current`
        when given (the trainer measured it), else the stored vectors of the held-out images."""
        from lookalike.embed import train
        from lookalike.embed.base import l2_normalize

        report.n_labelled_images = sum(label is not None for label in labels)
        report.warnings = train.coverage_warnings(labels, None if items is None else len(items), report.kind)
        featurizer = self.featurizer
        learned = featurizer.tuning is not None or featurizer.transform is not None
        in_use = "the current learned embedding" if learned else "the pretrained vectors"
        if current is None and held.any():
            held_ids = [int(i) for i in ids[held]]
            stored = self.store.vectors_of(held_ids, self._dim)
            names = np.array([label or "" for label in labels])[held]
            current = train.held_out_report(l2_normalize(np.stack([stored[i] for i in held_ids])), names)
        train.judge(report, current, in_use, force)

    # -- carrying a model between indexes
    def export_model(self, folder: str | Path) -> dict[str, Any]:
        """Write this index's model (backbone, fine-tuned tail, learned transform, their settings and
        fingerprint) into a new folder, for `Engine.create(model_from=)` or `use_model` elsewhere."""
        from lookalike.carry import export_model

        self._catch_up()
        featurizer = self.featurizer
        self._check_featurizer(featurizer)
        return export_model(featurizer, Path(folder))

    def use_model(self, source: str | Path, *, on_stage: StageCallback | None = None) -> dict[str, Any]:
        """Re-embed every image with the model at `source` (a model folder or another index) and keep
        it: queries then use it too. Its `embed`/`localize` settings replace this index's."""
        from lookalike.carry import differs, model_settings

        source = Path(source)
        settings = model_settings(source, self.settings)
        started = time.perf_counter()
        with self._writing("re-embedding with a carried model"):
            featurizer = self._carried_featurizer(source, settings)
            featurizer.allow_export()
            ids, paths = self._catalogue_paths()
            done = None if on_stage is None else (lambda count, total: on_stage("re-embedding", count, total))
            raw = featurizer.raw_files(paths, progress=done)
            transform = featurizer.transform
            vectors = raw if transform is None else transform.transform(raw)
            meta = {"carried_from": str(source.resolve())}
            self._install(featurizer, ids, vectors, None if transform is None else raw, meta)
            if differs(settings, self.settings):  # after the vectors: a crash in between is refused, not mixed
                _save_settings(self.path, settings)
                self.settings = settings
        return {"images": len(ids), "dim": featurizer.dim, "seconds": time.perf_counter() - started,
                "model": describe_fingerprint(featurizer.fingerprint())}  # fmt: skip

    def _carried_featurizer(self, source: Path, settings: Settings) -> Featurizer:
        from lookalike.carry import load_model

        describers = [reranker for reranker in self._get_rerankers() if reranker.needs.describes]
        if self.threads is not None:
            settings = settings.replace(**{"embed.threads": self.threads, "localize.threads": self.threads})
        featurizer = load_model(source, settings, describers=describers)
        featurizer.may_export = True  # it belongs to a writer: it may export its embedder to ONNX
        return featurizer

    def remove_embedding(self) -> bool:
        """Drop the learned transform or fine-tuned backbone and restore the pretrained backbone's
        vectors (a fine-tuned one re-embeds every image from its file); False when there was none."""
        from lookalike.embed import train

        with self._writing("removing the learned embedding"):
            featurizer = self.featurizer
            if featurizer.tuning is not None:
                self._reembed(featurizer.with_tuning(None), None)
                return True
            if featurizer.transform is None:
                return False
            ids, raw = train.raw_vectors(self.store, self._dim, featurizer.raw_dim, True)
            self._install(featurizer.with_transform(None), ids, raw, None, None)
            return True

    # -- photo archive
    def archive_photos(
        self,
        photos: Iterable[str | Path],
        *,
        replace: bool = False,
        use: bool = True,
        on_stage: StageCallback | None = None,
    ) -> dict[str, Any]:
        """Keep unlabelled photos of the catalogue's products beside the index (its photo archive, see
        `lookalike.index.archive`): embedded by the index's model, never returned as hits. The "archive"
        re-ranker then reaches a catalogue image through the archive photos a query resembles.

        `replace` drops the photos kept so far; `use` adds "archive" to `rerank.chain` (saved with the
        index's settings; processes that have the index open see it when they open it again). An
        unreadable photo raises an `ImageError` naming it, and the archive is left as it was. Returns the
        archive's size, how many photos were new to it, and whether the re-ranker is on.
        """
        from lookalike.index.archive import PhotoArchive

        checked = _checked_photos(photos, "one of the photos given to the archive; nothing was added")
        with self._writing("adding photos to the archive"):
            featurizer = self._checked_featurizer()
            done = None if on_stage is None else (lambda count, total: on_stage("archive photos", count, total))
            added = PhotoArchive(checked, featurizer.embed_files(checked, progress=done), featurizer.fingerprint())
            kept = None if replace else PhotoArchive.load_current(self.path, self.store.get_meta("embedder"))
            archive = added if kept is None else kept.merged(added)
            archive.save(self.path)
            if use:
                self._use_reranker("archive", True)
        new = len(archive) - (len(kept) if kept is not None else 0)  # photos already kept are embedded again only
        return {"photos": len(archive), "added": new, "reranker": "archive" in self.settings.rerank.chain}

    def clear_archive(self) -> bool:
        """Drop the photo archive and take "archive" out of `rerank.chain`; False when there was none.
        The archive folder goes with it: its matrices and the photos uploaded into it (the server's copies);
        photos elsewhere are not touched."""
        from lookalike.index.archive import PhotoArchive

        return self._clear_sidecar(PhotoArchive, "archive")

    def use_archive(self, use: bool = True) -> None:
        """Add "archive" to `rerank.chain` (or take it out), saved with the index's settings."""
        from lookalike.index.archive import PhotoArchive

        how = "add photos first (`lookalike archive --index I PHOTOS`, or Engine.archive_photos)"
        self._switch_reranker(PhotoArchive, "archive", use, how)

    def archive_info(self) -> dict[str, Any] | None:
        """The photo archive's size and whether its vectors are the index's model's; None when there is none."""
        from lookalike.index.archive import PhotoArchive

        summary = PhotoArchive.summary(self.path)
        if summary is None:
            return None
        count, embedder = summary
        return {"photos": count, "current": embedder == self.store.get_meta("embedder"),
                "reranker": "archive" in self.settings.rerank.chain}  # fmt: skip

    # -- catalogue views
    def make_views(
        self, *, count: int | None = None, use: bool = True, on_stage: StageCallback | None = None
    ) -> dict[str, Any]:
        """Make `count` (default `rerank.views.count`) phone-photo views of every catalogue image, embedded
        by the index's model and kept beside the index (`lookalike.index.views`); the "views" re-ranker
        then scores a candidate by the query's best matches among its image and its views. They follow
        the catalogue from then on: added images get theirs, a new embedding makes them all again.

        `use` puts "views" first in `rerank.chain` (saved with the index's settings). Costs `count`
        embeddings per catalogue image, made without the write lock (other writers go on meanwhile); under it,
        the views of images added or removed meanwhile are brought up to date, then saved. Returns
        `views_info()`."""
        self._catch_up()
        if not self.store.count():
            raise LookalikeError(f"{self.path}: the index holds no images to make views of; add the catalogue first")
        count = count or self.settings.rerank.views.count
        made = self._views_for(self._checked_featurizer(), None, on_stage, count)
        with self._writing("saving catalogue views"):
            if not self.store.count():
                raise LookalikeError(f"{self.path}: the catalogue was emptied while its views were made; none kept")
            views = self._views_for(self._checked_featurizer(), made, None, count)  # another model meanwhile: all again
            views.save(self.path)
            if count != self.settings.rerank.views.count:  # only once they are made: a stopped making changes nothing
                self.settings = self.settings.replace(**{"rerank.views.count": count})
                _save_settings(self.path, self.settings)
                self._rerankers, self._refreshed_generation = None, -1
            if use:
                self._use_reranker("views", True)
        info = self.views_info()
        assert info is not None  # just saved
        return info

    def clear_views(self) -> bool:
        """Drop the catalogue views and take "views" out of `rerank.chain`; False when there were none."""
        from lookalike.index.views import CatalogueViews

        return self._clear_sidecar(CatalogueViews, "views")

    def use_views(self, use: bool = True) -> None:
        """Put "views" first in `rerank.chain` (or take it out), saved with the index's settings."""
        from lookalike.index.views import CatalogueViews

        self._switch_reranker(
            CatalogueViews, "views", use, "make them first (`lookalike views --index I`, or Engine.make_views)"
        )

    def views_info(self) -> dict[str, Any] | None:
        """How many catalogue images have views, how many each, whether the index's model made them and
        whether the re-ranker uses them; None when there are none."""
        from lookalike.index.views import CatalogueViews

        summary = CatalogueViews.summary(self.path)
        if summary is None:
            return None
        owners, embedder, count = summary
        ids = self.store.ids()
        with_views = int(np.isin(ids, owners).sum())
        return {"images": with_views, "missing": len(ids) - with_views, "count": count,
                "current": embedder == self.store.get_meta("embedder"),
                "reranker": "views" in self.settings.rerank.chain}  # fmt: skip

    def _clear_sidecar(self, kind: Any, reranker: str) -> bool:
        """Drop a file kept beside the index (a `SidecarFile`: the archive, the views) with its folder, and take
        its re-ranker out of the chain; False when there was none."""
        with self._writing(f"clearing {kind.what}"):
            removed = kind.remove(self.path)
            shutil.rmtree(self.path / kind.folder, ignore_errors=True)
            self._use_reranker(reranker, False)
        return bool(removed)

    def _switch_reranker(self, kind: Any, reranker: str, use: bool, how: str) -> None:
        """`_use_reranker`, refused (saying `how` to make it) when the file the re-ranker reads is missing."""
        with self._writing("changing the re-ranking chain"):
            if use and kind.version(self.path) is None:
                missing = kind.what.removeprefix("the ")
                raise LookalikeError(
                    f"{self.path}: the index has no {missing} for the {reranker!r} re-ranker to use; {how}"
                )
            self._use_reranker(reranker, use)

    def _use_reranker(self, name: str, use: bool) -> None:
        """Put re-ranker `name` in `rerank.chain` or take it out: "views" goes first (it re-scores the vector
        search itself), others last. Saved with the index's settings."""
        chain = tuple(other for other in self.settings.rerank.chain if other != name)
        if use:
            chain = (name, *chain) if name == "views" else (*chain, name)
        if chain != self.settings.rerank.chain:
            self.settings = self.settings.replace(**{"rerank.chain": list(chain)})
            _save_settings(self.path, self.settings)
            self._rerankers, self._refreshed_generation = None, -1

    def _views_for(
        self, featurizer: Featurizer, kept: Any, on_stage: StageCallback | None, count: int | None = None
    ) -> Any:
        """The catalogue views of every image of the index made by `featurizer`: `kept`'s (when the same model
        and recipe made them) for the images it has, new ones for the rest; views of removed images dropped."""
        from lookalike.embed.adapt import make_catalogue_views
        from lookalike.index.views import CatalogueViews, recipe_of

        ids = self.store.ids()  # not `_catalogue_paths`: the stored vectors are not needed here
        known = self.store.get_many(ids.tolist())
        paths = [known[int(item)].path for item in ids]
        head, count = self.settings.head, count or self.settings.rerank.views.count
        recipe, fingerprint = recipe_of(head.adapt, head.seed), featurizer.fingerprint()
        if kept is not None and not (kept.current_for(fingerprint) and kept.recipe == recipe and kept.count == count):
            kept = None
        have = kept.images if kept is not None else set()
        rows = [row for row, item in enumerate(ids.tolist()) if item not in have]
        done = None if on_stage is None else (lambda d, t: on_stage("catalogue views", d, t))

        def embed(pictures: list[Image.Image]) -> np.ndarray:
            return np.stack([features.vector for features in featurizer.describe(pictures, describers=[])])

        made = make_catalogue_views(
            embed, lambda row: load_image(paths[row]), len(paths), rows, ids[rows].tolist(), head, count,
            self._segment(head), done,
        )  # fmt: skip
        new = CatalogueViews(np.repeat(ids[rows], count), made.reshape(-1, featurizer.dim), fingerprint, count, recipe)
        return new if kept is None else kept.keeping(set(ids.tolist())).merged(new)

    def _views_follow_catalogue(self) -> None:
        """After images were added or removed: views for the new ones, none for the removed (when the index
        keeps views made by its model; `check` reports others). A failure to make them leaves the images
        without views (they keep their vector score), with a warning."""
        from lookalike.index.views import CatalogueViews

        try:
            kept = CatalogueViews.load_current(self.path, self.store.get_meta("embedder"))
            if kept is None or (not self.store.count() and not len(kept)):
                return
            if not self.store.count():
                kept.keeping(set()).save(self.path)
                return
            views = self._views_for(self._checked_featurizer(), kept, None, kept.count)  # as many as the others have
            if len(views) != len(kept) or not np.array_equal(views.owners, kept.owners):
                views.save(self.path)
        except LookalikeError as exc:
            log.warning("%s: catalogue views not brought up to date (%s); `lookalike views --index I` makes them",
                        self.path, exc)  # fmt: skip

    def _fine_tune(
        self,
        settings: HeadSettings,
        items: Mapping[str | int, str] | None,
        progress: Callable[..., None] | None,
        on_stage: StageCallback | None,
        force: bool,
    ) -> EmbeddingReport:
        """`train_embedding` with kind "finetune": train the backbone's last stages, then re-embed."""
        from lookalike.embed import finetune, train

        started = time.perf_counter()
        ids, paths = self._catalogue_paths()
        labels = train.product_labels(self.store, ids, settings.label, items)
        pristine = self.featurizer.pristine_embedder()  # fine-tuning always starts from the pretrained weights
        maps_done = None if on_stage is None else (lambda done, total: on_stage("frozen feature maps", done, total))
        tuning, report = finetune.tune_on_files(pristine, paths, labels, settings, progress, on_maps=maps_done)
        _, held = train.split_products(list(labels), settings.validation_fraction, settings.seed)
        learned = self.featurizer.tuning is not None or self.featurizer.transform is not None
        # with the pretrained vectors in use, the trainer's own "before" measured them the way "after" was measured
        self._judge(report, ids, labels, held, None if learned else report.before, items, force)
        if report.kept:
            self._reembed(self.featurizer.with_tuning(tuning), train.head_meta(report), on_stage)
        report.seconds = time.perf_counter() - started
        return report

    def _adapt(
        self,
        settings: HeadSettings,
        progress: Callable[..., None] | None,
        on_stage: StageCallback | None,
        force: bool,
        photos: list[str],
        archive: bool,
    ) -> EmbeddingReport:
        """`train_embedding` with kind "self": label-free adaptation of the backbone's last stages to
        the catalogue's own images (see `lookalike.embed.adapt`), pseudo-labels on `photos` when
        there are any, then re-embed."""
        from lookalike.embed import adapt, train

        started = time.perf_counter()
        _, paths = self._catalogue_paths()
        featurizer = self.featurizer
        start = self._adaptation_start(settings)
        views_done = None if on_stage is None else (lambda done, total: on_stage("views and frozen maps", done, total))
        other = featurizer.tuning if featurizer.tuning is not start and featurizer.transform is None else None
        tuning, report, _ = adapt.adapt_on_files(
            featurizer.pristine_embedder(), paths, settings, start=start, segment=self._segment(settings),
            progress=progress, on_maps=views_done, measure=other,
        )  # fmt: skip
        # the embedding in use: the starting point (measured as "before"), another tuning (measured on
        # the same views), or a learned transform (not measurable on the cached maps)
        if featurizer.transform is not None:
            current = None
        else:
            current = report.before if featurizer.tuning is start else report.current
        in_use = featurizer.tuning is not None or featurizer.transform is not None
        label = "the current learned embedding" if in_use else "the pretrained vectors"
        train.judge(report, current, label, force, ("fresh augmented views of the catalogue", "validation-view mAP"))
        if report.kept and photos:
            tuning = self._pseudo_labels(tuning, paths, photos, settings, report, progress, on_stage)
        if report.kept:
            archived = photos if archive else ()
            self._reembed(featurizer.with_tuning(tuning), train.head_meta(report), on_stage, archive_photos=archived)
            if archived:
                report.verdict += (
                    f" The {len(archived)} photos joined the index's photo archive, embedded by the new model, "
                    "for the 'archive' re-ranker (`lookalike archive --clear` drops them)."
                )
        report.seconds = time.perf_counter() - started
        return report

    def _pseudo_labels(
        self,
        adapted: Any,
        paths: list[str],
        photos: list[str],
        settings: HeadSettings,
        report: EmbeddingReport,
        progress: Callable[..., None] | None,
        on_stage: StageCallback | None,
    ) -> Any:
        """The adapted tuning refined by pseudo-label rounds on `photos`; fills the report's rounds.
        An unreadable photo raises an `ImageError` naming it before anything is installed."""
        from lookalike.embed import adapt
        from lookalike.embed.finetune import images_maps, tail_start
        from lookalike.io.images import load_image

        started = time.perf_counter()
        pristine = self.featurizer.pristine_embedder()
        first = tail_start(pristine.network(), settings.finetune_stages)

        def maps_of(files: list[str], stage: str) -> np.ndarray:
            done = None if on_stage is None else (lambda d, t: on_stage(stage, d, t))
            return images_maps(pristine, lambda a, b: [load_image(f) for f in files[a:b]], len(files), first, done)

        photo_maps, catalogue_maps = maps_of(photos, "photos' frozen maps"), maps_of(paths, "catalogue frozen maps")
        tuning, report.rounds = adapt.fit_pseudo_labels(
            pristine, adapted, catalogue_maps, photo_maps, settings, progress
        )
        report.fingerprint = tuning.fingerprint()
        report.timings["pseudo_labels"] = time.perf_counter() - started
        last = report.rounds[-1]
        report.verdict += (
            f" Then {len(report.rounds)} round(s) of pseudo-labels on {len(photos)} unlabelled photos: the last kept "
            f"{last['photos_kept']}, for {last['catalogue_images_with_photos']} catalogue images (not measurable "
            "without labels; `lookalike evaluate` measures it on labelled photos)."
        )
        return tuning

    def _adaptation_start(self, settings: HeadSettings) -> Any:
        """The tuning label-free adaptation starts from: None (the pretrained backbone) or the index's own."""
        if settings.adapt.start == "pretrained":
            return None
        if self.featurizer.tuning is None:
            raise LookalikeError(
                "head.adapt.start is 'current' but the index has no fine-tuned backbone to start from; "
                "fine-tune it first (train-embedding --kind finetune, or `model use` a carried model), or start "
                "from the pretrained backbone (head.adapt.start=pretrained)"
            )
        return self.featurizer.tuning

    def _segment(self, settings: HeadSettings) -> Callable[[Any], Any] | None:
        """The object masks that backgrounds and piles cut out: the index's localiser, or one made for it."""
        if settings.adapt.background == 0 and settings.adapt.pile == 0:
            return None
        from lookalike.embed.adapt import segmenter_masks
        from lookalike.localize import Localizer

        return segmenter_masks(self.featurizer.localizer or Localizer(self.settings.localize))

    def _reembed(
        self,
        featurizer: Featurizer,
        meta: dict[str, Any] | None,
        on_stage: StageCallback | None = None,
        archive_photos: Sequence[str] = (),
    ) -> None:
        """Every image embedded again from its file by `featurizer`, then swapped in.

        Searches go on with the current featurizer meanwhile; every vector is computed before anything
        is written, so an unreadable image raises an `ImageError` naming it and leaves the index as it was.
        """
        ids, paths = self._catalogue_paths()
        done = None if on_stage is None else (lambda count, total: on_stage("re-embedding", count, total))
        vectors = featurizer.embed_files(paths, progress=done)
        self._install(featurizer, ids, vectors, None, meta, archive_photos=archive_photos, on_stage=on_stage)

    def _install(
        self,
        featurizer: Featurizer,
        ids: np.ndarray,
        vectors: np.ndarray,
        raw: np.ndarray | None,
        meta: Any,
        *,
        archive_photos: Sequence[str] = (),
        on_stage: StageCallback | None = None,
    ) -> None:
        """Write the new vectors (with each image's raw vector while a transform is installed), the new
        featurizer's files and fingerprint, and swap it in, atomically for searches. The photo archive
        (with `archive_photos` added) and the catalogue views are embedded again by the new featurizer first."""
        from lookalike.index.views import CatalogueViews

        fingerprint = featurizer.fingerprint()
        previous = self.featurizer
        archive = self._archive_for(featurizer, archive_photos, on_stage)
        views = self._views_for(featurizer, None, on_stage) if CatalogueViews.version(self.path) else None
        with self.catalog.writing():
            self.store.rewrite_vectors(
                ids, vectors, blob=RAW_BLOB, blob_rows=raw if featurizer.transform is not None else None,
                meta={"dim": featurizer.dim, "embedder": fingerprint, "head": meta},
            )  # fmt: skip
            featurizer.save(self.path, previous)
            if archive is not None:
                archive.save(self.path)
            if views is not None:
                views.save(self.path)
            self._featurizer = featurizer
            self.catalog.reset(featurizer.dim)
        self.catalog.save_snapshot()
        if archive_photos:
            self._use_reranker("archive", True)

    def _archive_for(self, featurizer: Featurizer, added: Sequence[str], on_stage: StageCallback | None) -> Any:
        """The photo archive's photos, with `added`, embedded by `featurizer`; None when there are none.
        Photos whose files are gone since they were added are dropped, with a warning."""
        from lookalike.index.archive import PhotoArchive
        from lookalike.io.images import path_problem

        kept = PhotoArchive.load(self.path)
        paths = list(dict.fromkeys([*(kept.paths if kept is not None else []), *added]))
        readable = [path for path in paths if path_problem(Path(path)) is None]
        if len(readable) < len(paths):
            log.warning("%s: %d archive photo(s) can no longer be read and leave the archive: %s", self.path,
                        len(paths) - len(readable), ", ".join(sorted(set(paths) - set(readable))[:5]))  # fmt: skip
        if not paths:
            return None
        if not readable:
            return PhotoArchive([], np.zeros((0, featurizer.dim), np.float32), featurizer.fingerprint())
        done = None if on_stage is None else (lambda count, total: on_stage("archive photos", count, total))
        return PhotoArchive(readable, featurizer.embed_files(readable, progress=done), featurizer.fingerprint())

    def _catalogue_paths(self) -> tuple[np.ndarray, list[str]]:
        chunks = list(self.store.vectors(self._dim))
        if not chunks:
            raise LookalikeError("the index holds no images: add the catalogue before training an embedding")
        ids = np.concatenate([chunk_ids for chunk_ids, _, _ in chunks])
        known = self.store.get_many(ids.tolist())
        return ids, [known[int(i)].path for i in ids]

    # -- internals: writing and catching up
    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Hold the index's write lock (this process's threads and other processes wait) and start
        from what other processes committed."""
        self._check_still_there()
        with self._write_lock.hold(what):
            self._check_still_there()
            self._catch_up()
            self._export_if_missing()
            yield

    def _export_if_missing(self) -> None:
        """A writer exports the embedder to ONNX when the folder has no export of its weights (an index
        made by an older version, or with embed.runtime "torch" then changed): later searches skip torch."""
        from lookalike.embed.runtime import install_export

        featurizer = self.featurizer
        if featurizer.settings.embed.runtime != "onnx" or featurizer.export is not None:
            return
        try:
            made = featurizer.allow_export()
        except LookalikeError:  # models that do not fit the index: the write reports it when it needs them
            return
        if made is not None:
            install_export(self.path, made)

    def _check_still_there(self) -> None:
        """A folder deleted or moved while open would take every later write with it: refuse them."""
        if not self.present():
            raise IndexNotFoundError(
                f"{self.path}: the index folder was deleted or moved while it was open; nothing more can be "
                "written to it: restore it, or open the index where it is now"
            )

    def _catch_up(self) -> None:
        """Take in what other processes committed: images added or removed, or a new embedding (then
        the featurizer is loaded again from the folder)."""
        if self.catalog.sync() == "reloaded":
            self._featurizer = None

    # -- internals: features
    def _describe(
        self, images: Sequence[Image.Image], timer: Timer | None = None, describers: Sequence[Any] | None = None
    ) -> list[Features]:
        """The featurizer's features of images, once it is known to make this index's vectors; reading its
        models' files and checking their fingerprints (the first query's) is timed as `load`."""
        timer = timer or Timer()
        loading = self._featurizer is None or not self._featurizer.loaded
        with timer.stage("load") if loading else nullcontext():
            featurizer = self._checked_featurizer()
        return featurizer.describe(images, timer, describers)

    def _checked_featurizer(self) -> Featurizer:
        featurizer = self.featurizer
        try:
            self._check_featurizer(featurizer)
        except IndexMismatchError:  # another process may have installed a new embedding: load the folder's
            self._featurizer = None
            with self.catalog.writing():
                self.catalog.reset(int(self.store.get_meta("dim") or 0))
            featurizer = self.featurizer
            self._check_featurizer(featurizer)
        return featurizer

    def _check_featurizer(self, featurizer: Featurizer) -> None:
        if self._dim and featurizer.dim != self._dim:
            raise IndexMismatchError(
                f"{self.path}: index holds {self._dim}-d vectors, the models give {featurizer.dim}"
            )
        stored = self.store.get_meta("embedder")
        if stored is not None and not featurizer.matches(stored):
            raise IndexMismatchError(mismatch_message(self.path, stored, featurizer.fingerprint()))

    def _get_rerankers(self) -> list[Reranker]:
        if self._rerankers is None:
            from lookalike.rerank import create_reranker

            self._rerankers = [create_reranker(name, self.settings) for name in self.settings.rerank.chain]
        return self._rerankers

    def _chain(self, rerank: bool) -> list[Reranker]:
        return self._get_rerankers() if rerank else []

    def _after_change(self) -> None:
        """After a commit: save the vector snapshot, bring the catalogue views up to date, let re-rankers with
        catalogue-wide data catch up."""
        self.catalog.save_snapshot()
        self._views_follow_catalogue()
        self._refresh_rerankers()

    def _refresh_rerankers(self) -> None:
        """Let re-rankers with catalogue-wide data (diffusion) load or rebuild it for this generation."""
        generation = self.store.generation
        for reranker in self._get_rerankers():
            if reranker.needs.catalogue:
                reranker.refresh(self.store, self._dim, self.path, generation)  # type: ignore[attr-defined]
        self._refreshed_generation = generation

    # -- internals: search
    def _search_features(
        self,
        features: Features,
        k: int,
        category: str | None,
        timer: Timer,
        label: str,
        chain: Sequence[Reranker],
        gating: bool | None,
    ) -> SearchResult:
        from lookalike.rerank import Candidate, QueryData, apply_chain, chain_depth

        searched, classification = self._plan_categories(features.vector, category, gating, timer)
        if any(r.needs.catalogue for r in chain) and self._refreshed_generation != self.store.generation:
            self._refresh_rerankers()
        with self.catalog.searching() as vectors:
            depth = max(k, chain_depth(chain))
            with faiss_threads(self.threads):
                scores, ids = self.catalog.candidates(vectors, features.vector, depth, searched, timer)
            candidates = [
                Candidate(int(i), float(s), {"vector": float(s)}) for i, s in zip(ids, scores, strict=True) if i >= 0
            ]
            if chain:
                with timer.stage("rerank"):
                    query = QueryData(features.vector, features.blobs, self.store, self._dim, features.details)
                    candidates = apply_chain(chain, query, candidates)
            candidates = candidates[:k]
            with timer.stage("metadata"):
                items = self.store.get_many(c.id for c in candidates)
        hits = [
            Hit(rank, c.id, items[c.id].path, c.score, items[c.id].category, c.scores)
            for rank, c in enumerate((c for c in candidates if c.id in items), 1)
        ]
        searched_list = None if searched is None else [c for c in searched if c is not None]
        details = {**features.details, **classification}
        return SearchResult(hits, timer.total(), searched_list, label, details, features.localization)

    def _categories_to_search(self, category: str | None) -> list[str] | None:
        if category is None:
            return None
        counts = self.store.category_counts()
        if category not in counts:
            known = ", ".join(sorted(str(c) for c in counts if c is not None)) or "none"
            raise LookalikeError(f"unknown category {category!r}; the index holds: {known}")
        return [category]

    def _plan_categories(
        self, vector: np.ndarray, category: str | None, gating: bool | None, timer: Timer
    ) -> tuple[list[str | None] | None, dict[str, Any]]:
        """The categories to search (None inside = uncategorised images) and, with a trained
        classifier, its prediction for `details["classification"]` (gated search, classify/gate.py)."""
        forced = self._categories_to_search(category)
        searched: list[str | None] | None = None if forced is None else list(forced)
        classifier = self._category_classifier().model()
        if classifier is None:
            return searched, {}
        from lookalike.classify import plan_search

        partitions = self.catalog.partition_names() if self.settings.index.partition_by_category else None
        with timer.stage("classify"):
            decision = plan_search(
                classifier, vector, self.settings.classify, partitions=partitions, category=category, gating=gating
            )
        return decision.searched, {"classification": decision.details}

    def _category_classifier(self) -> IndexClassifier:
        if self._classifier is None:
            from lookalike.classify import CLASSIFIER_DIR, IndexClassifier

            self._classifier = IndexClassifier(self.path / CLASSIFIER_DIR)
        return self._classifier

    # -- internals: adding and removing
    def _add_chunk(self, chunk: list[CatalogEntry], report: AddReport) -> None:
        """Embed and commit one batch; reads only this batch's rows, so its cost does not grow with the index."""
        from lookalike.index import NewItem

        paths = [stored_path(entry.path) for entry in chunk]
        known = self.store.known_paths(paths)
        pending: list[tuple[CatalogEntry, str, str, Image.Image]] = []
        for entry, path in zip(chunk, paths, strict=True):
            try:
                digest, image = hash_and_load(entry.path, unless=known.get(path, (0, None))[1])
            except ImageError as exc:
                report.failed.append((str(entry.path), exc.reason))
                continue
            except OSError as exc:
                report.failed.append((str(entry.path), f"cannot read the file ({exc.strerror or exc})"))
                continue
            if image is None:
                report.unchanged.append(path)
            else:
                pending.append((entry, path, digest, image))
        if not pending:
            return
        described = self._describe([image for *_, image in pending])
        new = [
            NewItem(path, entry.category, digest, features.vector, _item_extra(entry), features.blobs)
            for (entry, path, digest, _), features in zip(pending, described, strict=True)
        ]
        self._commit_batch(new, known, report)

    def _add_distributed(
        self,
        entries: list[CatalogEntry],
        report: AddReport,
        progress: ProgressCallback | None,
        workers: int | None,
        ray_address: str | None,
    ) -> None:
        """Embed on Ray (lookalike.distributed); commit what comes back every DISTRIBUTED_COMMIT images."""
        from lookalike.distributed import featurize_on_ray
        from lookalike.index import NewItem

        by_path = {stored_path(entry.path): entry for entry in entries}
        known: dict[str, tuple[int, str]] = {}
        for start in range(0, len(entries), 1_000):  # batched lookups: no scan of the whole catalogue
            known.update(self.store.known_paths(list(by_path)[start : start + 1_000]))
        rows = [{"path": path, "known_hash": known.get(path, (0, ""))[1]} for path in by_path]
        batch: list[NewItem] = []
        self._check_featurizer(self.featurizer)  # the actors load the folder's models: they must make these vectors
        fingerprint = self.featurizer.fingerprint()
        results = featurize_on_ray(self.path, fingerprint, rows, workers=workers, address=ray_address)
        for done, result in enumerate(results, start=1):
            path = result["path"]
            if result["status"] == "unchanged":
                report.unchanged.append(path)
            elif result["status"] == "failed":
                report.failed.append((path, result["reason"]))
            else:
                entry = by_path[path]
                batch.append(NewItem(path, entry.category, result["digest"], result["vector"], _item_extra(entry),
                                     result["blobs"]))  # fmt: skip
            if len(batch) >= DISTRIBUTED_COMMIT:
                self._commit_batch(batch, known, report)
                batch = []
            if progress:
                progress(done, len(rows))
        self._commit_batch(batch, known, report)
        if report.embedded:
            self._after_change()

    def _commit_batch(self, new: list[Any], known: dict[str, tuple[int, str]], report: AddReport) -> None:
        if not new:
            return
        replaced_ids = [known[item.path][0] for item in new if item.path in known]
        replaced = {item_id: item.category for item_id, item in self.store.get_many(replaced_ids).items()}
        ids = self.catalog.commit(new, replaced)
        for item, item_id in zip(new, ids, strict=True):
            (report.updated if item.path in known else report.added).append(item_id)

    def _resolve(self, key: int | str | Path) -> Item | None:
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            return self.store.get(int(key)) if 0 <= int(key) <= MAX_ID else None
        return self.find(key)


def _check_creatable(path: Path, overwrite: bool) -> None:
    state = folder_state(path)
    if state == "file":
        raise LookalikeError(f"{path}: is a file; an index is a folder: choose another path")
    if state == "other":
        raise LookalikeError(
            f"{path}: refusing to use a folder that is not empty and is not a lookalike index; choose another path"
        )
    if state == "index" and not overwrite:
        raise LookalikeError(
            f"{path}: already exists and is not empty; open it with Engine.open, "
            "or pass overwrite=True (CLI: --rebuild) to replace it"
        )
    if state == "half" and not overwrite:
        raise LookalikeError(half_created_message(path))


def _save_settings(path: Path, settings: Settings) -> None:
    """settings.json replaced atomically."""
    temporary = path / (SETTINGS_FILE + ".tmp")
    settings.to_json(temporary)
    temporary.replace(path / SETTINGS_FILE)


def _index_files_present(path: Path) -> bool:
    """settings.json, and the database where the backend keeps one in the folder."""
    if not (path / SETTINGS_FILE).is_file():
        return False
    try:
        backend = json.loads((path / SETTINGS_FILE).read_text()).get("index", {}).get("backend", "faiss")
    except (OSError, ValueError, AttributeError):
        backend = "faiss"  # an unreadable settings file is reported when it is read
    return backend != "faiss" or (path / DATABASE_FILE).is_file()


def _with_defaults(settings: Settings, path: Path, like: Settings | None = None) -> Settings:
    """`settings` with what "auto" and the backend leave open made concrete, as the index will save them:
    the segmenter's precision (that of `like`, an existing index's settings, when given)."""
    settings = _with_backend_defaults(settings, path)
    if not settings.localize.enabled:
        return settings
    from lookalike.localize import resolve_settings

    localize = resolve_settings(settings.localize, like.localize if like is not None else None)
    return settings.replace(**{"localize.precision": localize.precision})


def _with_backend_defaults(settings: Settings, path: Path) -> Settings:
    """A Milvus-backed index's collection named after its folder unless given; its Lite file made absolute."""
    index = settings.index
    if index.backend != "milvus":
        return settings
    from lookalike.index.milvus import collection_name, resolve_uri

    return settings.replace(
        **{"index.uri": resolve_uri(index.uri or ""), "index.collection": index.collection or collection_name(path)}
    )


def _check_backend_creatable(settings: Settings, overwrite: bool) -> None:
    """A Milvus collection of that name is another index: replaced only with overwrite."""
    if settings.index.backend != "milvus":
        return
    from lookalike.index.milvus import MilvusSpace

    space = MilvusSpace(settings.index, create=None)
    try:
        if space.exists() and not overwrite:
            raise LookalikeError(
                f"{settings.index.uri}: collection {settings.index.collection!r} already holds an index; "
                "choose another with --collection, or pass --rebuild (overwrite=True) to replace it"
            )
        if overwrite:
            space.drop_all()
    finally:
        space.close()


def _distinct_files(entries: list[CatalogEntry], report: AddReport) -> list[CatalogEntry]:
    """One entry per real file (a symlink alias or a path given twice is the same file): the first
    is kept, the others listed in `report.duplicates`; a path that cannot be resolved is a failure."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        try:
            real = stored_path(entry.path)  # a URI is its own identity
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            report.failed.append((str(entry.path), f"cannot resolve the path ({exc})"))
            continue
        if real in seen:
            report.duplicates.append(str(entry.path))
            continue
        seen.add(real)
        kept.append(entry)
    return kept


def _check_k(k: int) -> None:
    if k < 1:
        raise SettingsError(f"k must be >= 1, got {k}")


def _item_extra(entry: CatalogEntry) -> dict[str, Any]:
    """Facts kept with an image: its product (`item`) where known, for training an embedding head."""
    return {"item": entry.item} if entry.item else {}


def _rerank_position(hit: Hit, rank: int) -> Hit:
    return Hit(rank, hit.id, hit.path, hit.score, hit.category, hit.scores, hit.extra)


def _modified_at(path: Path) -> str | None:
    """A file's modification time as local "YYYY-MM-DD HH:MM:SS" (indexes older than their `changed_at`)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(path.stat().st_mtime)) if path.exists() else None


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _checked_photos(
    photos: Iterable[str | Path], context: str = "one of the photos given to learn from; nothing was trained"
) -> list[str]:
    """Photos (for training or the archive) as absolute paths, refused before any work when one cannot be opened."""
    from lookalike.io.images import path_problem

    checked = [str(Path(photo).absolute()) for photo in photos]
    for photo in checked:
        problem = path_problem(Path(photo))
        if problem is not None:
            raise ImageError(photo, f"{problem} ({context})")
    return checked
