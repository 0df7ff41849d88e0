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

The reduced kind ("pcaivfsq8": PCA to 256-d, IVF-SQ8, float16 re-scoring) returns its own exact top
10 in its reduced space; it is measured at k = 10 (its shortlist: 10 x rescore_factor) and scored
against exact search in that space (the issue's target) and against the full-dimension brute force,
separately; exact search in the reduced space (lookalike's flat kind over the reduced vectors) is
timed as a second baseline, and its rate divides the kind's ("x_exact_reduced", "x_exact_full"). Its
memory is also measured after the 1,000 queries have been searched in the fresh process (the
memory-mapped rows and lists they touched), and the load average is recorded before and after each
kind. "reduction_grocery" is what the reduction costs on real retrieval: grocery-store photo->photo
mAP and Recall@1, exact search with the full vectors against the same in a PCA space learned on
the gallery (128, 256, 512-d).

What is scaled down on a 2-core machine: HNSW over full vectors is built on the first 100k base
vectors only, its 1M build time extrapolated (x N/100k x log N / log 100k); HNSW over PQ codes goes
to 1M only when the rate measured on its first 100k says it fits the budget. Quantisers train on
a 100k sample (the library's `train_size`). A hard time budget skips kinds that would not fit,
and says so. OMP_WAIT_POLICY=PASSIVE: FAISS's OpenMP spin-waiting is very slow on a shared machine.
Usage: python benchmarks/ann.py [--n 1000000] [--budget-min 25] [--kinds flat,ivfpq,...] [--keep] [--small]
       [--report-only]      (--keep: the saved kinds not run now stay in ann.json, with their dates)
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
REPEATS = 3  # batched runs per setting of the reduced kind and of exact search in its space (median kept)
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


def latency_ms(index: Any, queries: np.ndarray, k: int) -> dict[str, float]:
    """Single-query latency, p50 and p95 (ms)."""
    times = []
    for query in queries[:SINGLE_QUERIES]:
        started = time.perf_counter()
        index.search(query[None, :], k)
        times.append(time.perf_counter() - started)
    return {"p50_ms": float(np.median(times) * 1000), "p95_ms": float(np.percentile(times, 95) * 1000)}


def batched_qps(index: Any, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[float, np.ndarray]:
    """All queries at once; with repeats, the median rate (a sub-second batch is at the mercy of the load)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        _, ids = index.search(queries, k)
        rates.append(len(queries) / (time.perf_counter() - started))
    return float(np.median(rates)), ids


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
    Config("pcaivfsq8", "pcaivfsq8", values=(8, 12, 16, 24, 32, 64)),
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


def reopen(config: Config, index: Any, data: Data) -> tuple[Any, dict[str, Any]]:
    """Save, drop, and load again: bytes on disk; memory and open time measured in a fresh process
    (for the reduced kind also the memory after searching the queries, its float16 rows memory-mapped)."""
    from lookalike.index import load_index
    from lookalike.settings import IndexSettings

    path = data.folder / f"{config.name}.faiss"
    index.save(path)
    vectors, dim = len(index), index.dim
    facts: dict[str, Any] = {"disk_bytes_per_vector": folder_bytes(path) / vectors}
    facts["disk_files_bytes_per_vector"] = {f.name[len(path.name) :] or ".faiss": f.stat().st_size / vectors
                                            for f in path.parent.glob(path.name + "*")}  # fmt: skip
    searched = getattr(index, "reduction", None) is not None
    del index
    gc.collect()
    queries = data.folder / "queries.npy"
    np.save(queries, data.queries)
    for mode in ("full", "mmap"):
        opened = open_in_child(config, path, dim, mode, queries if searched else None)
        facts[f"open_{mode}_s"] = opened["seconds"]
        facts[f"memory_{mode}_bytes_per_vector"] = opened["rss"] / vectors
        if "rss_searched" in opened:
            facts[f"memory_{mode}_after_search_bytes_per_vector"] = opened["rss_searched"] / vectors
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

kind, path, dim, mode, settings, queries = json.loads(sys.argv[1])
before, started = rss(), time.perf_counter()
if kind == "flat" and mode == "mmap":  # the flat kind always reads its file: what mapping would give it
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
else:
    index = load_index(kind, Path(path), dim, IndexSettings(kind=kind, mmap=mode == "mmap", **settings))
facts = {"seconds": time.perf_counter() - started, "rss": rss() - before}
if queries:  # resident memory once the queries' inverted lists and float16 rows have been read
    import numpy as np

    found = np.load(queries)
    index.search(found, 10)
    facts["rss_searched"] = rss() - before - found.nbytes
print(json.dumps(facts))
"""


def open_in_child(config: Config, path: Path, dim: int, mode: str, queries: Path | None = None) -> dict[str, float]:
    """Open time and resident-memory growth of loading the index, in a fresh process (no reused heap)."""
    import json
    import subprocess

    argument = json.dumps([config.kind, str(path), dim, mode, config.settings, str(queries) if queries else None])
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
        latency = latency_ms(index, queries, K * SHORTLIST)
        qps, shortlists = batched_qps(index, queries, K * SHORTLIST)
        row = {"kind": config.name, "setting": "sweep" if rows else "default", config.sweep: value}
        row.update(**latency, qps=qps, recall_raw=recall(shortlists, truth))
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
    latency = latency_ms(index, queries[:50], K)
    row = {"kind": "flat", "setting": "default", **latency, "qps": qps, "recall_raw": 1.0, "recall": 1.0}
    return [row], truth


# -- the reduced kind (pcaivfsq8): recall in its own space and in the full one, exact search in both


def reduce_rows(reduction: Any, base: np.ndarray) -> np.ndarray:
    """The base through the index's learned reduction: (n, reduce_dim) float32, chunk by chunk."""
    out = np.empty((len(base), reduction.dim), np.float32)
    for start in range(0, len(base), 65_536):
        out[start : start + 65_536] = reduction.transform(np.asarray(base[start : start + 65_536]))
    return out


def exact_reduced(reduced_base: np.ndarray, queries: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Brute force in the reduced space (lookalike's flat kind): its speed, and the ground truth there."""
    from lookalike.index.flat import FlatIndex

    flat = FlatIndex(reduced_base.shape[1])
    for start in range(0, len(reduced_base), 65_536):
        chunk = reduced_base[start : start + 65_536]
        flat.add(np.arange(start, start + len(chunk)), chunk)
    qps, truth = batched_qps(flat, queries, K, REPEATS)
    return {"qps": qps, **latency_ms(flat, queries[:50], K)}, truth


def measure_reduced(config: Config, index: Any, data: Data) -> dict[str, Any]:
    """Sweeps of nprobe and rescore_factor, Recall@10 against exact search in the reduced space and in
    the full one; the index's own top K (it re-scores its shortlist), and the engine's path (top K of K x 4)."""
    queries = index.reduction.transform(data.queries)
    log(f"{config.name}: exact search in the reduced {queries.shape[1]}-d space")
    exact, reduced_truth = exact_reduced(reduce_rows(index.reduction, data.base), queries)
    exact["recall"] = recall(reduced_truth, data.truths[data.n])  # what the reduction alone costs
    gc.collect()
    truths = {"recall": data.truths[data.n], "recall_reduced": reduced_truth}
    default = index.params
    sweep = [reduced_row(config, index, data.queries, truths, "default", default.nprobe)]
    for value in config.values:
        index.tune(nprobe=value)
        sweep.append(reduced_row(config, index, data.queries, truths, "sweep", value))
    index.tune(nprobe=default.nprobe)
    rescoring = []
    for factor in (1, 2, 4, 8, 16):
        index.tune(rescore_factor=factor)
        qps, found = batched_qps(index, data.queries, K, REPEATS)
        rescoring.append({"rescore_factor": factor, "qps": qps, **{n: recall(found, t) for n, t in truths.items()}})
    index.tune(rescore_factor=default.rescore_factor)
    qps, found = batched_qps(index, data.queries, K * SHORTLIST, REPEATS)
    engine = {"k": K * SHORTLIST, "qps": qps, **{n: recall(found, t) for n, t in truths.items()}}
    # were its 40 re-scored with the full vectors (as the engine does for the PQ kinds), not used now:
    engine["recall_full_vectors_rescored"] = recall(rescored(found, data.queries, data.base), truths["recall"])
    facts = {"exact_reduced": exact, "sweep": sweep, "rescore_sweep": rescoring, "engine_path": engine}
    facts["reduction"] = index.reduction.facts()
    if data.grocery is not None:
        facts["grocery_with_this_reduction"] = grocery_metrics(data.grocery, index.reduction)
    return facts


def reduced_row(config: Config, index: Any, queries: np.ndarray, truths: dict, setting: str, nprobe: int) -> dict:
    row = {"kind": config.name, "setting": setting, "nprobe": nprobe, **latency_ms(index, queries, K)}
    qps, found = batched_qps(index, queries, K, REPEATS)
    row.update(qps=qps, recall_raw=None, **{name: recall(found, truth) for name, truth in truths.items()})
    return row


# -- the retrieval cost of the reduction: grocery-store photo->photo, full-dimension exact against reduced


@dataclass
class Grocery:
    gallery: np.ndarray  # the train photos' vectors
    queries: np.ndarray  # the test photos'
    gallery_labels: np.ndarray
    query_labels: np.ndarray


def grocery_data(real: dict[str, np.ndarray]) -> Grocery:
    from lookalike.evaluate.datasets import grocery_store_entries

    root = require("grocery-store")
    labels = {split: np.array([e.item for e in grocery_store_entries(root, split)]) for split in ("train", "test")}
    return Grocery(real["train"], real["test"], labels["train"], labels["test"])


def grocery_metrics(grocery: Grocery, reduction: Any = None) -> dict[str, float]:
    """mAP and Recall@1 of exact search over the whole gallery, through `reduction` when given."""
    from lookalike.evaluate.metrics import retrieval_report

    gallery, queries = grocery.gallery, grocery.queries
    if reduction is not None:
        gallery, queries = reduction.transform(gallery), reduction.transform(queries)
    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    relevant = [grocery.gallery_labels[row] == label for row, label in zip(order, grocery.query_labels, strict=True)]
    report = retrieval_report(relevant, ks=(1, 10))
    return {"mAP": report.map, "R@1": report.recall_at_k[1], "R@10": report.recall_at_k[10]}


def grocery_reduction_cost(grocery: Grocery, dims: tuple[int, ...] = (128, 256, 512)) -> dict[str, Any]:
    """Full-dimension exact search against the same search in a PCA space learned on the gallery."""
    from lookalike.index.ann_reduced import PcaReduction

    full = grocery_metrics(grocery)
    rows = [{"dim": grocery.gallery.shape[1], "reduction": "none (full-dimension exact)", **full}]
    for dim in dims:
        reduction = PcaReduction(dim).fit(grocery.gallery)
        rows.append({"dim": dim, "reduction": "PCA learned on the gallery", **grocery_metrics(grocery, reduction)})
        rows[-1].update(mAP_change=rows[-1]["mAP"] - full["mAP"], R1_change=rows[-1]["R@1"] - full["R@1"])
    return {
        "protocol": "grocery-store photo->photo: queries = test (2,485), gallery = train (2,640), same product",
        "rows": rows,
    }


def run_kind(config: Config, data: Data, deadline: float) -> dict[str, Any]:
    log(f"{config.name}: building (load average {os.getloadavg()[0]:.2f})")
    before = os.getloadavg()
    index, facts = build(config, data.base, data.n, deadline)
    facts.update(date=time.strftime("%Y-%m-%d %H:%M"), loadavg_before=before)
    params = getattr(index, "params", None)
    facts["faiss"] = params.factory() if params is not None else "IDMap2,Flat"
    if config.kind == "flat":
        log("flat: measuring (its batched search is the ground truth)")
        facts["sweep"], data.truths[data.n] = measure_flat(index, data.queries)
    loaded, more = reopen(config, index, data)
    facts.update(more)
    size = facts["vectors"]
    if size not in data.truths:
        log(f"{config.name}: exact top {K} over the first {size:,} for its recall")
        data.truths[size] = exact_top(data.base, data.queries, size)
    if getattr(loaded, "reduction", None) is not None:
        log(f"{config.name}: measuring")
        facts.update(measure_reduced(config, loaded, data))
        found = loaded.search(data.queries[: data.real_queries], K)[1]
        facts["recall_real_queries"] = recall(found, data.truths[size][: data.real_queries])
    elif config.kind != "flat":
        log(f"{config.name}: measuring")
        facts["sweep"] = measure(config, loaded, data.queries, data.truths[size], data.base)
        if loaded.quantized:
            facts["shortlist_sweep"] = shortlist_sweep(loaded, data.queries, data.truths[size], data.base)
        real = data.queries[: data.real_queries]
        found = rescored(loaded.search(real, K * SHORTLIST)[1], real, data.base)
        facts["recall_real_queries"] = recall(found, data.truths[size][: data.real_queries])
    del loaded
    gc.collect()
    facts["loadavg_after"] = os.getloadavg()
    return facts


@dataclass
class Data:
    base: np.ndarray
    queries: np.ndarray
    real_queries: int
    folder: Path
    truths: dict[int, np.ndarray] = field(default_factory=dict)
    grocery: Grocery | None = None

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
            "p50_ms": default["p50_ms"], "p95_ms": default.get("p95_ms"), "qps": default["qps"],
            "R@10_raw": default["recall_raw"], "R@10": default["recall"],
            "R@10_reduced": default.get("recall_reduced"), "date": facts.get("date"),
        })  # fmt: skip
    return rows


def reduced_summary(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The reduced kinds against the issue's targets: recall, speed against exact search, memory."""
    rows = []
    for name, facts in results.items():
        if "exact_reduced" not in facts:
            continue
        flat = results.get("flat", {}).get("sweep", [{}])[0]
        for row in facts["sweep"]:
            rows.append({
                "kind": name, "nprobe": row["nprobe"], "R@10_reduced": row["recall_reduced"],
                "R@10_full": row["recall"], "qps": row["qps"],
                "x_exact_reduced": row["qps"] / facts["exact_reduced"]["qps"],
                "x_exact_full": row["qps"] / flat["qps"] if flat.get("qps") else None,
                "p50_ms": row["p50_ms"], "p95_ms": row["p95_ms"],
                "RAM_B/vec": facts["memory_full_bytes_per_vector"], "disk_B/vec": facts["disk_bytes_per_vector"],
                "build_s": facts["build_s"],
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
        if "recall_reduced" in points[0]:  # against exact search in its own reduced space
            latency, reduced = [r["p50_ms"] for r in points], [r["recall_reduced"] for r in points]
            axes.plot(latency, reduced, marker="o", linestyle="--", label=f"{label}, in its reduced space")
    axes.set_xscale("log")
    axes.set_xlabel("single-query latency p50 (ms, 1 thread; k = 40 shortlist, pcaivfsq8 k = 10)")
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
    saved.update(table=summary_rows(results), reduced=reduced_summary(results), recommended=recommend(results, n))
    (RESULTS / "ann.json").write_text(json.dumps(saved, indent=2, default=float) + "\n")
    print_report(
        results, n, argparse.Namespace(queries=saved["queries"], reduction_grocery=saved.get("reduction_grocery"))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--budget-min", type=float, default=25.0, help="hard time budget; later kinds are skipped")
    parser.add_argument("--kinds", default=",".join(c.name for c in CONFIGS))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--small", action="store_true", help="n = 60,000 for a quick check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="re-print and re-plot the saved ann.json")
    parser.add_argument("--keep", action="store_true", help="keep the saved kinds not run now (with their dates)")
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
    stats: dict[str, Any] = {"generator": {"real": describe_set(base_real), "synthetic": describe_set(synthetic_check)}}
    log(f"generator fitted; building the {n:,}-vector base")
    base = build_base(n, base_real, generator, args.seed)
    extra = generator.sample(max(args.queries - len(real["val"]), 0), np.random.default_rng(args.seed + 1))
    queries = np.ascontiguousarray(np.concatenate([real["val"], extra])[: args.queries])
    log(f"base ready ({time.monotonic() - started:.0f} s)")

    grocery = grocery_data(real)
    stats["reduction_grocery"] = grocery_reduction_cost(grocery)
    stats["loadavg_start"] = os.getloadavg()
    results: dict[str, dict[str, Any]] = earlier_results(n, args.keep)
    data = Data(base, queries, len(real["val"]), CACHE / "ann-indexes", grocery=grocery)
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
    args.reduction_grocery = stats["reduction_grocery"]
    print_report(results, n, args)


def earlier_results(n: int, keep: bool) -> dict[str, dict[str, Any]]:
    """With --keep: the kinds of the saved ann.json (same n), each dated, so a run of some kinds keeps the rest."""
    import json

    path = RESULTS / "ann.json"
    if not keep or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("n") != n:
        return {}
    kinds = {name: {"date": saved["date"], **facts} for name, facts in saved["kinds"].items()}
    return {c.name: kinds[c.name] for c in CONFIGS if c.name in kinds}  # in CONFIGS' order


def write(results: dict[str, dict[str, Any]], stats: dict[str, Any], n: int, args: Any, seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "ann_recall_latency.png"
    plot(results, png)
    ordered = {c.name: results[c.name] for c in CONFIGS if c.name in results}
    run = {key: stats[key] for key in ("loadavg_start", "reduction_grocery")}
    payload = {
        "n": n, "dim": 1280, "queries": args.queries, "k": K, "shortlist_factor": SHORTLIST, "seconds": seconds,
        "budget_min": args.budget_min, "kinds_run": args.kinds, **run, "loadavg_now": os.getloadavg(),
        "data": "grocery-store real vectors (train+test in the base, val as queries) + synthetic, see docstring",
        "generator": {"pca_dims": PCA_DIMS, "mixture_components": MIXTURE, **stats["generator"]},
        "threads": os.environ.get("OMP_NUM_THREADS", "all (2)"), "table": summary_rows(ordered),
        "reduced": reduced_summary(ordered), "kinds": ordered, "recommended": recommend(ordered, n),
        "plot": str(png.relative_to(ROOT)),
    }  # fmt: skip
    log(f"saved {save('ann', payload)} and {png}")


def print_report(results: dict[str, dict[str, Any]], n: int, args: Any) -> None:
    rows = summary_rows(results)
    columns = ["kind", "faiss", "vectors", "build_s", "build_s_1M", "mem_B/vec", "disk_B/vec", "open_ms",
               "open_mmap_ms", "p50_ms", "p95_ms", "qps", "R@10_raw", "R@10", "R@10_reduced", "date"]  # fmt: skip
    print(f"\n{n:,} vectors x 1280-d, {args.queries} queries, Recall@10 against brute force (after exact re-scoring)")
    print(table(rows, columns))
    recommended = recommend(results, n)
    print("\nfastest setting per recall target (full size first, else the subset-measured kinds):")
    for target, row in recommended.items():
        tunable = {k: row[k] for k in ("nprobe", "ef_search") if k in row}
        print(f"  {target}: {row['kind']} ({row['faiss']}) {tunable}: p50 {row['p50_ms']:.2f} ms, "
              f"Recall@10 {row['recall']:.3f}, {row['note']}")  # fmt: skip
    reduced = reduced_summary(results)
    if reduced:
        print("\nreduced kinds: Recall@10 of their own top 10 against exact search in the reduced space and in")
        print("the full one; queries/s against exact search (batched) in each space")
        print(table(reduced, list(reduced[0])))
    grocery = getattr(args, "reduction_grocery", None)
    if grocery:
        print(f"\nthe retrieval cost of the reduction, {grocery['protocol']}")
        print(table(grocery["rows"], ["reduction", "dim", "mAP", "mAP_change", "R@1", "R1_change", "R@10"]))


if __name__ == "__main__":
    main()
