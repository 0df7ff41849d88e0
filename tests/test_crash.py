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
