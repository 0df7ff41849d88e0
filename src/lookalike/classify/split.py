"""A stratified, seeded train / validation split."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from lookalike.errors import SettingsError


def stratified_split(labels: ArrayLike, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation), each sorted: about `fraction` of every class is held out.

    Every class with two or more samples gives at least one to validation (when `fraction > 0`)
    and keeps at least one for training; a class with one sample stays in training. The same
    labels and seed always give the same split.
    """
    if not 0.0 <= fraction < 1.0:
        raise SettingsError(f"the validation fraction must be in [0, 1), got {fraction}")
    values = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(values):
        rows = rng.permutation(np.flatnonzero(values == label))
        count = 0 if fraction == 0.0 or len(rows) < 2 else min(max(1, round(len(rows) * fraction)), len(rows) - 1)
        held.append(rows[:count])
    validation = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(values)), validation)
    return train.astype(np.int64), validation.astype(np.int64)
