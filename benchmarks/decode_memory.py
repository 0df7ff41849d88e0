"""Peak memory and time of decoding big photos: the old way (all bytes read, full-size decode) against
`load_image` (decoded from disk, JPEG draft mode, at most `max_side` pixels a side).

Generates N 8000x6000 JPEGs and a few big PNGs once (benchmarks/cache/decode_memory/), then runs each
way in a fresh process, so each peak (VmHWM) is its own: "one at a time" decodes the files one
after the other and drops each image; "batch of B" keeps B decoded images at once, as the engine does
while indexing (it embeds and commits 32 images at a time). Also checks that the peak of `load_image`
stays flat when the number of images doubles and when the photos are half the size.
Prints a table and writes benchmarks/results/decode_memory.json.
Usage: python benchmarks/decode_memory.py [--jpegs 20] [--pngs 3] [--batch 8]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, save, table

CACHE = ROOT / "benchmarks" / "cache" / "decode_memory"
BIG = (8000, 6000)
HALF = (4000, 3000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jpegs", type=int, default=20, help="8000x6000 JPEGs decoded one after the other")
    parser.add_argument("--pngs", type=int, default=3, help="8000x6000 PNGs (RGB and RGBA) decoded after them")
    parser.add_argument("--batch", type=int, default=8, help="decoded images kept at once in the batch runs")
    parser.add_argument("--worker", nargs=3, metavar=("WAY", "KEEP", "LIST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        way, keep, listing = args.worker
        print(json.dumps(decode_all(way, int(keep), Path(listing).read_text().split("\n"))))
        return

    jpegs = [make_jpeg(i, BIG) for i in range(max(args.jpegs, 2 * args.batch))]
    halves = [make_jpeg(i, HALF) for i in range(args.jpegs)]
    pngs = [make_png(i, BIG) for i in range(args.pngs)]
    runs: list[dict[str, Any]] = []
    plan = [
        ("one at a time", "old", 1, jpegs[: args.jpegs] + pngs),
        ("one at a time", "new", 1, jpegs[: args.jpegs] + pngs),
        (f"batch of {args.batch}", "old", args.batch, jpegs[: args.batch]),
        (f"batch of {args.batch}", "new", args.batch, jpegs[: args.batch]),
        # flat in the number and the size of the photos
        ("one at a time, half the JPEGs", "new", 1, jpegs[: max(1, args.jpegs // 2)]),
        ("one at a time, 4000x3000 JPEGs", "new", 1, halves),
        (f"batch of {2 * args.batch}", "new", 2 * args.batch, jpegs[: 2 * args.batch]),
    ]
    for run, way, keep, files in plan:
        print(f"  {run}, {way} way: {len(files)} files", file=sys.stderr, flush=True)
        runs.append({"run": run, "way": way, **in_fresh_process(way, keep, files)})
    print(
        table(
            runs,
            ["run", "way", "files", "peak_mb", "peak_above_start_mb", "ms_per_jpeg", "ms_per_png", "largest_side"],
        )
    )
    path = save(
        "decode_memory",
        {
            "about": "peak resident memory (VmHWM) of a fresh process decoding big photos; old = bytes read whole "
            "and decoded at full size, new = load_image (from disk, JPEG draft, at most 2048 px a side)",
            "photo_sizes": {"big": BIG, "half": HALF},
            "runs": runs,
        },
    )
    print(f"\nsaved {path}")


def decode_all(way: str, keep: int, files: list[str]) -> dict[str, Any]:
    """In the worker process: decode `files` the `way` given, keeping the last `keep` decoded images."""
    from lookalike.io.images import load_image

    start_kb = peak_kb()
    kept: list[Any] = []
    times: dict[str, list[float]] = {"jpg": [], "png": []}
    largest = 0
    for name in files:
        began = time.perf_counter()
        image = old_way(Path(name)) if way == "old" else load_image(name)
        times[Path(name).suffix.lstrip(".")].append(time.perf_counter() - began)
        largest = max(largest, *image.size)
        kept = [*kept[-(keep - 1) :], image] if keep > 1 else []
        del image
    peak = peak_kb()
    return {
        "files": len(files),
        "peak_mb": peak / 1024,
        "peak_above_start_mb": (peak - start_kb) / 1024,
        "ms_per_jpeg": 1000 * sum(times["jpg"]) / len(times["jpg"]) if times["jpg"] else None,
        "ms_per_png": 1000 * sum(times["png"]) / len(times["png"]) if times["png"] else None,
        "largest_side": largest,
    }


def old_way(path: Path) -> Any:
    """What `load_image` did before: all bytes in memory, decoded at full size, then rotated and converted."""
    from PIL import Image, ImageOps

    from lookalike.io.images import to_rgb

    data = path.read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    return to_rgb(ImageOps.exif_transpose(image))


def in_fresh_process(way: str, keep: int, files: list[Path]) -> dict[str, Any]:
    listing = CACHE / f"files-{os.getpid()}.txt"
    listing.write_text("\n".join(str(f) for f in files))
    try:
        output = subprocess.run(
            [sys.executable, __file__, "--worker", way, str(keep), str(listing)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        listing.unlink(missing_ok=True)
    return json.loads(output.strip().splitlines()[-1])


def peak_kb() -> int:
    """This process's peak resident memory so far, in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def scene(seed: int, size: tuple[int, int], mode: str = "RGB") -> Any:
    """A photo-like picture: smooth colour fields with detail at every scale (not flat, not pure noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    fine = Image.fromarray(rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8))
    picture = Image.blend(coarse, fine.resize(size, Image.Resampling.BILINEAR), 0.25)
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").resize(size)
        picture.putalpha(alpha)
    return picture


def make_jpeg(index: int, size: tuple[int, int]) -> Path:
    path = CACHE / f"photo-{size[0]}x{size[1]}-{index:02d}.jpg"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        scene(index, size).save(path, quality=90)
    return path


def make_png(index: int, size: tuple[int, int]) -> Path:
    mode = "RGBA" if index % 2 else "RGB"
    path = CACHE / f"picture-{size[0]}x{size[1]}-{mode}-{index:02d}.png"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        scene(100 + index, size, mode).save(path, compress_level=1)
    return path


if __name__ == "__main__":
    main()
