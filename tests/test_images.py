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
    values = np.full((6, 6), 32768, dtype=np.uint16)
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
    assert load_image(Image.new("L", (3, 3))).mode == "RGB"


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
