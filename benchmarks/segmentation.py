"""Mask quality and speed of the localisation stage, per speed configuration (input size, runtime, precision).

- eth80-dev: IoU of the predicted main-object mask against the ground truth, without and with
  matting, on every `--step`-th image of the 1,640 (sorted by path; step 8 = 205 images, about
  5 views of each of the 40 objects).
- grocery samples (src/lookalike/samples/grocery, 90 shop photos, no ground truth): IoU of each configuration's
  mask against the fp32 320 mask (the model's native size), for the 45 packaged products held in
  a hand (milk, juice, oatghurt), where 320's masks look right, and for the 45 photos of loose
  produce (piles of apples, tomatoes...), which have no single salient object. Plain backgrounds
  hide what a smaller input costs on shelves.
- time per image in ms: the segmenter alone (preprocess, model, resize back) and the whole
  `localize` without matting, p50 and best of 16 images x `--rounds`, configurations interleaved;
  the matting step's p50 over the eth80 images. The 2-core CPU may be shared with other work:
  the best time is the figure to compare with the budget, and the load average is recorded.

Usage: .venv/bin/python benchmarks/segmentation.py [--step 8] [--configs fp32-320,int8-224,bf16-320]
Writes benchmarks/results/segmentation.json (`--name` picks another file) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _common import save, table
from lookalike.localize import Localizer, SaliencyMap, Segmenter, create_segmenter
from lookalike.samples import sample_dir
from lookalike.settings import LocalizeSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parents[1].parent / "shared/data/eth80-dev"
SAMPLES = sample_dir()
REFERENCE = "fp32-320"
CONFIGS = "fp32-320,fp32-256,fp32-224,fp32-192,fp32-160,int8-256,int8-224,ov32-224,bf16-224,bf16-256,bf16-320"
MATTING = "fp32-224"
PACKAGED = ("Milk", "Juice", "Oatghurt")


class _Memo:
    """Answers a second `predict` of the same image from memory, so matting reuses the saliency."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.name = segmenter.name
        self.segmenter = segmenter
        self._last: tuple[Image.Image, SaliencyMap] | None = None  # holding the image keeps `is` honest

    def predict(self, image: Image.Image) -> SaliencyMap:
        if self._last is None or self._last[0] is not image:
            self._last = (image, self.segmenter.predict(image))
        return self._last[1]

    def fingerprint(self) -> str:
        return self.segmenter.fingerprint()


def eth80_pairs(step: int) -> list[tuple[Path, Path]]:
    images = sorted(path for path in DATA.glob("*/*/*.jpg"))[::step]
    return [(path, path.parent / "masks" / f"{path.stem}.png") for path in images]


def subsample_note(step: int) -> str:
    total = len(list(DATA.glob("*/*/*.jpg")))
    return f"all {total} images" if step == 1 else f"every {step}th image of {total} sorted by path"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def settings_for(config: str) -> LocalizeSettings:
    """Settings for a configuration named like fp32-224, optionally -t1 (one thread).

    fp32 and int8 run with onnxruntime; ov32 (fp32) and bf16 with OpenVINO.
    """
    precision, size, *threads = config.split("-")
    count = int(threads[0][1:]) if threads else None
    runtime = "openvino" if precision in ("ov32", "bf16") else "onnx"
    return LocalizeSettings(
        input_size=int(size),
        quantize=precision == "int8",
        threads=count,
        runtime=runtime,
        precision="bf16" if precision == "bf16" else "fp32",
    )


def quality(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {
        "mean_iou": round(float(array.mean()), 4),
        "median_iou": round(float(np.median(array)), 4),
        "iou_ge_0.9": round(float((array >= 0.9).mean()), 4),
    }


def p50_ms(values: list[float]) -> float | None:
    return round(float(np.median(values)) * 1000.0, 1) if values else None


def best_ms(values: list[float]) -> float:
    return round(min(values) * 1000.0, 1)


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def measure_quality(
    config: str, pairs: list[tuple[Path, Path]], grocery: list[Path], matting: bool
) -> tuple[dict[str, Any], Segmenter]:
    """IoUs without (and with) matting on eth80-dev, and the masks of the grocery samples."""
    settings = settings_for(config)
    segmenter = _Memo(create_segmenter(settings))
    plain = Localizer(settings, segmenter=segmenter)
    matted = Localizer(dataclasses.replace(settings, matting=True), segmenter=segmenter)
    record: dict[str, Any] = {"config": config, "ious": [], "matted": [], "matting": [], "not_found": 0}
    for image_path, mask_path in pairs:
        image = load(image_path)
        truth = np.asarray(Image.open(mask_path).convert("L")) > 127
        result = plain.localize(image)
        record["ious"].append(iou(result.mask, truth))
        record["not_found"] += not result.found
        if matting:
            refined = matted.localize(image)
            record["matted"].append(iou(refined.mask, truth))
            record["matting"].append(refined.timings["matting"])
    record["grocery_masks"] = [plain.localize(load(path)).mask for path in grocery]
    return record, segmenter.segmenter


def measure_speed(segmenters: dict[str, Segmenter], images: list[Image.Image], rounds: int) -> dict[str, Any]:
    """p50 times, configurations interleaved image by image so that a busy CPU slows them alike."""
    localizers = {config: Localizer(settings_for(config), segmenter=seg) for config, seg in segmenters.items()}
    times: dict[str, dict[str, list[float]]] = {config: {"segment": [], "localize": []} for config in localizers}
    for _ in range(rounds):
        for image in images:
            for config, localizer in localizers.items():
                timings = localizer.localize(image).timings
                times[config]["segment"].append(timings["segment"])
                times[config]["localize"].append(timings["total"])
    return {
        config: {**{name: p50_ms(values) for name, values in spent.items()}, "best_segment": best_ms(spent["segment"])}
        for config, spent in times.items()
    }


def summarise(
    record: dict[str, Any], reference: list[np.ndarray] | None, packaged: list[bool], speed: dict[str, Any]
) -> dict[str, Any]:
    summary: dict[str, Any] = {"config": record["config"], "eth80": quality(record["ious"])}
    summary["eth80_not_found"] = record["not_found"]
    summary["eth80_matting"] = quality(record["matted"]) if record["matted"] else None
    if reference is not None:
        agreement = [iou(a, b) for a, b in zip(record["grocery_masks"], reference, strict=True)]
        for name, wanted in (("packaged", True), ("produce", False)):
            chosen = [value for value, kind in zip(agreement, packaged, strict=True) if kind == wanted]
            summary[f"grocery_{name}_vs_{REFERENCE}"] = quality(chosen)
    summary["ms"] = {**speed, "matting": p50_ms(record["matting"])}
    return summary


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for row in rows:
        matted = row["eth80_matting"] or {}
        packaged = row.get(f"grocery_packaged_vs_{REFERENCE}") or {}
        produce = row.get(f"grocery_produce_vs_{REFERENCE}") or {}
        flat.append(
            {
                "config": row["config"],
                "eth80 mean": row["eth80"]["mean_iou"],
                "median": row["eth80"]["median_iou"],
                ">=0.9": row["eth80"]["iou_ge_0.9"],
                "+mat mean": matted.get("mean_iou"),
                "median ": matted.get("median_iou"),
                ">=0.9 ": matted.get("iou_ge_0.9"),
                "packaged mean": packaged.get("mean_iou"),
                " median": packaged.get("median_iou"),
                "produce mean": produce.get("mean_iou"),
                "seg p50": row["ms"]["segment"],
                "seg best": row["ms"]["best_segment"],
                "localize p50": row["ms"]["localize"],
                "matting p50": row["ms"]["matting"],
            }
        )
    return flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=8, help="use every step-th eth80-dev image (default 8)")
    parser.add_argument("--configs", default=CONFIGS, help=f"comma-separated precision-size[-tN] (default {CONFIGS})")
    parser.add_argument("--matting", default=MATTING, help=f"configs also measured with matting (default {MATTING})")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds over 16 images (default 3)")
    parser.add_argument("--name", default="segmentation", help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: eth80-dev not found at {DATA} (it lives in ../shared/data beside the checkout)")
        return 0
    configs = args.configs.split(",")
    if REFERENCE in configs:  # the reference runs first: the others are compared with it
        configs = [REFERENCE, *(c for c in configs if c != REFERENCE)]
    pairs = eth80_pairs(args.step)
    grocery = sorted(SAMPLES.rglob("*.jpg"))
    load_before = os.getloadavg()
    started = time.perf_counter()
    records, segmenters, reference = [], {}, None
    for config in configs:
        record, segmenters[config] = measure_quality(config, pairs, grocery, config in args.matting.split(","))
        reference = record["grocery_masks"] if config == REFERENCE else reference
        records.append(record)
        print(f"  {config}: quality done ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
    timing_images = [load(path) for path, _ in pairs[:: max(len(pairs) // 8, 1)][:8]] + [load(p) for p in grocery[::11]]
    speed = measure_speed(segmenters, timing_images[:16], args.rounds)
    packaged = [any(name in path.name for name in PACKAGED) for path in grocery]
    rows = [summarise(record, reference, packaged, speed[record["config"]]) for record in records]
    flat = table_rows(rows)
    print(table(flat, list(flat[0])))
    report = {
        "dataset": "eth80-dev",
        "subsample": subsample_note(args.step),
        "eth80_images": len(pairs),
        "grocery_images": {"packaged": sum(packaged), "produce": len(packaged) - sum(packaged)},
        "timing": f"p50 and best over {args.rounds} rounds of {len(timing_images[:16])} images, interleaved",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "defaults": dataclasses.asdict(LocalizeSettings()),
        "rows": rows,
    }
    print(f"wrote {save(args.name, report).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
