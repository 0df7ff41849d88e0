"""Training-time augmentation from images: rotation, horizontal flip and zoom (the paper's set).

Augmented copies of catalogue images are embedded with the index's own `describe` step, so they
get exactly the preprocessing of stored vectors and queries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lookalike.errors import ImageError
from lookalike.io.images import load_image
from lookalike.settings import ClassifySettings

EmbedImages = Callable[[list[Image.Image]], np.ndarray]
CHUNK = 16


def augment_image(image: Image.Image, rng: np.random.Generator, settings: ClassifySettings) -> Image.Image:
    """One random variant: rotated by up to +-`augment_rotation` degrees (corners filled with the
    image's mean colour), zoomed in by up to `augment_zoom`, mirrored with probability 0.5."""
    picture = image.convert("RGB")
    if settings.augment_rotation > 0:
        angle = float(rng.uniform(-settings.augment_rotation, settings.augment_rotation))
        fill = tuple(int(v) for v in np.asarray(picture).reshape(-1, 3).mean(axis=0))
        picture = picture.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    if settings.augment_zoom > 0:
        picture = _zoom(picture, float(rng.uniform(0.0, settings.augment_zoom)), rng)
    if settings.augment_flip and rng.random() < 0.5:
        picture = ImageOps.mirror(picture)
    return picture


def _zoom(picture: Image.Image, amount: float, rng: np.random.Generator) -> Image.Image:
    """Crop a random window 1 / (1 + amount) of the size, resized back to the original size."""
    width, height = picture.size
    crop_w, crop_h = max(1, round(width / (1 + amount))), max(1, round(height / (1 + amount)))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    return picture.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BILINEAR)


def augmented_vectors(
    paths: Sequence[str | Path], settings: ClassifySettings, embed: EmbedImages
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """`settings.augment_copies` embedded variants of every image (seeded by `settings.seed`).

    Returns (vectors, source row of each vector, unreadable files with the reason); unreadable
    files give no copies instead of stopping the training.
    """
    rng = np.random.default_rng(settings.seed)
    vectors: list[np.ndarray] = []
    sources: list[int] = []
    failed: list[tuple[str, str]] = []
    pending: list[Image.Image] = []
    for row, path in enumerate(paths):
        try:
            image = load_image(path)
        except (ImageError, OSError) as exc:
            failed.append((str(path), getattr(exc, "reason", str(exc))))
            continue
        pending += [augment_image(image, rng, settings) for _ in range(settings.augment_copies)]
        sources += [row] * settings.augment_copies
        if len(pending) >= CHUNK:
            vectors.append(embed(pending))
            pending = []
    if pending:
        vectors.append(embed(pending))
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    return stacked, np.asarray(sources, dtype=np.int64), failed
