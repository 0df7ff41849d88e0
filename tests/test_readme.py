"""The README is a front page that works: its Python snippet runs (twice), and it names what a newcomer needs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from lookalike.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_python_snippet_runs_twice(tmp_path: Path, samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (snippet,) = python_snippets()
    shutil.copytree(samples / "catalog" / "Oatghurt", tmp_path / "catalog" / "Oatghurt")
    shutil.copy(next((samples / "queries").glob("Oatly*")), tmp_path / "query.jpg")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second run opens the index the first one made
        exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "my.index").is_dir()


def test_the_readme_names_every_command_and_two_setup_commands() -> None:
    from typer.main import get_command

    text = README.read_text()
    for name in get_command(app).commands:  # type: ignore[attr-defined]
        assert f"`lookalike {name}" in text, f"the README does not list `lookalike {name}`"
    setup = re.search(r"## Two commands on a fresh machine\n\n```bash\n(.*?)```", text, flags=re.DOTALL)
    assert setup is not None
    assert [line.split()[:2] for line in setup.group(1).splitlines()] == [["make", "demo"], ["make", "test"]]
    for needed in ("source .venv/bin/activate", "make serve", "apt-get install chromium", "path,item", "uncategorised"):
        assert needed in text
