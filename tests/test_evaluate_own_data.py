"""Evaluating one's own data: category-level relevance, progress lines in a log, clear errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from lookalike.cli import app


def _manifest(samples: Path, path: Path, label: str) -> Path:
    """The sample catalogue and queries as a shop might describe them: with one label column only
    (`category`: products unknown; `item`: categories unknown)."""
    with open(samples / "manifest.csv", newline="") as source, open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", label, "split"])
        for row in csv.DictReader(source):
            if row["split"] in ("catalog", "queries"):
                writer.writerow([str(samples / row["path"]), row[label], row["split"]])
    return path


def _category_manifest(samples: Path, folder: Path) -> Path:
    return _manifest(samples, folder / "categories.csv", "category")


def test_a_category_level_manifest_needs_and_gets_category_relevance(samples: Path, tmp_path: Path) -> None:
    manifest = _category_manifest(samples, tmp_path)
    refused = CliRunner().invoke(app, ["evaluate", "--dataset", str(manifest), "-c", "baseline"])
    assert refused.exit_code == 2 and "have no item" in refused.output and "--relevance category" in refused.output
    wrong = CliRunner().invoke(app, ["evaluate", "--dataset", str(manifest), "--relevance", "product"])
    assert wrong.exit_code == 2 and "--relevance must be 'item' or 'category'" in wrong.output


def test_progress_is_logged_when_stderr_is_a_file(samples: Path, tmp_path: Path) -> None:
    manifest = _category_manifest(samples, tmp_path)
    out, log = tmp_path / "report", tmp_path / "stderr.log"
    command = [sys.executable, "-m", "lookalike.cli", "evaluate", "--dataset", str(manifest), "--relevance",
               "category", "-c", "baseline", "--limit", "4", "--latency-queries", "2", "--samples", "0",
               "--out", str(out)]  # fmt: skip
    env = {**os.environ, "LOOKALIKE_PROGRESS_INTERVAL": "0"}
    with open(log, "w") as stderr:
        finished = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, timeout=600)
    lines = log.read_text().splitlines()
    assert finished.returncode == 0, (finished.stdout, lines[-5:])
    assert any("/60 (100%)" in line and "/s" in line for line in lines), lines[:10]  # the gallery, with a rate
    assert any("ETA" in line for line in lines), lines[:10]
    assert len(lines) >= 4 and all(line.startswith("[") for line in lines)
    assert "relevant = same category" in (out / "report.md").read_text()
    title = next(line for line in finished.stdout.splitlines() if "photo" in line or "categories" in line)
    assert len(title) > 20, "the summary table's title stays on one line"


def _item_only_manifest(samples: Path, folder: Path) -> Path:
    return _manifest(samples, folder / "items.csv", "item")


def test_presets_that_cannot_run_are_named_before_any_work(samples: Path, tmp_path: Path) -> None:
    manifest = _item_only_manifest(samples, tmp_path)
    work = tmp_path / "work"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--dataset", str(manifest), "-c", "baseline", "-c", "classify", "-c", "finetune",
         "--work-dir", str(work), "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "2 configuration(s) cannot run" in result.output and "nothing was done" in result.output
    assert "classify: it trains a category classifier" in result.output
    assert "finetune: it trains a category classifier" in result.output
    assert not work.exists() or not any(work.iterdir()), "no index may be built before the check"


def test_the_report_shows_the_training_steps_own_validation(samples: Path, tmp_path: Path) -> None:
    import json

    configs = tmp_path / "configs.json"
    head = {"head.kind": "linear", "head.dim": 32, "head.max_epochs": 3, "head.label": "item"}
    configs.write_text(json.dumps({"trained-head": {**head, "prepare": ["train_embedding", "train_classifier"]}}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--dataset", str(samples / "manifest.csv"), "--config-file", str(configs), "--limit", "3",
         "--latency-queries", "1", "--samples", "0", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    training = json.loads((out / "results.json").read_text())["configs"][0]["training"]
    embedding = training["train_embedding"]
    assert embedding["kind"] == "linear" and len(embedding["history"]["val_map"]) >= 1
    assert embedding["before"]["map"] > 0 and embedding["after"]["map"] > 0
    assert training["train_classifier"]["categories"] == 7
    report = (out / "report.md").read_text()
    assert "## Training inside the configurations" in report and "validation mAP" in report
    assert "Held-out products" in report and "category classifier" in report
