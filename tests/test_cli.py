"""The command line: thin commands over the library, clear errors, machine-readable output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
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
    assert "lookalike index PHOTOS/ --index my.index" in result.output and "--serve" in result.output


def test_info_is_a_short_summary_with_the_settings_on_request(built_index: Path) -> None:
    summary = runner.invoke(app, ["info", "--index", str(built_index)])
    assert summary.exit_code == 0, summary.output
    for line in ("model:", "efficientnet-lite0", "tuning:", "localisation:", "vector index:", "size on disk:"):
        assert line in summary.output
    assert "last change:" in summary.output and "Juice" in summary.output and "--settings" in summary.output
    assert len(summary.output.splitlines()) < 40 and '"rerank"' not in summary.output
    full = runner.invoke(app, ["info", "--index", str(built_index), "--settings"])
    assert full.exit_code == 0 and '"rerank"' in full.output and "model:" in full.output
    facts = json.loads(runner.invoke(app, ["info", "--index", str(built_index), "--json"]).output)
    assert facts["images"] == 60 and facts["settings"]["embed"]["model"] == "efficientnet-lite0"
    assert facts["changed_at"]


def test_help_shows_no_type_after_flags_and_describes_every_option() -> None:
    from typer.main import get_command

    group = get_command(app)
    assert "<bool>" not in runner.invoke(app, ["--help"]).output
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        output = runner.invoke(app, [name, "--help"], terminal_width=200).output
        assert "<bool>" not in output, name
        for param in command.params:
            assert param.help, f"lookalike {name}: {param.opts or param.name} has no help text"


def test_images_added_without_a_category_are_uncategorised(tmp_path: Path, built_index: Path, samples: Path) -> None:
    index = tmp_path / "copy.index"
    shutil.copytree(built_index, index)
    photo = samples / "queries" / "Banana_023.jpg"
    assert runner.invoke(app, ["add", str(photo), "--index", str(index)]).exit_code == 0
    facts = json.loads(runner.invoke(app, ["info", "--index", str(index), "--json"]).output)
    assert facts["categories"]["uncategorised"] == 1 and "None" not in facts["categories"]
    found = runner.invoke(app, ["search", str(photo), "--index", str(index), "-k", "1", "--json"])
    assert json.loads(found.output)["hits"][0]["category"] == "uncategorised"
    assert "uncategorised" in runner.invoke(app, ["info", "--index", str(index)]).output


def test_demo_serve_serves_the_sample_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lookalike.server.serve

    served: list[tuple[Path, str, int, int]] = []

    def fake_run(index: Path, *, host: str, port: int) -> None:  # the index must exist while it is served
        served.append((index, host, port, len(list(index.iterdir()))))

    monkeypatch.setattr(lookalike.server.serve, "run", fake_run)
    result = runner.invoke(
        app, ["demo", "--serve", "--port", "8123", "-k", "1", "--samples", str(tiny_samples(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    ((index, host, port, files),) = served
    assert (host, port) == ("127.0.0.1", 8123) and files > 0
    assert not index.exists()  # a temporary index without --index


def tiny_samples(tmp_path: Path) -> Path:
    """Two products of the bundled samples: a quick demo."""
    from lookalike.samples import sample_dir

    bundled, root = sample_dir(), tmp_path / "samples"
    shutil.copytree(bundled / "catalog" / "Oatghurt", root / "catalog" / "Oatghurt")
    (root / "queries").mkdir()
    for query in sorted((bundled / "queries").glob("Oatly*"))[:2]:
        shutil.copy(query, root / "queries")
    return root


def test_the_page_address_printed_by_serve() -> None:
    from lookalike.server.serve import page_url

    assert page_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert page_url("0.0.0.0", 8080) == "http://localhost:8080/"
    assert page_url("::1", 80) == "http://[::1]:80/"
