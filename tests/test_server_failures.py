"""The server under failure: numbers too large for the index, the same photo twice, a full disk, an
index folder deleted while serving, unexpected errors, and the memory an upload may take."""

from __future__ import annotations

import errno
import hashlib
import io
import shutil
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'lookalike[server]'")

from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Engine
from lookalike.server import ServerSettings, create_app

from .conftest import assert_error

TOO_BIG = 2**63  # one more than SQLite's largest integer
PHOTOS = ["Oatly-Natural-Oatghurt_016.jpg", "Bravo-Apple-Juice_012.jpg", "Arla-Standard-Milk_016.jpg"]


@contextmanager
def serving(engine: Engine, raise_server_exceptions: bool = True, **settings: Any) -> Iterator[TestClient]:
    app = create_app(engine, ServerSettings(warm_up=False, allow_writes=True, **settings))
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client


def photo(samples: Path, name: str, sent_as: str | None = None) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (sent_as or name, (samples / "queries" / name).read_bytes(), "image/jpeg"))


def jpeg(width: int, height: int, colour: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def leftovers(index: Path) -> list[str]:
    """Files an upload may leave behind: uploads and staging folders."""
    return sorted(str(p.relative_to(index)) for p in index.glob("uploads/**/*") if p.is_file()) + sorted(
        p.name for p in index.glob(".incoming-*")
    )


# -- numbers too large for SQLite
@pytest.mark.parametrize(
    "url",
    [
        f"/api/items/{TOO_BIG}",
        f"/api/images/{TOO_BIG}",
        f"/api/thumbnails/{TOO_BIG}",
        f"/api/silhouettes/{TOO_BIG}",
        f"/api/items/{TOO_BIG}/similar",
        f"/api/queries/{'0' * 32}/overlay/{TOO_BIG}",
        f"/api/items?offset={TOO_BIG}",
        f"/api/items/{10**30}",
    ],
)
def test_numbers_too_large_are_4xx(engine: Engine, url: str) -> None:
    with serving(engine) as client:
        assert_error(client.get(url), 422, "invalid_request", "less than or equal to 9223372036854775807")


def test_the_largest_id_is_just_unknown(engine: Engine) -> None:
    with serving(engine) as client:
        assert_error(client.get(f"/api/items/{TOO_BIG - 1}"), 404, "not_found")
        assert_error(client.delete(f"/api/items/{TOO_BIG}"), 422, "invalid_request")
        assert client.get(f"/api/items?offset={TOO_BIG - 1}").json()["items"] == []


# -- the same photo twice in one upload
def test_the_same_photo_twice_is_indexed_once(engine: Engine, samples: Path) -> None:
    first, other = PHOTOS[0], PHOTOS[1]
    files = [photo(samples, first), photo(samples, other), photo(samples, first), photo(samples, first, "copy.jpg")]
    with serving(engine) as client:
        answer = client.post("/api/items", files=files, data={"category": "New"})
        assert answer.status_code == 201, answer.text
        items = answer.json()["items"]
        assert [item["status"] for item in items] == ["added", "added", "duplicate", "duplicate"]
        assert items[2]["id"] == items[3]["id"] == items[0]["id"] != items[1]["id"]
        assert items[2]["duplicate_of"] == items[3]["duplicate_of"] == first
        assert [item["upload"] for item in items] == [first, other, first, "copy.jpg"]
        assert items[0]["duplicate_of"] is None and answer.json()["failed"] == []
        assert client.get("/api/items?category=New").json()["total"] == 2
        assert len(leftovers(Path(engine.path))) == 2  # one file per distinct photo, no staging left


# -- a full disk
@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        sqlite3.OperationalError("database or disk is full"),
    ],
    ids=["ENOSPC", "sqlite-full"],
)
def test_a_full_disk_answers_507_and_keeps_nothing(
    engine: Engine, samples: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    real_add = engine.add
    calls: list[list[Any]] = []

    def add_then_fail(paths: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(list(paths))
        if len(calls) == 2:  # the second photo of the request finds the disk full
            raise failure
        return real_add(paths, *args, **kwargs)

    monkeypatch.setattr(engine, "add", add_then_fail)
    with serving(engine) as client:
        answer = client.post("/api/items", files=[photo(samples, name) for name in PHOTOS])
        assert_error(answer, 507, "insufficient_storage", "disk is full", "nothing of this request was kept")
        assert "Traceback" not in answer.text and str(engine.path) not in answer.text
        assert client.get("/api/health").json()["images"] == 60  # the first photo was taken back
        assert leftovers(Path(engine.path)) == []

        monkeypatch.setattr(engine, "remove", lambda *args, **kwargs: (_ for _ in ()).throw(failure))
        assert_error(client.delete("/api/items/1"), 507, "insufficient_storage")


def test_other_storage_errors_are_a_plain_json_500(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error at /secret/place")

    monkeypatch.setattr(engine, "categories", broken)
    with serving(engine, raise_server_exceptions=False) as client:
        answer = client.get("/api/categories")
        assert_error(answer, 500, "internal_error", "OperationalError", "the server log has the details")
        assert "/secret/place" not in answer.text and "Traceback" not in answer.text
        full = OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(engine, "categories", lambda *args, **kwargs: (_ for _ in ()).throw(full))
        assert_error(client.get("/api/categories"), 507, "insufficient_storage")


# -- the index folder deleted while serving
def test_a_deleted_index_folder_makes_the_server_unhealthy(engine: Engine, samples: Path) -> None:
    index = Path(engine.path)
    with serving(engine) as client:
        assert client.get("/api/health").status_code == 200
        shutil.rmtree(index)
        assert_error(client.get("/api/health"), 503, "index_unavailable", "index folder", "missing")
        added = client.post("/api/items", files=[photo(samples, PHOTOS[0])])
        assert_error(added, 503, "index_unavailable")
        assert_error(client.delete("/api/items/1"), 503, "index_unavailable")
        assert not index.exists()  # nothing was written into a new folder in its place


# -- memory: one photo at a time
def test_uploads_are_checked_and_indexed_one_at_a_time(
    engine: Engine, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never two decoded photos of one request held at once; the engine gets one photo per call."""
    import lookalike.server.uploads as uploads

    alive, most = 0, 0
    real_load = uploads.load_image

    def counting_load(*args: Any, **kwargs: Any) -> Image.Image:
        nonlocal alive, most
        image = real_load(*args, **kwargs)
        alive += 1
        most = max(most, alive)

        def gone() -> None:
            nonlocal alive
            alive -= 1

        weakref.finalize(image, gone)
        return image

    monkeypatch.setattr(uploads, "load_image", counting_load)
    real_add, calls = engine.add, []
    monkeypatch.setattr(engine, "add", lambda paths, *a, **k: calls.append(list(paths)) or real_add(paths, *a, **k))
    with serving(engine) as client:
        answer = client.post("/api/items", files=[photo(samples, name) for name in PHOTOS])
        assert answer.status_code == 201, answer.text
    assert most == 1
    assert [len(paths) for paths in calls] == [1, 1, 1]


def test_uploads_are_copied_in_chunks(tmp_path: Path) -> None:
    from lookalike.server.errors import ApiError
    from lookalike.server.uploads import CHUNK_BYTES, stage_upload

    reads: list[int] = []

    class Stream(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 < size <= CHUNK_BYTES, f"read({size}): the whole upload at once"
            reads.append(size)
            return super().read(size)

    data = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)
    staged = stage_upload(Stream(data), "../x.jpg", tmp_path, limit=len(data))
    assert staged.path.read_bytes() == data and staged.name == "x.jpg"
    assert staged.digest == hashlib.sha256(data).hexdigest() and len(reads) == 5
    with pytest.raises(ApiError, match="larger than the limit of 1,000 bytes"):
        stage_upload(Stream(data), "big.jpg", tmp_path, limit=1000)


def test_pixels_per_request_are_capped(engine: Engine) -> None:
    with serving(engine, max_pixels_per_request=1_000_000) as client:
        assert client.get("/api/status").json()["server"]["max_pixels_per_request"] == 1_000_000
        files = [
            ("files", ("a.jpg", jpeg(800, 800), "image/jpeg")),
            ("files", ("b.jpg", jpeg(800, 800, (10, 90, 200)), "image/jpeg")),
        ]
        answer = client.post("/api/items", files=files)
        assert_error(answer, 413, "too_large", "upload 'b.jpg' (800x800)", "1,280,000 pixels", "1,000,000")
        assert client.get("/api/health").json()["images"] == 60 and leftovers(Path(engine.path)) == []
        one = client.post("/api/items", files=files[:1])
        assert one.status_code == 201, one.text
        search = client.post("/api/search", files={"file": ("big.jpg", jpeg(1200, 1000), "image/jpeg")})
        assert_error(search, 413, "too_large", "upload 'big.jpg' (1200x1000)")
