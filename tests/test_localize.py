"""Localisation: the segmenter registry, main-object masks, fallback, cut-outs and silhouettes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import ModelNotFoundError, SettingsError, UnknownNameError
from lookalike.localize import (
    Localization,
    Localizer,
    SaliencyMap,
    available_segmenters,
    create_segmenter,
    pack_silhouette,
    register_segmenter,
    select_main_object,
    silhouette_iou,
    unpack_silhouette,
)
from lookalike.localize.cutout import square_box
from lookalike.localize.mask import mask_box
from lookalike.localize.matting import UNKNOWN, make_trimap
from lookalike.localize.quantize import RECIPE, cached_int8_model, quantize_model, side_output_convs, synthetic_images
from lookalike.localize.u2net import open_session, preprocess, u2netp_path
from lookalike.samples import sample_dir
from lookalike.settings import LocalizeSettings, Settings

SAMPLES = sample_dir()
MILK = SAMPLES / "catalog" / "Milk" / "Arla-Standard-Milk_021.jpg"
# Drawn by hand on the 348 x 348 photo: the carton held upright, cap at the top, cut by the
# bottom edge; the hand and the fridge shelves around it are background.
MILK_BOX = (158, 53, 266, 348)
MILK_INSIDE = (180, 80, 250, 340)  # surely carton
MILK_OUTSIDE = [(0, 0, 120, 348), (300, 0, 348, 348), (150, 0, 260, 35)]  # fridge, floor, shelf above


class FakeSegmenter:
    """Returns a fixed saliency map: tests of everything after the model."""

    name = "fake"

    def __init__(self, saliency: np.ndarray, peak: float = 1.0) -> None:
        self.saliency = saliency.astype(np.float32)
        self.peak = peak

    def predict(self, image: Image.Image) -> SaliencyMap:
        assert image.size == (self.saliency.shape[1], self.saliency.shape[0])
        return SaliencyMap(self.saliency, self.peak)

    def fingerprint(self) -> str:
        return "fake"


@pytest.fixture(scope="module")
def localizer() -> Localizer:
    """The default settings with the real u2netp model, loaded once for the module."""
    return Localizer(LocalizeSettings())


@pytest.fixture(scope="module")
def milk(localizer: Localizer) -> Localization:
    return localizer.localize(Image.open(MILK))


def _box(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def _scene() -> tuple[Image.Image, np.ndarray]:
    """A blue box on grey, and its mask."""
    pixels = np.full((80, 120, 3), 100, dtype=np.uint8)
    pixels[20:50, 30:70] = (20, 40, 200)
    return Image.fromarray(pixels), _box(120, 80, (30, 20, 70, 50))


# --- the model ------------------------------------------------------------------------------


def test_u2netp_is_located_without_importing_rembg_or_onnxruntime() -> None:
    code = (
        "import sys, lookalike.localize; from lookalike.localize.u2net import u2netp_path; p = u2netp_path(); "
        "print(p.name, p.is_file(), [m for m in ('rembg', 'onnxruntime', 'pymatting', 'cv2') if m in sys.modules])"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["u2netp.onnx", "True", "[]"]
    assert u2netp_path().parent.name == "rembg"


def test_unknown_segmenter_lists_the_valid_names() -> None:
    assert {"onnx", "u2netp"} <= set(available_segmenters())
    with pytest.raises(UnknownNameError, match=r"Unknown segmenter 'sam'; expected one of: .*onnx, u2netp"):
        create_segmenter(LocalizeSettings(model="sam"))


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="segmenter 'u2netp' is already registered"):
        register_segmenter("u2netp")(lambda settings, cache_dir=None: None)


def test_onnx_segmenter_needs_a_path_that_exists(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="'onnx' needs localize.model_path"):
        Settings(localize=LocalizeSettings(model="onnx"))
    segmenter = create_segmenter(LocalizeSettings(model="onnx", model_path=str(tmp_path / "missing.onnx")))
    with pytest.raises(ModelNotFoundError, match=r"missing\.onnx: no such ONNX segmenter file"):
        segmenter.predict(Image.new("RGB", (32, 32)))


def test_onnx_segmenter_from_a_local_file_matches_u2netp() -> None:
    settings = LocalizeSettings(input_size=64)
    local = create_segmenter(LocalizeSettings(model="onnx", model_path=str(u2netp_path()), input_size=64))
    image = Image.open(MILK)
    expected = create_segmenter(settings).predict(image)
    got = local.predict(image)
    assert got.saliency.shape == (348, 348) and got.saliency.dtype == np.float32
    np.testing.assert_allclose(got.saliency, expected.saliency, atol=1e-5)
    assert local.fingerprint().startswith("onnx:u2netp.onnx|")


def test_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="silhouette_size must be a positive multiple of 8, got 12"):
        LocalizeSettings(silhouette_size=12).validate()
    with pytest.raises(SettingsError, match="input_size must be >= 64, got 32"):
        Localizer(LocalizeSettings(input_size=32))


# --- a real product ------------------------------------------------------------------------


def test_milk_carton_mask_covers_it_and_excludes_the_background(milk: Localization) -> None:
    result = milk
    assert result.found and result.reason is None
    assert result.mask.shape == result.saliency.shape == (348, 348)
    assert result.saliency.min() >= 0.0 and result.saliency.max() <= 1.0
    assert np.abs(np.subtract(result.box, MILK_BOX)).max() <= 12, result.box
    left, top, right, bottom = MILK_INSIDE
    assert result.mask[top:bottom, left:right].mean() > 0.98
    for left, top, right, bottom in MILK_OUTSIDE:
        assert result.mask[top:bottom, left:right].mean() < 0.01


def test_milk_cutout_is_square_and_white_outside_the_mask(milk: Localization) -> None:
    result = milk
    pixels = np.asarray(result.cutout)
    assert result.cutout.width == result.cutout.height == result.cutout_mask.shape[0] == result.cutout_mask.shape[1]
    assert (pixels[~result.cutout_mask] == 255).all()
    assert pixels[result.cutout_mask].mean() < 200  # the carton's red print, not white
    assert set(result.timings) == {"segment", "mask", "matting", "cutout", "total"}


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (300, 200), (128, 128, 128)),
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)),
    ],
    ids=["grey", "noise"],
)
def test_no_object_falls_back_to_the_whole_image(localizer: Localizer, image: Image.Image) -> None:
    # at the default 224 px; at its native 320 px u2netp (fp32 or bf16) takes dense noise for an object
    result = localizer.localize(image)
    assert not result.found
    assert result.reason is not None and result.reason.startswith("no salient object")
    assert result.box == (0, 0, 300, 200) and result.mask.all()
    assert result.cutout.size == (300, 300)
    pixels = np.asarray(result.cutout)
    assert (pixels[:50] == 255).all() and (pixels[250:] == 255).all()  # white padding above and below
    assert result.cutout_mask[50:250].all() and not result.cutout_mask[:50].any()


# --- after the model: masks, fallback, cut-outs ---------------------------------------------------


def test_too_small_a_mask_falls_back_and_says_why() -> None:
    saliency = _box(100, 100, (10, 10, 15, 15)).astype(np.float32)  # 0.25% of the image
    result = Localizer(segmenter=FakeSegmenter(saliency)).localize(Image.new("RGB", (100, 100)))
    assert not result.found
    assert result.reason == (
        "no salient object: the mask covers 0.25% of the image (< localize.min_object_fraction = 1.00%)"
    )


def test_flat_response_falls_back_even_when_normalisation_makes_a_mask() -> None:
    saliency = _box(100, 100, (10, 10, 60, 60)).astype(np.float32)
    result = Localizer(segmenter=FakeSegmenter(saliency, peak=0.01)).localize(Image.new("RGB", (100, 100)))
    assert not result.found
    assert result.reason is not None and "strongest response is 0.010" in result.reason


def test_main_object_drops_a_distant_blob_of_any_size() -> None:
    mask = _box(200, 100, (10, 10, 70, 90)) | _box(200, 100, (120, 20, 170, 80))  # a shelf neighbour
    kept = select_main_object(mask, attach_fraction=0.1, attach_distance=0.05)
    assert mask_box(kept) == (10, 10, 70, 90) and kept.sum() == 60 * 80


def test_main_object_keeps_a_large_attached_part_and_drops_a_small_one() -> None:
    main = _box(200, 100, (10, 10, 70, 90))  # 4,800 pixels: parts within 0.05 * sqrt(4800) = 3.5 px
    part = _box(200, 100, (72, 30, 92, 60))  # 600 pixels (12.5%), 2 px away: kept
    speck = _box(200, 100, (10, 92, 20, 95))  # 30 pixels, 2 px away: dropped
    far = _box(200, 100, (150, 10, 190, 90))  # 3,200 pixels, 80 px away: dropped
    kept = select_main_object(main | part | speck | far, attach_fraction=0.1, attach_distance=0.05)
    np.testing.assert_array_equal(kept, main | part)


def test_keep_main_object_off_keeps_every_blob() -> None:
    saliency = (_box(200, 100, (10, 10, 70, 90)) | _box(200, 100, (120, 20, 170, 80))).astype(np.float32)
    settings = LocalizeSettings(keep_main_object=False)
    result = Localizer(settings, segmenter=FakeSegmenter(saliency)).localize(Image.new("RGB", (200, 100)))
    assert result.box == (10, 10, 170, 90)


def test_cutout_frames_the_object_in_a_white_square_with_its_margin() -> None:
    image, mask = _scene()
    settings = LocalizeSettings(margin=0.1)
    result = Localizer(settings, segmenter=FakeSegmenter(mask.astype(np.float32))).localize(image)
    assert result.found and result.box == (30, 20, 70, 50)
    assert result.cutout.size == (48, 48)  # 40 px wide + 10% of 40 on each side
    pixels = np.asarray(result.cutout)
    assert (pixels[result.cutout_mask] == (20, 40, 200)).all()
    assert (pixels[~result.cutout_mask] == 255).all()
    assert result.cutout_mask.sum() == mask.sum()
    assert mask_box(result.cutout_mask) == (4, 9, 44, 39)  # centred: (48 - 40) / 2, (48 - 30) / 2
    np.testing.assert_array_equal(result.alpha, mask.astype(np.float32))


def test_square_box_may_leave_the_image() -> None:
    assert square_box((0, 0, 10, 40), margin=0.0) == (-15, 0, 25, 40)
    assert square_box((5, 5, 15, 15), margin=0.5) == (0, 0, 20, 20)


def test_silhouette_is_the_cutout_mask_resized_and_packed() -> None:
    image, mask = _scene()
    settings = LocalizeSettings(silhouette_size=16, margin=0.0)
    result = Localizer(settings, segmenter=FakeSegmenter(mask.astype(np.float32))).localize(image)
    assert len(result.silhouette) == 16 * 16 // 8
    silhouette = result.silhouette_mask()
    assert silhouette.shape == (16, 16)
    assert mask_box(silhouette) == (0, 2, 16, 14)  # a 40 x 30 box in a 40-px square: rows 5..35 of 40


# --- silhouettes -----------------------------------------------------------------------------


def test_silhouette_pack_unpack_round_trip() -> None:
    silhouette = np.random.default_rng(1).random((64, 64)) > 0.5
    packed = pack_silhouette(silhouette)
    assert isinstance(packed, bytes) and len(packed) == 512
    np.testing.assert_array_equal(unpack_silhouette(packed), silhouette)
    np.testing.assert_array_equal(unpack_silhouette(np.frombuffer(packed, np.uint8), 64), silhouette)
    with pytest.raises(ValueError, match="side is a multiple of 8"):
        pack_silhouette(np.zeros((10, 10), dtype=bool))
    with pytest.raises(ValueError, match="not a square silhouette"):
        unpack_silhouette(bytes(3))


def test_silhouette_iou_on_hand_computed_cases() -> None:
    left = np.zeros((8, 8), dtype=bool)
    left[:, :4] = True  # 32 pixels
    top = np.zeros((8, 8), dtype=bool)
    top[:4] = True  # 32 pixels, 16 shared with `left`: IoU 16 / 48
    empty = np.zeros((8, 8), dtype=bool)
    assert silhouette_iou(left, left) == 1.0
    assert silhouette_iou(left, top) == pytest.approx(1 / 3)
    assert silhouette_iou(pack_silhouette(left), pack_silhouette(top)) == pytest.approx(1 / 3)
    assert silhouette_iou(left, ~left) == 0.0
    assert silhouette_iou(empty, empty) == 0.0


def test_silhouette_iou_one_against_many() -> None:
    rng = np.random.default_rng(2)
    query = rng.random((32, 32)) > 0.5
    others = rng.random((5, 32, 32)) > 0.5
    expected = [(query & other).sum() / (query | other).sum() for other in others]
    packed = [pack_silhouette(other) for other in others]
    np.testing.assert_allclose(silhouette_iou(query, others), expected)
    np.testing.assert_allclose(silhouette_iou(pack_silhouette(query), packed), expected)
    np.testing.assert_allclose(silhouette_iou(query, np.stack([np.frombuffer(p, np.uint8) for p in packed])), expected)
    with pytest.raises(ValueError, match="silhouettes differ in size"):
        silhouette_iou(query, np.zeros((3, 64, 64), dtype=bool))
    with pytest.raises(TypeError, match="bool .unpacked. or uint8 .packed."):
        silhouette_iou(query, others.astype(np.float32))


# --- matting ---------------------------------------------------------------------------------


def test_trimap_band_scales_with_the_object() -> None:
    small = make_trimap(_box(200, 200, (90, 90, 110, 110)), band_fraction=0.1)  # sqrt(400) = 20: 2 px
    large = make_trimap(_box(200, 200, (20, 20, 180, 180)), band_fraction=0.1)  # sqrt(25600) = 160: 16 px
    assert set(np.unique(small)) == {0, UNKNOWN, 255}
    assert (small[100, 86:115] == UNKNOWN).sum() == 4 * 2  # 2 px each side of both edges
    assert (large[100, :100] == UNKNOWN).sum() == 16 * 2
    assert large[100, 100] == 255 and large[100, 0] == 0


@pytest.mark.slow
def test_matting_softens_the_edge_and_keeps_the_object() -> None:
    image, mask = _scene()
    rough = mask.copy()
    rough[20:50, 66:70] = False  # the box's right edge missed by the segmenter
    settings = LocalizeSettings(matting=True, trimap_fraction=0.15)
    result = Localizer(settings, segmenter=FakeSegmenter(rough.astype(np.float32))).localize(image)
    assert result.found and result.alpha.dtype == np.float32
    assert result.alpha.min() >= 0.0 and result.alpha.max() <= 1.0
    assert (result.mask & mask).sum() / (result.mask | mask).sum() > (rough & mask).sum() / (rough | mask).sum()


# --- int8 ------------------------------------------------------------------------------------


def test_int8_model_is_cached_outside_the_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []

    def fake_quantize(source: Path, target: Path) -> Path:
        built.append(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"int8")
        return target

    monkeypatch.setattr("lookalike.localize.quantize.quantize_model", fake_quantize)
    first = cached_int8_model(u2netp_path(), tmp_path / "cache")
    second = cached_int8_model(u2netp_path(), tmp_path / "cache")
    assert first == second == built[0] and len(built) == 1  # built once, then read from the cache
    assert first.parent == tmp_path / "cache" and first.name.startswith("u2netp-") and RECIPE in first.name


def test_side_outputs_of_u2netp_stay_in_float() -> None:
    onnx = pytest.importorskip("onnx")
    names = side_output_convs(onnx.load(str(u2netp_path())))
    assert len(names) == 7  # six side outputs and the fusing convolution


@pytest.mark.slow
def test_int8_quantisation_runs_at_any_size(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    target = quantize_model(u2netp_path(), tmp_path / "int8.onnx", synthetic_images(2, size=64), size=64)
    session = open_session(target, threads=None)
    output = session.run(None, {session.get_inputs()[0].name: preprocess(Image.open(MILK), 96)})[0]
    assert output.shape == (1, 1, 96, 96)
    assert synthetic_images(1)[0].tobytes() == synthetic_images(1)[0].tobytes()  # calibration is reproducible


def test_object_mask_is_localizes_mask_without_the_cutout(localizer: Localizer, milk: Localization) -> None:
    mask = localizer.object_mask(Image.open(MILK))
    assert mask is not None and np.array_equal(mask, milk.mask)
    assert localizer.object_mask(Image.new("RGB", (300, 200), (128, 128, 128))) is None
