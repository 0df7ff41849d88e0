"""The localisation stage's entry point: image -> main object's mask, white cut-out, silhouette."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.io.images import to_rgb
from lookalike.localize.base import Segmenter, create_segmenter, resolve_settings
from lookalike.localize.cutout import extract
from lookalike.localize.mask import Box, binarize, mask_box, select_main_object
from lookalike.localize.silhouette import make_silhouette, pack_silhouette, unpack_silhouette
from lookalike.settings import LocalizeSettings

# A U^2-Net's sigmoid peaks near 1 on any photo with an object; uniform or noise images stay
# below 0.08. Min-max normalisation would blow such a flat map up into a random mask.
MIN_PEAK = 0.2


@dataclass(frozen=True, eq=False)
class Localization:
    """Where the main object is in one image, and the object cut out of it.

    Arrays of shape (h, w) are at the image's resolution. When no salient object is found,
    `found` is False, `reason` says why, and the mask, box and cut-out cover the whole image.
    """

    saliency: np.ndarray  # (h, w) float32 in [0, 1], the segmenter's normalised map
    mask: np.ndarray  # (h, w) bool, the main object
    alpha: np.ndarray  # (h, w) float32 in [0, 1]: matting's alpha, or the mask as 0/1 without matting
    cutout: Image.Image  # square RGB crop around the object, white where alpha is 0 and in the padding
    cutout_mask: np.ndarray  # (side, side) bool, the mask in the cut-out's frame
    silhouette: bytes  # cutout_mask resized to silhouette_size x silhouette_size, bit-packed
    box: Box  # the object's box in the image: left, top, right, bottom (exclusive)
    found: bool
    reason: str | None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step, and "total"

    def silhouette_mask(self) -> np.ndarray:
        """The silhouette unpacked: (silhouette_size, silhouette_size) bool."""
        return unpack_silhouette(self.silhouette)


class Localizer:
    """Finds the main object of an image; owns the segmenter, created on first use and kept.

    Pass `segmenter` to share one already loaded; `cache_dir` is where an int8 model is cached.
    """

    def __init__(
        self,
        settings: LocalizeSettings | None = None,
        *,
        segmenter: Segmenter | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.settings = resolve_settings(settings if settings is not None else LocalizeSettings())
        self.settings.validate()
        self.cache_dir = cache_dir
        self._segmenter = segmenter

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            self._segmenter = create_segmenter(self.settings, cache_dir=self.cache_dir)
        return self._segmenter

    def fingerprint(self) -> str:
        """The segmenter's fingerprint and every setting that changes masks and cut-outs."""
        s = self.settings
        return (
            f"{self.segmenter.fingerprint()}|thr={s.threshold:g}|min={s.min_object_fraction:g}"
            f"|main={int(s.keep_main_object)}:{s.attach_fraction:g}:{s.attach_distance:g}"
            f"|matting={int(s.matting)}:{s.matting_size}:{s.trimap_fraction:g}|margin={s.margin:g}"
            f"|sil={s.silhouette_size}"
        )

    def object_mask(self, image: Image.Image) -> np.ndarray | None:
        """The main object's (h, w) bool mask, None when no salient object is found: `localize`'s mask
        without matting, cut-out or silhouette."""
        saliency = self.segmenter.predict(to_rgb(image))
        mask = self._object_mask(saliency.saliency)
        return None if self._missing_reason(saliency.peak, mask) is not None else mask

    def localize(self, image: Image.Image) -> Localization:
        """Segment `image`, keep its main object, refine the edge if asked, cut it out on white."""
        timer = _Timer()
        rgb = to_rgb(image)
        pixels = np.asarray(rgb)
        saliency = self.segmenter.predict(rgb)
        timer.lap("segment")
        mask = self._object_mask(saliency.saliency)
        reason = self._missing_reason(saliency.peak, mask)
        timer.lap("mask")
        if reason is not None:
            return self._whole_image(pixels, saliency.saliency, reason, timer)
        alpha, foreground, mask = self._refine(pixels, mask)
        timer.lap("matting")
        box = mask_box(mask) or (0, 0, rgb.width, rgb.height)
        cutout, cutout_mask = extract(foreground, alpha, mask, box, self.settings.margin)
        silhouette = pack_silhouette(make_silhouette(cutout_mask, self.settings.silhouette_size))
        timer.lap("cutout")
        return Localization(
            saliency.saliency, mask, alpha, cutout, cutout_mask, silhouette, box, True, None, timer.done()
        )

    def _object_mask(self, saliency: np.ndarray) -> np.ndarray:
        mask = binarize(saliency, self.settings.threshold)
        if self.settings.keep_main_object and mask.any():
            mask = select_main_object(mask, self.settings.attach_fraction, self.settings.attach_distance)
        return mask

    def _missing_reason(self, peak: float, mask: np.ndarray) -> str | None:
        if peak < MIN_PEAK:
            return f"no salient object: the segmenter's strongest response is {peak:.3f} (< {MIN_PEAK})"
        fraction = float(mask.mean())
        if fraction < self.settings.min_object_fraction:
            return (
                f"no salient object: the mask covers {fraction:.2%} of the image "
                f"(< localize.min_object_fraction = {self.settings.min_object_fraction:.2%})"
            )
        return None

    def _refine(self, pixels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(alpha, foreground colours, mask): matted when `matting` is on, else the hard mask as is."""
        if not self.settings.matting:
            return mask.astype(np.float32), pixels, mask
        from lookalike.localize.matting import refine

        alpha, foreground = refine(pixels, mask, self.settings.trimap_fraction, self.settings.matting_size)
        matted = alpha >= 0.5
        return alpha, foreground, matted if matted.any() else mask

    def _whole_image(self, pixels: np.ndarray, saliency: np.ndarray, reason: str, timer: _Timer) -> Localization:
        height, width = pixels.shape[:2]
        mask = np.ones((height, width), dtype=bool)
        box = (0, 0, width, height)
        cutout, cutout_mask = extract(pixels, mask.astype(np.float32), mask, box, 0.0)
        silhouette = pack_silhouette(make_silhouette(cutout_mask, self.settings.silhouette_size))
        timer.lap("cutout")
        alpha = mask.astype(np.float32)
        return Localization(saliency, mask, alpha, cutout, cutout_mask, silhouette, box, False, reason, timer.done())


class _Timer:
    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._last
        self._last = now

    def done(self) -> dict[str, float]:
        self.timings["total"] = time.perf_counter() - self._start
        return self.timings
