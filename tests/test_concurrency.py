"""Two writers on one index, and readers that keep up with another process's commits.

Two `Engine` objects on one folder behave as two processes would: each has its own SQLite
connection, its own vectors in memory and its own open file description of the write lock.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike import Engine
from lookalike.cli import app
from lookalike.errors import IndexBusyError
from lookalike.index.lock import WriteLock

from .conftest import copy_index


def _wait_for_holder(lock: WriteLock, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        holder = lock.holder()
        if holder:
            return holder
        time.sleep(0.01)
    raise AssertionError("the first writer never took the lock")


def test_two_writers_lose_nothing_and_a_reader_keeps_up(built_index: Path, tmp_path: Path, samples: Path) -> None:
    path = copy_index(built_index, tmp_path)
    small = sorted((samples / "queries").iterdir())[:2]
    long_run = [samples / "iconic"]  # 10 images, added while another writer commits
    with Engine.open(path) as first, Engine.open(path) as second, Engine.open(path) as reader:
        assert len(reader.search(small[0], k=3)) == 3  # the reader has loaded its vectors
        done: dict[str, object] = {}
        worker = threading.Thread(target=lambda: done.setdefault("long", first.add(long_run, categories="Iconic")))
        worker.start()
        _wait_for_holder(WriteLock(path))
        waited: list[dict] = []
        second._write_lock.on_wait = waited.append  # told who holds the lock while it waits
        short = second.add(small, categories="Small")
        worker.join()
        assert len(short.added) == 2 and len(done["long"].added) == 10  # type: ignore[attr-defined]
        assert waited and waited[0]["doing"] == "adding images", "the second writer must wait for the first"
        # every writer's rows are searchable in every process, and the snapshot holds them all
        for engine in (first, second, reader):
            assert len(engine.search(small[0], k=5, category="Small")) == 2
            assert len(engine.search(small[0], k=20, category="Iconic")) == 10
    with Engine.open(path) as fresh:
        counts = {str(k): v for k, v in fresh.categories().items()}
        assert fresh.catalog.vectors().sizes() == counts and len(fresh) == 72
        assert fresh.check().ok
        assert fresh.add(small, categories="Small").unchanged == [str(p.resolve()) for p in small]


def test_a_reader_follows_removals_and_a_new_embedding(built_index: Path, tmp_path: Path, samples: Path) -> None:
    from lookalike.settings import HeadSettings

    path = copy_index(built_index, tmp_path)
    query = sorted((samples / "queries").iterdir())[0]
    with Engine.open(path) as writer, Engine.open(path) as reader:
        top = reader.search(query, k=1)[0]
        writer.remove([top.id])
        assert top.id not in [hit.id for hit in reader.search(query, k=10)]
        writer.train_embedding(HeadSettings(kind="pca", dim=32), force=True)
        assert reader.search(query, k=3)[0].scores["vector"] > 0  # the reader took in the new embedding
        assert reader.featurizer.dim == 32 and reader.info()["dim"] == 32


def test_a_busy_index_says_who_holds_it(built_index: Path, tmp_path: Path, samples: Path) -> None:
    path = copy_index(built_index, tmp_path)
    image = str(sorted((samples / "queries").iterdir())[0])
    with WriteLock(path).hold("testing the lock"):
        failed = CliRunner().invoke(app, ["add", image, "--index", str(path), "--no-wait"])
        assert failed.exit_code == 2 and "index busy: process" in failed.output and "testing the lock" in failed.output
        timed = CliRunner().invoke(app, ["add", image, "--index", str(path), "--timeout", "0.3"])
        assert timed.exit_code == 2 and "after waiting 0.3 s" in timed.output and "waiting" in timed.output
        with Engine.open(path, lock_timeout=0) as engine, pytest.raises(IndexBusyError, match="--wait"):
            engine.remove([1])
        with Engine.open(path) as engine:  # reading needs no lock
            assert len(engine.search(image, k=2)) == 2
    added = CliRunner().invoke(app, ["add", image, "--index", str(path), "--category", "Late"])
    assert added.exit_code == 0, added.output


def test_the_server_answers_busy_while_another_process_writes(built_index: Path, tmp_path: Path, samples: Path) -> None:
    from fastapi.testclient import TestClient

    from lookalike.server import ServerSettings, create_app

    path = copy_index(built_index, tmp_path)
    photo = sorted((samples / "queries").iterdir())[0]
    files = {"files": (photo.name, photo.read_bytes(), "image/jpeg")}
    settings = ServerSettings(warm_up=False, allow_writes=True)
    with Engine.open(path, lock_timeout=0.2) as engine, TestClient(create_app(engine, settings)) as client:
        with WriteLock(path).hold("a CLI job"):
            busy = client.post("/api/items", files=files, data={"category": "Busy"})
            assert busy.status_code == 503 and busy.json()["error"]["type"] == "index_busy", busy.text
            assert client.post("/api/search", files={"file": files["files"]}).status_code == 200  # reads go on
        assert client.post("/api/items", files=files, data={"category": "Busy"}).status_code == 201
