"""Scale-out figures: the add cost as the catalogue grows, FAISS against Milvus Lite, Ray indexing.

Three parts (all by default), each written into benchmarks/results/scale.json (+ scale.md, scale.png):

- `add-cost`: seconds to add 1,000 images (in the engine's 32-image transactions: the path lookup and
  the commit, the embedder stubbed by synthetic 256-d vectors) into a local index already holding
  1k, 100k and 1M images, and into a Milvus Lite one holding 1k and 100k;
- `backends`: the same synthetic vectors (10 categories) in each vector store: insert rate, search
  p50/p95 with and without a category filter, Recall@10 against exact search in the same filter,
  deleting and upserting 1,000, and the process's memory growth (each store in its own process);
- `indexing`: the real pipeline on grocery-store photos: one process (today's path) against Ray
  pools of 1 and 2 actors (`--workers`), wall time including Ray's start.

    .venv/bin/python benchmarks/scale.py --part all
    .venv/bin/python benchmarks/scale.py --part backends --size 100000
"""

from __future__ import annotations

import argparse
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
def _new_items(count: int, start: int, seed: int) -> list[Any]:
    from lookalike.index import NewItem

    vectors = unit(count, seed)
    return [
        NewItem(f"/catalogue/{CATEGORIES[(start + n) % 10]}/image-{start + n:08d}.jpg", CATEGORIES[(start + n) % 10],
                f"{start + n:064x}", vectors[n])
        for n in range(count)
    ]  # fmt: skip


def _fill(catalog: Any, size: int) -> None:
    for start in range(0, size, 20_000):
        catalog.commit(_new_items(min(20_000, size - start), start, start), {})


def add_cost_one(backend: str, size: int, folder: Path) -> dict[str, Any]:
    """Fill a catalogue to `size`, then time adding 1,000 more the way Engine.add does (per 32)."""
    from lookalike.index.catalog import open_catalog
    from lookalike.settings import IndexSettings

    options: dict[str, Any] = {"backend": backend}
    if backend == "milvus":
        options.update(uri=str(folder / "milvus.db"), collection="scale")
    settings = IndexSettings(**options)
    catalog = open_catalog(folder, settings, create=True)
    catalog.initialise(DIM, {"embedder": "synthetic"})
    started = time.perf_counter()
    _fill(catalog, size)
    fill_seconds = time.perf_counter() - started
    catalog.vectors()
    rounds = []
    for attempt in range(3):
        items = _new_items(1_000, size + attempt * 1_000, 10_000 + attempt)
        started = time.perf_counter()
        for chunk in range(0, 1_000, 32):
            batch = items[chunk : chunk + 32]
            catalog.store.known_paths([item.path for item in batch])
            catalog.commit(batch, {})
        rounds.append(time.perf_counter() - started)
    catalog.close()
    return {"backend": backend, "size": size, "add_1000_s": float(np.median(rounds)), "rounds_s": rounds,
            "fill_s": fill_seconds}  # fmt: skip


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
                               "insert_per_s": size / insert_seconds}  # fmt: skip
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


def in_subprocess(part: str, *args: str) -> dict[str, Any]:
    """One measurement in a fresh process (so memory and loaded libraries are its own)."""
    command = [sys.executable, __file__, "--one", part, *args]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def plot(add_rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    for backend in sorted({row["backend"] for row in add_rows}):
        points = sorted((row["size"], row["add_1000_s"]) for row in add_rows if row["backend"] == backend)
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=backend)
    axis.set_xscale("log")
    axis.set_xlabel("images already in the index")
    axis.set_ylabel("seconds to add 1,000 (embedder stubbed)")
    axis.set_ylim(bottom=0)
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "scale.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["add-cost", "backends", "indexing", "all"], default="all")
    parser.add_argument("--sizes", default="1000,100000,1000000", help="add-cost: catalogue sizes (local backend)")
    parser.add_argument("--milvus-sizes", default="1000,100000", help="add-cost: catalogue sizes (Milvus Lite)")
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
    payload["load_average_at_start"] = os.getloadavg()
    if args.part in ("add-cost", "all"):
        add_rows = [in_subprocess("add-cost", "faiss", size) for size in args.sizes.split(",")]
        add_rows += [in_subprocess("add-cost", "milvus", size) for size in args.milvus_sizes.split(",")]
        payload["add_cost"] = add_rows
        print(table(add_rows, ["backend", "size", "add_1000_s", "fill_s"]))
        plot(add_rows)
    if args.part in ("backends", "all"):
        cases = [("faiss", "flat"), ("faiss", "hnsw"), ("milvus", "flat"), ("milvus", "hnsw")]
        backend_rows = [in_subprocess("backends", backend, kind, str(args.size)) for backend, kind in cases]
        payload["backends"] = backend_rows
        print(table(backend_rows, ["backend", "kind", "size", "insert_per_s", "all_p50_ms", "all_p95_ms",
                                   "all_recall_at_10", "filtered_p50_ms", "filtered_p95_ms",
                                   "filtered_recall_at_10", "delete_1000_s", "upsert_1000_s",
                                   "memory_growth_mb"]))  # fmt: skip
    if args.part in ("indexing", "all"):
        payload["indexing"] = indexing(args.images)
        print(table(payload["indexing"], ["path", "images", "seconds", "images_per_s", "failed"]))
    payload["load_average_at_end"] = os.getloadavg()
    path = save("scale", payload)
    write_markdown(payload, path.with_suffix(".md"))
    print(f"wrote {path}")


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    start, end = payload.get("load_average_at_start"), payload.get("load_average_at_end")
    loads = f"Load average at start {start}, at end {end}."
    lines = ["# Scale-out figures (benchmarks/scale.py)", "", loads, ""]
    for key, columns in (
        ("add_cost", ["backend", "size", "add_1000_s", "fill_s"]),
        ("backends", ["backend", "kind", "size", "insert_per_s", "all_p50_ms", "all_p95_ms", "all_recall_at_10",
                      "filtered_p50_ms", "filtered_p95_ms", "filtered_recall_at_10", "delete_1000_s",
                      "upsert_1000_s", "memory_growth_mb"]),
        ("indexing", ["path", "images", "seconds", "images_per_s", "failed"]),
    ):  # fmt: skip
        if key in payload:
            lines += [f"## {key}", "", "```", table(payload[key], columns), "```", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
