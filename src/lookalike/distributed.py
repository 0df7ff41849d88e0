"""The offline stage on Ray Data: decode, localise and embed in a pool of actors, write from the driver.

`lookalike index CATALOG --index I --workers N` starts a local Ray cluster of N worker processes;
`--ray ADDRESS` (or `auto`) joins an existing cluster, where every node must read the image paths (or
their URIs: s3://, gs://...: read through fsspec on the node) and the index folder's settings and model
files at the same path (shared storage, or a copy). Each actor
loads the folder's featurizer once (never the catalogue: the driver alone writes; one intra-op
thread each), checks it makes the driver's vectors, hashes each file
and embeds only what is new or changed; the driver holds the index's write lock and commits results
in large batches as they stream back, so a job stopped halfway resumes without re-embedding what
was written (unchanged files are recognised by path and content hash). Bad files come back as
failures with their reason and never stop the job.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import SettingsError

ROWS_PER_TASK = 16  # images an actor embeds per call (Ray's unit of back-pressure)

LOCAL_START_ATTEMPTS = 2  # a local Ray node that did not come up in time is started once more
START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")  # Ray's messages for it


def ray_module() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise SettingsError(
            "--workers and --ray run on Ray Data: install it with `pip install 'lookalike[scale]'`"
        ) from None
    return ray


def start_ray(workers: int | None, address: str | None) -> Any:
    """Join the cluster at `address` (`auto`: the local one), or start a local one of `workers` CPUs."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        ray.init(address=address, **options)
    else:
        _start_local(ray, workers or 1, options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows one bar for the whole job
    context.print_on_execution_start = False
    return ray


def _start_local(ray: Any, cpus: int, options: dict[str, Any], attempts: int = LOCAL_START_ATTEMPTS) -> None:
    """Start a local Ray node. On a busy 2-core machine its processes can miss Ray's start-up windows
    (30 s for the GCS to publish its port, 30 s for the raylet to register): the GCS gets 120 s unless
    RAY_gcs_server_port_wait_time_s says otherwise, and a start that still timed out is shut down and
    tried once more. Any other failure is raised at once."""
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")  # read by ray.init in this process
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=cpus, **options)
            return
        except Exception as error:  # Ray raises a bare Exception or a RuntimeError for these
            if not any(sign in str(error) for sign in START_TIMEOUTS) or attempt == attempts:
                raise
            ray.shutdown()


def load_featurizer(index_path: Path, fingerprint: dict[str, Any], threads: int = 1) -> Any:
    """The index folder's featurizer (settings, tuned backbone, transform, the re-rankers that store
    data), without opening its catalogue: a Milvus Lite file serves one process, and workers only
    embed. Refused unless it makes the vectors `fingerprint` names (the driver's)."""
    from lookalike.errors import IndexMismatchError
    from lookalike.featurizer import Featurizer, mismatch_message
    from lookalike.index.folder import SETTINGS_FILE
    from lookalike.rerank import create_reranker
    from lookalike.settings import Settings

    settings = Settings.from_json(index_path / SETTINGS_FILE)
    settings = settings.replace(**{"embed.threads": threads, "localize.threads": threads})
    describers = [create_reranker(name, settings) for name in settings.rerank.chain]
    featurizer = Featurizer.load(index_path, settings, describers=[d for d in describers if d.needs.describes])
    if featurizer.fingerprint() != fingerprint:
        raise IndexMismatchError(mismatch_message(index_path, fingerprint, featurizer.fingerprint()))
    return featurizer


def featurize_rows(featurizer: Any, rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """Each row's file hashed, and described unless its hash is the row's `known_hash`:
    {"path", "status": ok / unchanged / failed, "reason", "digest", "vector", "blobs"} per row, in order."""
    from lookalike.errors import ImageError
    from lookalike.io.images import hash_and_load

    results: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Any]] = []
    for row in rows:
        result: dict[str, Any] = {"path": row["path"], "status": "failed"}
        results.append(result)
        try:
            result["digest"], image = hash_and_load(row["path"], unless=row.get("known_hash") or None)
        except ImageError as exc:
            result["reason"] = exc.reason
            continue
        except OSError as exc:
            result["reason"] = f"cannot read the file ({exc.strerror or exc})"
            continue
        if image is None:
            result["status"] = "unchanged"
        else:
            pending.append((result, image))
    if pending:
        described = featurizer.describe([image for _, image in pending])
        for (result, _), features in zip(pending, described, strict=True):
            result.update(status="ok", vector=features.vector, blobs=features.blobs)
    return results


class FeaturizeActor:
    """One Ray actor: the index's featurizer, loaded once; rows in, features (or the failure) out."""

    def __init__(self, index_path: str, fingerprint: dict[str, Any]) -> None:
        # one intra-op thread: one process per core, more threads only fight over the cores
        self.featurizer = load_featurizer(Path(index_path), fingerprint, threads=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [
            {"path": str(path), "known_hash": str(known)}
            for path, known in zip(batch["path"], batch["known_hash"], strict=True)
        ]
        results = featurize_rows(self.featurizer, rows)
        return {
            "path": [r["path"] for r in results],
            "status": [r["status"] for r in results],
            "reason": [r.get("reason", "") for r in results],
            "digest": [r.get("digest", "") for r in results],
            "features": [pickle.dumps((r["vector"], r["blobs"])) if r["status"] == "ok" else b"" for r in results],
        }


def featurize_on_ray(
    index_path: Path,
    fingerprint: dict[str, Any],
    rows: Sequence[dict[str, str]],
    *,
    workers: int | None,
    address: str | None,
) -> Iterator[dict[str, Any]]:
    """Each row's result ({"path", "status": ok / unchanged / failed, "reason", "digest", "vector",
    "blobs"}) as the actors finish them (in no particular order)."""
    ray = start_ray(workers, address)
    from ray.data import ActorPoolStrategy

    pool = max(1, workers or int(ray.cluster_resources().get("CPU", 1)))
    dataset = ray.data.from_items(list(rows)).map_batches(
        FeaturizeActor,
        fn_constructor_kwargs={"index_path": str(index_path), "fingerprint": fingerprint},
        compute=ActorPoolStrategy(size=pool),
        batch_size=ROWS_PER_TASK,
        num_cpus=1,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for path, status, reason, digest, features in zip(
            batch["path"], batch["status"], batch["reason"], batch["digest"], batch["features"], strict=True
        ):
            result: dict[str, Any] = {"path": str(path), "status": str(status), "reason": str(reason),
                                      "digest": str(digest)}  # fmt: skip
            if result["status"] == "ok":
                result["vector"], result["blobs"] = pickle.loads(features)
            yield result
