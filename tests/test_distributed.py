"""The offline stage on Ray Data (a local cluster of 2 worker processes): the same vectors as one
process, bad files reported without stopping the job, a rerun that re-embeds nothing written, and
images named by `file://` URI (fsspec's memory filesystem is per process: the actors would not see it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike import Engine, Settings

from .conftest import SAMPLES

pytest.importorskip("ray.data", reason="distributed indexing needs Ray Data (pip install .[scale])")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray") / "catalogue"
    for product in ("Apple", "Milk", "Juice"):
        shutil.copytree(SAMPLES / "catalog" / product, folder / product)
    (folder / "Milk" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def _vectors(engine: Engine) -> dict[str, np.ndarray]:
    items = engine.items()
    stored = engine.store.vectors_of([item.id for item in items], engine.featurizer.dim)
    return {Path(item.path).name: stored[item.id] for item in items}


def test_ray_workers_index_like_one_process_and_resume(catalogue: Path, tmp_path: Path, built_index: Path) -> None:
    images = sorted(p for p in catalogue.rglob("*.jpg") if p.name != "broken.jpg")
    with Engine.create(tmp_path / "ray.index", Settings()) as engine:
        first = engine.add(images[:5], categories=[p.parent.name for p in images[:5]])  # a job stopped early
        assert len(first.added) == 5
        report = engine.add([catalogue], workers=2)
        assert len(report.unchanged) == 5  # what was written is not embedded again
        assert len(report.added) == len(images) - 5
        assert [Path(path).name for path, _ in report.failed] == ["broken.jpg"]
        assert "broken.jpg" in report.failed[0][0] and report.failed[0][1]
        distributed = _vectors(engine)
        assert {item.category for item in engine.items()} == {"Apple", "Milk", "Juice"}
    with Engine.open(built_index) as single:
        reference = _vectors(single)
    for name, vector in distributed.items():
        np.testing.assert_allclose(vector, reference[name], atol=1e-4)


def test_cli_indexes_a_parquet_manifest_on_two_workers(catalogue: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from lookalike.cli import app

    images = sorted(catalogue.rglob("*.jpg"))
    manifest = tmp_path / "manifest.parquet"
    rows = {"path": [str(p) for p in images], "category": [p.parent.name for p in images],
            "item": [p.stem.rsplit("_", 1)[0] for p in images]}  # fmt: skip
    pq.write_table(pa.table(rows), manifest)
    index = tmp_path / "manifest.index"
    result = CliRunner().invoke(app, ["index", str(manifest), "--index", str(index), "--workers", "2"])
    assert result.exit_code == 3, result.output  # finished, one file failed (listed)
    assert "broken.jpg" in result.output and f"added {len(images) - 1}" in result.output
    with Engine.open(index) as engine:
        items = engine.items()
        assert len(items) == len(images) - 1
        assert all(item.extra.get("item") == Path(item.path).stem.rsplit("_", 1)[0] for item in items)


def test_ray_workers_write_to_a_milvus_lite_index(catalogue: Path, tmp_path: Path) -> None:
    pytest.importorskip("pymilvus", reason="the milvus backend needs pymilvus + milvus-lite")
    settings = Settings().replace(**{"index.backend": "milvus", "index.uri": str(tmp_path / "ray.db")})
    images = sorted((catalogue / "Apple").glob("*.jpg"))
    with Engine.create(tmp_path / "ray-milvus.index", settings) as engine:
        # the actors load the folder's models only: the Lite file stays this process's
        report = engine.add(images, categories="Apple", workers=2)
        assert len(report.added) == len(images) and not report.failed
        assert engine.search(images[0], k=1).hits[0].path == str(images[0].resolve())


def test_ray_workers_read_file_uris_and_resume(catalogue: Path, tmp_path: Path) -> None:
    images = sorted(p for p in (catalogue / "Milk").glob("*.jpg") if p.name != "broken.jpg")[:5]
    uris = [image.as_uri() for image in images]
    broken, gone = (catalogue / "Milk" / "broken.jpg").as_uri(), (tmp_path / "gone.jpg").as_uri()
    with Engine.create(tmp_path / "uris.index", Settings()) as engine:
        assert len(engine.add(uris[:2], categories="Milk").added) == 2  # a job stopped early, one process
        report = engine.add([*uris, broken, gone], categories="Milk", workers=2)
        assert sorted(report.unchanged) == sorted(uris[:2]) and len(report.added) == 3
        failed = dict(report.failed)
        assert set(failed) == {broken, gone} and failed[gone] == "no such file" and failed[broken]
        assert sorted(item.path for item in engine.items()) == sorted(uris)  # stored under the URI as given


class _SlowRay:
    """Stands in for `ray`: its first `failures` starts miss the raylet's registration window."""

    def __init__(self, failures: int, message: str = "The current node timed out during startup.") -> None:
        self.failures, self.message, self.starts, self.shutdowns = failures, message, 0, 0

    def init(self, **options: object) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise Exception(self.message)

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_local_node_that_started_too_slowly_is_started_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from lookalike.distributed import _start_local

    monkeypatch.setenv("RAY_gcs_server_port_wait_time_s", "45")  # the user's own wait is kept

    slow = _SlowRay(failures=1)
    _start_local(slow, 2, {})
    assert (slow.starts, slow.shutdowns) == (2, 1)
    with pytest.raises(Exception, match="timed out during startup"):
        _start_local(_SlowRay(failures=2), 2, {})
    gcs = _SlowRay(failures=1, message="Timed out waiting for file /tmp/ray/session_x/gcs_server_port_y")
    _start_local(gcs, 2, {})
    assert gcs.starts == 2
    other = _SlowRay(failures=1, message="port 6379 in use")
    with pytest.raises(Exception, match="port 6379 in use"):  # any other failure is not retried
        _start_local(other, 2, {})
    assert other.starts == 1
    assert os.environ["RAY_gcs_server_port_wait_time_s"] == "45"  # noqa: SIM112 (Ray spells it so)
