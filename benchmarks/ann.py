"""Approximate nearest neighbours at a million vectors: build time, memory, latency and recall per index kind.

Data: the grocery-store photos' real embeddings (efficientnet-lite0 + GeM, 1280-d, L2-normalised;
the train, val and test splits cached in benchmarks/cache by the other benchmarks, never re-embedded
here), completed to N vectors with synthetic ones from a generator fitted to the real train + test
vectors (`fit_generator`): their PCA to 128 dimensions, a 512-component diagonal Gaussian mixture
(sklearn) in that space, and for the 1,152 dimensions the PCA leaves, each component's own mean and
per-dimension spread of the remainder of the real vectors it holds; then L2-normalised. Its
statistics against the real vectors are saved under "generator" (similarity to the mean direction,
median similarity of the 1st and 10th nearest neighbour, PCA spectrum): they match except that the
real vectors, GeM-pooled, have no negative entries (clipping them would raise every similarity).
Fewer components (64) or one global remainder left neighbours too far apart (10th-neighbour
similarity 0.74 against 0.78), which makes PQ look worse than on the real vectors.
Queries: the 296 real val photos (not in the base) and synthetic vectors from another seed.
Ground truth: brute force (the flat kind) over the whole base, k = 10.

Per kind (through lookalike's own index classes): build time (training included), bytes per vector
in memory (RSS growth when loading the saved index) and on disk, open time (full read and
memory-mapped), single-query latency p50 (one thread; k = 10 x shortlist factor 4 for approximate
kinds), batched queries per second (all queries at once, 2 threads), Recall@10 of the raw top 10
and after exact re-scoring of the 40-long shortlist (what the engine returns); a sweep of
efSearch / nprobe gives the recall-vs-latency plot (benchmarks/results/ann_recall_latency.png).

What is scaled down on a 2-core machine: HNSW over full vectors is built on the first 100k base
vectors only, its 1M build time extrapolated (x N/100k x log N / log 100k); HNSW over PQ codes goes
to 1M only when the rate measured on its first 100k says it fits the budget. Quantisers train on
a 100k sample (the library's `train_size`). A hard time budget skips kinds that would not fit,
and says so. OMP_WAIT_POLICY=PASSIVE: FAISS's OpenMP spin-waiting is very slow on a shared machine.
Usage: python benchmarks/ann.py [--n 1000000] [--budget-min 25] [--kinds flat,ivfpq,...] [--small] [--report-only]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import hashlib
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS, ROOT, require, save, table

CACHE = ROOT / "benchmarks" / "cache"
K = 10
SHORTLIST = 4  # the engine's default index.shortlist_factor
SUBSET = 100_000  # HNSW over full vectors is measured on this many base vectors
SINGLE_QUERIES = 200
PCA_DIMS, MIXTURE = 128, 512


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data: real embeddings, and a generator fitted to them


def real_vectors() -> dict[str, np.ndarray]:
    """The cached grocery-store vectors per split; exits when one is not cached (we never embed here)."""
    from lookalike.embed import create_embedder
    from lookalike.evaluate.datasets import grocery_store_entries
    from lookalike.evaluate.features import _cache_file, embed_entries
    from lookalike.settings import EmbedSettings

    root = require("grocery-store")
    fingerprint = create_embedder(EmbedSettings()).fingerprint()
    found = {}
    for split in ("train", "val", "test"):
        entries = grocery_store_entries(root, split)
        if not _cache_file(CACHE, fingerprint, entries).exists():
            raise SystemExit(f"skipped: the {split} features are not in {CACHE}; run benchmarks/retrieval.py first")
        found[split] = embed_entries(entries, cache_dir=CACHE)
    return found


@dataclass
class Generator:
    """PCA head + diagonal Gaussian mixture; per-component Gaussian remainder; L2-normalised samples."""

    mean: np.ndarray
    head: np.ndarray  # (PCA_DIMS, dim)
    weights: np.ndarray
    means: np.ndarray  # (components, PCA_DIMS)
    stds: np.ndarray
    rest_means: np.ndarray  # (components, dim): what the head leaves, per component
    rest_stds: np.ndarray

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        component = rng.choice(len(self.weights), size=n, p=self.weights)
        noise = rng.standard_normal((n, self.head.shape[0]), dtype=np.float32)
        x = self.mean + (self.means[component] + noise * self.stds[component]) @ self.head
        x += self.rest_means[component] + rng.standard_normal(x.shape, dtype=np.float32) * self.rest_stds[component]
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fit_generator(real: np.ndarray, seed: int) -> Generator:
    from sklearn.mixture import GaussianMixture

    mean = real.mean(axis=0)
    centred = real - mean
    head = np.linalg.svd(centred, full_matrices=False)[2][:PCA_DIMS]
    z = centred @ head.T
    mixture = GaussianMixture(MIXTURE, covariance_type="diag", random_state=seed, reg_covar=1e-6).fit(z)
    rest, members = centred - z @ head, mixture.predict(z)
    rest_means = np.zeros((MIXTURE, real.shape[1]), np.float32)
    rest_stds = np.tile(rest.std(axis=0), (MIXTURE, 1)).astype(np.float32)  # components of one vector
    for component in range(MIXTURE):
        held = rest[members == component]
        if len(held):
            rest_means[component] = held.mean(axis=0)
        if len(held) > 1:
            rest_stds[component] = held.std(axis=0)
    return Generator(
        mean.astype(np.float32), head.astype(np.float32), mixture.weights_ / mixture.weights_.sum(),
        mixture.means_.astype(np.float32), np.sqrt(mixture.covariances_).astype(np.float32), rest_means, rest_stds,
    )  # fmt: skip


def describe_set(vectors: np.ndarray) -> dict[str, float]:
    """Statistics that matter to nearest-neighbour search, to compare real and synthetic vectors."""
    sample = vectors[:3000]
    similarities = sample @ sample.T
    np.fill_diagonal(similarities, -np.inf)
    top = np.sort(similarities, axis=1)[:, ::-1]
    direction = vectors.mean(axis=0) / np.linalg.norm(vectors.mean(axis=0))
    spectrum = np.linalg.svd(sample - sample.mean(axis=0), compute_uv=False) ** 2
    return {
        "cos_to_mean_direction": float(np.mean(vectors @ direction)),
        "nn1_cos_median": float(np.median(top[:, 0])),
        "nn10_cos_median": float(np.median(top[:, 9])),
        "random_pair_cos_mean": float(np.mean(similarities[np.isfinite(similarities)])),
        "variance_in_top10_pcs": float(spectrum[:10].sum() / spectrum.sum()),
        "variance_in_top128_pcs": float(spectrum[:128].sum() / spectrum.sum()),
        "negative_entries": float(np.mean(vectors < 0)),
    }


def build_base(n: int, real: np.ndarray, generator: Generator, seed: int) -> np.ndarray:
    """Real vectors first, then synthetic ones: a (n, dim) float32 memory map cached on disk."""
    digest = hashlib.sha256(real.tobytes()).hexdigest()[:12]
    path = CACHE / f"ann-base-{n}-{seed}-pca{PCA_DIMS}-gmm{MIXTURE}-{digest}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    base = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, real.shape[1]))
    base[: len(real)] = real[:n]
    rng = np.random.default_rng(seed)
    for start in range(len(real), n, 50_000):
        stop = min(start + 50_000, n)
        base[start:stop] = generator.sample(stop - start, rng)
    base.flush()
    del base
    partial.rename(path)
    return np.load(path, mmap_mode="r")


# -- measurements


def single_latency_ms(index: Any, queries: np.ndarray, k: int) -> float:
    times = []
    for query in queries[:SINGLE_QUERIES]:
        started = time.perf_counter()
        index.search(query[None, :], k)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def batched_qps(index: Any, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    _, ids = index.search(queries, k)
    return len(queries) / (time.perf_counter() - started), ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def rescored(shortlists: np.ndarray, queries: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The top K of each shortlist after exact re-scoring with the full vectors (the engine's step)."""
    out = np.full((len(queries), K), -1, np.int64)
    for row, (ids, query) in enumerate(zip(shortlists, queries, strict=True)):
        ids = np.sort(ids[ids >= 0])
        order = np.argsort(-(base[ids] @ query), kind="stable")[:K]
        out[row, : len(order)] = ids[order]
    return out


def exact_top(base: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """Brute-force top K over the first n base vectors, chunk by chunk."""
    best_scores = np.full((len(queries), K), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), K), np.int64)
    for start in range(0, n, 65_536):
        chunk = np.asarray(base[start : min(start + 65_536, n)])
        scores = queries @ chunk.T
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(start, start + len(chunk)), scores[:, K:].shape)], 1)
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_ids, order, 1)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


# -- one kind


@dataclass
class Config:
    name: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    sweep: str = "nprobe"  # or "ef_search"
    values: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    subset: bool = False  # measured on the first SUBSET base vectors only


CONFIGS = [
    Config("flat", "flat", sweep="", values=()),
    Config("ivfpq", "ivfpq"),
    Config("ivfpq-4bit-fastscan", "ivfpq", {"pq_nbits": 4}),
    Config("ivfpq-pq160", "ivfpq", {"pq_m": 160}),
    Config("ivfpq-pq320-4bit-fastscan", "ivfpq", {"pq_m": 320, "pq_nbits": 4}),
    Config("ivfhnswpq", "ivfhnswpq"),
    Config("hnswpq", "hnswpq", sweep="ef_search", values=(16, 32, 64, 128, 256)),
    Config("hnswpq-pq160", "hnswpq", {"pq_m": 160}, sweep="ef_search", values=(64, 128, 256)),
    Config("hnsw", "hnsw", {"hnsw_m": 32}, sweep="ef_search", values=(16, 32, 64, 128, 256), subset=True),
    Config("ivfpq-opq", "ivfpq", {"opq": True}, values=(8, 16, 32, 64)),
]


def build(config: Config, base: np.ndarray, n: int, deadline: float) -> tuple[Any, dict[str, Any]]:
    """Add the base in chunks; HNSW-PQ stops at SUBSET when its measured rate would miss the deadline."""
    from lookalike.index import create_index
    from lookalike.settings import IndexSettings

    settings = IndexSettings(kind=config.kind, **config.settings)
    index = create_index(config.kind, base.shape[1], settings)
    target = min(n, SUBSET) if config.subset else n
    if hasattr(index, "expect"):
        index.expect(target)
    started, facts = time.perf_counter(), {"vectors": target}
    for start in range(0, target, 50_000):
        stop = min(start + 50_000, target)
        index.add(np.arange(start, stop), np.asarray(base[start:stop]))
        log(f"  {config.name}: {stop:,} / {target:,} added ({time.perf_counter() - started:.0f} s)")
        if stop == SUBSET and target > SUBSET and config.kind == "hnswpq":
            predicted = (time.perf_counter() - started) * target / SUBSET * math.log(target) / math.log(SUBSET)
            if time.monotonic() + predicted > deadline:
                facts.update(vectors=SUBSET, stopped_early=f"predicted {predicted:.0f} s for {target:,}: over budget")
                break
    facts["build_s"] = time.perf_counter() - started
    if facts["vectors"] < n:
        log_n = math.log(n) / math.log(facts["vectors"])
        facts["build_s_extrapolated_to_n"] = facts["build_s"] * n / facts["vectors"] * log_n
    return index, facts


def reopen(config: Config, index: Any, folder: Path) -> tuple[Any, dict[str, Any]]:
    """Save, drop, and load again: bytes on disk; memory and open time measured in a fresh process."""
    from lookalike.index import load_index
    from lookalike.settings import IndexSettings

    path = folder / f"{config.name}.faiss"
    index.save(path)
    vectors, dim = len(index), index.dim
    facts: dict[str, Any] = {"disk_bytes_per_vector": folder_bytes(path) / vectors}
    del index
    gc.collect()
    for mode in ("full", "mmap"):
        opened = open_in_child(config, path, dim, mode)
        facts[f"open_{mode}_s"] = opened["seconds"]
        facts[f"memory_{mode}_bytes_per_vector"] = opened["rss"] / vectors
    facts["memory_bytes_per_vector"] = facts["memory_full_bytes_per_vector"]
    settings = IndexSettings(kind=config.kind, mmap=False, **config.settings)
    return load_index(config.kind, path, dim, settings), facts


_CHILD = """
import json, os, sys, time
import faiss
from pathlib import Path
from lookalike.index import load_index
from lookalike.settings import IndexSettings

def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

kind, path, dim, mode, settings = json.loads(sys.argv[1])
before, started = rss(), time.perf_counter()
if kind == "flat" and mode == "mmap":  # the flat kind always reads its file: what mapping would give it
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
else:
    index = load_index(kind, Path(path), dim, IndexSettings(kind=kind, mmap=mode == "mmap", **settings))
print(json.dumps({"seconds": time.perf_counter() - started, "rss": rss() - before}))
"""


def open_in_child(config: Config, path: Path, dim: int, mode: str) -> dict[str, float]:
    """Open time and resident-memory growth of loading the index, in a fresh process (no reused heap)."""
    import json
    import subprocess

    argument = json.dumps([config.kind, str(path), dim, mode, config.settings])
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", _CHILD, argument], capture_output=True, text=True, env=environment)
    if done.returncode:
        raise RuntimeError(f"opening {path} ({mode}) failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(config: Config, index: Any, queries: np.ndarray, truth: np.ndarray, base: np.ndarray) -> list[dict]:
    """One row per sweep value (the kind's own default last), each with latency, QPS and recall."""
    default = index.params
    rows = []
    for value in (getattr(default, config.sweep), *config.values):
        index.tune(**{config.sweep: value})
        latency = single_latency_ms(index, queries, K * SHORTLIST)
        qps, shortlists = batched_qps(index, queries, K * SHORTLIST)
        row = {"kind": config.name, "setting": "sweep" if rows else "default", config.sweep: value}
        row.update(p50_ms=latency, qps=qps, recall_raw=recall(shortlists, truth))
        row["recall"] = recall(rescored(shortlists, queries, base), truth)
        rows.append(row)
    index.tune(ef_search=default.ef_search, nprobe=default.nprobe)
    return rows


def shortlist_sweep(index: Any, queries: np.ndarray, truth: np.ndarray, base: np.ndarray) -> list[dict]:
    """Recall@10 after exact re-scoring as the shortlist grows (index.shortlist_factor x 10), default tunables."""
    rows = []
    for length in (10, 20, 40, 100, 200):
        qps, shortlists = batched_qps(index, queries, length)
        rows.append({"shortlist": length, "qps": qps, "recall": recall(rescored(shortlists, queries, base), truth)})
    return rows


def measure_flat(index: Any, queries: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """The flat kind's speed; its batched search is the ground truth."""
    qps, truth = batched_qps(index, queries, K)
    latency = single_latency_ms(index, queries[:50], K)
    row = {"kind": "flat", "setting": "default", "p50_ms": latency, "qps": qps, "recall_raw": 1.0, "recall": 1.0}
    return [row], truth


def run_kind(config: Config, data: Data, deadline: float) -> dict[str, Any]:
    log(f"{config.name}: building")
    index, facts = build(config, data.base, data.n, deadline)
    params = getattr(index, "params", None)
    facts["faiss"] = params.factory() if params is not None else "IDMap2,Flat"
    if config.kind == "flat":
        log("flat: measuring (its batched search is the ground truth)")
        facts["sweep"], data.truths[data.n] = measure_flat(index, data.queries)
    loaded, more = reopen(config, index, data.folder)
    facts.update(more)
    size = facts["vectors"]
    if size not in data.truths:
        log(f"{config.name}: exact top {K} over the first {size:,} for its recall")
        data.truths[size] = exact_top(data.base, data.queries, size)
    if config.kind != "flat":
        log(f"{config.name}: measuring")
        facts["sweep"] = measure(config, loaded, data.queries, data.truths[size], data.base)
        if loaded.quantized:
            facts["shortlist_sweep"] = shortlist_sweep(loaded, data.queries, data.truths[size], data.base)
        real = data.queries[: data.real_queries]
        found = rescored(loaded.search(real, K * SHORTLIST)[1], real, data.base)
        facts["recall_real_queries"] = recall(found, data.truths[size][: data.real_queries])
    del loaded
    gc.collect()
    return facts


@dataclass
class Data:
    base: np.ndarray
    queries: np.ndarray
    real_queries: int
    folder: Path
    truths: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.base)


# -- report


def summary_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, facts in results.items():
        if "sweep" not in facts:
            rows.append({"kind": name, "note": facts.get("skipped", "")})
            continue
        default = facts["sweep"][0]
        rows.append({
            "kind": name, "faiss": facts["faiss"], "vectors": facts["vectors"],
            "build_s": facts["build_s"], "build_s_1M": facts.get("build_s_extrapolated_to_n"),
            "mem_B/vec": facts["memory_bytes_per_vector"], "disk_B/vec": facts["disk_bytes_per_vector"],
            "open_ms": 1000 * facts["open_full_s"], "open_mmap_ms": 1000 * facts["open_mmap_s"],
            "p50_ms": default["p50_ms"], "qps": default["qps"],
            "R@10_raw": default["recall_raw"], "R@10": default["recall"],
        })  # fmt: skip
    return rows


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    for name, facts in results.items():
        points = sorted((r for r in facts.get("sweep", []) if r["setting"] == "sweep"), key=lambda r: r["p50_ms"])
        if not points:
            continue
        label = f"{name} ({facts['vectors']:,} vectors)"
        axes.plot([r["p50_ms"] for r in points], [r["recall"] for r in points], marker="o", label=label)
    axes.set_xscale("log")
    axes.set_xlabel("single-query latency p50 (ms, 1 thread, k = 40 shortlist)")
    axes.set_ylabel("Recall@10 after exact re-scoring")
    axes.set_title("Recall vs latency, 1280-d grocery embeddings + fitted synthetic vectors")
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def recommend(results: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """For each recall target, the fastest measured setting: at full size when one reaches it, else
    among the kinds measured on the subset (flagged with the size they were measured at)."""
    chosen: dict[str, Any] = {}
    for target in (0.8, 0.9, 0.95, 0.99):
        rows = [
            (facts.get("vectors") != n, row["p50_ms"], name, row)
            for name, facts in results.items()
            if name != "flat"
            for row in facts.get("sweep", [])
            if row["recall"] >= target
        ]
        if rows:
            subset, _, name, row = min(rows, key=lambda r: (r[0], r[1]))
            note = f"measured on {results[name]['vectors']:,} vectors" if subset else "measured at full size"
            chosen[f"recall>={target}"] = {"kind": name, "faiss": results[name]["faiss"], "note": note, **row}
    return chosen


def report_only() -> None:
    """Re-print the table, the recommendation and the plot from the saved ann.json (no measuring)."""
    import json

    saved = json.loads((RESULTS / "ann.json").read_text())
    results, n = saved["kinds"], saved["n"]
    plot(results, RESULTS / "ann_recall_latency.png")
    saved["recommended"] = recommend(results, n)
    (RESULTS / "ann.json").write_text(json.dumps(saved, indent=2, default=float) + "\n")
    print_report(results, n, argparse.Namespace(queries=saved["queries"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--budget-min", type=float, default=25.0, help="hard time budget; later kinds are skipped")
    parser.add_argument("--kinds", default=",".join(c.name for c in CONFIGS))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--small", action="store_true", help="n = 60,000 for a quick check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="re-print and re-plot the saved ann.json")
    args = parser.parse_args()
    if args.report_only:
        return report_only()
    n = 60_000 if args.small else args.n
    started = time.monotonic()
    deadline = started + args.budget_min * 60

    real = real_vectors()
    base_real = np.concatenate([real["train"], real["test"]])
    generator = fit_generator(base_real, args.seed)
    synthetic_check = generator.sample(len(base_real), np.random.default_rng(args.seed + 2))
    stats = {"real": describe_set(base_real), "synthetic": describe_set(synthetic_check)}
    log(f"generator fitted; building the {n:,}-vector base")
    base = build_base(n, base_real, generator, args.seed)
    extra = generator.sample(max(args.queries - len(real["val"]), 0), np.random.default_rng(args.seed + 1))
    queries = np.ascontiguousarray(np.concatenate([real["val"], extra])[: args.queries])
    log(f"base ready ({time.monotonic() - started:.0f} s)")

    results: dict[str, dict[str, Any]] = {}
    data = Data(base, queries, len(real["val"]), CACHE / "ann-indexes")
    data.folder.mkdir(parents=True, exist_ok=True)
    wanted = args.kinds.split(",")
    for config in (c for c in CONFIGS if c.name in wanted):
        if time.monotonic() > deadline - 60:
            results[config.name] = {"skipped": "time budget spent"}
            log(f"{config.name}: skipped, time budget spent")
            write(results, stats, n, args, time.monotonic() - started)
            continue
        results[config.name] = run_kind(config, data, deadline)
        write(results, stats, n, args, time.monotonic() - started)  # kept even if a later kind is killed
    shutil.rmtree(data.folder, ignore_errors=True)
    print_report(results, n, args)


def write(results: dict[str, dict[str, Any]], stats: dict[str, Any], n: int, args: Any, seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "ann_recall_latency.png"
    plot(results, png)
    payload = {
        "n": n, "dim": 1280, "queries": args.queries, "k": K, "shortlist_factor": SHORTLIST, "seconds": seconds,
        "budget_min": args.budget_min,
        "data": "grocery-store real vectors (train+test in the base, val as queries) + synthetic, see docstring",
        "generator": {"pca_dims": PCA_DIMS, "mixture_components": MIXTURE, **stats},
        "threads": os.environ.get("OMP_NUM_THREADS", "all (2)"), "table": summary_rows(results), "kinds": results,
        "recommended": recommend(results, n), "plot": str(png.relative_to(ROOT)),
    }  # fmt: skip
    log(f"saved {save('ann', payload)} and {png}")


def print_report(results: dict[str, dict[str, Any]], n: int, args: Any) -> None:
    rows = summary_rows(results)
    columns = ["kind", "faiss", "vectors", "build_s", "build_s_1M", "mem_B/vec", "disk_B/vec", "open_ms",
               "open_mmap_ms", "p50_ms", "qps", "R@10_raw", "R@10"]  # fmt: skip
    print(f"\n{n:,} vectors x 1280-d, {args.queries} queries, Recall@10 against brute force (after exact re-scoring)")
    print(table(rows, columns))
    recommended = recommend(results, n)
    print("\nfastest setting per recall target (full size first, else the subset-measured kinds):")
    for target, row in recommended.items():
        tunable = {k: row[k] for k in ("nprobe", "ef_search") if k in row}
        print(f"  {target}: {row['kind']} ({row['faiss']}) {tunable}: p50 {row['p50_ms']:.2f} ms, "
              f"Recall@10 {row['recall']:.3f}, {row['note']}")  # fmt: skip


if __name__ == "__main__":
    main()
