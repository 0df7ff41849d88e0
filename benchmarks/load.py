"""Load test of the REST server on loopback: N clients upload sample photos to /api/search for M seconds.

Starts `lookalike serve` on a free 127.0.0.1 port (over --index, or over the sample catalogue indexed
once into benchmarks/cache/load.index), or uses a running server given by --url (loopback only).
Prints requests per second, client latency p50/p95 and errors (expected: 0), the server's own time
per stage, and writes benchmarks/results/load.json. Bounded: --seconds and --max-requests.

--writer runs a second process meanwhile that adds a photo to the index every --write-every seconds
(and removes every third one again), as a CLI job would while the server runs: the report then says
how many it committed, whether the server's searches see exactly those (category "Writer"), and the
server's RSS before and after.
--levels 1,8,32 is the capacity run (issue 19): one run per number of clients against the same server,
each measuring the server process's CPU time (/proc) besides requests/s and latency. The 1-client run
gives the single-query CPU ms and latency; the report checks throughput against 70% of
cores x 1000 / single-query CPU ms and p95 at 8 clients against 4x the single-query p50.

The clients are stdlib http.client connections (keep-alive) sending a multipart body encoded once per
photo, so that on a small machine the load generator takes as little CPU from the server as it can.
Usage: python benchmarks/load.py [--clients 4 | --levels 1,8,32] [--seconds 20] [--k 10] [--writer]
       [--index PATH | --url URL]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from _common import ROOT, save, table
from lookalike.samples import sample_dir

SAMPLES = sample_dir()
DEFAULT_INDEX = ROOT / "benchmarks" / "cache" / "load.index"


@dataclass
class Outcome:
    """What one client saw."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    server_ms: list[dict[str, float]] = field(default_factory=list)  # the answers' timings_ms
    errors: Counter[str] = field(default_factory=Counter)


def main() -> None:
    args = parse_args()
    photos = [(path.name, path.read_bytes()) for path in sorted((SAMPLES / "queries").glob("*.jpg"))]
    if args.levels:
        capacity(photos, args)
        return
    if args.url:
        check_loopback(args.url)
        report = run_load(args.url, photos, args)
    else:
        index = args.index or build_sample_index()
        if args.writer:
            index = fresh_copy(index)
        with served(index) as (url, pid):
            rss_before = rss_mb(pid)
            writer = start_writer(index, args) if args.writer else None
            report = run_load(url, photos, args)
            if writer is not None:
                report["writer"] = finish_writer(writer, url, args.k)
            report["server_rss_mb"] = {"before": rss_before, "after": rss_mb(pid)}
    print_report(report)
    path = save(args.name, report)
    print(f"\nsaved {path}")
    if report["errors"]:
        raise SystemExit(1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (1-32)")
    parser.add_argument("--levels", help="capacity run: comma-separated client counts, e.g. 1,8,32")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send requests (at most 300)")
    parser.add_argument("--max-requests", type=int, default=5000, help="stop after this many requests in all")
    parser.add_argument("--k", type=int, default=10, help="results per search")
    parser.add_argument("--index", type=Path, help="serve this index (default: the sample catalogue)")
    parser.add_argument("--url", help="a running server on loopback, e.g. http://127.0.0.1:8000")
    parser.add_argument("--writer", action="store_true", help="another process adds and removes photos meanwhile")
    parser.add_argument("--write-every", type=float, default=2.0, help="seconds between the writer's commits")
    parser.add_argument("--name", default="load", help="results file name: benchmarks/results/NAME.json")
    args = parser.parse_args()
    if args.levels:
        args.levels = [int(level) for level in args.levels.split(",")]
        if not all(1 <= level <= 32 for level in args.levels) or args.writer or args.url:
            parser.error("--levels takes client counts in 1-32, and serves its own index (no --writer, --url)")
    if not 1 <= args.clients <= 32 or not 0 < args.seconds <= 300 or args.max_requests < 1:
        parser.error("expected 1 <= --clients <= 32, 0 < --seconds <= 300 and --max-requests >= 1")
    return args


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"--url must point at this machine (127.0.0.1, ::1 or localhost), got {url!r}")


def build_sample_index() -> Path:
    """The sample catalogue indexed with default settings, once (kept in benchmarks/cache/)."""
    from lookalike import Engine, Settings

    if not (DEFAULT_INDEX / "settings.json").is_file():
        print(f"indexing the sample catalogue into {DEFAULT_INDEX} (once)...", file=sys.stderr, flush=True)
        with Engine.create(DEFAULT_INDEX, Settings(), overwrite=True) as engine:
            engine.add([SAMPLES / "catalog"])
    return DEFAULT_INDEX


def fresh_copy(index: Path) -> Path:
    """A copy of the index to write to, so the cached sample index stays as it was."""
    import shutil
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="lookalike-load-")) / "load.index"
    shutil.copytree(index, target)
    return target


WRITER = """
import json, shutil, sys, tempfile, time
from pathlib import Path
from lookalike import Engine
index, photo, seconds, every = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
folder = Path(tempfile.mkdtemp(prefix="lookalike-writer-"))
added, removed, turn = [], [], 0
deadline = time.monotonic() + seconds
with Engine.open(index) as engine:
    while time.monotonic() < deadline:
        copy = folder / f"writer-{turn}.jpg"
        shutil.copyfile(photo, copy)
        added += engine.add([copy], categories="Writer").added
        if turn % 3 == 2:
            removed += engine.remove([added[-2]]).removed
        turn += 1
        time.sleep(every)
print(json.dumps({"added": added, "removed": removed}))
"""


def start_writer(index: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    photo = sorted((SAMPLES / "catalog").rglob("*.jpg"))[0]
    command = [sys.executable, "-c", WRITER, str(index), str(photo), str(args.seconds), str(args.write_every)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def finish_writer(writer: subprocess.Popen[str], url: str, k: int) -> dict[str, Any]:
    """What the writer committed, and what the server's search sees of it once it is done."""
    import json

    import httpx

    output, _ = writer.communicate(timeout=600)
    facts = json.loads(output.strip().splitlines()[-1])
    expected = sorted(set(facts["added"]) - set(facts["removed"]))
    photo = sorted((SAMPLES / "catalog").rglob("*.jpg"))[0]
    files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    answer = httpx.post(f"{url}/api/search", params={"k": 100, "category": "Writer"}, files=files, timeout=120)
    seen = sorted(hit["id"] for hit in answer.json()["hits"]) if answer.status_code == 200 else []
    return {"commits": len(facts["added"]) + len(facts["removed"]), "added": len(facts["added"]),
            "removed": len(facts["removed"]), "expected_in_search": len(expected), "seen_by_server": len(seen),
            "lost": len(set(expected) - set(seen)), "stale": len(set(seen) - set(expected))}  # fmt: skip


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextmanager
def served(index: Path, options: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """`lookalike serve [options]` in a subprocess on a free loopback port: (url, pid); stopped on leaving."""
    port = free_port()
    command = [sys.executable, "-m", "lookalike.cli", "serve", "--index", str(index), "--host", "127.0.0.1"]
    command += ["--port", str(port), *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_health(url: str, process: subprocess.Popen[bytes], seconds: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise SystemExit(f"the server exited with code {process.returncode}:\n{stderr[-2000:]}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server at {url} did not answer /api/health within {seconds:.0f} s")


def run_load(url: str, photos: list[tuple[str, bytes]], args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as warm:  # models loaded, caches filled: not timed
        for name, data in photos[:2]:
            warm.post(f"/api/search?k={args.k}", files={"file": (name, data, "image/jpeg")}).raise_for_status()
    outcomes = [Outcome() for _ in range(args.clients)]
    budget = threading.Semaphore(args.max_requests)
    started = time.perf_counter()
    deadline = started + args.seconds
    threads = [
        threading.Thread(target=client, args=(url, photos[i:] + photos[:i], args.k, deadline, budget, outcomes[i]))
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarise(outcomes, time.perf_counter() - started, args, url)


def client(
    url: str, photos: list[tuple[str, bytes]], k: int, deadline: float, budget: threading.Semaphore, out: Outcome
) -> None:
    import http.client
    import json

    address = urlparse(url)
    requests = [multipart(name, data) for name, data in photos]
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    turn = 0
    while time.perf_counter() < deadline and budget.acquire(blocking=False):
        body, content_type = requests[turn % len(requests)]
        turn += 1
        sent = time.perf_counter()
        try:
            connection.request("POST", f"/api/search?k={k}", body, {"Content-Type": content_type})
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            out.errors[type(exc).__name__] += 1
            connection.close()  # reconnects on the next request
            continue
        if response.status != 200:
            out.errors[f"HTTP {response.status}"] += 1
            continue
        out.latencies.append(time.perf_counter() - sent)
        out.server_ms.append(json.loads(answer)["timings_ms"])
    connection.close()


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body holding the photo as `file`, and its Content-Type."""
    boundary = f"lookalike-load-{abs(hash(name)):x}"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()  # fmt: skip
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def capacity(photos: list[tuple[str, bytes]], args: argparse.Namespace) -> None:
    """One load run per client count against one server; CPU per request from the server's /proc."""
    index = args.index or build_sample_index()
    load_before = os.getloadavg()
    levels = []
    with served(index) as (url, pid):
        for clients in args.levels:
            run_args = argparse.Namespace(**{**vars(args), "clients": clients})
            cpu_start = cpu_seconds(pid)
            report = run_load(url, photos, run_args)
            report["server_cpu_ms_per_request"] = 1000 * (cpu_seconds(pid) - cpu_start) / max(report["ok"], 1)
            levels.append(report)
            print(f"{clients} clients: {report['requests_per_s']:.1f} req/s, p50 {report['latency_ms']['p50']:.1f} ms,"
                  f" p95 {report['latency_ms']['p95']:.1f} ms", file=sys.stderr, flush=True)  # fmt: skip
    result = {"load_average_before": load_before, "load_average_after": os.getloadavg(), "levels": levels,
              "targets": capacity_targets(levels)}  # fmt: skip
    print_capacity(result)
    print(f"\nsaved {save(args.name, result)}")


def capacity_targets(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 19's targets from the 1-client run: throughput and p95 at 8 clients."""
    single = next((level for level in levels if level["setup"]["clients"] == 1), None)
    if single is None:
        return {}
    cores = os.cpu_count() or 1
    cpu_ms = single["server_cpu_ms_per_request"]
    ceiling = cores * 1000 / cpu_ms
    targets: dict[str, Any] = {"cores": cores, "single_cpu_ms": cpu_ms, "single_p50_ms": single["latency_ms"]["p50"],
                               "ceiling_req_s": ceiling, "throughput_target_req_s": 0.7 * ceiling}  # fmt: skip
    for level in levels:
        clients = level["setup"]["clients"]
        if clients > 1:
            targets[f"{clients}_clients_share_of_ceiling"] = level["requests_per_s"] / ceiling
            targets[f"{clients}_clients_p95_over_single_p50"] = level["latency_ms"]["p95"] / single["latency_ms"]["p50"]
    return targets


def print_capacity(result: dict[str, Any]) -> None:
    rows = [
        {"clients": level["setup"]["clients"], "req/s": level["requests_per_s"], "p50 ms": level["latency_ms"]["p50"],
         "p95 ms": level["latency_ms"]["p95"], "server CPU ms/req": level["server_cpu_ms_per_request"],
         "errors": level["errors"]}
        for level in result["levels"]
    ]  # fmt: skip
    print(table(rows, list(rows[0])))
    targets = result["targets"]
    if targets:
        print(
            f"\nceiling {targets['ceiling_req_s']:.1f} req/s = {targets['cores']} cores x 1000 / "
            f"{targets['single_cpu_ms']:.1f} CPU ms; target >= 70% of it = {targets['throughput_target_req_s']:.1f}"
        )
        for key, value in targets.items():
            if "clients" in key:
                print(f"{key}: {value:.2f}")
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}")


def summarise(outcomes: list[Outcome], elapsed: float, args: argparse.Namespace, url: str) -> dict[str, Any]:
    latencies = sorted(seconds * 1000 for out in outcomes for seconds in out.latencies)
    errors = sum((out.errors for out in outcomes), Counter())
    stages = sorted({stage for out in outcomes for timings in out.server_ms for stage in timings})
    server = {
        stage: percentile(sorted(t[stage] for out in outcomes for t in out.server_ms if stage in t), 50)
        for stage in stages
    }
    return {
        "setup": {"clients": args.clients, "seconds": args.seconds, "k": args.k, "url": url, "endpoint": "/api/search"},
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "elapsed_s": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "mean": sum(latencies) / len(latencies) if latencies else None,
            "max": latencies[-1] if latencies else None,
        },
        "server_p50_ms_per_stage": server,
        "per_client_ok": [len(out.latencies) for out in outcomes],
    }


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile of sorted `values` (nearest rank), None when empty."""
    if not values:
        return None
    rank = max(1, round(q / 100 * len(values) + 0.5 - 1e-9))
    return values[min(rank, len(values)) - 1]


def print_report(report: dict[str, Any]) -> None:
    setup, latency = report["setup"], report["latency_ms"]
    print(f"\nPOST /api/search, {setup['clients']} clients for {setup['seconds']:.0f} s, k={setup['k']} (loopback)")
    row = {
        "requests": report["requests"],
        "req/s": report["requests_per_s"],
        "p50 ms": latency["p50"],
        "p95 ms": latency["p95"],
        "p99 ms": latency["p99"],
        "max ms": latency["max"],
        "errors": report["errors"],
    }
    print(table([row], list(row)))
    stages = [{"stage": stage, "p50 ms": ms} for stage, ms in report["server_p50_ms_per_stage"].items()]
    print("\nserver time per stage (the answers' timings_ms, p50)")
    print(table(stages, ["stage", "p50 ms"]))
    if report["errors"]:
        print(f"\nERRORS: {report['error_kinds']}")
    if "writer" in report:
        print("\nconcurrent writer (another process)")
        print(table([report["writer"]], list(report["writer"])))
    if "server_rss_mb" in report:
        rss = report["server_rss_mb"]
        print(f"\nserver RSS: {rss['before']:.0f} MB before, {rss['after']:.0f} MB after")


if __name__ == "__main__":
    main()
