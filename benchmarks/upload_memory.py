"""Server memory while one request adds large photos: RSS before, at its peak, and after.

Starts `lookalike serve --allow-writes` on a free 127.0.0.1 port over a fresh copy of the sample index
(benchmarks/cache/load.index, built once), warms it up with one search, then sends --photos JPEGs of
--width x --height pixels (gradients with noise, made with PIL, seeded) to POST /api/items in ONE
request. The server's RSS is read from /proc/<pid>/status: VmRSS before; the peak from VmHWM (reset
through /proc/<pid>/clear_refs just before the upload) and from VmRSS sampled every 10 ms meanwhile;
VmRSS again 3 s after the answer. Prints a table and writes benchmarks/results/upload_memory.json.
Target: a peak under 1 GB and RSS back near where it started. Linux only (reads /proc).
--url and --pid measure a server already running on loopback instead (another version, say); it must
accept writes and requests of that size.
Usage: python benchmarks/upload_memory.py [--photos 10] [--width 8000] [--height 6000] [--url URL --pid PID]
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _common import save, table
from load import build_sample_index, check_loopback, fresh_copy, rss_mb
from load import served as load_served

MB = 1024 * 1024


def main() -> None:
    args = parse_args()
    if not Path("/proc/self/status").is_file():
        print("skipped: reads the server's memory from /proc (Linux only)")
        return
    photos = make_photos(args.photos, args.width, args.height, args.seed)
    sizes = [len(data) for _, data in photos]
    largest_mb = max(sizes) / MB
    if args.url:
        check_loopback(args.url)
        report = measure(args.url, args.pid, photos)
    else:
        index = fresh_copy(args.index or build_sample_index())
        megapixels = args.photos * args.width * args.height / 1e6
        with served(index, max_upload_mb=max(10.0, largest_mb + 1), megapixels=megapixels) as (url, pid):
            report = measure(url, pid, photos)
    report["setup"] = {
        "photos": args.photos,
        "width": args.width,
        "height": args.height,
        "megapixels_in_all": round(args.photos * args.width * args.height / 1e6, 1),
        "upload_mb": round(sum(sizes) / MB, 1),
        "largest_photo_mb": round(largest_mb, 1),
        "full_size_rgb_mb_in_all": round(args.photos * args.width * args.height * 3 / MB),
        "server": args.url or "lookalike serve (this checkout)",
    }
    print_report(report)
    print(f"\nsaved {save(args.name, report)}")
    if report["status"] not in (200, 201):
        raise SystemExit(1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10, help="photos in the one request (1-20)")
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=Path, help="copy and serve this index (default: the sample catalogue)")
    parser.add_argument("--url", help="a server already running on loopback, e.g. http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, help="with --url: that server's process id (its memory is read)")
    parser.add_argument("--name", default="upload_memory", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    if bool(args.url) != bool(args.pid):
        parser.error("--url and --pid go together")
    if not 1 <= args.photos <= 20:
        parser.error(f"--photos must be between 1 and 20 (the server's max_files_per_add), got {args.photos}")
    if not (16 <= args.width <= 8000 and 16 <= args.height <= 8000):
        parser.error("--width and --height must be between 16 and 8000 (the io layer refuses more than 64 MP)")
    return args


def make_photos(count: int, width: int, height: int, seed: int) -> list[tuple[str, bytes]]:
    """Distinct JPEGs: a colour gradient per photo plus noise, about what a camera's file weighs."""
    rng = np.random.default_rng(seed)
    photos = []
    print(f"making {count} photos of {width}x{height}...", file=sys.stderr, flush=True)
    columns = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    for number in range(count):
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        tint = rng.uniform(0.2, 1.0, size=3)
        for channel in range(3):
            plane = (columns * tint[channel] + rows * (1 - tint[channel])) * 200
            plane += rng.normal(0, 8, size=(height, width)).astype(np.float32)
            pixels[..., channel] = np.clip(plane, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        photos.append((f"photo_{number:02d}.jpg", buffer.getvalue()))
        del pixels
    return photos


def served(index: Path, *, max_upload_mb: float, megapixels: float) -> Any:
    """`lookalike serve --allow-writes` with limits that admit the request under test (load.py's `served`)."""
    options = ["--allow-writes", "--max-upload-mb", f"{max_upload_mb:.0f}", "--max-megapixels", f"{megapixels + 1:.0f}"]
    return load_served(index, options)


def measure(url: str, pid: int, photos: list[tuple[str, bytes]]) -> dict[str, Any]:
    import httpx

    query = Path(__file__).resolve().parents[1] / "src" / "lookalike" / "samples" / "grocery" / "queries"
    first = sorted(query.glob("*.jpg"))[0]
    httpx.post(f"{url}/api/search", files={"file": (first.name, first.read_bytes(), "image/jpeg")}, timeout=120)
    time.sleep(1.0)
    before = rss_mb(pid)
    hwm_reset = reset_peak(pid)
    sampled = Sampler(pid)
    sampled.start()
    started = time.perf_counter()
    files = [("files", (name, data, "image/jpeg")) for name, data in photos]
    response = httpx.post(f"{url}/api/items", files=files, data={"category": "Large"}, timeout=1800)
    seconds = time.perf_counter() - started
    sampled.stop()
    hwm = peak_mb(pid)
    time.sleep(3.0)
    after = rss_mb(pid)
    answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    statuses = [item["status"] for item in answer.get("items", [])]
    return {
        "status": response.status_code,
        "added": statuses.count("added"),
        "failed": len(answer.get("failed", [])),
        "error": answer.get("error"),
        "upload_s": round(seconds, 2),
        "rss_mb": {
            "before": before,
            "peak": max(value for value in (hwm if hwm_reset else None, sampled.peak) if value is not None),
            "peak_vmhwm": hwm if hwm_reset else None,
            "peak_sampled": sampled.peak,
            "after": after,
        },
    }


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+; our own child, so allowed)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class Sampler:
    """Polls VmRSS every 10 ms in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid) or 0.0)
            time.sleep(0.01)


def print_report(report: dict[str, Any]) -> None:
    setup, rss = report["setup"], report["rss_mb"]
    print(
        f"\none POST /api/items of {setup['photos']} photos of {setup['width']}x{setup['height']} "
        f"({setup['megapixels_in_all']} MP, {setup['upload_mb']} MB sent, "
        f"{setup['full_size_rgb_mb_in_all']} MB of RGB at full size)"
    )
    row = {
        "status": report["status"],
        "added": report["added"],
        "seconds": report["upload_s"],
        "RSS before MB": rss["before"],
        "peak MB": rss["peak"],
        "after MB": rss["after"],
    }
    print(table([row], list(row)))
    if report["error"]:
        print(f"\nERROR: {report['error']}")


if __name__ == "__main__":
    main()
