"""The paper's classification head on frozen backbone features (Klasson et al., WACV 2019).

Dense 1024 ReLU -> Dropout 0.5 -> Dense 512 ReLU -> softmax, trained with SGD (Nesterov momentum
0.9, learning rate 1e-3), the learning rate halved when the validation loss has not improved for 5
epochs, and early stopping on the validation loss (the best epoch's weights are kept). Training
uses torch (imported only by `fit`); prediction is numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lookalike.classify.base import (
    EpochProgress,
    FittedMixin,
    check_training_data,
    register_classifier,
    softmax,
    standardizer,
)
from lookalike.classify.split import stratified_split
from lookalike.errors import LookalikeError
from lookalike.settings import ClassifySettings

MIN_IMPROVEMENT = 1e-4  # a validation loss lower by less than this does not reset early stopping


@dataclass
class _Trained:
    weights: list[np.ndarray]  # (in, out) per layer
    biases: list[np.ndarray]
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0


@register_classifier("mlp")
class MLPClassifier(FittedMixin):
    """Multi-layer perceptron on standardised features; `settings.hidden` sets the hidden layers.

    `fit(X, y, validation=(X_val, y_val))` uses that split for early stopping and the learning rate
    schedule; without it, `settings.validation_fraction` of (X, y) is held out (stratified, seeded).
    With no validation data at all the training loss is monitored instead. Learned attributes:
    `classes_`, `n_features_in_`, `mean_`, `scale_`, `weights_`, `biases_`, `history_` (per epoch:
    loss, accuracy, val_loss, val_accuracy, lr) and `best_epoch_`.
    """

    kind = "mlp"

    def __init__(self, settings: ClassifySettings | None = None) -> None:
        self.settings = settings or ClassifySettings()

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        validation: tuple[ArrayLike, ArrayLike] | None = None,
        progress: EpochProgress | None = None,
    ) -> MLPClassifier:
        features, labels = check_training_data(X, y)
        if validation is None:
            train, held = stratified_split(labels, self.settings.validation_fraction, self.settings.seed)
            validation = (features[held], labels[held])
            features, labels = features[train], labels[train]
        classes = np.unique(labels)
        val_x, val_y = _validation_arrays(validation, classes, features.shape[1])
        mean, scale = standardizer(features, self.settings.standardize)
        trained = _train(
            (features - mean) / scale,
            np.searchsorted(classes, labels),
            (val_x - mean) / scale,
            np.searchsorted(classes, val_y),
            len(classes),
            self.settings,
            progress,
        )
        self.classes_ = classes
        self.n_features_in_ = features.shape[1]
        self.mean_, self.scale_ = mean, scale
        self.weights_, self.biases_ = trained.weights, trained.biases
        self.history_ = trained.history
        self.best_epoch_ = trained.best_epoch
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        hidden = (self._check_features(X) - self.mean_) / self.scale_
        for weight, bias in zip(self.weights_[:-1], self.biases_[:-1], strict=True):
            hidden = np.maximum(hidden @ weight + bias, 0.0)
        return softmax(hidden @ self.weights_[-1] + self.biases_[-1])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        arrays = {"mean": self.mean_, "scale": self.scale_}
        for number, (weight, bias) in enumerate(zip(self.weights_, self.biases_, strict=True)):
            arrays[f"weight_{number}"], arrays[f"bias_{number}"] = weight, bias
        facts = {
            "n_features": self.n_features_in_,
            "layers": len(self.weights_),
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        return facts, arrays

    def restore(self, facts: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        layers = int(facts["layers"])
        self.weights_ = [arrays[f"weight_{n}"].astype(np.float32) for n in range(layers)]
        self.biases_ = [arrays[f"bias_{n}"].astype(np.float32) for n in range(layers)]
        self.mean_, self.scale_ = arrays["mean"].astype(np.float32), arrays["scale"].astype(np.float32)
        self.n_features_in_ = int(facts["n_features"])
        self.best_epoch_ = int(facts.get("best_epoch", 0))
        self.history_ = facts.get("history", {})
        self.classes_ = np.asarray(facts["classes"])


def _validation_arrays(
    validation: tuple[ArrayLike, ArrayLike], classes: np.ndarray, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    val_x, val_y = np.asarray(validation[0], dtype=np.float32).reshape(-1, dim), np.asarray(validation[1])
    if len(val_x) != len(val_y):
        raise LookalikeError(f"validation holds {len(val_x)} vectors but {len(val_y)} labels; expected one each")
    unknown = sorted(set(val_y.tolist()) - set(classes.tolist()), key=str)
    if unknown:
        raise LookalikeError(f"validation labels {unknown[:5]} do not occur in the training labels y")
    return val_x, val_y


def _network(n_in: int, hidden: tuple[int, ...], dropout: float, n_out: int) -> Any:
    from torch import nn

    layers: list[Any] = []
    for number, width in enumerate(hidden):
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        if number == 0 and dropout > 0:
            layers.append(nn.Dropout(dropout))  # the paper: dropout after the first dense layer only
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _train(
    x: np.ndarray,
    y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    s: ClassifySettings,
    progress: EpochProgress | None = None,
) -> _Trained:
    import torch

    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(s.seed)
        net = _network(x.shape[1], s.hidden, s.dropout, n_classes)
        optimizer = torch.optim.SGD(net.parameters(), lr=s.learning_rate, momentum=s.momentum, nesterov=s.momentum > 0)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            factor=s.plateau_factor,
            patience=s.plateau_patience,
            threshold=MIN_IMPROVEMENT,  # the same notion of "no improvement" as early stopping
            threshold_mode="abs",
        )
        data = (torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))
        held = (torch.from_numpy(val_x), torch.from_numpy(val_y.astype(np.int64)))
        return _loop(net, optimizer, scheduler, data, held, s, torch.Generator().manual_seed(s.seed), progress)


def _loop(
    net: Any,
    optimizer: Any,
    scheduler: Any,
    data: Any,
    held: Any,
    s: ClassifySettings,
    order: Any,
    progress: EpochProgress | None = None,
) -> _Trained:
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "lr": []}
    best_loss, best_epoch, best_state = float("inf"), 0, None
    for epoch in range(1, s.max_epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        loss, accuracy = _train_epoch(net, optimizer, data, s.batch_size, order)
        val_loss, val_accuracy = _evaluate(net, held) if len(held[1]) else (loss, accuracy)
        for key, value in zip(history, (loss, accuracy, val_loss, val_accuracy, lr), strict=True):
            history[key].append(float(value))
        scheduler.step(val_loss)
        if progress:
            progress(epoch, s.max_epochs)
        if val_loss < best_loss - MIN_IMPROVEMENT:
            best_loss, best_epoch = val_loss, epoch
            best_state = {name: value.detach().clone() for name, value in net.state_dict().items()}
        elif epoch - best_epoch >= s.early_stopping_patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    linear = [module for module in net if hasattr(module, "weight")]
    return _Trained(
        weights=[m.weight.detach().numpy().T.copy() for m in linear],
        biases=[m.bias.detach().numpy().copy() for m in linear],
        history=history,
        best_epoch=best_epoch,
    )


def _train_epoch(net: Any, optimizer: Any, data: Any, batch_size: int, order: Any) -> tuple[float, float]:
    import torch

    x, y = data
    net.train()
    total_loss, correct = 0.0, 0
    for rows in torch.randperm(len(y), generator=order).split(batch_size):
        logits = net(x[rows])
        loss = torch.nn.functional.cross_entropy(logits, y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(rows)
        correct += int((logits.argmax(dim=1) == y[rows]).sum())
    return total_loss / len(y), correct / len(y)


def _evaluate(net: Any, held: Any) -> tuple[float, float]:
    import torch

    x, y = held
    net.eval()
    with torch.no_grad():
        logits = net(x)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
    return loss, float((logits.argmax(dim=1) == y).float().mean())
