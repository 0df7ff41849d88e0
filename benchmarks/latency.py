"""Query latency: cold start of `lookalike search`, warm whole-image and localised queries, ORT vs torch.

Builds the sample catalogue's index twice in a temporary folder (whole-image; localised with
features "both"), plus copies of both that run the embedder on torch (`embed.runtime = "torch"`).
Then, every measurement interleaved between its variants (A/B/A/B...) so that a change in the
machine's load hits them alike:

1. cold start: `python -m lookalike.cli search PHOTO --index I --json` in a fresh process, wall
   time measured from outside, split into interpreter start, import (the CLI and the library),
   opening the index (faiss, SQLite), `load` (model files, fingerprints, sessions) and the query;
2. warm queries, p50/p95 of the whole query and of each stage, whole-image and localised, ORT and
   torch; localised also with the segmenter and the whole-image embedding run one after the other
   (the featurizer's thread pool off);
3. one image through the embedder alone on one intra-op thread, onnxruntime against torch;
4. indexing rate: `Engine.add` of grocery-store photos (240 evenly spaced train photos from the
   shared data; the sample catalogue when it is absent) into a fresh index, whole-image and
   localised with each segmenter (precision, size, runtime), rounds interleaved; images per second,
   median of the rounds.

Prints tables and writes `benchmarks/results/latency.json` and `latency.md`, with the load average
before and after (figures from a busy machine are not comparable). `--quick` is a smoke run.

    .venv/bin/python benchmarks/latency.py            # on a quiet machine
    .venv/bin/python benchmarks/latency.py --quick --no-save
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS, ROOT, machine, save, table

TARGETS = {"cold_wall_s": 1.5, "localised_p50_ms": 100.0, "localised_p95_ms": 130.0, "localised_index_per_s": 15.0}
# segmenters measured beside the default ("auto": bf16 where OpenVINO computes bf16, else fp32; 224 px):
# name -> localize settings; "-ort" runs on onnxruntime (the default before OpenVINO), others on OpenVINO
OTHER_SEGMENTERS: dict[str, dict[str, Any]] = {
    "fp32-224": {"localize.precision": "fp32", "localize.input_size": 224},
    "fp32-224-ort": {"localize.precision": "fp32", "localize.input_size": 224, "localize.runtime": "onnx"},
    "bf16-224": {"localize.precision": "bf16", "localize.input_size": 224},
    "bf16-320": {"localize.precision": "bf16", "localize.input_size": 320},
}

CHILD = """
import io, json, sys, time
t0 = time.perf_counter()
from lookalike.cli import app
import lookalike.pipeline  # imported by the command itself; counted as import here
t1 = time.perf_counter()
out = io.StringIO()
real, sys.stdout = sys.stdout, out
try:
    app(["search", sys.argv[1], "--index", sys.argv[2], "--json"], standalone_mode=False)
finally:
    sys.stdout = real
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "command": t2 - t1, "timings_ms": json.loads(out.getvalue())["timings_ms"],
                  "torch_imported": "torch" in sys.modules}))
"""


def sample_folder() -> Path:
    for candidate in (ROOT / "src" / "lookalike" / "samples" / "grocery", ROOT / "samples" / "grocery"):
        if (candidate / "catalog").is_dir():
            return candidate
    raise SystemExit("no sample catalogue found")


def localised_settings(segmenter: str | None = None) -> Any:
    from lookalike import Settings

    changes: dict[str, Any] = {"localize.enabled": True, "localize.features": "both"}
    changes.update(OTHER_SEGMENTERS[segmenter] if segmenter else {})
    return Settings().replace(**changes)


def default_segmenter() -> str:
    """The default's precision-size on this machine, as the index records it."""
    from lookalike.localize import resolve_settings
    from lookalike.settings import LocalizeSettings

    resolved = resolve_settings(LocalizeSettings())
    return f"{resolved.precision}-{resolved.input_size}"


def other_segmenters() -> list[str]:
    return [name for name in OTHER_SEGMENTERS if name != default_segmenter()]


def build_indexes(scratch: Path, samples: Path) -> dict[str, Path]:
    """{"whole-onnx", "whole-torch", "localised-onnx", "localised-torch", "localised-onnx-<segmenter>"...}:
    index folders; the localised ones without a segmenter name use the default segmenter."""
    import shutil

    from lookalike import Engine, Settings

    made = {}
    for mode, settings in (("whole", Settings()), ("localised", localised_settings())):
        path = scratch / f"{mode}-onnx"
        with Engine.create(path, settings) as engine:
            engine.add([samples / "catalog"])
        torch_copy = scratch / f"{mode}-torch"
        shutil.copytree(path, torch_copy)
        saved = json.loads((torch_copy / "settings.json").read_text())
        saved["embed"]["runtime"] = "torch"
        (torch_copy / "settings.json").write_text(json.dumps(saved, indent=2))
        made[f"{mode}-onnx"], made[f"{mode}-torch"] = path, torch_copy
    # other segmenters: eth80-dev mask IoU and grocery retrieval of each in docs/localisation.md and speed.md
    for segmenter in other_segmenters():
        path = scratch / f"localised-onnx-{segmenter}"
        with Engine.create(path, localised_settings(segmenter)) as engine:
            engine.add([samples / "catalog"])
        made[path.name] = path
    return made


def indexing_photos(samples: Path, count: int) -> tuple[list[Path], str]:
    """`count` evenly spaced grocery-store train photos, or the sample catalogue without the shared data."""
    from lookalike.evaluate.datasets import DatasetNotFound, grocery_store_entries, require_dataset

    try:
        root = require_dataset("grocery-store")
    except DatasetNotFound:
        photos = sorted(path for path in (samples / "catalog").rglob("*.jpg"))
        return photos, f"the sample catalogue ({len(photos)} photos)"
    train = grocery_store_entries(root, "train")
    step = max(1, len(train) // count)
    photos = [entry.path for entry in train[::step][:count]]
    return photos, f"{len(photos)} grocery-store train photos"


def indexing_rate(scratch: Path, photos: list[Path], rounds: int) -> list[dict[str, Any]]:
    """Images per second of `Engine.add` into a fresh index, per variant, rounds interleaved."""
    from lookalike import Engine, Settings

    variants = {"whole-onnx": Settings(), "localised-onnx": localised_settings()}
    variants.update({f"localised-onnx-{name}": localised_settings(name) for name in other_segmenters()})
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds):
        for name, settings in variants.items():
            path = scratch / f"add-{name}-{round_number}"
            with Engine.create(path, settings) as engine:
                engine.featurizer.load_models()  # model loading is the cold start's, not the indexing rate's
                report = engine.add(photos)
            rates[name].append(report.embedded / report.seconds)
    return [
        {"variant": name, "images_per_s": float(np.median(values)), "rounds": [round(v, 2) for v in values]}
        for name, values in rates.items()
    ]


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) * 1000
    return {"p50_ms": float(np.percentile(array, 50)), "p95_ms": float(np.percentile(array, 95)), "n": len(values)}


def cold_start(indexes: dict[str, Path], photo: Path, repeats: int) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    names = ["whole-onnx", "whole-torch", "localised-onnx", "localised-torch"]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    torch_seen: dict[str, bool] = {}
    for _ in range(repeats):
        for name in names:  # interleaved
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(photo), str(indexes[name])], capture_output=True, text=True, env=env
            )
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"cold search on {name} failed: {done.stderr[-2000:]}")
            child = json.loads(done.stdout.strip().splitlines()[-1])
            stages = child["timings_ms"]
            load = stages.get("load", 0.0) / 1000
            query = stages["total"] / 1000 - load
            runs[name].append({
                "wall": wall,
                "interpreter": wall - child["import"] - child["command"],
                "import": child["import"],
                "open": child["command"] - stages["total"] / 1000,
                "load": load,
                "query": query,
            })  # fmt: skip
            torch_seen[name] = child["torch_imported"]
    rows = []
    for name in names:
        row: dict[str, Any] = {"index": name, "torch_imported": torch_seen[name]}
        for part in ("wall", "interpreter", "import", "open", "load", "query"):
            row[f"{part}_s"] = float(np.median([run[part] for run in runs[name]]))
        row["runs"] = len(runs[name])
        rows.append(row)
    return rows


def warm_queries(indexes: dict[str, Path], queries: list[Path], rounds: int) -> list[dict[str, Any]]:
    from lookalike import Engine

    variants = [
        ("whole-onnx", "whole-onnx", True),
        ("whole-torch", "whole-torch", True),
        ("localised-onnx", "localised-onnx", True),
        ("localised-onnx-sequential", "localised-onnx", False),
        ("localised-torch", "localised-torch", True),
    ]
    variants[4:4] = [(f"localised-onnx-{name}", f"localised-onnx-{name}", True) for name in other_segmenters()]
    engines = {name: Engine.open(indexes[name]) for name in {index for _, index, _ in variants}}
    for engine in engines.values():
        for query in queries[:3]:  # warm-up: models and the vector index load here
            engine.search(query, k=5)
    totals: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    stages: dict[str, dict[str, list[float]]] = {label: {} for label, _, _ in variants}
    for _ in range(rounds):
        for query in queries:
            for label, index, concurrent in variants:  # interleaved A/B
                engine = engines[index]
                engine.featurizer.concurrent = concurrent
                result = engine.search(query, k=5)
                totals[label].append(result.timings["total"])
                for stage, seconds in result.timings.items():
                    if stage != "total":
                        stages[label].setdefault(stage, []).append(seconds)
    for engine in engines.values():
        engine.close()
    rows = []
    for label, index, _ in variants:
        row: dict[str, Any] = {
            "variant": label,
            "runtime": engines[index].settings.embed.runtime,
            **percentiles(totals[label]),
        }
        row["stages"] = {stage: percentiles(values) for stage, values in stages[label].items()}
        rows.append(row)
    return rows


def single_image(photo: Path, repeats: int) -> list[dict[str, Any]]:
    """One image through the embedder alone, one intra-op thread: onnxruntime against torch."""
    import torch
    from PIL import Image

    from lookalike.embed import create_embedder
    from lookalike.embed.runtime import OrtEmbedder, export_embedder
    from lookalike.settings import EmbedSettings

    image = [Image.open(photo).convert("RGB")]
    rows = []
    for model in ("efficientnet-lite0", "efficientnet-lite2"):
        settings = EmbedSettings(model=model)
        torch_embedder = create_embedder(settings)
        onnx = OrtEmbedder(export_embedder(torch_embedder), settings, threads=1)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            times: dict[str, list[float]] = {"onnx": [], "torch": []}
            for embedder in (onnx, torch_embedder):
                embedder.embed(image)  # warm-up
            for _ in range(repeats):
                for name, embedder in (("onnx", onnx), ("torch", torch_embedder)):
                    started = time.perf_counter()
                    embedder.embed(image)
                    times[name].append(time.perf_counter() - started)
        finally:
            torch.set_num_threads(before)
        for name, values in times.items():
            rows.append({"model": model, "runtime": name, "threads": 1, **percentiles(values)})
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Query latency (benchmarks/latency.py)",
        "",
        f"{payload['date']}, {payload['machine']}, load average before {payload['load_before']}, "
        f"after {payload['load_after']}{' (quick smoke run)' if payload['quick'] else ''}.",
        "",
        "## Cold start: one `lookalike search` process (medians, seconds)",
        "",
        "| index | wall | interpreter | import | open | load | query | torch imported |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["cold"]:
        lines.append(
            f"| {r['index']} | {r['wall_s']:.3f} | {r['interpreter_s']:.3f} | {r['import_s']:.3f} | {r['open_s']:.3f} "
            f"| {r['load_s']:.3f} | {r['query_s']:.3f} | {r['torch_imported']} |"
        )
    lines += ["", "## Warm queries (ms)", "", "| variant | p50 | p95 | stages p50 |", "|---|---|---|---|"]
    for r in payload["warm"]:
        stages = ", ".join(f"{name} {value['p50_ms']:.1f}" for name, value in r["stages"].items())
        lines.append(f"| {r['variant']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {stages} |")
    lines += ["", "## One image, embedder alone, 1 thread (ms)", ""]
    lines += ["| model | runtime | p50 | p95 |", "|---|---|---|---|"]
    for r in payload["single_image"]:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    lines += ["", f"## Indexing: `Engine.add` of {payload['indexing']['photos']} (images/s, median of rounds)", ""]
    lines += ["| variant | images/s | rounds |", "|---|---|---|"]
    for r in payload["indexing"]["rows"]:
        lines.append(f"| {r['variant']} | {r['images_per_s']:.1f} | {r['rounds']} |")
    lines += ["", f"Targets (issue 19): {payload['targets']}"]
    lines += [
        "",
        f"The localised variants without a segmenter name run the default: {payload['default_segmenter']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over the sample queries (warm)")
    parser.add_argument("--cold", type=int, default=5, help="fresh processes per index (cold start)")
    parser.add_argument("--single", type=int, default=50, help="repetitions of the one-image comparison")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round over 4 queries, 1 cold start each")
    parser.add_argument("--index-photos", type=int, default=240, help="photos indexed per indexing round")
    parser.add_argument("--index-rounds", type=int, default=2, help="indexing rounds (interleaved variants)")
    parser.add_argument("--no-save", action="store_true", help="print only; write nothing to benchmarks/results")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.cold, args.single, args.index_photos, args.index_rounds = 1, 1, 3, 16, 1

    samples = sample_folder()
    queries = sorted((samples / "queries").iterdir())
    if args.quick:
        queries = queries[:4]
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as scratch:
        indexes = build_indexes(Path(scratch), samples)
        cold = cold_start(indexes, queries[0], args.cold)
        warm = warm_queries(indexes, queries, args.rounds)
        photos, indexed = indexing_photos(samples, args.index_photos)
        indexing = indexing_rate(Path(scratch), photos, args.index_rounds)
    single = single_image(queries[0], args.single)
    payload = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "quick": args.quick,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "targets": TARGETS,
        "default_segmenter": default_segmenter(),
        "cold": cold,
        "warm": warm,
        "single_image": single,
        "indexing": {"photos": indexed, "rows": indexing},
    }
    cold_columns = ["index", "wall_s", "interpreter_s", "import_s", "open_s", "load_s", "query_s", "torch_imported"]
    print(table(cold, cold_columns))
    print()
    print(
        table(
            [{k: v for k, v in r.items() if k != "stages"} for r in warm],
            ["variant", "runtime", "p50_ms", "p95_ms", "n"],
        )
    )
    for r in warm:
        stages = ", ".join(f"{s} {v['p50_ms']:.1f}/{v['p95_ms']:.1f}" for s, v in r["stages"].items())
        print(f"  {r['variant']} p50/p95 ms: {stages}")
    print()
    print(table(single, ["model", "runtime", "threads", "p50_ms", "p95_ms", "n"]))
    print(f"\nindexing {indexed}\n" + table(indexing, ["variant", "images_per_s", "rounds"]))
    print(f"load average before {load_before}, after {payload['load_after']}")
    if not args.no_save:
        path = save("latency", {k: v for k, v in payload.items() if k not in ("date", "machine")})
        (RESULTS / "latency.md").write_text(markdown(payload))
        print(f"wrote {path} and {RESULTS / 'latency.md'}")


if __name__ == "__main__":
    main()
