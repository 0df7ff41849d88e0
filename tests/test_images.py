"""Images in: every format and mode arrives as RGB; every bad file is one clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import ImageError
from lookalike.io import load_image
from lookalike.io.images import DEFAULT_MAX_SIDE, MIN_SIDE


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


@pytest.mark.parametrize("extension", ["jpg", "png", "webp", "bmp", "tiff"])
def test_formats_decode_to_rgb(tmp_path: Path, extension: str) -> None:
    source = Image.new("RGB", (40, 30), (200, 30, 30))
    image = load_image(_save(source, tmp_path / f"red.{extension}"))
    assert image.mode == "RGB" and image.size == (40, 30)
    assert np.abs(np.asarray(image, dtype=int).mean(axis=(0, 1)) - [200, 30, 30]).max() < 8


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 255, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 5, 10))
    pixels = np.asarray(load_image(_save(rgba, tmp_path / "a.png")))
    assert tuple(pixels[5, 8]) == (255, 255, 255)
    assert tuple(pixels[5, 2]) == (0, 0, 255)


def test_grey_with_alpha_and_palette_with_transparency(tmp_path: Path) -> None:
    la = Image.new("LA", (8, 8), (0, 0))
    assert tuple(np.asarray(load_image(_save(la, tmp_path / "la.png")))[0, 0]) == (255, 255, 255)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert tuple(np.asarray(load_image(_save(palette, tmp_path / "p.png", transparency=0)))[0, 0]) == (255, 0, 0)


def test_cmyk_and_grey(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    red = np.asarray(load_image(_save(cmyk, tmp_path / "c.jpg")), dtype=int)[4, 4]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    grey = load_image(_save(Image.new("L", (8, 8), 90), tmp_path / "g.png"))
    assert grey.mode == "RGB" and tuple(np.asarray(grey)[0, 0]) == (90, 90, 90)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.full((8, 8), 32768, dtype=np.uint16)
    source = Image.fromarray(values)
    pixels = np.asarray(load_image(_save(source, tmp_path / "deep.png")))
    assert pixels.dtype == np.uint8 and abs(int(pixels[0, 0, 0]) - 128) <= 1


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    source = Image.new("RGB", (60, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = load_image(_save(source, tmp_path / "rotated.jpg", exif=exif))
    assert image.size == (20, 60)


def test_bytes_and_pil_sources(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (9, 9), "white").save(buffer, "PNG")
    assert load_image(buffer.getvalue(), name="upload.png").size == (9, 9)
    assert load_image(Image.new("L", (8, 8))).mode == "RGB"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: the file is empty"):
        load_image(tmp_path / "empty.jpg")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("these are not pixels")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        load_image(tmp_path / "notes.jpg")


def test_truncated_image(tmp_path: Path, samples: Path) -> None:
    data = next((samples / "catalog" / "Milk").iterdir()).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")


def test_unreadable_file(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "locked.png")
    path.chmod(0)
    try:
        if path.stat().st_mode and _can_read(path):
            pytest.skip("running as a user who can read any file (root)")
        with pytest.raises(ImageError, match="cannot read the file"):
            load_image(path)
    finally:
        path.chmod(0o644)


def _can_read(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_claiming_size(9000, 9000))
    with pytest.raises(ImageError, match=r"bomb\.png: image of 9000x9000 .* decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_huge_bomb_refused_by_pillow_is_reported_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "huge.png").write_bytes(_png_claiming_size(30000, 30000))
    with pytest.raises(ImageError, match=r"huge\.png: image too large, refused as a possible decompression bomb"):
        load_image(tmp_path / "huge.png")


def test_pixel_limit_is_a_parameter(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    with pytest.raises(ImageError, match="exceeds the limit of 5,000"):
        load_image(path, max_pixels=5000)


# -- bounded memory: big photos are decoded at reduced size


def _halves(size: tuple[int, int], left: str = "red", right: str = "blue", mode: str = "RGB") -> Image.Image:
    """Left half `left`, right half `right`: shows where the image's left side ends up."""
    image = Image.new("RGB", size, left)
    image.paste(Image.new("RGB", (size[0] - size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return image.convert(mode) if mode != "RGB" else image


def _colour_at(image: Image.Image, x: int, y: int) -> str:
    r, g, b = image.getpixel((x, y))
    return "red" if r > 200 and b < 60 else "blue" if b > 200 and r < 60 else f"{(r, g, b)}"


def test_big_jpeg_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    path = _save(_halves((3000, 2000)), tmp_path / "big.jpg", quality=90)
    image = load_image(path, max_side=1000)
    assert image.size == (750, 500) and image.mode == "RGB"  # decoded at 1/4 scale: the largest within 1000
    assert _colour_at(image, 10, 250) == "red" and _colour_at(image, 740, 250) == "blue"
    assert load_image(path, max_side=None).size == (3000, 2000)  # full size on request


def test_default_longest_side(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (DEFAULT_MAX_SIDE * 2, 300), "green"), tmp_path / "wide.jpg")
    assert load_image(path).size == (DEFAULT_MAX_SIDE, 150)
    assert load_image(path.read_bytes()).size == (DEFAULT_MAX_SIDE, 150)
    assert load_image(Image.open(path)).size == (DEFAULT_MAX_SIDE, 150)
    odd = _save(Image.new("RGB", (DEFAULT_MAX_SIDE * 3 - 1, 600), "green"), tmp_path / "odd.png")
    assert load_image(odd).size == (DEFAULT_MAX_SIDE, 200)  # reduced by 3


def test_exif_orientation_survives_the_reduced_decode(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored lying on its side: rotate 90 degrees clockwise to display
    for extension in ("jpg", "png", "tiff", "webp"):
        path = _save(_halves((1600, 800)), tmp_path / f"rotated.{extension}", exif=exif)
        image = load_image(path, max_side=400)
        assert image.size == (200, 400), extension
        # the stored left half (red) is the top once upright
        assert (_colour_at(image, 100, 10), _colour_at(image, 100, 390)) == ("red", "blue"), extension


@pytest.mark.parametrize(
    ("mode", "options"),
    [("RGBA", {}), ("P", {"transparency": 0}), ("LA", {}), ("I;16", {}), ("CMYK", {}), ("1", {})],
)
def test_every_mode_is_shrunk_to_rgb(tmp_path: Path, mode: str, options: dict[str, object]) -> None:
    source = _halves((1200, 600), "red", "blue") if mode != "I;16" else Image.new("RGB", (1200, 600))
    if mode == "P":
        source = source.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    elif mode == "I;16":
        source = Image.fromarray(np.full((600, 1200), 32768, dtype=np.uint16))
    else:
        source = source.convert(mode)
    extension = "jpg" if mode == "CMYK" else "tiff" if mode == "1" else "png"
    image = load_image(_save(source, tmp_path / f"{mode.replace(';', '')}.{extension}", **options), max_side=300)
    assert image.mode == "RGB" and image.size == (300, 150), mode


def test_transparent_big_png_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (1000, 500), (0, 0, 255, 0))
    rgba.paste((0, 0, 255, 255), (500, 0, 1000, 500))
    pixels = np.asarray(load_image(_save(rgba, tmp_path / "a.png"), max_side=200))
    assert tuple(pixels[50, 10]) == (255, 255, 255) and tuple(pixels[50, 190]) == (0, 0, 255)


def test_files_are_decoded_from_disk_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (40, 30), "red"), tmp_path / "red.jpg")

    def refuse(self: Path) -> bytes:
        raise AssertionError("read the whole file into memory")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert load_image(path).size == (40, 30)


def test_very_thin_images_keep_a_describable_short_side(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (6000, 20), "red"), tmp_path / "banner.png")
    assert load_image(path, max_side=600).size == (600, MIN_SIDE)


# -- tiny images and links


def test_tiny_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"dot\.png: too small to describe \(1x1\); at least 8x8 pixels expected"):
        load_image(_save(Image.new("RGB", (1, 1)), tmp_path / "dot.png"))
    with pytest.raises(ImageError, match=r"too small to describe \(40x7\)"):
        load_image(_save(Image.new("RGB", (40, 7)), tmp_path / "line.png"))
    with pytest.raises(ImageError, match=r"<image>: too small to describe \(3x3\)"):
        load_image(Image.new("RGB", (3, 3)))
    assert load_image(_save(Image.new("RGB", (8, 8)), tmp_path / "smallest.png")).size == (8, 8)


def test_broken_and_looping_links_are_named(tmp_path: Path) -> None:
    try:
        (tmp_path / "broken.jpg").symlink_to("gone.jpg")
        (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    except (OSError, NotImplementedError):
        pytest.skip("no symbolic links here")
    with pytest.raises(ImageError, match=r"broken\.jpg: broken symbolic link \(its target gone\.jpg does not exist\)"):
        load_image(tmp_path / "broken.jpg")
    with pytest.raises(ImageError, match=r"loop\.jpg: symbolic link loop"):
        load_image(tmp_path / "loop.jpg")


def test_what_the_file_holds_when_it_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "logo.jpg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    with pytest.raises(ImageError, match=r"logo\.jpg: not an image .*SVG, a vector format"):
        load_image(tmp_path / "logo.jpg")
    (tmp_path / "photo.png").write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    with pytest.raises(ImageError, match=r"photo\.png: not an image: the file holds an HTML page"):
        load_image(tmp_path / "photo.png")
    (tmp_path / "shot.heic").write_bytes(bytes(range(256)) * 2)
    with pytest.raises(ImageError, match=r"shot\.heic: not an image Pillow can read: HEIC/HEIF photos"):
        load_image(tmp_path / "shot.heic")


def test_transparent_images_are_reduced_in_bands_with_the_same_result() -> None:
    from lookalike.io.images import _reduce_in_bands

    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (301, 457, 4), dtype=np.uint8))
    for factor in (2, 3, 7):
        expected = np.asarray(rgba.reduce(factor))
        np.testing.assert_array_equal(np.asarray(_reduce_in_bands(rgba, factor, rows=40)), expected)
