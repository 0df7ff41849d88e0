"""Phone-photo views of catalogue images: the augmentations of label-free adaptation.

A studio image shows one product, centred, on white; a phone photo shows it smaller or cut off,
tilted, under shop light, among other products, in a crate with its neighbours, partly behind a
hand, blurred, noisy and JPEG-compressed. `PhotoViews` makes such views of each catalogue image,
in this order, each step with its own strength in `AdaptSettings` (0 turns it off):

1. scene: with chance `background` the object, cut out with its saliency mask, is pasted onto
   another background (a shelf of other catalogue products, cut out and lined up; a mosaic of other
   catalogue images; a synthetic texture; or one of your own photos, `background_dir`); else, with
   chance `pile`, several copies of it fill the view, like fruit in a crate;
2. `crop`: a random resized crop (zoom in); the scene's smaller object is the zoom out;
3. `perspective` and `rotation`: a random homography, the borders reflected;
4. `occlusion`: an ellipse or box of skin tone or of another image over part of the view;
5. `color`: brightness, contrast, saturation, white balance and exposure;
6. `blur`, 7. `noise`, 8. `jpeg` (quality down to `jpeg`), 9. `flip`: a mirror.

Deterministic: view `number` of image `row` depends only on the seed, the stream (training or
validation views), the row, the number and the settings, and every augmentation draws from its
own generator, so a view made without one augmentation differs from the full view only where that
augmentation was applied (`applied` says where; the ablation of benchmarks/adapt.py uses it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from lookalike.settings import AdaptSettings

WORK = 256  # side of the views (the embedder resizes them to its own input size)
SOURCE = 320  # longer side of a catalogue image while its views are made
TILE = 128  # side of the thumbnails that backgrounds and occluders are cut from
# what each ablation turns off: one entry per augmentation of the docstring's list
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "background": ("background",),
    "pile": ("pile",),
    "crop": ("crop",),
    "perspective": ("perspective", "rotation"),
    "occlusion": ("occlusion",),
    "color": ("color",),
    "blur": ("blur",),
    "noise": ("noise",),
    "jpeg": ("jpeg",),
    "flip": ("flip",),
}
CHANCE = {"perspective": 0.7, "occlusion": 0.4, "color": 0.9, "blur": 0.4, "noise": 0.4, "jpeg": 0.5, "flip": 0.5}
SKIN = ((224, 172, 140), (198, 134, 100), (141, 85, 60), (240, 200, 170))  # hands in front of the product


def without(settings: AdaptSettings, augmentation: str) -> AdaptSettings:
    """The settings with one augmentation (a key of `AUGMENTATIONS`) turned off."""
    if augmentation not in AUGMENTATIONS:
        from lookalike.errors import UnknownNameError

        raise UnknownNameError(f"Unknown augmentation {augmentation!r}; expected one of: {', '.join(AUGMENTATIONS)}")
    return replace(settings, **{name: False if name == "flip" else 0 for name in AUGMENTATIONS[augmentation]})


@dataclass(frozen=True)
class Source:
    """A catalogue image ready for views: RGB pixels and the object's alpha (None: no object found)."""

    pixels: np.ndarray  # (h, w, 3) uint8, longer side at most SOURCE
    alpha: np.ndarray | None  # (h, w) float32 in [0, 1]

    @classmethod
    def of(cls, image: Image.Image, mask: np.ndarray | None = None, side: int = SOURCE) -> Source:
        """From a decoded image and its object mask (bool, at the image's size, or None), its longer
        side brought down to `side`."""
        picture = image.convert("RGB")
        scale = side / max(picture.size)
        size = picture.size
        if scale < 1:
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        alpha = None
        if mask is not None and mask.any() and not mask.all():
            resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
            alpha = np.asarray(resized, dtype=np.float32) / 255.0
        return cls(np.asarray(picture, dtype=np.uint8), alpha)


class PhotoViews:
    """Seeded phone-photo views of catalogue images.

    `tiles` are small `Source`s of catalogue images (`thumbnail`), the stuff of shelves, mosaics
    and occluders; `backgrounds` are photos of your own (`background_photo`).
    """

    def __init__(
        self,
        settings: AdaptSettings,
        tiles: Sequence[Source],
        backgrounds: Sequence[np.ndarray] = (),
        seed: int = 0,
    ) -> None:
        self.settings = settings
        self.tiles = list(tiles)
        self.cutouts = [tile for tile in self.tiles if tile.alpha is not None]
        self.backgrounds = list(backgrounds)
        self.seed = seed

    def view(self, source: Source, row: int, number: int, stream: int = 0) -> Image.Image:
        return self.make(source, row, number, stream)[0]

    def make(self, source: Source, row: int, number: int, stream: int = 0) -> tuple[Image.Image, tuple[str, ...]]:
        """View `number` of image `row` and the augmentations applied to it."""
        s = self.settings
        draw = _Draws(self.seed, stream, row, number)
        applied: list[str] = []
        scene = self._scene(source, draw, applied)
        steps: list[tuple[str, bool, Callable[[np.ndarray, np.random.Generator], np.ndarray]]] = [
            ("crop", s.crop > 0, lambda x, r: _crop(x, r, s.crop)),
            ("perspective", s.perspective > 0 or s.rotation > 0, lambda x, r: _warp(x, r, s.perspective, s.rotation)),
            ("occlusion", s.occlusion > 0, lambda x, r: _occlude(x, r, s.occlusion, self.tiles)),
            ("color", s.color > 0, lambda x, r: _color(x, r, s.color)),
            ("blur", s.blur > 0, lambda x, r: _blur(x, r, s.blur)),
            ("noise", s.noise > 0, lambda x, r: _noise(x, r, s.noise)),
            ("jpeg", s.jpeg > 0, lambda x, r: _jpeg(x, r, s.jpeg)),
            ("flip", s.flip, lambda x, r: np.ascontiguousarray(x[:, ::-1])),
        ]
        pixels = _square(scene) if s.crop == 0 else scene
        for name, on, step in steps:
            rng = draw(name)
            if on and rng.random() < CHANCE.get(name, 1.0):
                pixels = step(pixels, rng)
                applied.append(name)
        return Image.fromarray(_square(pixels)), tuple(applied)

    def _scene(self, source: Source, draw: _Draws, applied: list[str]) -> np.ndarray:
        """The image as it is, or its object on another background, or a pile of it."""
        s = self.settings
        if source.alpha is None:
            return source.pixels
        rng = draw("background")
        if s.background > 0 and rng.random() < s.background:
            applied.append("background")
            return _paste(self._backdrop(rng), source, rng, [(rng.uniform(0.45, 0.95), 0.5, 0.5)])
        rng = draw("pile")
        if s.pile > 0 and rng.random() < s.pile:
            applied.append("pile")
            return _paste(self._backdrop(rng), source, rng, _pile_layout(rng))
        return source.pixels

    def _backdrop(self, rng: np.random.Generator) -> np.ndarray:
        """A (WORK, WORK, 3) background: one of your photos, a shelf of other catalogue products, a
        mosaic of catalogue images, or a texture."""
        kinds = ["texture", *(["shelf"] * (len(self.cutouts) >= 2)), *(["mosaic"] * (len(self.tiles) >= 2))]
        kinds += ["photo"] * bool(self.backgrounds)
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "photo":
            return _random_crop(self.backgrounds[int(rng.integers(len(self.backgrounds)))], rng)
        if kind == "shelf":
            return _shelf(self.cutouts, rng)
        if kind == "mosaic":
            return _mosaic(self.tiles, rng)
        return _texture(rng)


class _Draws:
    """One generator per augmentation of one view: np.random.default_rng([seed, stream, row, number, k])."""

    NAMES = ("background", "pile", *(name for name in AUGMENTATIONS if name not in ("background", "pile")))

    def __init__(self, seed: int, stream: int, row: int, number: int) -> None:
        self.key = [seed, stream, row, number]

    def __call__(self, name: str) -> np.random.Generator:
        return np.random.default_rng([*self.key, self.NAMES.index(name)])


# -- scenes


def _paste(
    backdrop: np.ndarray, source: Source, rng: np.random.Generator, layout: list[tuple[float, float, float]]
) -> np.ndarray:
    """The cut-out object pasted onto `backdrop` once per (size, x, y) of `layout`: size = its longer
    side as a fraction of the view, (x, y) = its centre as fractions of the view."""
    import cv2

    if source.alpha is None or not (source.alpha > 0.5).any():
        return backdrop
    ys, xs = np.nonzero(source.alpha > 0.5)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    obj = source.pixels[top:bottom, left:right].astype(np.float32)
    alpha = cv2.GaussianBlur(source.alpha[top:bottom, left:right], (3, 3), 0)
    canvas = backdrop.astype(np.float32)
    for size, cx, cy in layout:
        scale = size * WORK / max(obj.shape[:2])
        angle = float(rng.uniform(-60, 60)) if len(layout) > 1 else 0.0
        h, w = obj.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += (cx * WORK - w / 2, cy * WORK - h / 2)
        warped = cv2.warpAffine(obj, matrix, (WORK, WORK), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        weight = cv2.warpAffine(alpha, matrix, (WORK, WORK), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
        shade = float(rng.uniform(0.8, 1.1)) if len(layout) > 1 else 1.0  # copies lit a little differently
        canvas = weight * warped * shade + (1 - weight) * canvas
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _pile_layout(rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """A crate seen from the front and above: 2x2 to 8x8 cells (up to 81 copies, the view covered),
    each copy a little larger towards the bottom (nearer); painted top to bottom."""
    side = int(rng.integers(2, 9))
    size = float(rng.uniform(1.1, 1.5)) / side
    jitter = 0.35 / side
    layout = []
    for i in range(side + 1):
        for j in range(side + 1):
            if rng.random() < 0.15:
                continue
            y = (i + rng.uniform(-jitter, jitter)) / side
            x = (j + rng.uniform(-jitter, jitter)) / side
            layout.append((size * float(rng.uniform(0.85, 1.15)) * (0.75 + 0.5 * y), x, y))
    return layout or [(size, 0.5, 0.5)]


def _shelf(cutouts: Sequence[Source], rng: np.random.Generator) -> np.ndarray:
    """2 or 3 rows of other catalogue products, cut out and lined up on a texture, out of focus."""
    import cv2

    canvas = _texture(rng)
    rows = int(rng.integers(2, 4))
    for row in range(rows):
        x, y = float(rng.uniform(-0.1, 0.05)), (row + 0.5) / rows
        while x < 1.0:
            tile = cutouts[int(rng.integers(len(cutouts)))]
            size = float(rng.uniform(0.8, 1.0)) / rows
            width = size * tile.pixels.shape[1] / max(tile.pixels.shape[:2])
            canvas = _paste(canvas, tile, rng, [(size, x + width / 2, y)])
            x += width + float(rng.uniform(0.0, 0.05))
    return cv2.GaussianBlur(canvas, (0, 0), float(rng.uniform(0.5, 1.5)))


def _mosaic(tiles: Sequence[Source], rng: np.random.Generator) -> np.ndarray:
    """A grid of 2x2 to 4x4 other catalogue images, slightly out of focus."""
    import cv2

    side = int(rng.integers(2, 5))
    cell = -(-WORK // side)
    rows = []
    for _ in range(side):
        row = [cv2.resize(tiles[int(rng.integers(len(tiles)))].pixels, (cell, cell)) for _ in range(side)]
        rows.append(np.hstack(row))
    grid = np.vstack(rows)[:WORK, :WORK]
    shift = rng.integers(0, cell, 2)
    grid = np.roll(grid, tuple(int(v) for v in shift), axis=(0, 1))
    return cv2.GaussianBlur(grid, (0, 0), float(rng.uniform(0.5, 2.0)))


def _texture(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field, with shelf-like horizontal bands half of the time."""
    import cv2

    cells = int(rng.integers(2, 9))
    field = rng.uniform(20, 235, (cells, cells, 3)).astype(np.float32)
    grey = field.mean(axis=2, keepdims=True)
    field = grey + (field - grey) * rng.uniform(0.2, 0.8)  # muted, as walls, floors and shelves are
    pixels = cv2.resize(field, (WORK, WORK), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            y, height = int(rng.integers(0, WORK)), int(rng.integers(4, 24))
            pixels[y : y + height] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.5, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return cv2.resize(photo[y : y + side, x : x + side], (WORK, WORK), interpolation=cv2.INTER_AREA)


# -- pixel augmentations (uint8 (h, w, 3) in, uint8 out)


def _square(pixels: np.ndarray) -> np.ndarray:
    import cv2

    if pixels.shape[:2] == (WORK, WORK):
        return pixels
    return cv2.resize(pixels, (WORK, WORK), interpolation=cv2.INTER_AREA)


def _crop(pixels: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Keep between 1 - strength and all of the area, aspect ratio 3:4 to 4:3, resized to WORK."""
    import cv2

    h, w = pixels.shape[:2]
    area = h * w * rng.uniform(1.0 - strength, 1.0)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    ch, cw = min(h, round(np.sqrt(area / aspect))), min(w, round(np.sqrt(area * aspect)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(pixels[y : y + ch, x : x + cw], (WORK, WORK), interpolation=cv2.INTER_AREA)


def _warp(pixels: np.ndarray, rng: np.random.Generator, perspective: float, rotation: float) -> np.ndarray:
    """Rotate by up to +-`rotation` degrees and move each corner by up to `perspective` of the side."""
    import cv2

    pixels = _square(pixels)
    corners = np.float32([[0, 0], [WORK, 0], [WORK, WORK], [0, WORK]])
    moved = corners + rng.uniform(-perspective, perspective, (4, 2)).astype(np.float32) * WORK
    angle = np.deg2rad(rng.uniform(-rotation, rotation))
    centre = np.float32([WORK / 2, WORK / 2])
    turn = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (moved - centre) @ turn.T + centre
    matrix = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    return cv2.warpPerspective(pixels, matrix, (WORK, WORK), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _occlude(pixels: np.ndarray, rng: np.random.Generator, strength: float, tiles: Sequence[Source]) -> np.ndarray:
    """An ellipse (a hand) or a box (a price tag, another product) over up to `strength` of the view."""
    import cv2

    pixels = _square(pixels).copy()
    area = rng.uniform(0.05, 1.0) * strength * WORK * WORK
    aspect = float(np.exp(rng.uniform(-0.8, 0.8)))
    half_w, half_h = np.sqrt(area * aspect) / 2, np.sqrt(area / aspect) / 2
    cx, cy = rng.uniform(0, WORK, 2)
    mask = np.zeros((WORK, WORK), np.float32)
    if rng.random() < 0.5:
        cv2.ellipse(
            mask, (int(cx), int(cy)), (int(half_w) + 1, int(half_h) + 1), float(rng.uniform(0, 180)), 0, 360, 1.0, -1
        )
        fill = np.full((WORK, WORK, 3), SKIN[int(rng.integers(len(SKIN)))], np.float32) * rng.uniform(0.8, 1.1)
    else:
        cv2.rectangle(mask, (int(cx - half_w), int(cy - half_h)), (int(cx + half_w), int(cy + half_h)), 1.0, -1)
        fill = (
            cv2.resize(tiles[int(rng.integers(len(tiles)))].pixels, (WORK, WORK)).astype(np.float32)
            if tiles and rng.random() < 0.7
            else np.full((WORK, WORK, 3), rng.uniform(0, 255, 3), np.float32)
        )
    weight = cv2.GaussianBlur(mask, (5, 5), 0)[..., None]
    return np.clip(weight * fill + (1 - weight) * pixels, 0, 255).astype(np.uint8)


def _color(pixels: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast, saturation, white balance (per-channel gains) and exposure (gamma)."""
    x = pixels.astype(np.float32) / 255.0
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - strength, 1 + strength)  # saturation
    x = x.mean() + (x - x.mean()) * rng.uniform(1 - strength, 1 + strength)  # contrast
    gains = rng.uniform(1 - strength / 2, 1 + strength / 2, 3)
    x = x * (gains / gains.mean()) * rng.uniform(1 - strength, 1 + strength)  # white balance, brightness
    x = np.clip(x, 0, 1) ** float(np.exp(rng.uniform(-strength, strength)))  # exposure
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def _blur(pixels: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(pixels, (0, 0), float(rng.uniform(0.3, sigma)) * pixels.shape[0] / 224)


def _noise(pixels: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    std = rng.uniform(0.2, 1.0) * strength * 255
    grain = rng.normal(0, std, pixels.shape[:2])[..., None] + rng.normal(0, std / 2, pixels.shape)
    return np.clip(pixels + grain, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, rng: np.random.Generator, quality: int) -> np.ndarray:
    import cv2

    q = int(rng.integers(quality, 96))
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else pixels


def thumbnail(image: Image.Image, mask: np.ndarray | None = None) -> Source:
    """A small `Source` (longer side TILE) for shelves, mosaics and occluders."""
    return Source.of(image, mask, side=TILE)


def background_photo(image: Image.Image) -> np.ndarray:
    """One of your background photos, its shorter side at WORK (random crops are taken from it)."""
    picture = image.convert("RGB")
    scale = WORK / min(picture.size)
    size = (max(WORK, round(picture.width * scale)), max(WORK, round(picture.height * scale)))
    return np.asarray(picture.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
