"""A corpus of awkward and broken inputs, each with the behaviour lookalike promises for it.

`build_corpus(folder)` writes every kind into `folder` (symbolic links are left out where the system
cannot make them) and returns one `Case` per kind. Each case says what happens when the file is
given on its own (`lookalike search FILE`, `lookalike add FILE`, `load_image`, an upload) and when
it is met inside a catalogue folder (`lookalike index FOLDER`), where files in unsupported formats
are passed over with a reason and other non-image files are ignored.

Reused by the CLI tests (tests/test_bad_inputs.py) and the server's upload tests.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

InFolder = Literal["indexed", "failed", "ignored"]


@dataclass(frozen=True)
class Case:
    """One kind of input and what lookalike does with it.

    `expected_ok`: given on its own, it is decoded and indexed or searched; otherwise it is refused
    with an error whose reason matches `reason_pattern` (a regex, for `re.search`).
    `in_folder`: met in a catalogue folder it is "indexed", "failed" (listed as not indexed, with a
    reason matching `folder_reason`, or `reason_pattern` when that is None) or "ignored" (silently).
    """

    name: str
    path: Path
    expected_ok: bool
    reason_pattern: str | None = None
    in_folder: InFolder | None = None  # None: "indexed" when expected_ok, else "failed"
    folder_reason: str | None = None

    @property
    def folder_outcome(self) -> InFolder:
        return self.in_folder or ("indexed" if self.expected_ok else "failed")

    @property
    def folder_pattern(self) -> str | None:
        return self.folder_reason or self.reason_pattern

    @property
    def is_regular_file(self) -> bool:
        """A plain file (not a folder or a symbolic link): something a client could upload."""
        return self.path.is_file() and not self.path.is_symlink()


def build_corpus(folder: Path) -> list[Case]:
    """Write the corpus into `folder` (created) and return its cases, in a fixed order."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, make in KINDS.items():
        try:
            cases.append(make(folder, name))
        except (OSError, NotImplementedError):
            if name not in SYMLINK_KINDS:
                raise
            # no symbolic links on this system (Windows without the privilege): the kind is left out
    return cases


# -- pictures


def _picture(mode: str, size: tuple[int, int] = (96, 72), seed: int = 0) -> Image.Image:
    """A small RGB scene (a background, a box and a disc), converted to `mode`."""
    rng = np.random.default_rng(seed)
    colours = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(3)]
    image = Image.new("RGB", size, colours[0])
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle((width // 8, height // 6, width // 2, height - height // 6), fill=colours[1])
    draw.ellipse((width // 2, height // 4, width - width // 8, height - height // 4), fill=colours[2])
    return image.convert(mode) if mode != "RGB" else image


def _noise(size: tuple[int, int], seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


SVG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="red"/></svg>\n'
)
HTML = "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>\n"


# -- the kinds: each writes its file(s) into a folder and returns its Case

Maker = Callable[[Path, str], Case]


def _good(file_name: str, build: Callable[[], bytes], **more: Any) -> Maker:
    def make(folder: Path, name: str) -> Case:
        (folder / file_name).write_bytes(build())
        return Case(name, folder / file_name, True, **more)

    return make


def _bad(file_name: str, build: Callable[[], bytes], reason: str, **more: Any) -> Maker:
    def make(folder: Path, name: str) -> Case:
        (folder / file_name).write_bytes(build())
        return Case(name, folder / file_name, False, reason, **more)

    return make


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    return _encoded(_picture("RGB", (120, 60), seed=6), "JPEG", exif=exif)


def _palette_alpha() -> bytes:
    image = _picture("RGB", seed=4).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encoded(image, "PNG", transparency=0)


def _sixteen_bit() -> bytes:
    ramp = np.linspace(0, 65535, 96 * 72).reshape(72, 96).astype(np.uint16)
    return _encoded(Image.fromarray(ramp), "PNG")


def _multipage_tiff() -> bytes:
    pages = [_picture("RGB", seed=8), _picture("RGB", seed=9)]
    return _encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _animated_gif() -> bytes:
    frames = [_picture("RGB", seed=seed).convert("P") for seed in (10, 11, 12)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _truncated(fmt: str) -> Callable[[], bytes]:
    def build() -> bytes:
        data = _encoded(_noise((160, 120)), fmt)
        return data[: len(data) // 2]

    return build


def _fake_heic() -> bytes:
    """The start of an HEIC file (an ISO media 'ftyp' box): what an iPhone photo looks like to Pillow."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0mif1heic" + b"\0" * 64


def _folder_named_like_image(folder: Path, name: str) -> Case:
    path = folder / "photo.jpg"
    path.mkdir(exist_ok=True)
    return Case(name, path, False, r"is a folder", folder_reason=r"folder named like an image")


def _link_loop(folder: Path, name: str) -> Case:
    path = folder / "loop.jpg"
    os.symlink("loop.jpg", path)
    return Case(name, path, False, r"symbolic link loop")


def _folder_link_loop(folder: Path, name: str) -> Case:
    (folder / "sub").mkdir(exist_ok=True)
    path = folder / "sub" / "back"
    os.symlink("..", path, target_is_directory=True)
    return Case(name, path, False, r"is a folder", folder_reason=r"symbolic link to a folder above it .*a loop")


def _broken_link(folder: Path, name: str) -> Case:
    path = folder / "broken.jpg"
    os.symlink("gone-missing.jpg", path)
    return Case(name, path, False, r"broken symbolic link .*gone-missing\.jpg")


KINDS: dict[str, Maker] = {
    # accepted: decoded, indexed, searchable
    "cmyk-jpeg": _good("cmyk.jpg", lambda: _encoded(_picture("CMYK", seed=1), "JPEG")),
    "grayscale-jpeg": _good("grey.jpg", lambda: _encoded(_picture("L", seed=2), "JPEG")),
    "rgba-png": _good("rgba.png", lambda: _encoded(_picture("RGBA", seed=3), "PNG")),
    "palette-alpha-png": _good("palette-alpha.png", _palette_alpha),
    "16-bit-png": _good("deep-16bit.png", _sixteen_bit),
    "exif-rotated-jpeg": _good("exif-rotated.jpg", _exif_rotated),
    "webp": _good("photo.webp", lambda: _encoded(_picture("RGB", seed=5), "WEBP")),
    "multi-page-tiff": _good("multipage.tiff", _multipage_tiff),
    "jpeg-named-png": _good("really-a-jpeg.png", lambda: _encoded(_picture("RGB", seed=7), "JPEG")),
    "unicode-name": _good("café_ß_日本.jpg", lambda: _encoded(_picture("RGB", seed=13), "JPEG")),
    "huge-jpeg-8000x6000": _good("huge-8000x6000.jpg", lambda: _encoded(_picture("RGB", (8000, 6000), 14), "JPEG")),
    # GIF: decoded (its first frame) when given on its own; passed over, with the reason, in a catalogue folder
    "animated-gif": _good(
        "animated.gif", _animated_gif, in_folder="failed", folder_reason=r"GIF files are not indexed"
    ),
    # refused, with the reason
    "zero-bytes": _bad("empty.jpg", lambda: b"", r"the file is empty \(0 bytes\)"),
    "truncated-jpeg": _bad("truncated.jpg", _truncated("JPEG"), r"corrupt or truncated"),
    "truncated-png": _bad("truncated.png", _truncated("PNG"), r"corrupt or truncated"),
    "text-named-jpg": _bad("notes.jpg", lambda: b"these are not pixels\n", r"not an image: the file holds text"),
    "html-named-png": _bad("page.png", HTML.encode, r"not an image: the file holds an HTML page"),
    "svg-named-jpg": _bad("vector.jpg", SVG.encode, r"not an image .*SVG"),
    "svg": _bad("drawing.svg", SVG.encode, r"not an image .*SVG", folder_reason=r"SVG is a vector format"),
    "heic": _bad("phone.heic", _fake_heic, r"HEIC", folder_reason=r"HEIC/HEIF"),
    "decompression-bomb": _bad("bomb.png", lambda: png_claiming_size(30000, 30000), r"decompression bomb"),
    "tiny-1x1": _bad("tiny.png", lambda: _encoded(Image.new("RGB", (1, 1), "red"), "PNG"), r"too small .*\(1x1\)"),
    # other files in a catalogue folder are ignored silently; given on its own, it is not an image
    "readme": _bad("README.txt", lambda: b"Catalogue of spring products.\n", r"not an image", in_folder="ignored"),
    "folder-named-like-image": _folder_named_like_image,
    "symlink-loop": _link_loop,
    "folder-link-loop": _folder_link_loop,
    "broken-symlink": _broken_link,
}
SYMLINK_KINDS = frozenset({"symlink-loop", "folder-link-loop", "broken-symlink"})
