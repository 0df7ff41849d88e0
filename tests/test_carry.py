"""Carrying a tuned model between indexes: export, build a new index with it, re-embed another with
it; the vectors match the source's, and a model whose files do not match its vectors is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.errors import IndexMismatchError
from lookalike.settings import HeadSettings

from .conftest import SAMPLES, copy_index, products_by_path


@pytest.fixture(scope="module")
def tuned_index(built_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample index with a learned transform (supervised whitening to 24-d, installed with force)."""
    path = copy_index(built_index, tmp_path_factory.mktemp("tuned"), "tuned.index")
    with Engine.open(path) as engine:
        report = engine.train_embedding(
            HeadSettings(kind="supervised", dim=24), items=products_by_path(engine), force=True
        )
        assert report.kept and engine.info()["dim"] == 24
    return path


def _vector_of(engine: Engine, path: Path) -> np.ndarray:
    item = engine.find(path)
    return engine.store.vectors_of([item.id], engine.info()["dim"])[item.id]


def test_export_then_build_a_new_index_with_the_model(tuned_index: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    with Engine.open(tuned_index) as source:
        record = source.export_model(model)
        assert record["dim"] == 24 and (model / "model.json").is_file() and (model / "head").is_dir()
        studio = tmp_path / "studio" / "Milk"
        shutil.copytree(SAMPLES / "catalog" / "Milk", studio)
        with Engine.create(tmp_path / "studio.index", Settings(), model_from=model) as target:
            target.add([studio.parent])
            assert target.info()["dim"] == 24
            for image in sorted(studio.iterdir())[:3]:
                original = SAMPLES / "catalog" / "Milk" / image.name
                np.testing.assert_allclose(_vector_of(target, image), _vector_of(source, original), atol=1e-5)
            query = sorted((SAMPLES / "queries").iterdir())[0]
            np.testing.assert_allclose(target.embed([query]), source.embed([query]), atol=1e-5)


def test_use_model_reembeds_an_existing_index(tuned_index: Path, built_index: Path, tmp_path: Path) -> None:
    target_path = copy_index(built_index, tmp_path, "target.index")
    with Engine.open(target_path) as target, Engine.open(tuned_index) as source:
        report = target.use_model(tuned_index)  # an index works as a model folder too
        assert report["images"] == 60 and report["dim"] == 24
        image = Path(target.items()[0].path)
        np.testing.assert_allclose(_vector_of(target, image), _vector_of(source, image), atol=1e-5)
        assert target.search(image, k=1).hits[0].path == str(image)
    with Engine.open(target_path) as reopened:
        assert reopened.info()["dim"] == 24


def test_model_files_without_reembedding_are_refused(tuned_index: Path, built_index: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    with Engine.open(tuned_index) as source:
        source.export_model(model)
    target_path = copy_index(built_index, tmp_path, "mixed.index")
    shutil.copytree(model / "head", target_path / "head")  # the transform, but the old 1280-d vectors
    with Engine.open(target_path) as target, pytest.raises(IndexMismatchError):
        target.search(sorted((SAMPLES / "queries").iterdir())[0], k=1)


def test_a_model_whose_files_changed_is_refused(tuned_index: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    with Engine.open(tuned_index) as source:
        source.export_model(model)
    record = json.loads((model / "model.json").read_text())
    record["settings"]["embed"]["gem_p"] = 1.0  # another pooling than the one the files were made with
    (model / "model.json").write_text(json.dumps(record))
    with pytest.raises(IndexMismatchError):
        Engine.create(tmp_path / "new.index", Settings(), model_from=model)


def test_cli_model_export_and_index_model_from(tuned_index: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    exported = runner.invoke(app, ["model", "export", str(tmp_path / "m"), "--index", str(tuned_index)])
    assert exported.exit_code == 0, exported.output
    assert "24-d" in exported.output
    catalogue = tmp_path / "catalogue" / "Juice"
    shutil.copytree(SAMPLES / "catalog" / "Juice", catalogue)
    created = runner.invoke(
        app, ["index", str(catalogue.parent), "--index", str(tmp_path / "j.index"), "--model-from", str(tmp_path / "m")]
    )
    assert created.exit_code == 0, created.output
    info = runner.invoke(app, ["info", "--index", str(tmp_path / "j.index"), "--json"])
    assert json.loads(info.output)["dim"] == 24
    again = runner.invoke(
        app, ["index", str(catalogue.parent), "--index", str(tmp_path / "j.index"), "--model-from", str(tmp_path / "m")]
    )
    assert again.exit_code == 2 and "model use" in again.output
