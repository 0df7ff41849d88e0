"""Fine-tune the last stages of the backbone on the catalogue's own products (opt-in, CPU-friendly).

An ImageNet network knows "carton" but not which carton; frozen features plus whitening reach
their limit there. This trains the backbone's last `finetune_stages` stages (EfficientNet-Lite:
the 112/192/320-channel stages of Lite0, half of its blocks), its head convolution and GeM's p,
with a normalised-softmax (CosFace) loss over the product ids: each product gets a learned unit
vector and images are pulled towards their product's and pushed from the others' (Wang et al.
2018; the classification-as-metric-learning recipe that keeps up with pair and triplet losses at
a fraction of their cost, Zhai and Wu 2019).

It is cheap on a CPU because the frozen stem and early stages run once per image: their feature
maps (the image and its mirror, float16) are computed up front and training only runs the tail,
with a random mirror and a small random shift of the map as augmentation. BatchNorm statistics
stay frozen (batches are small). Seeded: the same images and seed give the same weights.

`BackboneTuner` follows the estimator contract; `fit` sets `tuning_` (a `BackboneTuning`: the
tail's weights and p, saved as `backbone.json` + `weights.npz` in `<index>/backbone/`),
`history_` (loss and validation mAP per epoch) and `best_epoch_`. `fit_tuning` holds products
out, lets their validation mAP choose the number of epochs, reports retrieval on them before and
after, and (with `refit`) trains again on every product for that many epochs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike._estimator import check_is_fitted
from lookalike._files import read_component
from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.settings import HeadSettings

TUNING_DIR = "backbone"
MODEL_FILE = "backbone.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1
MAP_BATCH = 8  # images per forward pass of the frozen part: small batches are fastest on a 2-core CPU

EpochCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass
class BackboneTuning:
    """Fine-tuned weights of a backbone's last stages and the GeM p learned with them."""

    model: str  # the embedder it belongs to
    base_fingerprint: str  # the weights and preprocessing it started from
    first_block: int  # blocks from this one on (and the head convolution) are replaced
    gem_p: float
    state: dict[str, np.ndarray]  # parameter and buffer arrays, by the network's state-dict names
    facts: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of the arrays and p: same weights, same fingerprint.

        Computed once (a query checks it): the arrays of a tuning are never changed in place."""
        if self._fingerprint is None:
            self._fingerprint = self._digest()
        return self._fingerprint

    def _digest(self) -> str:
        digest = hashlib.sha256(f"{self.model}:{self.first_block}:{self.gem_p:.6f}".encode())
        for name in sorted(self.state):
            array = np.ascontiguousarray(self.state[name])
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model = {
            "format": FORMAT_VERSION,
            "model": self.model,
            "base_fingerprint": self.base_fingerprint,
            "first_block": self.first_block,
            "gem_p": self.gem_p,
            "fingerprint": self.fingerprint(),
            "facts": self.facts,
        }
        np.savez(folder / WEIGHTS_FILE, **self.state)
        (folder / MODEL_FILE).write_text(json.dumps(model, indent=1, default=float) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BackboneTuning:
        folder = Path(folder)
        model = read_component(folder, MODEL_FILE, WEIGHTS_FILE, "fine-tuned backbone", FORMAT_VERSION)
        with np.load(folder / WEIGHTS_FILE, allow_pickle=False) as data:
            state = {name: data[name] for name in data.files}
        keys = ("model", "base_fingerprint", "first_block", "gem_p")
        tuning = cls(**{key: model[key] for key in keys}, state=state, facts=model.get("facts", {}))
        if tuning._digest() != model["fingerprint"]:
            raise IndexMismatchError(
                f"{folder / WEIGHTS_FILE}: its arrays hash to {tuning._digest()}, but {MODEL_FILE} records "
                f"{model['fingerprint']}; the files do not belong together: fine-tune again"
            )
        return tuning


# -- the network, split into a frozen trunk and a trainable tail


def tail_start(network: Any, stages: int) -> int:
    """Index of the first block of the last `stages` stages (a stage: consecutive blocks of one width)."""
    widths = [block._bn2.num_features for block in network._blocks]
    starts = [i for i in range(len(widths)) if i == 0 or widths[i] != widths[i - 1]]
    if not 1 <= stages <= len(starts) - 1:
        raise LookalikeError(
            f"head.finetune_stages must be in [1, {len(starts) - 1}] for this backbone "
            f"({len(starts)} stages), got {stages}"
        )
    return starts[-stages]


def frozen_maps(network: Any, pixels: np.ndarray, first_block: int) -> np.ndarray:
    """(n, 2, c, h, w) float16 feature maps entering block `first_block`, of the images and their mirrors."""
    import torch

    batch = torch.from_numpy(pixels)
    maps = trunk_maps(network, torch.cat([batch, batch.flip(3)]).numpy(), first_block)
    n = len(pixels)
    return np.stack([maps[:n], maps[n:]], axis=1)


def trunk_maps(network: Any, pixels: np.ndarray, first_block: int) -> np.ndarray:
    """(n, c, h, w) float16 feature maps of preprocessed images entering block `first_block`."""
    import torch

    with torch.inference_mode():
        x = network._swish(network._bn0(network._conv_stem(torch.from_numpy(pixels))))
        for block in network._blocks[:first_block]:
            x = block(x)
    return x.numpy().astype(np.float16)


def _tail_module(network: Any, first_block: int, gem_p: float) -> Any:
    import torch
    from torch import nn

    class Tail(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(network._blocks[first_block:])
            self.conv_head, self.bn1, self.act = network._conv_head, network._bn1, network._swish
            self.p = nn.Parameter(torch.tensor(float(gem_p)))

        def forward(self, x: Any) -> Any:
            for block in self.blocks:
                x = block(x)
            x = self.act(self.bn1(self.conv_head(x)))
            p = self.p.clamp(min=1.0)
            pooled = x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
            return nn.functional.normalize(pooled, dim=1)

    return Tail()


def tail_state(network: Any, first_block: int) -> dict[str, np.ndarray]:
    """The arrays a tuning replaces: blocks from `first_block` on and the head convolution."""
    blocks = [f"_blocks.{i}." for i in range(first_block, len(network._blocks))]
    prefixes = (*blocks, "_conv_head.", "_bn1.")
    return {
        name: value.detach().cpu().numpy().copy()
        for name, value in network.state_dict().items()
        if name.startswith(prefixes)
    }


def apply_tuning(network: Any, tuning: BackboneTuning) -> None:
    """Load a tuning's arrays into the network; every one of them must exist there with its shape."""
    import torch

    current = network.state_dict()
    wrong = [n for n, a in tuning.state.items() if n not in current or tuple(current[n].shape) != a.shape]
    if wrong:
        raise IndexMismatchError(
            f"the fine-tuned backbone does not fit the {tuning.model} network: {len(wrong)} array(s) differ "
            f"(first: {wrong[0]}); fine-tune again with this backbone"
        )
    network.load_state_dict({name: torch.from_numpy(np.array(a)) for name, a in tuning.state.items()}, strict=False)


# -- training


class BackboneTuner:
    """Fine-tunes a backbone's last stages on cached feature maps (estimator contract)."""

    kind = "finetune"

    def __init__(self, settings: HeadSettings) -> None:
        self.settings = settings

    def fit(
        self,
        maps: np.ndarray,
        labels: Sequence[str],
        *,
        network: Any,
        first_block: int,
        model: str,
        base_fingerprint: str,
        gem_p: float,
        validation: tuple[np.ndarray, Sequence[str]] | None = None,
        progress: EpochCallback | None = None,
        epochs: int | None = None,
    ) -> BackboneTuner:
        """Train on `maps` ((n, 2, c, h, w), see `frozen_maps`) labelled with product ids.

        `network` is a fresh copy of the backbone (its tail is trained in place). With
        `validation` (maps, labels of other products), the validation mAP is recorded per epoch
        and the best epoch's weights are kept (epoch 0 = the untrained backbone).
        """
        import torch

        names, targets = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
        if len(names) < 2 or len(maps) != len(targets):
            raise LookalikeError(
                f"fine-tuning needs maps and one product id per image, of 2+ products; got {len(maps)} maps, "
                f"{len(targets)} labels, {len(names)} product(s)"
            )
        settings = self.settings
        n_epochs = settings.finetune_epochs if epochs is None else epochs
        torch.manual_seed(settings.seed)
        rng = np.random.default_rng(settings.seed)
        tail = _tail_module(network, first_block, gem_p)
        centers = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(len(names), _width(tail, maps)), dim=1))
        lr = settings.finetune_lr
        optimiser = torch.optim.AdamW(
            [{"params": list(tail.parameters()), "lr": lr}, {"params": [centers], "lr": 10 * lr}],
            weight_decay=settings.weight_decay,
        )
        batch = min(settings.finetune_batch, len(maps))
        steps_per_epoch = max(1, len(maps) // batch)
        scheduler = _schedule(optimiser, [lr, 10 * lr], n_epochs * steps_per_epoch)
        history: dict[str, list[float | None]] = {"loss": [None], "val_map": [_val_map(tail, validation)]}
        best = (history["val_map"][0], 0, _snapshot(tail))
        for epoch in range(1, n_epochs + 1):
            loss = _epoch(tail, centers, optimiser, scheduler, maps, targets, batch, settings, rng)
            val_map = _val_map(tail, validation)
            history["loss"].append(loss)
            history["val_map"].append(val_map)
            if val_map is not None and (best[0] is None or val_map > best[0]):
                best = (val_map, epoch, _snapshot(tail))
            if progress:
                progress(epoch, n_epochs, {"loss": loss, "val_map": val_map})
        if validation is None:
            best = (None, n_epochs, _snapshot(tail))
        tail.load_state_dict(best[2])
        self.tail_, self.history_, self.best_epoch_ = tail, history, best[1]
        self.tuning_ = BackboneTuning(
            model=model,
            base_fingerprint=base_fingerprint,
            first_block=first_block,
            gem_p=float(tail.p.detach().clamp(min=1.0)),
            state=tail_state(network, first_block),
            facts={"epochs": best[1], "products": len(names), "images": len(maps)},
        )
        return self

    def vectors(self, maps: np.ndarray) -> np.ndarray:
        """Unit vectors of cached maps (the unmirrored image) through the fitted tail."""
        check_is_fitted(self, "tuning_")
        return tail_vectors(self.tail_, maps)


def _schedule(optimiser: Any, max_lr: list[float], total_steps: int) -> Any:
    """One-cycle (warm-up over 10% of the steps, then cosine annealing); a constant rate when there
    are too few steps for a warm-up (torch's OneCycleLR needs 10% of them to be 2 steps or more)."""
    import torch

    if 0.1 * total_steps >= 2:
        return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=max_lr, total_steps=total_steps, pct_start=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)


def _width(tail: Any, maps: np.ndarray) -> int:
    import torch

    with torch.no_grad():
        return int(tail(torch.from_numpy(maps[:1, 0].astype(np.float32))).shape[1])


def _epoch(
    tail: Any,
    centers: Any,
    optimiser: Any,
    scheduler: Any,
    maps: np.ndarray,
    targets: np.ndarray,
    batch: int,
    settings: HeadSettings,
    rng: np.random.Generator,
) -> float:
    """One pass over the maps in random order: mirror and shift at random, CosFace loss."""
    import torch
    import torch.nn.functional as F

    tail.train()
    for module in tail.modules():  # BatchNorm keeps the pretrained statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    order = rng.permutation(len(maps))
    losses = []
    for start in range(0, len(order) - batch + 1, batch):
        rows = order[start : start + batch]
        mirrored = rng.integers(0, 2, len(rows))
        x = torch.from_numpy(np.stack([maps[r, m] for r, m in zip(rows, mirrored, strict=True)]).astype(np.float32))
        x = _random_shift(x, rng)
        y = torch.from_numpy(targets[rows])
        cosines = tail(x) @ F.normalize(centers, dim=1).T
        cosines = cosines - settings.finetune_margin * F.one_hot(y, cosines.shape[1])
        loss = F.cross_entropy(settings.finetune_scale * cosines, y, label_smoothing=0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def _random_shift(x: Any, rng: np.random.Generator) -> Any:
    """A random crop two cells smaller than the map: a small translation of the object."""
    size = x.shape[2]
    if size < 6:
        return x
    dy, dx = rng.integers(0, 3, 2)
    return x[:, :, dy : dy + size - 2, dx : dx + size - 2]


def _snapshot(tail: Any) -> dict[str, Any]:
    return {name: value.detach().clone() for name, value in tail.state_dict().items()}


def tail_vectors(tail: Any, maps: np.ndarray, chunk: int = 64) -> np.ndarray:
    """(n, d) unit vectors of the unmirrored maps through `tail`."""
    import torch

    tail.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(maps), chunk):
            x = torch.from_numpy(np.asarray(maps[start : start + chunk, 0], dtype=np.float32))
            out.append(tail(x).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def _val_map(tail: Any, validation: tuple[np.ndarray, Sequence[str]] | None) -> float | None:
    if validation is None or len(validation[0]) < 2:
        return None
    from lookalike.embed.head import leave_one_out_map

    return leave_one_out_map(tail_vectors(tail, validation[0]), np.asarray(validation[1], dtype=str))


# -- with an index


def install_tuning(index: Path, tuning: BackboneTuning | None) -> None:
    """Replace `<index>/backbone/` with the tuning's files (or remove it), through a staging folder."""
    from lookalike.embed.train import replace_folder

    replace_folder(index / TUNING_DIR, None if tuning is None else tuning.save)


def load_index_tuning(index: Path) -> BackboneTuning | None:
    folder = index / TUNING_DIR
    return BackboneTuning.load(folder) if folder.exists() else None


def images_maps(
    embedder: Any,
    images: Callable[[int, int], list[Image.Image]],
    n_images: int,
    first_block: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Frozen feature maps of `n_images` images, fetched in chunks by `images(start, stop)`."""
    network = embedder.network()
    out: np.ndarray | None = None
    for start in range(0, n_images, MAP_BATCH):
        stop = min(start + MAP_BATCH, n_images)
        maps = frozen_maps(network, embedder.pixels(images(start, stop)), first_block)
        if out is None:
            out = np.zeros((n_images, *maps.shape[1:]), dtype=np.float16)
        out[start:stop] = maps
        if progress:
            progress(stop, n_images)
    if out is None:
        raise LookalikeError("fine-tuning needs images: the index holds none")
    return out


def fit_tuning(
    embedder: Any,
    maps: np.ndarray,
    labels: Sequence[str | None],
    settings: HeadSettings,
    progress: EpochCallback | None = None,
) -> tuple[BackboneTuning, dict[str, Any]]:
    """The tuning to install and the facts of its report (see `lookalike.embed.train.EmbeddingReport`).

    Held-out products (`validation_fraction`) give the validation curve, the number of epochs and
    the before/after retrieval figures; with `refit` the tail is then trained again from the
    pretrained weights on every product for that many epochs.
    """
    import copy

    from lookalike.embed.train import held_out_report, split_products

    train, held = split_products(list(labels), settings.validation_fraction, settings.seed)
    names = np.array([label or "" for label in labels])
    pristine = embedder.network()
    first = tail_start(pristine, settings.finetune_stages)
    context = {
        "first_block": first,
        "model": embedder.name,
        "base_fingerprint": embedder.fingerprint(),
        "gem_p": embedder.settings.gem_p,
    }
    validation = (maps[held], names[held]) if held.any() else None
    tuner = BackboneTuner(settings).fit(
        maps[train], names[train], network=copy.deepcopy(pristine), validation=validation, progress=progress, **context
    )
    facts: dict[str, Any] = {
        "n_train_images": int(train.sum()),
        "n_train_products": len(set(names[train])),
        "n_validation_images": int(held.sum()),
        "n_validation_products": len(set(names[held])),
        "before": None,
        "after": None,
        "history": tuner.history_,
        "best_epoch": tuner.best_epoch_,
        "refit": bool(settings.refit and held.any()),
    }
    if validation is not None:
        untuned = _tail_module(copy.deepcopy(pristine), first, embedder.settings.gem_p)
        facts["before"] = held_out_report(tail_vectors(untuned, validation[0]), validation[1])
        facts["after"] = held_out_report(tuner.vectors(validation[0]), validation[1])
    if facts["refit"]:
        everyone = train | held
        tuner = BackboneTuner(settings).fit(
            maps[everyone], names[everyone], network=copy.deepcopy(pristine), epochs=tuner.best_epoch_, **context
        )
    return tuner.tuning_, facts


def tune_on_files(
    pristine: Any,
    paths: Sequence[str],
    labels: Sequence[str | None],
    settings: HeadSettings,
    progress: EpochCallback | None = None,
    *,
    on_maps: Callable[[int, int], None] | None = None,
) -> tuple[BackboneTuning, Any]:
    """Fine-tune `pristine` (an embedder with the pretrained weights) on image files and their
    product labels: the frozen stages' maps are computed once, then the tail is trained.
    Returns the tuning and its `EmbeddingReport` (seconds left for the caller to fill)."""
    from lookalike.embed.train import EmbeddingReport
    from lookalike.io.images import load_image

    first = tail_start(pristine.network(), settings.finetune_stages)
    maps = images_maps(pristine, lambda a, b: [load_image(p) for p in paths[a:b]], len(paths), first, on_maps)
    tuning, facts = fit_tuning(pristine, maps, labels, settings, progress)
    del maps
    report = EmbeddingReport(
        kind="finetune", fingerprint=tuning.fingerprint(), dim=pristine.dim, n_images=len(paths), **facts
    )
    return tuning, report
