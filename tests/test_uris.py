"""Images named by URI, read through fsspec (its `memory://` filesystem and `file://`: no network):
folders, single images and manifests by URI, stored under the URI, bad URIs reported without
stopping the job, unchanged ones recognised on the next run."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike import Engine
from lookalike.io.catalog import expand_paths, read_manifest
from lookalike.io.images import hash_and_load, load_image
from lookalike.io.uris import is_uri, stored_path

from .conftest import SAMPLES

fsspec = pytest.importorskip("fsspec", reason="reading URIs needs fsspec")


@pytest.fixture()
def memory_root(tmp_path: Path) -> Iterator[str]:
    """A private folder on fsspec's in-memory filesystem (shared by the whole process), removed after."""
    root = f"memory://{tmp_path.name}"
    yield root
    filesystem = fsspec.filesystem("memory")
    if filesystem.exists(f"/{tmp_path.name}"):
        filesystem.rm(f"/{tmp_path.name}", recursive=True)


def _put(root: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        with fsspec.open(f"{root}/{name}", "wb") as handle:
            handle.write(data)


def _sample(product: str, number: int = 0) -> bytes:
    return sorted((SAMPLES / "catalog" / product).iterdir())[number].read_bytes()


def test_what_counts_as_a_uri() -> None:
    assert is_uri("s3://bucket/a.jpg") and is_uri("memory://x/a.jpg") and is_uri("file:///tmp/a.jpg")
    assert not is_uri("/tmp/a.jpg") and not is_uri("C:\\photos\\a.jpg") and not is_uri(Path("s3://b/a.jpg"))
    assert stored_path("https://shop.example/a.jpg?size=2") == "https://shop.example/a.jpg?size=2"
    assert stored_path("relative.jpg") == str(Path("relative.jpg").resolve())


def test_a_folder_uri_lists_its_images_by_category(memory_root: str) -> None:
    _put(memory_root, {"shop/Milk/a.jpg": b"1", "shop/Juice/b.png": b"2", "shop/Juice/c.gif": b"3",
                       "shop/readme.txt": b"4"})  # fmt: skip
    skipped: list[tuple[str, str]] = []
    entries = expand_paths([f"{memory_root}/shop"], skipped=skipped)
    assert [(entry.path, entry.category) for entry in entries] == [
        (f"{memory_root}/shop/Juice/b.png", "Juice"),
        (f"{memory_root}/shop/Milk/a.jpg", "Milk"),
    ]
    assert [path for path, _ in skipped] == [f"{memory_root}/shop/Juice/c.gif"] and "GIF" in skipped[0][1]
    unreadable: list[tuple[str, str]] = []
    assert expand_paths(["nosuchprotocol://shop/"], skipped=unreadable) == []
    assert unreadable[0][0] == "nosuchprotocol://shop/" and "Protocol not known" in unreadable[0][1]


def test_images_are_read_and_hashed_once_through_fsspec(memory_root: str) -> None:
    _put(memory_root, {"a.jpg": _sample("Milk")})
    uri = f"{memory_root}/a.jpg"
    digest, image = hash_and_load(uri)
    assert image is not None and image.mode == "RGB" and load_image(uri).size == image.size
    assert hash_and_load(uri, unless=digest) == (digest, None)  # unchanged: not decoded


def test_engine_indexes_uris_and_reports_bad_ones_without_stopping(engine: Engine, memory_root: str) -> None:
    _put(memory_root, {"shop/Milk/a.jpg": _sample("Milk", 0), "shop/Milk/b.jpg": _sample("Milk", 1),
                       "shop/Juice/c.jpg": _sample("Juice", 0), "shop/Juice/broken.jpg": b"not an image"})  # fmt: skip
    missing, unknown = f"{memory_root}/elsewhere/gone.jpg", "nosuchprotocol://bucket/x.jpg"
    before = len(engine)
    report = engine.add([f"{memory_root}/shop", missing, unknown])
    assert len(report.added) == 3 and len(engine) == before + 3
    reasons = dict(report.failed)
    assert set(reasons) == {f"{memory_root}/shop/Juice/broken.jpg", missing, unknown}
    assert reasons[missing] == "no such file" and "Protocol not known" in reasons[unknown]
    added = {engine.item(item_id).path: engine.item(item_id).category for item_id in report.added}
    assert added == {f"{memory_root}/shop/Milk/a.jpg": "Milk", f"{memory_root}/shop/Milk/b.jpg": "Milk",
                     f"{memory_root}/shop/Juice/c.jpg": "Juice"}  # fmt: skip
    found = engine.find(f"{memory_root}/shop/Milk/a.jpg")
    assert found is not None and engine.search(found.path, k=1, category="Milk").hits[0].score > 0.99
    again = engine.add([f"{memory_root}/shop"])
    assert len(again.unchanged) == 3 and not again.added
    assert engine.check(hashes=True).ok
    _put(memory_root, {"shop/Milk/a.jpg": _sample("Apple")})  # changed behind the URI
    fsspec.filesystem("memory").rm(f"{memory_root}/shop/Milk/b.jpg")
    checked = engine.check(hashes=True)
    assert checked.changed_files == [f"{memory_root}/shop/Milk/a.jpg"]
    assert checked.missing_files == [f"{memory_root}/shop/Milk/b.jpg"]
    assert engine.add([f"{memory_root}/shop/Milk/a.jpg"], categories="Milk").updated  # re-embedded


def test_manifests_by_uri_with_relative_and_absolute_rows(memory_root: str, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    local = tmp_path / "local.jpg"
    local.write_bytes(_sample("Milk"))
    rows = [("images/a.jpg", "Milk"), (f"{memory_root}/other/b.jpg", "Juice"), (str(local), "Milk")]
    _put(memory_root, {"manifest.csv": ("path,category\n" + "".join(f"{p},{c}\n" for p, c in rows)).encode()})
    buffer = io.BytesIO()
    pq.write_table(pa.table({"path": [p for p, _ in rows], "category": [c for _, c in rows]}), buffer)
    _put(memory_root, {"manifest.parquet": buffer.getvalue()})
    expected = [(f"{memory_root}/images/a.jpg", "Milk"), (f"{memory_root}/other/b.jpg", "Juice"), (local, "Milk")]
    for name in ("manifest.csv", "manifest.parquet"):
        entries = read_manifest(f"{memory_root}/{name}")
        assert [(entry.path, entry.category) for entry in entries] == expected


def test_cli_indexes_a_manifest_by_uri(memory_root: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app

    manifest = b"path,category\nimages/a.jpg,Milk\nimages/b.jpg,Juice\nimages/gone.jpg,Milk\n"
    _put(memory_root, {"images/a.jpg": _sample("Milk"), "images/b.jpg": _sample("Juice"), "manifest.csv": manifest})
    result = CliRunner().invoke(app, ["index", f"{memory_root}/manifest.csv", "--index", str(tmp_path / "uri.index")])
    assert result.exit_code == 3, result.output  # finished; the missing image listed with its URI
    assert f"{memory_root}/images/gone.jpg: no such file" in result.output and "added 2" in result.output
    with Engine.open(tmp_path / "uri.index") as engine:
        assert sorted(item.path for item in engine.items()) == [f"{memory_root}/images/a.jpg",
                                                               f"{memory_root}/images/b.jpg"]  # fmt: skip


def test_file_uris_are_stored_as_given(engine: Engine, tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(_sample("Tomato"))
    uri = image.as_uri()
    report = engine.add([uri], categories="Tomato")
    assert engine.item(report.added[0]).path == uri
    assert engine.add([uri], categories="Tomato").unchanged == [uri]
