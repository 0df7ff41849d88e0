"""Scale-out figures: the add cost as the catalogue grows, FAISS against Milvus Lite, Ray indexing.

Three parts (all by default), each written into benchmarks/results/scale.json (+ scale.md, scale.png):

- `add-cost`: seconds for `Engine.add` of a folder of 1,000 new 32 x 32 JPEGs (hashing, decoding, the
  embedder stubbed by synthetic 256-d vectors, the 32-image transactions with their path lookups, the
  end-of-run snapshot or flush) into an index already holding 1k, 100k and 1M synthetic images (local
  backend) or 1k, 10k, 100k and 1M (Milvus Lite), filled beforehand by bulk commits of 10-20k through
  the store's own write path; the median of three adds (wall time, and the process's CPU time: it
  includes Milvus Lite's in-process server, and moves less with other processes' load), the load
  average at each, and (Milvus) the requests made. Sizes run earlier with the same method are kept in scale.json;
- `backends`: the same synthetic vectors (10 categories) in each vector store: insert rate, search
  p50/p95 with and without a category filter, Recall@10 against exact search in the same filter,
  deleting and upserting 1,000, and the process's memory growth (each store in its own process);
- `indexing`: the real pipeline on grocery-store photos: one process (today's path) against Ray
  pools of 1 and 2 actors (`--workers`), wall time including Ray's start.

    .venv/bin/python benchmarks/scale.py --part all
    .venv/bin/python benchmarks/scale.py --part add-cost --sizes "" --milvus-sizes 1000,100000   # one backend
    .venv/bin/python benchmarks/scale.py --part backends --size 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS, require, save, table

DIM = 256
CATEGORIES = [f"category-{n}" for n in range(10)]


def unit(rows: int, seed: int, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1000), float(np.percentile(seconds, 95) * 1000)


# -- add cost against catalogue size
SYNTHETIC = "synthetic-256"  # the stubbed embedder's name


class SyntheticEmbedder:
    """The embedder stubbed: a unit vector seeded by each image's pixels (no model; microseconds)."""

    name = SYNTHETIC
    dim = DIM

    def __init__(self, settings: Any = None) -> None:
        pass

    def embed(self, images: list[Any]) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:8], "little") for image in images]
        rows = np.stack([np.random.default_rng(seed).standard_normal(DIM, dtype=np.float32) for seed in seeds])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def fingerprint(self) -> str:
        return "synthetic-256/1"


def _register_stub() -> None:
    from lookalike.embed.base import EMBEDDERS, register_embedder

    if SYNTHETIC not in EMBEDDERS:
        register_embedder(SYNTHETIC)(SyntheticEmbedder)


def _new_items(count: int, start: int, seed: int) -> list[Any]:
    from lookalike.index import NewItem

    vectors = unit(count, seed)
    return [
        NewItem(f"/catalogue/{CATEGORIES[(start + n) % 10]}/image-{start + n:08d}.jpg", CATEGORIES[(start + n) % 10],
                f"{start + n:064x}", vectors[n])
        for n in range(count)
    ]  # fmt: skip


def _image_folder(folder: Path, count: int, seed: int) -> Path:
    """`count` distinct 32 x 32 JPEGs in 10 category folders (what Engine.add reads, hashes and decodes)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for n in range(count):
        target = folder / CATEGORIES[n % 10] / f"new-{seed}-{n:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(target, quality=90)
    return folder


def _fill(catalog: Any, size: int, chunk: int) -> None:
    """Synthetic images straight into the store through its own write path, `chunk` per commit."""
    for start in range(0, size, chunk):
        catalog.commit(_new_items(min(chunk, size - start), start, start), {})
    catalog.save_snapshot()


def add_cost_one(backend: str, size: int, folder: Path) -> dict[str, Any]:
    """Fill an index to `size` with bulk commits, then time `Engine.add` of a folder of 1,000 new
    images (hashing, decoding, the stubbed embedder, the 32-image commits, the end-of-run snapshot or
    flush), three times; Milvus requests are counted."""
    from lookalike import Engine, Settings

    _register_stub()
    changes: dict[str, Any] = {"embed.model": SYNTHETIC, "embed.runtime": "torch", "index.backend": backend}
    if backend == "milvus":
        changes.update({"index.uri": str(folder / "milvus.db"), "index.collection": "scale"})
    engine = Engine.create(folder / "scale.index", Settings().replace(**changes))
    started = time.perf_counter()
    _fill(engine.catalog, size, 20_000 if backend == "faiss" else 10_000)
    fill_seconds = time.perf_counter() - started
    snapshot = engine.catalog.save_snapshot
    requests = [0]
    timings = {"snapshot": 0.0}

    def timed_snapshot() -> None:
        began = time.perf_counter()
        snapshot()
        timings["snapshot"] += time.perf_counter() - began

    engine.catalog.save_snapshot = timed_snapshot  # type: ignore[method-assign]
    if backend == "milvus":
        space = engine.catalog.space
        call = space.call

        def counted(*args: Any, **kwargs: Any) -> Any:
            requests[0] += 1
            return call(*args, **kwargs)

        space.call = counted  # type: ignore[method-assign]
    rounds, cpu, snapshots, loads = [], [], [], []
    for attempt in range(3):
        images = _image_folder(folder / f"new-{attempt}", 1_000, seed=attempt)
        requests[0], timings["snapshot"] = 0, 0.0
        loads.append(round(os.getloadavg()[0], 2))
        started, cpu_started = time.perf_counter(), time.process_time()
        report = engine.add([images])
        rounds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)  # every thread's, Milvus Lite's server included
        snapshots.append(timings["snapshot"])
        if len(report.added) != 1_000:
            raise RuntimeError(f"expected 1,000 images added, got {len(report.added)}: {report.failed[:3]}")
    total = len(engine)
    engine.close()
    return {"backend": backend, "size": size, "add_1000_s": float(np.median(rounds)), "rounds_s": rounds,
            "cpu_1000_s": float(np.median(cpu)), "snapshot_s": float(np.median(snapshots)), "fill_s": fill_seconds,
            "images_after": total, "requests_per_1000": requests[0] if backend == "milvus" else None,
            "load_1min": loads}  # fmt: skip


# -- backends
def backend_one(backend: str, kind: str, size: int, folder: Path) -> dict[str, Any]:
    from lookalike.index.vectorstore import create_vector_store
    from lookalike.settings import IndexSettings

    options: dict[str, Any] = {"backend": backend, "kind": kind}
    if backend == "milvus":
        options.update(uri=str(folder / "milvus.db"), collection="bench")
    store = create_vector_store(folder / "vectors", DIM, IndexSettings(**options), create=True)
    gallery, ids = unit(size, 0), np.arange(size, dtype=np.int64)
    categories = [CATEGORIES[n % 10] for n in range(size)]
    before = rss_mb()
    started = time.perf_counter()
    for start in range(0, size, 10_000):
        store.add(ids[start : start + 10_000], gallery[start : start + 10_000], categories[start : start + 10_000])
    store.flush()
    insert_seconds = time.perf_counter() - started
    queries = gallery[:200] + 0.1 * unit(200, 1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    store.search(queries[:5], 10)  # warm: Milvus loads the collection, FAISS builds nothing more
    results: dict[str, Any] = {"backend": backend, "kind": kind, "size": size, "dim": DIM,
                               "insert_per_s": size / insert_seconds, "load_1min": round(os.getloadavg()[0], 2),
                               "threads": os.environ.get("OMP_NUM_THREADS", "all")}  # fmt: skip
    in_category = np.array([n % 10 == 3 for n in range(size)])
    for label, filters in (("all", None), ("filtered", [CATEGORIES[3]])):
        times, found = [], []
        for query in queries:
            started = time.perf_counter()
            _, hits = store.search(query[None, :], 10, filters)
            times.append(time.perf_counter() - started)
            found.append(hits[0])
        mask = in_category if filters else np.ones(size, bool)
        exact = ids[mask][np.argsort(-(queries @ gallery[mask].T), axis=1)[:, :10]]
        recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
        results[f"{label}_p50_ms"], results[f"{label}_p95_ms"] = percentiles(times)
        results[f"{label}_recall_at_10"] = float(recall)
    started = time.perf_counter()
    store.delete(ids[:1_000], categories[:1_000])
    results["delete_1000_s"] = time.perf_counter() - started
    started = time.perf_counter()
    store.upsert(ids[1_000:2_000], unit(1_000, 5), categories[1_000:2_000])
    results["upsert_1000_s"] = time.perf_counter() - started
    results["memory_growth_mb"] = rss_mb() - before
    store.close()
    return results


# -- the real pipeline on Ray
def indexing(images: int) -> list[dict[str, Any]]:
    from lookalike import Engine, Settings

    root = require("grocery-store") / "dataset"
    lines = (root / "train.txt").read_text().splitlines()[:images]
    paths = [root / line.split(",")[0].strip().lstrip("/") for line in lines]
    categories = [path.parent.name for path in paths]
    rows = []
    for label, workers in (("one process", None), ("ray, 1 actor", 1), ("ray, 2 actors", 2)):
        with tempfile.TemporaryDirectory() as folder:
            engine = Engine.create(Path(folder) / "bench.index", Settings())
            started = time.perf_counter()
            report = engine.add(paths, categories=categories, workers=workers)
            seconds = time.perf_counter() - started
            engine.close()
        rows.append({"path": label, "images": len(report.added), "seconds": seconds,
                     "images_per_s": len(report.added) / seconds, "failed": len(report.failed)})  # fmt: skip
    return rows


ADD_COLUMNS = ["backend", "size", "add_1000_s", "cpu_1000_s", "snapshot_s", "requests_per_1000", "fill_s", "load_1min"]


def _sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",") if size.strip()]


def in_subprocess(part: str, *args: str) -> dict[str, Any]:
    """One measurement in a fresh process (so memory and loaded libraries are its own)."""
    command = [sys.executable, __file__, "--one", part, *args]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def plot(add_rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for number, backend in enumerate(sorted({row["backend"] for row in add_rows})):
        rows = sorted((row for row in add_rows if row["backend"] == backend), key=lambda row: row["size"])
        sizes, colour = [row["size"] for row in rows], f"C{number}"
        axis.plot(sizes, [row["add_1000_s"] for row in rows], marker="o", color=colour, label=f"{backend}: wall")
        axis.plot(sizes, [row["cpu_1000_s"] for row in rows], marker="s", linestyle="--", color=colour,
                  label=f"{backend}: CPU")  # fmt: skip
        axis.plot(sizes, [row["add_1000_s"] - row["snapshot_s"] for row in rows], marker=".", linestyle=":",
                  color=colour, label=f"{backend}: wall less the end-of-run snapshot or flush")  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("images already in the index")
    axis.set_ylabel("s for Engine.add of 1,000 (stubbed)")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "scale.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["add-cost", "backends", "indexing", "all"], default="all")
    parser.add_argument("--sizes", default="1000,100000,1000000", help="add-cost: catalogue sizes (local backend)")
    parser.add_argument("--milvus-sizes", default="1000,10000,100000,1000000",
                        help="add-cost: catalogue sizes (Milvus Lite); an empty list skips a backend")  # fmt: skip
    parser.add_argument("--size", type=int, default=100_000, help="backends: vectors per store")
    parser.add_argument("--images", type=int, default=240, help="indexing: grocery-store photos")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        part, *rest = args.one
        with tempfile.TemporaryDirectory() as folder:
            if part == "add-cost":
                print(json.dumps(add_cost_one(rest[0], int(rest[1]), Path(folder))))
            else:
                print(json.dumps(backend_one(rest[0], rest[1], int(rest[2]), Path(folder))))
        return

    previous = RESULTS / "scale.json"
    payload: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    payload.pop("machine", None), payload.pop("date", None)
    payload.pop("load_average_at_start", None), payload.pop("load_average_at_end", None)  # now kept per part
    loads = payload.setdefault("load_averages", {})  # part -> [start, end] of its last run (1, 5, 15 min)
    started_at = os.getloadavg()
    if args.part in ("add-cost", "all"):
        cases = [("faiss", size) for size in _sizes(args.sizes)]
        cases += [("milvus", size) for size in _sizes(args.milvus_sizes)]
        add_rows = []
        for backend, size in cases:
            add_rows.append({"method": "engine.add", **in_subprocess("add-cost", backend, str(size))})
            print(table(add_rows[-1:], ADD_COLUMNS), flush=True)
        measured = {(row["backend"], row["size"]) for row in add_rows}
        kept = [row for row in payload.get("add_cost", [])  # earlier runs' other sizes, if measured the same way
                if row.get("method") == "engine.add" and (row["backend"], row["size"]) not in measured]  # fmt: skip
        payload["add_cost"] = sorted(kept + add_rows, key=lambda row: (row["backend"], row["size"]))
        print(table(payload["add_cost"], ADD_COLUMNS))
        plot(payload["add_cost"])
        loads["add_cost"], started_at = [started_at, os.getloadavg()], os.getloadavg()
    if args.part in ("backends", "all"):
        cases = [("faiss", "flat"), ("faiss", "hnsw"), ("milvus", "flat"), ("milvus", "hnsw")]
        backend_rows = [in_subprocess("backends", backend, kind, str(args.size)) for backend, kind in cases]
        payload["backends"] = backend_rows
        print(table(backend_rows, ["backend", "kind", "size", "insert_per_s", "all_p50_ms", "all_p95_ms",
                                   "all_recall_at_10", "filtered_p50_ms", "filtered_p95_ms",
                                   "filtered_recall_at_10", "delete_1000_s", "upsert_1000_s",
                                   "memory_growth_mb", "threads", "load_1min"]))  # fmt: skip
        loads["backends"], started_at = [started_at, os.getloadavg()], os.getloadavg()
    if args.part in ("indexing", "all"):
        payload["indexing"] = indexing(args.images)
        print(table(payload["indexing"], ["path", "images", "seconds", "images_per_s", "failed"]))
        loads["indexing"] = [started_at, os.getloadavg()]
    path = save("scale", payload)
    write_markdown(payload, path.with_suffix(".md"))
    print(f"wrote {path}")


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    lines = [
        "# Scale-out figures (benchmarks/scale.py)",
        "",
        "Load averages (1, 5, 15 min) at the start and end of",
        "each part's last run; rows carry the 1-minute load at their measurement.",
        "",
    ]
    for part, (start, end) in payload.get("load_averages", {}).items():
        lines.append(f"- {part}: {', '.join(f'{v:.2f}' for v in start)} -> {', '.join(f'{v:.2f}' for v in end)}")
    lines.append("")
    for key, columns in (
        ("add_cost", ADD_COLUMNS),
        ("backends", ["backend", "kind", "size", "insert_per_s", "all_p50_ms", "all_p95_ms", "all_recall_at_10",
                      "filtered_p50_ms", "filtered_p95_ms", "filtered_recall_at_10", "delete_1000_s",
                      "upsert_1000_s", "memory_growth_mb", "threads", "load_1min"]),
        ("indexing", ["path", "images", "seconds", "images_per_s", "failed"]),
    ):  # fmt: skip
        if key in payload:
            lines += [f"## {key}", "", "```", table(payload[key], columns), "```", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
