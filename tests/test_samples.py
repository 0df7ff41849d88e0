"""The sample catalogue ships inside the package, so `lookalike demo` runs from an installed wheel."""

from __future__ import annotations

import zipfile
from pathlib import Path

import lookalike
from lookalike.samples import _copy_tree, sample_dir


def _layout(folder: Path) -> tuple[int, int, int, bool, bool]:
    return (
        len(list((folder / "catalog").glob("*/*.jpg"))),
        len(list((folder / "queries").glob("*.jpg"))),
        len(list((folder / "iconic").glob("*.jpg"))),
        (folder / "manifest.csv").is_file(),
        (folder / "LICENSE").is_file(),
    )


def test_sample_dir_is_inside_the_package() -> None:
    folder = sample_dir()
    assert folder.is_relative_to(Path(lookalike.__file__).resolve().parent)
    assert _layout(folder) == (60, 20, 10, True, True)


def test_a_zipped_sample_set_is_copied_out_whole(tmp_path: Path) -> None:
    archive = tmp_path / "samples.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(sample_dir().rglob("*")):
            if path.is_file():
                zipped.write(path, Path("grocery") / path.relative_to(sample_dir()))
    with zipfile.ZipFile(archive) as zipped:
        _copy_tree(zipfile.Path(zipped, "grocery/"), tmp_path / "out")
    assert _layout(tmp_path / "out") == (60, 20, 10, True, True)
