"""Similarity graphs over vectors: a truncated kNN affinity, its symmetric normalisation, and the
diffusion / label-propagation solve (1 - alpha) (I - alpha S)^-1 Y (Zhou et al. 2004).

Shared by the diffusion re-ranker (lookalike.rerank.diffusion) and pseudo-labels on unlabelled
photos (lookalike.embed.adapt), which spread the catalogue images' ids over the photos' graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def knn_affinity(vectors: np.ndarray, k: int, gamma: float) -> Any:
    """Symmetric sparse W: w_ij = max(s_ij, 0) ** gamma for mutual-or-one-way top-k neighbours."""
    from scipy import sparse

    n = len(vectors)
    k = min(k, n - 1)
    rows, cols, values = [], [], []
    for start in range(0, n, 1024):
        similarity = vectors[start : start + 1024] @ vectors.T
        for offset, row in enumerate(similarity):
            row[start + offset] = -np.inf  # no self loops
            neighbours = np.argpartition(-row, k)[:k] if k > 0 else np.zeros(0, int)
            rows.extend([start + offset] * len(neighbours))
            cols.extend(neighbours.tolist())
            values.extend(np.clip(row[neighbours], 0, None) ** gamma)
    graph = sparse.csr_matrix((values, (rows, cols)), shape=(n, n))
    return graph.maximum(graph.T)


def normalise_graph(affinity: Any) -> Any:
    """S = D^-1/2 W D^-1/2."""
    from scipy import sparse

    degree = np.asarray(affinity.sum(axis=1)).ravel()
    scale = sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    return (scale @ affinity @ scale).tocsr()


def solve_diffusion(
    normalised: Any, alpha: float, columns: np.ndarray, iterations: int = 300, tolerance: float = 1e-6
) -> np.ndarray:
    """Columns of (1 - alpha) (I - alpha S)^-1, by conjugate gradients on all of them at once."""
    n = normalised.shape[0]
    residual = np.zeros((n, len(columns)))
    residual[columns, np.arange(len(columns))] = 1.0
    solution = np.zeros_like(residual)
    direction = residual.copy()
    power = np.sum(residual * residual, axis=0)
    for _ in range(iterations):
        product = direction - alpha * (normalised @ direction)
        step = power / np.maximum(np.sum(direction * product, axis=0), 1e-30)
        solution += direction * step
        residual -= product * step
        new_power = np.sum(residual * residual, axis=0)
        if np.sqrt(new_power.max()) < tolerance:
            break
        direction = residual + direction * (new_power / np.maximum(power, 1e-30))
        power = new_power
    return (1.0 - alpha) * solution
