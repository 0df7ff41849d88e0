"""Catalogue health, measured: near-duplicate detection against imagededup, the audit on planted
mislabels, and the cost of a full pass.

Three parts (all by default), written into benchmarks/results/health.json (+ health.md, health_pr.png):

- `pairs`: pairs built from real photos (grocery-store train images and eth80-dev views). Positives:
  a photo and an edited copy of it (resize, JPEG re-compression, crop 5-20%, flip, small rotation,
  colour shift, watermark text, screenshot with a border). Negatives: the photo (and one edited copy)
  against another photo of the same product / another view of the same object, another product of
  the same category / another object of the same category, and a random other image. Precision,
  recall, F1 and the PR curve for lookalike's vectors (cosine) and imagededup's PHash (Hamming), on
  the same pairs; imagededup's CNN method when it can run here.
- `audit`: grocery-store train images indexed (category = coarse class, product = fine class), the
  category of 2% flipped at random (`Engine.set_category`, the stored vectors kept); the fraction of
  them that `audit` ranks in its top 5% (recall@k, precision@k) against a random ranking.
- `cost`: a full duplicates pass and a full audit on synthetic vectors (the index's real search).

    .venv/bin/python benchmarks/health.py --part all
    .venv/bin/python benchmarks/health.py --part pairs --grocery 80 --eth80 40
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from _common import RESULTS, require, save, table

TARGET_PRECISION = 0.98  # the default threshold: the lowest whose measured precision reaches this
CACHE = RESULTS.parent / "cache"  # git-ignored: pair scores, so that a re-run skips the embedding
THRESHOLDS = np.round(np.arange(0.70, 1.0001, 0.005), 3)


# -- edits that make a true duplicate
def resize(image: Image.Image, rng: random.Random) -> Image.Image:
    scale = rng.uniform(0.4, 0.7)
    return image.resize((max(8, int(image.width * scale)), max(8, int(image.height * scale))), Image.BICUBIC)


def jpeg(image: Image.Image, rng: random.Random) -> Image.Image:
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=rng.randint(15, 35))
    return Image.open(BytesIO(buffer.getvalue())).convert("RGB")


def crop(image: Image.Image, rng: random.Random) -> Image.Image:
    cut = rng.uniform(0.05, 0.20)  # fraction of each side removed in all
    width, height = int(image.width * (1 - cut)), int(image.height * (1 - cut))
    left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
    return image.crop((left, top, left + width, top + height))


def flip(image: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.mirror(image)


def rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    angle = rng.choice([-1, 1]) * rng.uniform(3, 10)
    return image.rotate(angle, resample=Image.BICUBIC, fillcolor=(255, 255, 255))


def colour(image: Image.Image, rng: random.Random) -> Image.Image:
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.5))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))


def watermark(image: Image.Image, rng: random.Random) -> Image.Image:
    marked = image.convert("RGBA")
    layer = Image.new("RGBA", marked.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(10, image.width // 12))
    text = rng.choice(["© SHOP 2024", "SAMPLE", "lookalike.example"])
    for row in range(2):
        y = int(image.height * (0.3 + 0.35 * row))
        draw.text((int(image.width * 0.1), y), text, fill=(255, 255, 255, 150), font=font)
    return Image.alpha_composite(marked, layer).convert("RGB")


def screenshot(image: Image.Image, rng: random.Random) -> Image.Image:
    """The photo shown in a window: grey border, a title bar, scaled."""
    border, bar = int(image.width * rng.uniform(0.05, 0.15)), int(image.height * 0.08)
    canvas = Image.new("RGB", (image.width + 2 * border, image.height + 2 * border + bar), (235, 235, 235))
    ImageDraw.Draw(canvas).rectangle((0, 0, canvas.width, bar), fill=(60, 60, 70))
    canvas.paste(image, (border, bar + border))
    return canvas.resize((int(canvas.width * 0.8), int(canvas.height * 0.8)), Image.BILINEAR)


EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "resize": resize,
    "jpeg": jpeg,
    "crop": crop,
    "flip": flip,
    "rotate": rotate,
    "colour": colour,
    "watermark": watermark,
    "screenshot": screenshot,
}


# -- the pairs
def grocery_sources(root: Path, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Train photos with their negatives: same product, same category other product, random."""
    lines = [line.split(",")[0].strip() for line in (root / "dataset" / "train.txt").read_text().splitlines() if line]
    paths = [root / "dataset" / line for line in lines]
    product = {p: p.parent.name for p in paths}
    category = {p: p.parent.parent.name for p in paths}
    by_product: dict[str, list[Path]] = {}
    for p in paths:
        by_product.setdefault(product[p], []).append(p)
    sources = []
    for p in rng.sample(paths, count):
        same = [q for q in by_product[product[p]] if q != p]
        kin = [q for q in paths if category[q] == category[p] and product[q] != product[p]]
        other = [q for q in paths if category[q] != category[p]]
        negatives = {"same product, other photo": same, "same category, other product": kin, "random": other}
        sources.append({"path": p, "set": "grocery", "negatives": _pick(negatives, rng)})
    return sources


def eth80_sources(root: Path, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Object views with their negatives: another view of the object, another object of the category, random."""
    paths = sorted(p for p in root.glob("*/*/*.jpg"))
    obj = {p: p.parent.name for p in paths}
    category = {p: p.parent.parent.name for p in paths}
    sources = []
    for p in rng.sample(paths, count):
        views = [q for q in paths if obj[q] == obj[p] and q != p]
        kin = [q for q in paths if category[q] == category[p] and obj[q] != obj[p]]
        other = [q for q in paths if category[q] != category[p]]
        negatives = {"same object, other view": views, "same category, other object": kin, "random": other}
        sources.append({"path": p, "set": "eth80", "negatives": _pick(negatives, rng)})
    return sources


def _pick(negatives: dict[str, list[Path]], rng: random.Random) -> dict[str, Path]:
    return {kind: rng.choice(choices) for kind, choices in negatives.items() if choices}


def build_pairs(sources: list[dict[str, Any]], rng: random.Random) -> tuple[list[Image.Image], list[dict[str, Any]]]:
    """The images to score (each once) and the pairs as indexes into them, labelled."""
    images: list[Image.Image] = []
    index: dict[Path, int] = {}

    def add(image: Image.Image, key: Path | None = None) -> int:
        if key is not None and key in index:
            return index[key]
        images.append(image)
        if key is not None:
            index[key] = len(images) - 1
        return len(images) - 1

    pairs = []
    for source in sources:
        original = Image.open(source["path"]).convert("RGB")
        a = add(original, source["path"])
        copies = {}
        for name, edit in EDITS.items():
            copies[name] = add(edit(original, rng))
            pairs.append({"a": a, "b": copies[name], "duplicate": True, "kind": name, "set": source["set"]})
        for kind, path in source["negatives"].items():
            b = add(Image.open(path).convert("RGB"), path)
            edited = copies[rng.choice(list(EDITS))]
            pairs.append({"a": a, "b": b, "duplicate": False, "kind": kind, "set": source["set"]})
            pairs.append({"a": edited, "b": b, "duplicate": False, "kind": kind, "set": source["set"]})
    return images, pairs


# -- scores
def lookalike_scores(images: list[Image.Image], pairs: list[dict[str, Any]], folder: Path) -> np.ndarray:
    from lookalike import Engine, Settings

    with Engine.create(folder / "pairs.index", Settings()) as engine:
        vectors = np.concatenate([engine.embed(images[i : i + 32]) for i in range(0, len(images), 32)])
    return np.array([float(vectors[p["a"]] @ vectors[p["b"]]) for p in pairs])


def imagededup_phash() -> Any:
    """imagededup's PHash class, imported without its CNN half (which needs torchvision)."""
    import importlib.util

    spec = importlib.util.find_spec("imagededup")
    if spec is None or spec.origin is None:
        raise ImportError("imagededup is not installed (pip install imagededup --no-deps, then PyWavelets)")
    root = Path(spec.origin).parent
    for sub in ("methods", "utils"):  # their __init__ imports the CNN code (torch + torchvision)
        if f"imagededup.{sub}" not in sys.modules:
            module = types.ModuleType(f"imagededup.{sub}")
            module.__path__ = [str(root / sub)]
            sys.modules[module.__name__] = module
    from imagededup.methods.hashing import PHash

    return PHash(verbose=False)


def phash_scores(images: list[Image.Image], pairs: list[dict[str, Any]]) -> np.ndarray:
    """1 - Hamming distance / 64 of imagededup's 64-bit perceptual hashes."""
    hasher = imagededup_phash()
    hashes = [int(hasher.encode_image(image_array=np.asarray(image)), 16) for image in images]
    return np.array([1 - bin(hashes[p["a"]] ^ hashes[p["b"]]).count("1") / 64 for p in pairs])


def imagededup_cnn_status() -> str:
    try:
        from imagededup.methods.cnn import CNN  # noqa: F401
    except Exception as exc:  # what stops it here: a missing package or weights it must download
        return f"not run: {type(exc).__name__}: {exc}"
    return "importable (not run: its MobileNetV3 weights are downloaded on first use, and this machine is offline)"


def curve(scores: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> list[dict[str, float]]:
    rows = []
    for threshold in thresholds:
        said = scores >= threshold - 1e-9
        tp, fp = int((said & truth).sum()), int((said & ~truth).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / int(truth.sum())
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"threshold": float(threshold), "precision": precision, "recall": recall, "f1": f1})
    return rows


def summary(name: str, scores: np.ndarray, pairs: list[dict[str, Any]], thresholds: np.ndarray) -> dict[str, Any]:
    truth = np.array([p["duplicate"] for p in pairs])
    points = curve(scores, truth, thresholds)
    best = max(points, key=lambda row: row["f1"])
    meeting = [row for row in points if row["precision"] >= TARGET_PRECISION and row["recall"] > 0]
    calibrated = min(meeting, key=lambda row: row["threshold"]) if meeting else best
    said = scores >= calibrated["threshold"] - 1e-9
    by_kind = {}
    for kind in sorted({p["kind"] for p in pairs}):
        rows = [n for n, p in enumerate(pairs) if p["kind"] == kind]
        rate = float(said[rows].mean())
        by_kind[kind] = {"pairs": len(rows), "said duplicate": round(rate, 3), "duplicate": pairs[rows[0]]["duplicate"]}
    return {
        "method": name,
        "average_precision": average_precision(scores, truth),
        "best_f1": best,
        "at_target_precision": calibrated,
        "by_kind_at_target": by_kind,
        "curve": points,
    }


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = truth[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return round(float((precision_at * hits).sum() / hits.sum()), 4)


def pairs_part(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sources = grocery_sources(require("grocery-store"), args.grocery, rng)
    sources += eth80_sources(require("eth80-dev"), args.eth80, rng)
    images, pairs = build_pairs(sources, rng)
    print(f"{len(pairs)} pairs ({sum(p['duplicate'] for p in pairs)} duplicates) over {len(images)} images")
    cache = CACHE / f"health-pairs-{args.seed}-{args.grocery}-{args.eth80}.npy"  # the slow part: embedding
    if cache.exists():
        ours = np.load(cache)
    else:
        started = time.perf_counter()
        ours = lookalike_scores(images, pairs, folder)
        print(f"lookalike vectors: {time.perf_counter() - started:.0f} s")
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(cache, ours)
    results = [summary("lookalike (efficientnet-lite0, pretrained)", ours, pairs, THRESHOLDS)]
    try:
        theirs = phash_scores(images, pairs)
        results.append(summary("imagededup PHash", theirs, pairs, np.round(np.arange(0, 65) / 64, 4)))
        default = curve(theirs, np.array([p["duplicate"] for p in pairs]), np.array([1 - 10 / 64]))[0]
        results[-1]["imagededup_default_distance_10"] = default
    except ImportError as exc:
        results.append({"method": "imagededup PHash", "skipped": str(exc)})
    return {
        "pairs": len(pairs),
        "duplicates": sum(p["duplicate"] for p in pairs),
        "images": len(images),
        "sources": {"grocery": args.grocery, "eth80": args.eth80},
        "edits": list(EDITS),
        "cnn": imagededup_cnn_status(),
        "fine_tuned": "not measured (a fine-tuned head needs a training run per data set; not cheap here)",
        "methods": results,
    }


# -- audit on planted mislabels
def audit_part(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from lookalike import Engine, Settings
    from lookalike.health import AuditSettings, audit
    from lookalike.io.catalog import CatalogEntry

    root = require("grocery-store")
    lines = [line.split(",")[0].strip() for line in (root / "dataset" / "train.txt").read_text().splitlines() if line]
    rng = random.Random(args.seed)
    chosen = sorted(rng.sample(lines, min(args.audit_images, len(lines))))
    entries = [
        CatalogEntry(root / "dataset" / line, Path(line).parent.parent.name, Path(line).parent.name) for line in chosen
    ]
    base = folder / "audit.index"
    started = time.perf_counter()
    with Engine.create(base, Settings()) as engine:
        engine.add(entries)
    print(f"indexed {len(entries)} grocery train images in {time.perf_counter() - started:.0f} s")
    runs = []
    for seed in range(args.audit_repeats):
        runs.append(_one_audit(base, folder / f"audit-{seed}.index", seed, AuditSettings(), audit))
        print(f"audit run {seed}: {runs[-1]}")
    mean = {key: round(float(np.mean([run[key] for run in runs])), 4) for key in runs[0] if key != "seed"}
    return {"images": len(entries), "flipped_fraction": 0.02, "top_fraction": 0.05, "runs": runs, "mean": mean}


def _one_audit(base: Path, copy: Path, seed: int, settings: Any, audit: Any) -> dict[str, Any]:
    from lookalike import Engine

    shutil.copytree(base, copy)
    rng = random.Random(1000 + seed)
    with Engine.open(copy) as engine:
        items = engine.items()
        categories = sorted({item.category for item in items if item.category})
        flipped_old = rng.sample(items, max(1, round(0.02 * len(items))))
        flipped = set()
        for item in flipped_old:
            wrong = rng.choice([c for c in categories if c != item.category])
            flipped |= set(engine.set_category([item.id], wrong).moved.values())
        report = audit(engine, settings)
    ranked = report.ranked()
    k = max(1, round(0.05 * len(ranked)))
    found = len(flipped & set(ranked[:k]))
    flagged = {s.id for s in report.mislabelled if s.label == "category"}
    shutil.rmtree(copy)
    return {
        "seed": seed,
        "flipped": len(flipped),
        "k": k,
        "recall_at_k": round(found / len(flipped), 4),
        "precision_at_k": round(found / k, 4),
        "random_recall_at_k": round(k / len(ranked), 4),
        "random_precision_at_k": round(len(flipped) / len(ranked), 4),
        "flagged": len(flagged),
        "flagged_recall": round(len(flagged & flipped) / len(flipped), 4),
        "flagged_precision": round(len(flagged & flipped) / len(flagged), 4) if flagged else None,
        "audit_seconds": report.seconds,
    }


# -- the cost of a full pass
def cost_part(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """A full duplicates pass, a full audit, and an update after 1% more images, on random unit vectors."""
    from lookalike import Engine, Settings
    from lookalike.health import AuditSettings, DuplicateSettings, audit, find_duplicates, update_duplicates

    rows = []
    for size in args.cost_sizes:
        path = folder / f"synthetic-{size}.index"
        with Engine.create(path, Settings().replace(**{"index.kind": args.cost_kind})) as engine:
            _fill(engine, 0, size)
            started = time.perf_counter()
            report = find_duplicates(engine, DuplicateSettings())
            duplicates = time.perf_counter() - started
            started = time.perf_counter()
            audit(engine, AuditSettings())
            audited = time.perf_counter() - started
            _fill(engine, size, size // 100)
            started = time.perf_counter()
            update_duplicates(engine, report)
            updated = time.perf_counter() - started
        shutil.rmtree(path)
        row = {"images": size, "dim": engine.catalog.dim, "kind": args.cost_kind, "duplicates_s": round(duplicates, 1)}
        row |= {"audit_s": round(audited, 1), "update_1pct_s": round(updated, 2)}
        row |= {"load_average": _load()[0]}
        rows.append(row)
        print(row)
    return rows


def _fill(engine: Any, start: int, count: int) -> None:
    """`count` random unit vectors in 10 categories, committed as catalogue images (no files)."""
    from lookalike.index import NewItem

    for first in range(start, start + count, 10_000):
        size = min(10_000, start + count - first)
        vectors = np.random.default_rng(first).standard_normal((size, engine.catalog.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        items = [
            NewItem(f"/synthetic/c{(first + n) % 10}/{first + n}.jpg", f"c{(first + n) % 10}", f"{first + n:064x}",
                    vectors[n])
            for n in range(size)
        ]  # fmt: skip
        engine.catalog.commit(items, {})


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: figures are read with them)."""
    return [round(value, 2) for value in os.getloadavg()]


def plot(methods: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.2, 3.2), dpi=80)
    for method in methods:
        if "curve" in method:
            points = method["curve"]
            axes.plot([p["recall"] for p in points], [p["precision"] for p in points], label=method["method"])
            chosen = method["at_target_precision"]
            axes.plot([chosen["recall"]], [chosen["precision"]], "o", color=axes.lines[-1].get_color())
    axes.set(xlabel="recall", ylabel="precision", title="near-duplicate pairs", ylim=(0.4, 1.02), xlim=(0, 1.02))
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    loads = {part: payload[part].get("load_average") for part in ("pairs", "audit") if part in payload}
    lines = ["# Catalogue health benchmark", "", f"Machine: {payload['machine']}; load average (1, 5, 15 min) "
             f"after each part: {loads}; the cost rows carry their own.", ""]  # fmt: skip
    if "pairs" in payload:
        pairs = payload["pairs"]
        lines += [f"## Near-duplicate pairs ({pairs['pairs']} pairs, {pairs['duplicates']} duplicates)", ""]
        rows = []
        for method in pairs["methods"]:
            if "curve" not in method:
                rows.append({"method": method["method"], "note": method.get("skipped")})
                continue
            at, best = method["at_target_precision"], method["best_f1"]
            rows.append({"method": method["method"], "AP": method["average_precision"],
                         f"threshold@P>={TARGET_PRECISION}": at["threshold"], "P": at["precision"], "R": at["recall"],
                         "F1": at["f1"], "best F1": best["f1"], "best-F1 threshold": best["threshold"]})  # fmt: skip
        columns = ["method", "AP", f"threshold@P>={TARGET_PRECISION}", "P", "R", "F1", "best F1", "best-F1 threshold"]
        lines += ["```", table(rows, columns), "```", "", f"imagededup CNN: {pairs['cnn']}", ""]
        for method in pairs["methods"]:
            if "by_kind_at_target" in method:
                title = f"### {method['method']}: share said duplicate per kind at its P>={TARGET_PRECISION} threshold"
                lines += [title, ""]
                kinds = [{"kind": k, **v} for k, v in method["by_kind_at_target"].items()]
                lines += ["```", table(kinds, ["kind", "duplicate", "pairs", "said duplicate"]), "```", ""]
    if "audit" in payload:
        mean = payload["audit"]["mean"]
        lines += [f"## Audit: 2% of {payload['audit']['images']} grocery train images get a wrong category", ""]
        lines += ["```", table(payload["audit"]["runs"], list(payload["audit"]["runs"][0])), "```", ""]
        lines += [f"mean: {mean}", ""]
    if "cost" in payload:
        lines += ["## Full pass on synthetic vectors", "", "```"]
        lines += [table(payload["cost"], list(payload["cost"][0])), "```", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "pairs", "audit", "cost"], default="all")
    parser.add_argument("--grocery", type=int, default=80, help="grocery-store source photos")
    parser.add_argument("--eth80", type=int, default=40, help="eth80-dev source views")
    parser.add_argument("--audit-images", type=int, default=1000)
    parser.add_argument("--audit-repeats", type=int, default=3)
    parser.add_argument("--cost-sizes", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument("--cost-kind", default="flat", help="the synthetic index's kind (flat, hnsw, ...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    payload: dict[str, Any] = {"load_average_start": round(os.getloadavg()[0], 2)}
    previous = RESULTS / "health.json"
    if args.part != "all" and previous.exists():  # keep the other parts' figures
        import json

        kept = json.loads(previous.read_text())
        payload |= {key: kept[key] for key in ("pairs", "audit", "cost") if key in kept}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.part in ("all", "pairs"):
            payload["pairs"] = {**pairs_part(args, folder), "load_average": _load()}
        if args.part in ("all", "audit"):
            payload["audit"] = {**audit_part(args, folder), "load_average": _load()}
        if args.part in ("all", "cost"):
            rows = cost_part(args, folder)
            done = {(row["images"], row["kind"]) for row in rows}
            payload["cost"] = [r for r in payload.get("cost", []) if (r["images"], r["kind"]) not in done] + rows
    payload["load_average_end"] = round(os.getloadavg()[0], 2)
    path = save("health", payload)
    if "pairs" in payload:
        plot(payload["pairs"]["methods"], RESULTS / "health_pr.png")
        for method in payload["pairs"]["methods"]:
            if "at_target_precision" in method:
                at = method["at_target_precision"]
                print(method["method"], "AP", method["average_precision"], f"at P>={TARGET_PRECISION}:", at)
    write_markdown({**payload, "machine": __import__("_common").machine()}, RESULTS / "health.md")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
