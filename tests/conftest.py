"""Shared fixtures: the bundled sample catalogue (a grocery-store subset, MIT) and a built index."""

from __future__ import annotations

import os

# Under pytest-xdist the workers share the cores: torch's OpenMP teams, one per core in each worker,
# fought over them (the suite took 8:14 on 2 cores, 4:47 with one thread per worker). Set before
# anything imports torch; an OMP_NUM_THREADS given by the caller is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
from pathlib import Path
from typing import Any

import pytest

from lookalike import Engine, Settings
from lookalike.samples import sample_dir

SAMPLES = sample_dir()  # src/lookalike/samples/grocery, shipped in the package
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def product_of(path: str | Path) -> str:
    """Sample files are named <product>_<number>.jpg."""
    return Path(path).stem.rsplit("_", 1)[0]


def copy_index(built_index: Path, tmp_path: Path, name: str = "copy.index") -> Path:
    """A writable copy of an index folder."""
    target = tmp_path / name
    shutil.copytree(built_index, target)
    return target


def products_by_path(engine: Engine) -> dict[str, str]:
    """The product of every sample image of an index, by path (for `train_embedding(items=...)`)."""
    return {item.path: product_of(item.path) for item in engine.store.items()}


def assert_error(response: Any, status: int, kind: str, *fragments: str) -> None:
    """An API error answer: its status, its `error.type`, and fragments of its message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind
    for fragment in fragments:
        assert fragment in error["message"]


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def sample_queries() -> list[Path]:
    return sorted((SAMPLES / "queries").iterdir())


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample catalogue indexed once with default settings; tests copy it before writing."""
    path = tmp_path_factory.mktemp("built") / "samples.index"
    with Engine.create(path, Settings()) as engine:
        report = engine.add([SAMPLES / "catalog"])
    assert len(report.added) == 60 and not report.failed
    return path


@pytest.fixture()
def engine(built_index: Path, tmp_path: Path) -> Engine:
    """A private, writable copy of the built sample index."""
    copy = tmp_path / "copy.index"
    shutil.copytree(built_index, copy)
    with Engine.open(copy) as opened:
        yield opened
