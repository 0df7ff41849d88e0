"""The command line: thin commands over the library, clear errors, machine-readable output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from lookalike.cli import app

from .conftest import product_of

runner = CliRunner()


def test_index_search_add_remove_info(tmp_path: Path, samples: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(samples / "catalog" / "Milk", catalog / "Milk")
    shutil.copytree(samples / "catalog" / "Juice", catalog / "Juice")
    index = tmp_path / "my.index"

    result = runner.invoke(app, ["index", str(catalog), "--index", str(index)])
    assert result.exit_code == 0, result.output
    assert "added 24" in result.output

    query = samples / "queries" / "Tropicana-Apple-Juice_015.jpg"
    result = runner.invoke(app, ["search", str(query), "--index", str(index), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert len(payload["hits"]) == 3 and product_of(payload["hits"][0]["path"]) == "Tropicana-Apple-Juice"
    assert payload["hits"][0]["category"] == "Juice" and "embed" in payload["timings_ms"]

    table = runner.invoke(app, ["search", str(query), "--index", str(index), "-k", "2"])
    assert table.exit_code == 0 and "rank" in table.output and "timings:" in table.output

    extra = samples / "queries" / "Banana_023.jpg"
    result = runner.invoke(app, ["add", str(extra), "--index", str(index), "--category", "Banana"])
    assert result.exit_code == 0 and "added 1" in result.output

    info = json.loads(runner.invoke(app, ["info", "--index", str(index), "--json"]).output)
    assert info["images"] == 25 and info["categories"] == {"Banana": 1, "Juice": 12, "Milk": 12}

    result = runner.invoke(app, ["remove", str(extra), "--index", str(index)])
    assert result.exit_code == 0 and "removed 1" in result.output
    result = runner.invoke(app, ["remove", "424242", "--index", str(index)])
    assert result.exit_code == 1 and "not in the index: 424242" in result.output

    again = runner.invoke(app, ["index", str(catalog), "--index", str(index)])
    assert again.exit_code == 0 and "unchanged 24" in again.output


def test_settings_options_are_saved(tmp_path: Path, samples: Path) -> None:
    index = tmp_path / "grey.index"
    folder = samples / "catalog" / "Oatghurt"
    args = ["index", str(folder), "--index", str(index), "--grayscale", "--set", "embed.gem_p=4"]
    assert runner.invoke(app, args).exit_code == 0
    settings = json.loads((index / "settings.json").read_text())
    assert settings["embed"]["grayscale"] is True and settings["embed"]["gem_p"] == 4.0
    changed = runner.invoke(app, ["index", str(folder), "--index", str(index), "--color"])
    assert changed.exit_code == 2 and "--rebuild" in changed.output


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search", str(tmp_path / "q.jpg"), "--index", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no lookalike index here" in result.output
    bad = runner.invoke(app, ["index", str(tmp_path), "--index", str(tmp_path / "x"), "--set", "embed.colour=1"])
    assert bad.exit_code == 2 and "unknown setting 'embed.colour'" in bad.output
    assert "Traceback" not in bad.output


def test_bad_query_file(tmp_path: Path, built_index: Path) -> None:
    (tmp_path / "q.jpg").write_text("hello")
    result = runner.invoke(app, ["search", str(tmp_path / "q.jpg"), "--index", str(built_index)])
    assert result.exit_code == 2 and "q.jpg: not an image" in result.output


def test_demo_finds_the_sample_products(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--index", str(tmp_path / "demo.index")])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "sample queries" in line)
    first = int(line.split("ranked first for ")[1].split(",")[0])
    assert first >= 16
