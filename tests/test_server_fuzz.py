"""The REST API fuzzed from its own OpenAPI schema (Schemathesis) against a real server on loopback.

Schemathesis' command line runs its examples, coverage (boundary values: ids of 2**63, empty and
huge strings, missing and extra fields, other methods) and fuzzing phases over every operation, at
most `EXAMPLES` generated requests per operation in fuzzing and `SECONDS` for the whole run, with a
fixed seed. Every check runs but one: no answer may be a 500, every answer must match the schema
(documented status codes, content types, bodies, Allow headers) and requests that break the schema
must be refused. Left out is "positive data acceptance": a request can fit the schema and still be
refused for reasons a schema cannot state (random bytes sent as a photo: 422; a category the index
lacks: 400). The server allows writes, over a private copy of the sample index; all traffic goes to
127.0.0.1. (The command line rather than `schemathesis.pytest.from_fixture`, whose lazy loading
uses pytest's private `Node._nodeid`, gone in pytest 9.)
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("schemathesis", reason="Schemathesis is not installed: pip install -e '.[dev]'")
pytest.importorskip("uvicorn", reason="the server extra is not installed: pip install 'lookalike[server]'")

import uvicorn

from lookalike import Engine
from lookalike.server import ServerSettings, create_app

EXAMPLES = 20  # generated requests per operation in the fuzzing phase
SECONDS = 30  # for the whole Schemathesis run
SEED = 20240601
# 413 is a refusal too: Schemathesis' default list for "negative data rejection" leaves it out
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(built_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server on a free loopback port, in a thread, allowing writes on a copy of the sample index."""
    copy = tmp_path_factory.mktemp("fuzz") / "samples.index"
    shutil.copytree(built_index, copy)
    settings = ServerSettings(allow_writes=True, trusted_hosts=("127.0.0.1",))
    with Engine.open(copy) as engine:
        port = free_port()
        config = uvicorn.Config(create_app(engine, settings), host="127.0.0.1", port=port, log_level="critical")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the server did not start on 127.0.0.1 within 120 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.slow
def test_the_api_answers_every_request_by_its_schema(live_server: str, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "--no-color", "--config-file", str(config),
        "run", f"{live_server}/openapi.json",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES), "--max-time", str(SECONDS), "--seed", str(SEED), "--no-shrink",
        "--workers", "1", "--request-timeout", "30",
        "--exclude-checks", "positive_data_acceptance",
        "--report-json-path", str(report),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS + 120, check=False)
    assert report.is_file(), run.stdout[-4000:] + run.stderr[-4000:]
    summary = json.loads(report.read_text())
    assert summary["operations"]["tested"] >= 15 and summary["test_cases"]["generated"] > 100, summary
    problems = {"failures": summary["failures"], "errors": summary["errors"]}
    assert run.returncode == 0 and not summary["failures"] and not summary["errors"], (
        json.dumps(problems, indent=1) + "\n" + run.stdout[-8000:]
    )
