"""Label-free adaptation (`head.kind = "self"`): the catalogue teaches the backbone with no product ids.

A catalogue often holds one clean studio image per product while people search it with phone
photos. This trains the same backbone tail as `lookalike.embed.finetune` (its last
`finetune_stages` stages, head convolution and GeM p), with no labels: each catalogue image is its
own class (instance discrimination), and `lookalike.embed.views` turns it into what a phone photo
of it looks like (cut out and pasted onto shelves and textures, piled up, cropped, tilted,
occluded, re-lit, blurred, noisy, JPEG-compressed). The loss is a normalised softmax (CosFace
margin) of each view against a memory bank holding one unit vector per image (Wu et al. 2018): the
bank starts from the pretrained vectors of the clean images and follows the views' vectors
(`adapt.momentum`); each batch is contrasted with the whole bank, or with `adapt.negatives` entries
drawn from it when the catalogue is larger, so the cost per step does not grow with the catalogue.
With `adapt.neighbours` = k > 0 (a photo archive, with many photos of each product), an image's k
mutual nearest neighbours in the bank also count as positives from the second epoch on.

Affordable on a CPU: the views are made and sent through the frozen stages once (`adapt.views`
per image, float16 maps); the tail trains on those maps (with a random shift) and the pixels are
never touched again.

What chooses the epoch and decides whether the result is kept: with no labels there are no held
out products. `adapt.validation_views` fresh views of each image (up to 1,000 images), made with
another seed and never trained on, query the clean catalogue images; the figures (mAP, Recall@k:
is the image the view was made from found first?) are measured per epoch, and the best epoch is
kept. They say whether the network became invariant to the augmentations on views it never saw,
not how real phone photos will fare (they come from the same augmentations);
benchmarks/adapt.py measures that on real photos.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike._estimator import check_is_fitted
from lookalike.embed.finetune import (
    MAP_BATCH,
    BackboneTuning,
    EpochCallback,
    _random_shift,
    _schedule,
    _snapshot,
    _tail_module,
    apply_tuning,
    tail_start,
    tail_state,
    tail_vectors,
    trunk_maps,
)
from lookalike.embed.views import PhotoViews, Source, background_photo, thumbnail
from lookalike.errors import LookalikeError
from lookalike.settings import AdaptSettings, HeadSettings

TRAIN, VALIDATION, CATALOGUE_VIEWS = 0, 1, 2  # view streams: training, validation, the index's views
PROPAGATION_BLOCK = 256  # catalogue images whose ids are propagated at once (memory: all images x this)
TILE_POOL = 1000  # catalogue images whose thumbnails make mosaics and occluders
VALIDATION_IMAGES = 1000  # images with validation views, at most
BACKGROUND_LIMIT = 1000  # background photos read from adapt.background_dir, at most
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
NEIGHBOUR_CHUNK = 2048
MEMORY_LIMIT = 2 << 30  # view maps past this many bytes go to a memory-mapped temporary file

LoadImage = Callable[[int], Image.Image]
Segment = Callable[[Image.Image], "np.ndarray | None"]


@dataclass
class ViewMaps:
    """Frozen-stage maps of every image's views: the training views (view 0 = the image itself) and
    the validation views (another seed) of `validation_rows`."""

    train: np.ndarray  # (n, views, c, h, w) float16
    validation: np.ndarray  # (m, validation_views, c, h, w) float16
    validation_rows: np.ndarray  # (m,) int
    masked: int  # images whose object was found (cut out for backgrounds and piles)


def validation_rows(n: int, settings: HeadSettings) -> np.ndarray:
    """The images that get validation views: all, or a seeded 1,000 of them."""
    if settings.adapt.validation_views == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.arange(n)
    if n > VALIDATION_IMAGES:
        rows = np.sort(np.random.default_rng(settings.seed).choice(n, VALIDATION_IMAGES, replace=False))
    return rows


def make_view_maps(
    embedder: Any,
    network: Any,
    first_block: int,
    load: LoadImage,
    n: int,
    settings: HeadSettings,
    segment: Segment | None,
    backgrounds: Sequence[np.ndarray] = (),
    progress: Callable[[int, int], None] | None = None,
) -> ViewMaps:
    """Every image's views through the frozen stages, one image at a time (`load(row)` decodes it;
    `segment(image)` gives its object mask, or None; without it nothing is cut out)."""
    if n < 2:
        raise LookalikeError(f"label-free adaptation needs 2+ catalogue images (each is its own class); got {n}")
    adapt = settings.adapt
    views = PhotoViews(adapt, _tiles(load, n, settings.seed, segment), backgrounds, seed=settings.seed)
    checked = validation_rows(n, settings)
    slot = {int(row): i for i, row in enumerate(checked)}
    train: np.ndarray | None = None
    validation: np.ndarray | None = None
    masked = 0
    for row in range(n):
        image = load(row)
        mask = segment(image) if segment is not None else None
        source = Source.of(image, mask)
        masked += source.alpha is not None
        pictures = [image] + [views.view(source, row, number, TRAIN) for number in range(1, adapt.views)]
        if row in slot:
            pictures += [views.view(source, row, number, VALIDATION) for number in range(adapt.validation_views)]
        maps = _maps(embedder, network, first_block, pictures)
        if train is None:
            train = _allocate((n, adapt.views, *maps.shape[1:]))
            validation = _allocate((len(checked), adapt.validation_views, *maps.shape[1:]))
        train[row] = maps[: adapt.views]
        if row in slot and validation is not None:
            validation[slot[row]] = maps[adapt.views :]
        if progress:
            progress(row + 1, n)
    if train is None or validation is None:
        raise LookalikeError("label-free adaptation needs images: none were read")
    return ViewMaps(train, validation, checked, masked)


def make_catalogue_views(
    embed: Callable[[list[Image.Image]], np.ndarray],
    load: LoadImage,
    n: int,
    rows: Sequence[int],
    keys: Sequence[int],
    settings: HeadSettings,
    count: int,
    segment: Segment | None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """`count` phone-photo views of each catalogue image `rows` (of n; `load(row)` decodes one), embedded by
    `embed`: (len(rows) * count, dim), image by image. The index's catalogue views (`lookalike.index.views`):
    a stream of their own (neither training nor validation views), view `number` of an image keyed by
    `keys` (its catalogue id), so an image added later gets the views a full build would give it."""
    if not len(rows):
        return np.zeros((0, 0), np.float32)
    views = PhotoViews(
        settings.adapt, _tiles(load, n, settings.seed, segment), read_backgrounds(settings.adapt.background_dir),
        seed=settings.seed,
    )  # fmt: skip
    chunks = []
    for done, (row, key) in enumerate(zip(rows, keys, strict=True), start=1):
        image = load(row)
        source = Source.of(image, segment(image) if segment is not None else None)
        chunks.append(embed([views.view(source, int(key), number, CATALOGUE_VIEWS) for number in range(count)]))
        if progress:
            progress(done, len(rows))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 0), np.float32)


def _allocate(shape: tuple[int, ...]) -> np.ndarray:
    """A float16 array of `shape`: in memory up to MEMORY_LIMIT bytes, past that memory-mapped onto a
    temporary file (deleted once the array is freed), so a large catalogue needs disk, not memory."""
    size = int(np.prod(shape)) * 2
    if size <= MEMORY_LIMIT:
        return np.zeros(shape, np.float16)
    with tempfile.TemporaryFile(prefix="lookalike-views-") as handle:  # the mapping outlives the name
        return np.memmap(handle, dtype=np.float16, mode="w+", shape=shape)


def _maps(embedder: Any, network: Any, first_block: int, pictures: Sequence[Image.Image]) -> np.ndarray:
    chunks = [
        trunk_maps(network, embedder.pixels(pictures[start : start + MAP_BATCH]), first_block)
        for start in range(0, len(pictures), MAP_BATCH)
    ]
    return np.concatenate(chunks)


def _tiles(load: LoadImage, n: int, seed: int, segment: Segment | None) -> list[Source]:
    """Thumbnails (with their object masks) of up to TILE_POOL catalogue images, a seeded choice:
    the shelves, mosaics and occluders of the views."""
    rows = np.arange(n) if n <= TILE_POOL else np.random.default_rng(seed).choice(n, TILE_POOL, replace=False)
    tiles = []
    for row in sorted(rows):
        image = load(int(row))
        tiles.append(thumbnail(image, segment(image) if segment is not None else None))
    return tiles


def read_backgrounds(folder: str | Path | None) -> list[np.ndarray]:
    """Your background photos (`adapt.background_dir`): up to BACKGROUND_LIMIT images, sorted by name."""
    if folder is None:
        return []
    from lookalike.io.images import load_image

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise LookalikeError(f"head.adapt.background_dir: {path} is not a folder; expected a folder of photos")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:BACKGROUND_LIMIT]
    if not files:
        raise LookalikeError(f"head.adapt.background_dir: {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [background_photo(load_image(file)) for file in files]


def segmenter_masks(localizer: Any) -> Segment:
    """`segment(image)` from a `lookalike.localize.Localizer`: the main object's mask, None when none is found."""

    if not localizer.settings.matting:
        return localizer.object_mask  # the mask alone: no cut-out or silhouette to make

    def segment(image: Image.Image) -> np.ndarray | None:
        found = localizer.localize(image)  # matting refines the mask
        return found.mask if found.found else None

    return segment


# -- training


class SelfTuner:
    """Trains a backbone's last stages on cached view maps, each image its own class (estimator contract)."""

    kind = "self"

    def __init__(self, settings: HeadSettings) -> None:
        self.settings = settings

    def fit(
        self,
        maps: np.ndarray,
        *,
        network: Any,
        first_block: int,
        model: str,
        base_fingerprint: str,
        gem_p: float,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        progress: EpochCallback | None = None,
        state_from: int | None = None,
    ) -> SelfTuner:
        """Train on `maps` ((n, views, c, h, w), view 0 = the image itself) of n catalogue images.

        `network` is a copy of the backbone (its tail is trained in place). With `validation`
        ((m, w, c, h, w) maps of other views of the images `rows`), the view-retrieval figures are
        measured per epoch (epoch 0 = the starting point) and the best epoch's weights are kept.
        `state_from` (default `first_block`): the first block the tuning records.
        """
        import torch

        n = len(maps)
        if n < 2 or maps.ndim != 5 or maps.shape[1] < 1:
            raise LookalikeError(f"label-free adaptation needs (n >= 2, views, c, h, w) maps; got shape {maps.shape}")
        settings = self.settings
        torch.manual_seed(settings.seed)
        rng = np.random.default_rng(settings.seed)
        tail = _tail_module(network, first_block, gem_p)
        bank = torch.from_numpy(tail_vectors(tail, maps))  # the clean images' vectors
        lr, batch = settings.adapt.lr, min(settings.finetune_batch, n * maps.shape[1])
        optimiser = torch.optim.AdamW(tail.parameters(), lr=lr, weight_decay=settings.weight_decay)
        steps = max(1, n * maps.shape[1] // batch)
        epochs = settings.adapt.epochs
        scheduler = _schedule(optimiser, [lr], max(1, epochs * steps))
        before = _view_figures(tail, maps, validation)
        history: dict[str, list[float | None]] = {"loss": [None], "val_map": [_map_of(before)]}
        best = (_map_of(before), 0, _snapshot(tail), before)
        for epoch in range(1, epochs + 1):
            positives = _neighbours(bank, settings.adapt.neighbours) if epoch > 1 else None
            loss = _epoch(tail, bank, positives, optimiser, scheduler, maps, batch, settings, rng)
            figures = _view_figures(tail, maps, validation)
            history["loss"].append(loss)
            history["val_map"].append(_map_of(figures))
            if figures is not None and (best[0] is None or figures["map"] > best[0]):
                best = (figures["map"], epoch, _snapshot(tail), figures)
            if progress:
                progress(epoch, epochs, {"loss": loss, "val_map": _map_of(figures)})
        if validation is None:
            best = (None, epochs, _snapshot(tail), None)
        tail.load_state_dict(best[2])
        self.tail_, self.history_, self.best_epoch_ = tail, history, best[1]
        self.before_, self.after_ = before, best[3]
        self.tuning_ = BackboneTuning(
            model=model,
            base_fingerprint=base_fingerprint,
            first_block=first_block if state_from is None else min(state_from, first_block),
            gem_p=float(tail.p.detach().clamp(min=1.0)),
            state=tail_state(network, first_block if state_from is None else min(state_from, first_block)),
            facts={"kind": "self", "epochs": best[1], "images": n, "views": int(maps.shape[1])},
        )
        return self

    def vectors(self, maps: np.ndarray) -> np.ndarray:
        """Unit vectors of cached maps (view 0 of each row) through the fitted tail."""
        check_is_fitted(self, "tuning_")
        return tail_vectors(self.tail_, maps)


def _map_of(figures: dict[str, float] | None) -> float | None:
    return None if figures is None else figures["map"]


def _epoch(
    tail: Any,
    bank: Any,
    positives: np.ndarray | None,
    optimiser: Any,
    scheduler: Any,
    maps: np.ndarray,
    batch: int,
    settings: HeadSettings,
    rng: np.random.Generator,
) -> float:
    """One pass over every view in random order: the CosFace loss against the memory bank, which
    then takes in the views' vectors."""
    import torch

    tail.train()
    for module in tail.modules():  # BatchNorm keeps the pretrained statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    n, views = maps.shape[:2]
    order = rng.permutation(n * views)
    losses = []
    for start in range(0, len(order) - batch + 1, batch):
        rows, numbers = np.divmod(order[start : start + batch], views)
        x = torch.from_numpy(maps[rows, numbers].astype(np.float32))
        vectors = tail(_random_shift(x, rng))
        loss = _loss(vectors, bank, rows, positives, settings, rng)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        _update_bank(bank, rows, vectors.detach(), settings.adapt.momentum)
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def _loss(
    vectors: Any,
    bank: Any,
    rows: np.ndarray,
    positives: np.ndarray | None,
    settings: HeadSettings,
    rng: np.random.Generator,
) -> Any:
    """-log of the softmax mass on each view's positives (its image, and its neighbours) among the
    candidates: the whole bank, or the batch's positives plus `adapt.negatives` drawn from it."""
    import torch

    n = bank.shape[0]
    wanted = rows[:, None] if positives is None else np.concatenate([rows[:, None], positives[rows]], axis=1)
    if n <= settings.adapt.negatives:
        candidates = np.arange(n)
    else:
        drawn = rng.choice(n, settings.adapt.negatives, replace=False)
        candidates = np.unique(np.concatenate([wanted[wanted >= 0], drawn]))
    column = np.full(n, -1)
    column[candidates] = np.arange(len(candidates))
    cosines = vectors @ bank[torch.from_numpy(candidates)].T
    is_positive = torch.zeros_like(cosines, dtype=torch.bool)
    for j in range(wanted.shape[1]):
        present = wanted[:, j] >= 0
        is_positive[torch.from_numpy(np.flatnonzero(present)), torch.from_numpy(column[wanted[present, j]])] = True
    logits = settings.finetune_scale * (cosines - settings.finetune_margin * is_positive.float())
    mass = torch.logsumexp(logits.masked_fill(~is_positive, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - mass).mean()


def _update_bank(bank: Any, rows: np.ndarray, vectors: Any, momentum: float) -> None:
    import torch

    for row in np.unique(rows):
        mean = vectors[torch.from_numpy(rows == row)].mean(dim=0)
        bank[row] = torch.nn.functional.normalize(momentum * bank[row] + (1 - momentum) * mean, dim=0)


def _neighbours(bank: Any, k: int) -> np.ndarray | None:
    """(n, k) rows of each image's mutual k nearest neighbours in the bank (-1 where fewer); None for k = 0."""
    if k == 0:
        return None
    vectors = bank.numpy()
    n = len(vectors)
    k = min(k, n - 1)
    nearest = np.zeros((n, k), dtype=np.int64)
    for start in range(0, n, NEIGHBOUR_CHUNK):
        scores = vectors[start : start + NEIGHBOUR_CHUNK] @ vectors.T
        scores[np.arange(len(scores)), np.arange(start, start + len(scores))] = -np.inf
        nearest[start : start + len(scores)] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    mutual = np.zeros((n, k), dtype=bool)
    for j in range(k):
        mutual[:, j] = (nearest[nearest[:, j]] == np.arange(n)[:, None]).any(axis=1)
    return np.where(mutual, nearest, -1)


def _view_figures(tail: Any, maps: np.ndarray, validation: tuple[np.ndarray, np.ndarray] | None) -> dict | None:
    """Each validation view queries the clean images: mAP (one relevant image: the mean of 1 / its
    rank) and Recall@1/5/10 of the image it was made from."""
    if validation is None or len(validation[1]) == 0 or validation[0].shape[1] == 0:
        return None
    gallery = tail_vectors(tail, maps)
    views, rows = validation
    queries = tail_vectors(tail, views.reshape(-1, 1, *views.shape[2:]))
    truth = np.repeat(rows, views.shape[1])
    return view_retrieval(queries, truth, gallery)


def view_retrieval(queries: np.ndarray, truth: np.ndarray, gallery: np.ndarray) -> dict[str, float]:
    """mAP and Recall@1/5/10 when each query's one relevant gallery row is `truth`."""
    scores = queries @ gallery.T
    own = scores[np.arange(len(queries)), truth]
    rank = 1 + (scores > own[:, None]).sum(axis=1)
    return {"map": float(np.mean(1.0 / rank)), **{f"recall@{k}": float(np.mean(rank <= k)) for k in (1, 5, 10)}}


# -- from image files to a tuning


def fit_adaptation(
    pristine: Any,
    load: LoadImage,
    n: int,
    settings: HeadSettings,
    *,
    start: BackboneTuning | None = None,
    segment: Segment | None = None,
    progress: EpochCallback | None = None,
    on_maps: Callable[[int, int], None] | None = None,
    measure: BackboneTuning | None = None,
) -> tuple[BackboneTuning, dict[str, Any], SelfTuner]:
    """Adapt `pristine` (an embedder with the pretrained weights; from `start`'s tuning when given) to
    n catalogue images; returns the tuning, the facts of its report and the fitted tuner.

    `measure`: another tuning (the one an index uses) to measure on the same validation views: the
    facts' "current" (None when its tail starts before this one's: the cached maps do not fit it)."""
    network = copy.deepcopy(pristine.network())
    first = tail_start(network, settings.finetune_stages)
    gem_p = pristine.settings.gem_p
    if start is not None:
        apply_tuning(network, start)
        gem_p = start.gem_p
    started = time.perf_counter()
    backgrounds = read_backgrounds(settings.adapt.background_dir)
    maps = make_view_maps(pristine, network, first, load, n, settings, segment, backgrounds, on_maps)
    made = time.perf_counter()
    validation = (maps.validation, maps.validation_rows) if len(maps.validation_rows) else None
    tuner = SelfTuner(settings).fit(
        maps.train,
        network=network,
        first_block=first,
        model=pristine.name,
        base_fingerprint=pristine.fingerprint(),
        gem_p=gem_p,
        validation=validation,
        progress=progress,
        state_from=None if start is None else start.first_block,
    )
    trained = time.perf_counter()
    facts: dict[str, Any] = {
        "n_train_images": n,
        "n_train_products": n,  # each image its own class
        "n_validation_images": int(maps.validation.shape[0] * maps.validation.shape[1]),
        "n_validation_products": len(maps.validation_rows),
        "before": tuner.before_,
        "after": tuner.after_,
        "history": tuner.history_,
        "best_epoch": tuner.best_epoch_,
        "refit": False,
        "current": _measure(pristine, measure, first, start, maps, validation),
        "timings": {"views_and_maps": made - started, "training": trained - made, "images_masked": maps.masked},
    }
    return tuner.tuning_, facts, tuner


def _measure(
    pristine: Any,
    tuning: BackboneTuning | None,
    first: int,
    start: BackboneTuning | None,
    maps: ViewMaps,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, float] | None:
    """The view figures of another tuning, when its tail and the frozen part the maps came from fit it."""
    if tuning is None or validation is None or tuning.first_block < first:
        return None
    if start is not None and start.first_block < first:
        return None
    network = copy.deepcopy(pristine.network())
    apply_tuning(network, tuning)
    return _view_figures(_tail_module(network, first, tuning.gem_p), maps.train, validation)


def adapt_on_files(
    pristine: Any, paths: Sequence[str], settings: HeadSettings, **options: Any
) -> tuple[BackboneTuning, Any, SelfTuner]:
    """`fit_adaptation` on image files (`options`: its keywords); returns the tuning, its
    `EmbeddingReport` and the tuner."""
    from lookalike.embed.train import EmbeddingReport
    from lookalike.io.images import load_image

    tuning, facts, tuner = fit_adaptation(pristine, lambda row: load_image(paths[row]), len(paths), settings, **options)
    report = EmbeddingReport(
        kind="self", fingerprint=tuning.fingerprint(), dim=pristine.dim, n_images=len(paths), **facts
    )
    return tuning, report, tuner


# -- unlabelled photos of the catalogue's products: pseudo-labels


def fit_pseudo_labels(
    pristine: Any,
    teacher: BackboneTuning,
    catalogue_maps: np.ndarray,
    photo_maps: np.ndarray,
    settings: HeadSettings,
    progress: EpochCallback | None = None,
    on_round: Callable[[int, BackboneTuning], None] | None = None,
) -> tuple[BackboneTuning, list[dict[str, Any]]]:
    """Self-training on unlabelled photos of the catalogue's products (a shop's photo archive, past queries).

    `catalogue_maps` and `photo_maps` are frozen maps (n, 2, c, h, w: each image and its mirror, from
    `lookalike.embed.finetune.images_maps`) of the pretrained network. Each of `adapt.pseudo_rounds`
    rounds gives every photo a catalogue image as its product id (`pseudo_labels`: by label propagation
    over the kNN graph of catalogue and photos, or its nearest image; with the vectors of `teacher`, the
    label-free adaptation, then of the previous round's model), keeps for each catalogue image the
    `adapt.pseudo_per_image` photos whose id is the clearest (the widest margin over the second), and
    fine-tunes the tail from the pretrained weights, as `--kind finetune` does, on
    those photos and the catalogue images themselves, each with its own id. Returns the last round's
    tuning and each round's facts; with no labels, what they can say is how many photos were kept and
    how many changed product since the round before (a round that changes few has converged).
    `on_round(number, tuning)` sees each round's model."""
    from dataclasses import replace

    from lookalike.embed.finetune import fit_tuning

    first = tail_start(pristine.network(), settings.finetune_stages)
    if teacher.first_block < first:
        raise LookalikeError(
            f"pseudo-labels: the adapted backbone tunes from block {teacher.first_block} but the photos' maps "
            f"start at block {first}; use the same head.finetune_stages for both"
        )
    own = settings.adapt
    head = replace(settings, kind="finetune", validation_fraction=0.0, finetune_epochs=own.pseudo_epochs)
    ids = np.array([f"catalogue image {row}" for row in range(len(catalogue_maps))])
    tuning, rounds, previous = teacher, [], None
    for number in range(1, own.pseudo_rounds + 1):
        started = time.perf_counter()
        tail = _tail_of(pristine, tuning, first)
        assigned, margin = pseudo_labels(tail_vectors(tail, photo_maps), tail_vectors(tail, catalogue_maps), own)
        kept = most_confident(assigned, margin, own.pseudo_per_image)
        maps = np.concatenate([photo_maps[kept], catalogue_maps])
        tuning, _ = fit_tuning(pristine, maps, [*ids[assigned[kept]], *ids], head, progress)
        del maps
        rounds.append({
            "round": number, "photos": len(photo_maps), "photos_kept": len(kept),
            "catalogue_images_with_photos": len(set(assigned[kept].tolist())),
            "photos_changed": None if previous is None else int((assigned != previous).sum()),
            "median_margin_kept": float(np.median(margin[kept])) if len(kept) else None,
            "seconds": time.perf_counter() - started,
        })  # fmt: skip
        previous = assigned
        tuning.facts.update(kind="self", pseudo_labels=own.pseudo_labels, round=number, photos=len(photo_maps))
        if on_round is not None:
            on_round(number, tuning)
    return tuning, rounds


def pseudo_labels(photos: np.ndarray, catalogue: np.ndarray, settings: AdaptSettings) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's catalogue row and how clear that choice is, as `settings.pseudo_labels` says."""
    if settings.pseudo_labels == "nearest":
        return nearest_with_margin(photos, catalogue)
    return propagated_with_margin(photos, catalogue, settings.pseudo_neighbours, settings.pseudo_alpha)


def propagated_with_margin(
    photos: np.ndarray,
    catalogue: np.ndarray,
    neighbours: int,
    alpha: float,
    gamma: float = 3.0,
    block: int = PROPAGATION_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Label propagation (Zhou et al. 2004): each catalogue image seeds its own id on the kNN graph of
    catalogue and photos, F = (1 - alpha) (I - alpha S)^-1 Y. F's columns are scaled to equal mass (a
    product with many photos near it does not swallow its neighbours), its rows to sum 1; a photo takes
    the largest entry, and its margin over the second is how clear that is. A photo with no path to any
    catalogue image keeps its nearest one, with margin 0. F is solved `block` columns at a time, keeping
    only each photo's two largest entries and its total, so memory is (images x block), not x catalogue."""
    from lookalike.graph import knn_affinity, normalise_graph, solve_diffusion

    nodes = np.vstack([catalogue, photos]).astype(np.float32)
    graph = normalise_graph(knn_affinity(nodes, neighbours, gamma))
    n, seeds = len(photos), len(catalogue)
    best, second, mass = np.full(n, -1.0), np.full(n, -1.0), np.zeros(n)
    assigned = np.zeros(n, dtype=np.int64)
    for first in range(0, seeds, block):
        columns = np.arange(first, min(first + block, seeds))
        spread = solve_diffusion(graph, alpha, columns)[seeds:]
        spread = spread / np.maximum(spread.sum(axis=0, keepdims=True), 1e-12)
        mass += spread.sum(axis=1)
        order = np.argsort(-spread, axis=1, kind="stable")[:, :2]
        top = np.take_along_axis(spread, order, axis=1)
        runner_up = top[:, 1] if top.shape[1] > 1 else np.full(n, -1.0)
        wins = top[:, 0] > best
        second = np.where(wins, np.maximum(best, runner_up), np.maximum(second, top[:, 0]))
        assigned = np.where(wins, columns[order[:, 0]], assigned)
        best = np.where(wins, top[:, 0], best)
    reached = mass > 1e-12
    if not reached.all():  # only the photos the graph did not reach need their nearest image
        assigned[~reached] = (photos[~reached] @ catalogue.T).argmax(axis=1)
    margin = (best - np.maximum(second, 0.0)) / np.maximum(mass, 1e-12) if seeds > 1 else reached.astype(float)
    return assigned, np.where(reached, margin, 0.0)


def nearest_with_margin(photos: np.ndarray, catalogue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's nearest catalogue row, and its similarity minus the second nearest's (how clear it is)."""
    scores = photos @ catalogue.T
    assigned = scores.argmax(axis=1)
    if scores.shape[1] < 2:
        return assigned, np.ones(len(photos))
    top_two = np.partition(scores, -2, axis=1)[:, -2:]
    return assigned, top_two[:, 1] - top_two[:, 0]


def most_confident(assigned: np.ndarray, margin: np.ndarray, per_image: int) -> np.ndarray:
    """Rows of the photos kept: for each catalogue image, its `per_image` photos of widest margin
    (per image rather than overall, so that products easy to recognise do not take every place)."""
    kept = [
        rows[np.argsort(-margin[rows], kind="stable")[:per_image]]
        for rows in (np.flatnonzero(assigned == image) for image in np.unique(assigned))
    ]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def _tail_of(pristine: Any, tuning: BackboneTuning, first: int) -> Any:
    network = copy.deepcopy(pristine.network())
    apply_tuning(network, tuning)
    return _tail_module(network, first, tuning.gem_p)
