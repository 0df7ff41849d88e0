"""Killing the indexer midway leaves a loadable index holding only complete entries."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lookalike import Engine
from lookalike.pipeline import COMMIT_EVERY

from .conftest import product_of

INDEXER = """
import sys
from lookalike import Engine
with Engine.create(sys.argv[2]) as engine:
    engine.add([sys.argv[1]])
"""


def _committed(index: Path) -> int:
    try:
        with sqlite3.connect(index / "catalog.sqlite") as db:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_during_indexing_leaves_only_complete_entries(tmp_path: Path, samples: Path) -> None:
    catalog = tmp_path / "catalog" / "All"
    catalog.mkdir(parents=True)
    originals = sorted((samples / "catalog").rglob("*.jpg"))
    for copy in range(3):  # 180 images: enough batches to kill the run in the middle
        for image in originals:
            shutil.copyfile(image, catalog / f"{image.stem}-{copy}.jpg")
    index = tmp_path / "killed.index"
    process = subprocess.Popen([sys.executable, "-c", INDEXER, str(catalog.parent), str(index)])
    deadline = time.monotonic() + 240
    while _committed(index) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    committed = _committed(index)
    assert 0 < committed < 180, "the kill should land after the first batch and before the last"
    assert committed % COMMIT_EVERY == 0, "only whole batches may be committed"
    with Engine.open(index) as engine:
        assert len(engine) == committed
        query = samples / "queries" / "Granny-Smith_030.jpg"
        hits = engine.search(query, k=committed)
        assert len(hits) == committed  # every entry has its vector
        stored = engine.store.items()[0]
        vector = engine.store.vectors_of([stored.id], engine.info()["dim"])[stored.id]
        fresh = engine.featurizer.embedder.embed([__import__("PIL.Image").Image.open(stored.path)])[0]
        np.testing.assert_allclose(vector, fresh, atol=1e-4)
        report = engine.add([catalog.parent])  # resuming indexes the rest
        assert len(report.unchanged) == committed and len(engine) == 180
        assert product_of(engine.search(query, k=1)[0].path).startswith("Granny-Smith")


KILLED_WRITER = """
import sys
from pathlib import Path
from lookalike import Engine
index, catalog = Path(sys.argv[1]), sys.argv[2]
print("creating" if not (index / "settings.json").exists() else "opening", flush=True)
engine = Engine.open(index) if (index / "settings.json").exists() else Engine.create(index)
print("ready", len(engine), flush=True)
engine.add([catalog], progress=lambda done, total: print("committed", len(engine), flush=True))
print("finished", len(engine), flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_a_reported_entry(tmp_path: Path, samples: Path) -> None:
    """Ten kills, seeded: during creation, while adding, between batches; the index always opens,
    holds every entry reported committed, and `check --repair` makes it whole."""
    rng = np.random.default_rng(7)
    originals = sorted((samples / "catalog").rglob("*.jpg"))
    index = tmp_path / "loop.index"
    for round_number in range(10):
        catalog = tmp_path / f"catalog-{round_number}" / f"Round{round_number}"
        catalog.mkdir(parents=True)
        for image in originals[: 40 + 4 * round_number]:
            shutil.copyfile(image, catalog / f"{image.stem}-{round_number}.jpg")
        process = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(index), str(catalog.parent)], stdout=subprocess.PIPE, text=True
        )
        reported, phase = 0, ""
        during_creation = round_number in (0, 3, 6)
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        for line in process.stdout:
            phase = line.split()[0]
            if phase == "committed":
                reported = int(line.split()[1])
            if during_creation and phase in ("creating", "opening"):
                time.sleep(float(rng.uniform(0.0, 0.4)))
                break
            if phase == "ready" and not during_creation:
                time.sleep(float(rng.uniform(0.2, 3.0)))
                break
            if time.monotonic() > deadline:
                break
        os.kill(process.pid, signal.SIGKILL)
        leftover = process.stdout.read()  # lines written before the kill
        for line in leftover.splitlines():
            if line.startswith("committed"):
                reported = max(reported, int(line.split()[1]))
        process.wait()
        if not (index / "settings.json").exists():
            assert not index.exists(), "a kill during creation leaves no index or a whole one"
            continue
        with Engine.open(index) as engine:
            held = len(engine)
            assert held >= reported, f"round {round_number}: {reported} reported committed, {held} held"
            assert len(engine.search(originals[0], k=max(held, 1))) == held  # every entry has its vector
            report = engine.check(repair=True)
            assert not [p for p in report.problems if "snapshot" in p], report.problems
            assert engine.check().ok
    assert (index / "settings.json").exists(), "at least one round must have created the index"
