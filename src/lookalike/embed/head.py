"""Trained projection heads on frozen backbone vectors: the catalogue's own notion of "same product".

- "linear": x -> l2(W (x - m)), W of shape (dim, d);
- "mlp": x -> l2(W (x - m) + V relu(U (x - m) + b)), a linear map plus a residual branch whose
  output weights V start at zero, so training starts from the linear map.

W starts as the supervised whitening Lw of the training products (`settings.init`, the default),
PCA whitening or a random orthogonal map, rescaled to rows of unit mean norm. Training draws
batches of P products x K images (`products_per_batch`, `images_per_product`), mines the hardest
negatives inside each batch, and minimises the weighted sum of the contrastive, triplet and SOS
losses (`lookalike.embed.losses`) with Adam. After every epoch the validation mAP (each held-out
image queries the other held-out images) is recorded; training stops when it has not improved for
`early_stopping_patience` epochs and the best epoch's weights are kept: epoch 0 is the starting
map, so a head that only overfits is never worse than its start on the validation products.

Training uses torch (imported by `fit`), on one thread while it runs (its tensors are small), and is
seeded: the same data and seed give the same head.
`transform` is numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lookalike.embed.losses import combined_loss, mine
from lookalike.embed.transform import FittedTransform, check_training_vectors, output_dim, register_transform
from lookalike.embed.whitening import pca_whitening, supervised_whitening
from lookalike.errors import LookalikeError
from lookalike.settings import HeadSettings

EpochCallback = Callable[[int, int, dict[str, Any]], None]  # (epoch, max epochs, {"loss", "val_map" or None})


def leave_one_out_map(vectors: np.ndarray, labels: ArrayLike) -> float:
    """Mean average precision when each row queries all the others (inner product, rows L2-normalised).

    Rows whose label no other row shares are left out; NaN when none is left.
    """
    labels = np.asarray(labels)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :-1]
    relevant = labels[order] == labels[:, None]
    totals = relevant.sum(axis=1)
    kept = totals > 0
    if not kept.any():
        return float("nan")
    hits = np.cumsum(relevant[kept], axis=1)
    precision = hits / np.arange(1, relevant.shape[1] + 1)
    return float(np.mean((precision * relevant[kept]).sum(axis=1) / totals[kept]))


def initial_projection(X: np.ndarray, labels: np.ndarray, settings: HeadSettings, dim: int) -> tuple[Any, Any]:
    """(mean, W) the head starts from; W's rows have unit mean norm."""
    data = X.astype(np.float64)
    if settings.init == "supervised":
        mean, projection = supervised_whitening(data, labels, settings.shrinkage)
    elif settings.init == "pca":
        mean, projection, _ = pca_whitening(data, settings.shrinkage)
    else:
        gaussian = np.random.default_rng(settings.seed).standard_normal((X.shape[1], dim))
        mean, projection = data.mean(axis=0), np.linalg.qr(gaussian)[0].T
    projection = projection[:dim]
    projection = projection * np.sqrt(dim) / np.linalg.norm(projection)
    return mean.astype(np.float32), projection.astype(np.float32)


@dataclass
class _Trained:
    arrays: dict[str, np.ndarray]
    history: dict[str, list[float | None]] = field(default_factory=dict)
    best_epoch: int = 0


class _HeadBase(FittedTransform):
    kind = ""
    residual = False

    def __init__(self, settings: HeadSettings | None = None) -> None:
        self.settings = settings or HeadSettings()

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        *,
        validation: tuple[ArrayLike, ArrayLike] | None = None,
        progress: EpochCallback | None = None,
        epochs: int | None = None,
        **options: Any,
    ) -> _HeadBase:
        """Train on vectors X with product ids y; `validation` = (X_val, y_val) of held-out images.

        Without validation the training loss decides the best epoch and when to stop. `epochs`
        overrides `settings.max_epochs` (0 = keep the starting projection).
        """
        vectors, labels = check_training_vectors(X, y, needs_labels=True, kind=self.kind)
        val = _validation_arrays(validation, vectors.shape[1])
        dim = output_dim(self.settings, vectors.shape[1])
        mean, start = initial_projection(vectors, labels, self.settings, dim)
        epochs = self.settings.max_epochs if epochs is None else epochs
        trained = _train(vectors, labels, val, (mean, start), self.settings, (self.residual, epochs), progress)
        self.mean_ = mean
        self.arrays_ = trained.arrays
        self.history_ = trained.history
        self.best_epoch_ = trained.best_epoch
        self.n_features_in_, self.dim_ = vectors.shape[1], dim
        return self

    def project(self, X: ArrayLike) -> np.ndarray:
        centred = self._check_vectors(X) - self.mean_
        return _forward_numpy(centred, self.arrays_)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        facts = {
            "n_features_in": self.n_features_in_,
            "dim": self.dim_,
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        return facts, {"mean": self.mean_, **self.arrays_}

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mean_ = arrays["mean"]
        self.arrays_ = {name: value for name, value in arrays.items() if name != "mean"}
        self.n_features_in_, self.dim_ = int(facts["n_features_in"]), int(facts["dim"])
        self.best_epoch_ = int(facts["best_epoch"])
        self.history_ = facts["history"]


@register_transform("linear")
class LinearHead(_HeadBase):
    """A trained linear projection. Learned attributes: `mean_`, `arrays_` ("projection"),
    `history_` (per epoch: loss, val_map), `best_epoch_`, `n_features_in_`, `dim_`."""

    kind = "linear"


@register_transform("mlp")
class MLPHead(_HeadBase):
    """A trained linear projection plus a residual ReLU branch (`settings.hidden` wide).

    Learned arrays: "projection", "hidden_weight", "hidden_bias", "out_weight"."""

    kind = "mlp"
    residual = True


def _forward_numpy(centred: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    out = centred @ arrays["projection"].T
    if "out_weight" in arrays:
        hidden = np.maximum(centred @ arrays["hidden_weight"].T + arrays["hidden_bias"], 0.0)
        out = out + hidden @ arrays["out_weight"].T
    return out.astype(np.float32)


def _validation_arrays(validation: tuple[ArrayLike, ArrayLike] | None, n_features: int) -> tuple[Any, Any] | None:
    if validation is None:
        return None
    vectors, labels = np.asarray(validation[0], dtype=np.float32), np.asarray(validation[1])
    if vectors.ndim != 2 or vectors.shape[1] != n_features or labels.shape != (len(vectors),):
        raise LookalikeError(
            f"expected validation = (X_val of shape (n, {n_features}), y_val of shape (n,)); "
            f"got {vectors.shape} and {labels.shape}"
        )
    return vectors, labels


# -- training (torch)


def _module(start: tuple[np.ndarray, np.ndarray], residual: bool, hidden: int, seed: int) -> Any:
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            projection = torch.from_numpy(start[1].copy())
            self.projection = torch.nn.Parameter(projection)
            if residual:
                generator = torch.Generator().manual_seed(seed)
                bound = 1.0 / np.sqrt(projection.shape[1])
                weight = (torch.rand(hidden, projection.shape[1], generator=generator) * 2 - 1) * bound
                self.hidden_weight = torch.nn.Parameter(weight)
                self.hidden_bias = torch.nn.Parameter(torch.zeros(hidden))
                self.out_weight = torch.nn.Parameter(torch.zeros(projection.shape[0], hidden))

        def forward(self, centred: Any) -> Any:
            out = centred @ self.projection.T
            if residual:
                out = out + torch.relu(centred @ self.hidden_weight.T + self.hidden_bias) @ self.out_weight.T
            return torch.nn.functional.normalize(out, dim=1)

        def arrays(self) -> dict[str, np.ndarray]:
            return {name: value.detach().numpy().copy() for name, value in self.named_parameters()}

    return Head()


def _product_groups(codes: np.ndarray) -> list[np.ndarray]:
    groups = [np.flatnonzero(codes == code) for code in np.unique(codes)]
    return [group for group in groups if len(group) >= 2]


def _batches(groups: list[np.ndarray], settings: HeadSettings, rng: np.random.Generator) -> list[np.ndarray]:
    """P products x K images per batch (fewer images where a product has fewer); about one pass."""
    per_batch = min(settings.products_per_batch, len(groups))
    count = max(1, sum(len(g) for g in groups) // (per_batch * settings.images_per_product))
    batches = []
    for _ in range(count):
        chosen = rng.choice(len(groups), per_batch, replace=False)
        picks = [rng.choice(groups[i], min(len(groups[i]), settings.images_per_product), replace=False) for i in chosen]
        batches.append(np.concatenate(picks))
    return batches


def _train(
    X: np.ndarray,
    labels: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    start: tuple[np.ndarray, np.ndarray],
    settings: HeadSettings,
    shape: tuple[bool, int],
    progress: EpochCallback | None,
) -> _Trained:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: a thread pool costs more than it saves; restored below
    try:
        return _train_loop(X, labels, validation, start, settings, shape, progress)
    finally:
        torch.set_num_threads(previous)


def _train_loop(
    X: np.ndarray,
    labels: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    start: tuple[np.ndarray, np.ndarray],
    settings: HeadSettings,
    shape: tuple[bool, int],
    progress: EpochCallback | None,
) -> _Trained:
    import torch

    residual, epochs = shape  # a residual branch or not; the most epochs
    codes = np.unique(labels, return_inverse=True)[1]
    groups = _product_groups(codes)
    inputs = torch.from_numpy(X - start[0])
    head = _module(start, residual, settings.hidden, settings.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    start_map = _validation_map(head, validation, start[0])
    history: dict[str, list[float | None]] = {"loss": [None], "val_map": [start_map]}  # epoch 0: the start
    best = _Trained(head.arrays(), history, 0)
    best_score = -np.inf if start_map is None else start_map
    stale = 0
    for epoch in range(1, epochs + 1):
        loss = _epoch(head, optimizer, inputs, codes, groups, settings, rng)
        val_map = _validation_map(head, validation, start[0])
        history["loss"].append(loss)
        history["val_map"].append(val_map)
        if progress:
            progress(epoch, epochs, {"loss": loss, "val_map": val_map})
        score = -loss if val_map is None else val_map
        if score > best_score + 1e-6:
            best_score, best.arrays, best.best_epoch, stale = score, head.arrays(), epoch, 0
        else:
            stale += 1
            if stale >= settings.early_stopping_patience:
                break
    return best


def _epoch(
    head: Any,
    optimizer: Any,
    inputs: Any,
    codes: np.ndarray,
    groups: list[np.ndarray],
    settings: HeadSettings,
    rng: np.random.Generator,
) -> float:
    import torch

    weights = (settings.contrastive_weight, settings.triplet_weight, settings.sos_weight)
    margins = (settings.contrastive_margin, settings.triplet_margin)
    losses = []
    head.train()
    for rows in _batches(groups, settings, rng):
        vectors = head(inputs[torch.from_numpy(rows)])
        distances = torch.cdist(vectors.detach(), vectors.detach()).numpy()
        loss = combined_loss(vectors, mine(distances, codes[rows], settings.hard_negatives), weights, margins)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _validation_map(head: Any, validation: tuple[np.ndarray, np.ndarray] | None, mean: np.ndarray) -> float | None:
    import torch

    if validation is None:
        return None
    head.eval()
    with torch.no_grad():
        vectors = head(torch.from_numpy(validation[0] - mean)).numpy()
    return leave_one_out_map(vectors, validation[1])
