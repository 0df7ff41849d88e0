"""A damaged or odd index folder gets a clear one-line error, never a traceback; reading never writes."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike import Engine
from lookalike.cli import app
from lookalike.errors import DiskFullError

from .conftest import copy_index


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not unexpected and "Traceback" not in result.output, (args, result.output, result.exception)
    return result.exit_code, result.output


def _fingerprint_folder(folder: Path) -> dict[str, str]:
    """The content of every file that would matter (SQLite's transient -wal/-shm left out)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


@pytest.fixture()
def index(built_index: Path, tmp_path: Path) -> Path:
    return copy_index(built_index, tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_a_damaged_database_is_named_not_a_traceback(index: Path, sample_queries: list[Path], damage: str) -> None:
    database = index / "catalog.sqlite"
    data = database.read_bytes()
    database.write_bytes({"truncated": data[:1500], "random": os.urandom(8192), "empty": b""}[damage])
    for command in (["info"], ["search", str(sample_queries[0])], ["add", str(sample_queries[0])], ["check"]):
        code, output = _run(*command, "--index", str(index))
        assert code == 2, (command, output)
        expected = "empty \\(0 bytes\\)" if damage == "empty" else "cannot be read|not a lookalike catalogue"
        assert re.search(expected, output), output
        assert "--rebuild" in output


@pytest.mark.parametrize("damage", ["garbage manifest", "truncated partition"])
def test_a_damaged_snapshot_is_rebuilt_in_memory_and_never_written_by_readers(
    index: Path, sample_queries: list[Path], damage: str
) -> None:
    vectors = index / "vectors"
    if damage == "garbage manifest":
        (vectors / "current.json").write_text("{ this is not json")
    else:
        partition = next(vectors.rglob("*.faiss"))
        partition.write_bytes(partition.read_bytes()[:100])
    before = _fingerprint_folder(index)
    code, output = _run("search", str(sample_queries[0]), "--index", str(index), "-k", "3")
    assert code == 0 and "rank" in output, output
    assert _run("info", "--index", str(index))[0] == 0
    code, output = _run("check", "--index", str(index))
    assert code == 1 and "vector snapshot damaged" in output and "--repair" in output
    assert _fingerprint_folder(index) == before, "read-only commands must not write to the index"
    code, output = _run("check", "--index", str(index), "--repair")
    assert code == 0 and "repaired" in output
    assert _run("check", "--index", str(index))[0] == 0


def test_odd_paths_and_ids(index: Path, tmp_path: Path, sample_queries: list[Path]) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    code, output = _run("search", str(sample_queries[0]), "--index", str(a_file))
    assert code == 2 and "is a file, not an index folder" in output
    code, output = _run("remove", str(2**70), "--index", str(index))
    assert code == 1 and "not in the index" in output
    (index / "settings.json").write_text("[]")
    code, output = _run("info", "--index", str(index))
    assert code == 2 and "settings must be a JSON object, got list" in output


def test_a_half_created_index_is_recognised_and_replaced(tmp_path: Path, samples: Path) -> None:
    half = tmp_path / "half.index"
    half.mkdir()
    sqlite3.connect(half / "catalog.sqlite").close()  # what an interrupted creation left before staging folders
    (tmp_path / ".half.index.creating-999999999").mkdir()  # a dead process's staging folder
    catalog = str(samples / "catalog" / "Juice")
    code, output = _run("index", catalog, "--index", str(half))
    assert code == 2 and "half-created index" in output and "--rebuild" in output
    code, output = _run("index", catalog, "--index", str(half), "--rebuild")
    assert code == 0, output
    with Engine.open(half) as engine:
        assert len(engine) == 12
    assert not list(tmp_path.glob(".half.index.*")), "staging folders of dead processes are cleaned up"


def test_disk_full_during_add_is_reported_and_loses_nothing(
    index: Path, sample_queries: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.index.store import MetadataStore

    def full(*args: object, **kwargs: object) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    with Engine.open(index) as engine:
        before = len(engine)
        monkeypatch.setattr(MetadataStore, "insert", full)
        with pytest.raises(DiskFullError, match="no space left.*nothing of this batch was written"):
            engine.add(sample_queries[:3], categories="New")
        monkeypatch.undo()
        assert len(engine) == before and len(engine.search(sample_queries[0], k=3)) == 3
        assert len(engine.add(sample_queries[:3], categories="New").added) == 3


def test_writes_to_a_deleted_index_folder_are_refused(index: Path, sample_queries: list[Path]) -> None:
    import shutil

    from lookalike.errors import IndexNotFoundError

    with Engine.open(index) as engine:
        assert len(engine.search(sample_queries[0], k=2)) == 2
        shutil.rmtree(index)
        with pytest.raises(IndexNotFoundError, match="deleted or moved while it was open"):
            engine.add(sample_queries[:1], categories="Lost")
        with pytest.raises(IndexNotFoundError, match="deleted or moved"):
            engine.remove([1])
