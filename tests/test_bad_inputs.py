"""The bad-input corpus (tests/badinputs.py) through `lookalike index`, `add` and `search`: every kind
gets its documented outcome, nothing already indexed is lost, and the exit codes say what happened."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.errors import ImageError
from lookalike.io import expand_paths, load_image, scan_folder
from lookalike.io.images import decode_image

from .badinputs import KINDS, Case, build_corpus

runner = CliRunner()
SAMPLE_NAMES = ("Milk/Arla-Standard-Milk_001.jpg", "Juice/Tropicana-Apple-Juice_001.jpg", "Banana/Banana_001.jpg")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return build_corpus(tmp_path_factory.mktemp("bad") / "corpus")


@pytest.fixture(scope="module")
def base_index(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Path:
    """A small index of three sample photos, built once; tests copy it before writing."""
    path = tmp_path_factory.mktemp("base") / "base.index"
    with Engine.create(path, Settings()) as engine:
        report = engine.add([samples / "catalog" / name for name in SAMPLE_NAMES])
    assert len(report.added) == 3 and not report.failed
    return path


@pytest.fixture()
def index(base_index: Path, tmp_path: Path) -> Path:
    target = tmp_path / "work.index"
    shutil.copytree(base_index, target)
    return target


def _case(corpus: list[Case], name: str) -> Case:
    found = [case for case in corpus if case.name == name]
    if not found:
        pytest.skip(f"{name}: not made on this system (no symbolic links)")
    return found[0]


def _not_indexed(result: Result) -> dict[str, str]:
    """{path: reason} from the `path: reason` lines the report prints for each file it passed over."""
    listed = {}
    for line in result.stderr.splitlines():
        if line.startswith("  ") and ": " in line:
            path, _, reason = line.strip().partition(": ")
            listed[path] = reason
    return listed


def _indexed_paths(index: Path) -> set[str]:
    with Engine.open(index) as engine:
        return {item.path for item in engine.store.items()}


def _sample_paths(samples: Path) -> set[str]:
    return {str((samples / "catalog" / name).resolve()) for name in SAMPLE_NAMES}


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# -- the decoder and the catalogue walk, without the engine


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_decodes_or_fails_as_documented(corpus: list[Case], name: str) -> None:
    case = _case(corpus, name)
    sources: list[Path | bytes] = [case.path] + ([case.path.read_bytes()] if case.is_regular_file else [])
    for source in sources:
        if case.expected_ok:
            image = load_image(source)
            assert image.mode == "RGB" and max(image.size) <= 2048
        else:
            with pytest.raises(ImageError) as raised:
                load_image(source, name=case.path.name) if isinstance(source, bytes) else load_image(source)
            assert re.search(case.reason_pattern or "", raised.value.reason), raised.value.reason
            assert raised.value.path.endswith(case.path.name)


def test_bytes_are_judged_by_content_like_files(corpus: list[Case]) -> None:
    svg = _case(corpus, "svg-named-jpg")
    with pytest.raises(ImageError, match=r"upload 'vector\.jpg': not an image .*SVG"):
        decode_image(svg.path.read_bytes(), "upload 'vector.jpg'")


def test_catalogue_walk_lists_what_it_passes_over(corpus: list[Case]) -> None:
    folder = corpus[0].path.parent
    skipped: list[tuple[str, str]] = []
    found = {str(entry.path) for entry in scan_folder(folder, skipped=skipped)}
    passed = dict(skipped)
    for case in corpus:
        where = str(case.path)
        if case.folder_outcome == "indexed":
            assert where in found and where not in passed, case.name
        elif case.folder_outcome == "ignored":
            assert where not in found and where not in passed, case.name
        else:  # failed: listed by the walk, or left for the decoder to refuse
            assert (where in found) != (where in passed), case.name
            if where in passed:
                assert re.search(case.folder_pattern or "", passed[where]), (case.name, passed[where])


def test_explicit_files_keep_their_extension_but_missing_ones_are_passed_over(corpus: list[Case]) -> None:
    svg, gif = _case(corpus, "svg"), _case(corpus, "animated-gif")
    missing = svg.path.parent / "not-there.jpg"
    skipped: list[tuple[str, str]] = []
    entries = expand_paths([svg.path, gif.path, missing], skipped=skipped)
    assert [entry.path for entry in entries] == [svg.path, gif.path]  # the decoder decides
    assert skipped == [(str(missing), "no such file")]


# -- through the command line


def test_index_a_folder_of_bad_inputs(corpus: list[Case], index: Path, samples: Path, tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for case in corpus[:2]:  # a folder of good images only
        assert case.folder_outcome == "indexed"
        shutil.copy(case.path, good / case.path.name)
    clean = runner.invoke(app, ["index", str(good), "--index", str(index)])
    assert clean.exit_code == 0, clean.output

    folder = corpus[0].path.parent
    result = runner.invoke(app, ["index", str(folder), "--index", str(index)])
    _no_traceback(result)
    assert result.exit_code == 3, result.output  # finished, with failures
    listed = _not_indexed(result)
    indexed = _indexed_paths(index)
    for case in corpus:
        where = str(case.path)
        if case.folder_outcome == "indexed":
            assert str(case.path.resolve()) in indexed and where not in listed, case.name
        elif case.folder_outcome == "ignored":
            assert where not in listed and str(case.path.resolve()) not in indexed, case.name
        else:
            assert where in listed, f"{case.name} not listed in:\n{result.stderr}"
            assert re.search(case.folder_pattern or "", listed[where]), (case.name, listed[where])
    failed = sum(case.folder_outcome == "failed" for case in corpus)
    assert f"failed {failed} " in result.stdout
    assert _sample_paths(samples) <= indexed  # nothing already indexed was lost

    again = runner.invoke(app, ["index", str(folder), "--index", str(index)])
    assert again.exit_code == 3 and "added 0, updated 0" in again.stdout, again.output


def test_add_each_file_on_its_own(corpus: list[Case], index: Path, samples: Path) -> None:
    files = [case for case in corpus if not case.path.is_dir()]  # a folder given to `add` is scanned
    first_good = next(case for case in files if case.expected_ok)
    args = [str(case.path) for case in files] + [str(first_good.path)]  # one file named twice
    result = runner.invoke(app, ["add", *args, "--index", str(index)])
    _no_traceback(result)
    assert result.exit_code == 3, result.output
    listed = _not_indexed(result)
    indexed = _indexed_paths(index)
    for case in files:
        if case.expected_ok:
            assert str(case.path.resolve()) in indexed, case.name
        else:
            assert str(case.path) in listed, f"{case.name} not listed in:\n{result.stderr}"
            assert re.search(case.reason_pattern or "", listed[str(case.path)]), (case.name, listed[str(case.path)])
    assert f"added {sum(case.expected_ok for case in files)}," in result.stdout
    assert re.search(r"note: 1 path\(s\) named a file already in this run, indexed once: .*", result.stdout)
    assert _sample_paths(samples) <= indexed

    only_good = runner.invoke(app, ["add", str(first_good.path), "--index", str(index)])
    assert only_good.exit_code == 0 and "unchanged 1" in only_good.stdout, only_good.output


@pytest.fixture(scope="module")
def warm_engine(base_index: Path) -> Iterator[Engine]:
    with Engine.open(base_index) as engine:
        yield engine


@pytest.mark.parametrize("name", list(KINDS))
def test_search_with_each_kind(
    corpus: list[Case], base_index: Path, warm_engine: Engine, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """`lookalike search` over the real engine, opened once for the module (not once per query: the
    first embedding of each freshly opened engine costs seconds)."""
    case = _case(corpus, name)
    monkeypatch.setattr(Engine, "open", lambda *args, **kwargs: contextlib.nullcontext(warm_engine))
    result = runner.invoke(app, ["search", str(case.path), "--index", str(base_index), "-k", "2", "--json"])
    _no_traceback(result)
    if case.expected_ok:
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["hits"]) == 2
    else:
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {case.path}: "), result.stderr
        assert re.search(case.reason_pattern or "", lines[0]), lines[0]


def test_links_to_folders_are_listed_not_followed(tmp_path: Path, samples: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(samples / "catalog" / "Banana", elsewhere)
    catalogue = tmp_path / "catalogue"
    (catalogue / "Milk").mkdir(parents=True)
    shutil.copy(samples / "catalog" / SAMPLE_NAMES[0], catalogue / "Milk")
    try:
        (catalogue / "Banana").symlink_to(elsewhere, target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("no symbolic links here")
    skipped: list[tuple[str, str]] = []
    entries = scan_folder(catalogue, skipped=skipped)
    assert [(entry.path.name, entry.category) for entry in entries] == [(Path(SAMPLE_NAMES[0]).name, "Milk")]
    assert skipped == [
        (str(catalogue / "Banana"), f"symbolic link to a folder ({elsewhere}): not followed; index that folder itself")
    ]
