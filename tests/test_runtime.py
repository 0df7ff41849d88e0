"""The query path on onnxruntime: the export agrees with PyTorch, searching never imports torch,
older indexes without an export fall back to torch and get one on their next write."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Engine, Settings
from lookalike.embed import create_embedder
from lookalike.embed.runtime import (
    RUNTIME_DIR,
    TOLERANCE,
    WEIGHTS_FILE,
    ExportError,
    OrtEmbedder,
    export_embedder,
)
from lookalike.errors import SettingsError
from lookalike.featurizer import Featurizer
from lookalike.settings import EmbedSettings, HeadSettings

from .conftest import copy_index, product_of

PHOTOS = ("Arla-Standard-Milk_001.jpg", "Banana_001.jpg", "Red-Bell-Pepper_001.jpg", "Oatly-Natural-Oatghurt_001.jpg")


def _photos(samples: Path) -> list[Image.Image]:
    found = {p.name: p for p in (samples / "queries").iterdir()}
    return [Image.open(found[name]).convert("RGB") for name in PHOTOS if name in found]


def _tuning(embedder: object, seed: int = 0) -> object:
    """A fine-tuned tail without training: the last stage's arrays moved by seeded noise, another p."""
    from lookalike.embed.finetune import BackboneTuning, tail_start, tail_state

    network = embedder.network()  # type: ignore[attr-defined]
    first = tail_start(network, 1)
    rng = np.random.default_rng(seed)
    state = {
        name: (a + 0.05 * a.std() * rng.standard_normal(a.shape)).astype(a.dtype) if "conv" in name else a
        for name, a in tail_state(network, first).items()
    }
    return BackboneTuning(embedder.name, embedder.fingerprint(), first, 3.5, state)  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", ["efficientnet-lite0", pytest.param("efficientnet-lite2", marks=pytest.mark.slow)])
@pytest.mark.parametrize("tuned", [False, True], ids=["pretrained", "fine-tuned"])
def test_onnx_export_agrees_with_torch(samples: Path, model: str, tuned: bool) -> None:
    settings = EmbedSettings(model=model)
    embedder = create_embedder(settings)
    if tuned:
        embedder.set_tuning(_tuning(embedder))  # type: ignore[attr-defined]
    export = export_embedder(embedder)
    assert export.facts["max_abs_difference"] <= TOLERANCE
    assert export.source == embedder.fingerprint() and ("tuned=" in export.source) == tuned
    onnx = OrtEmbedder(export, settings, threads=1)
    photos = _photos(samples)
    expected, got = embedder.embed(photos), onnx.embed(photos)
    assert got.shape == expected.shape == (len(photos), embedder.dim)
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_featurizer_with_a_learned_transform_agrees_across_runtimes(samples: Path) -> None:
    from lookalike.embed.transform import create_transform

    photos = _photos(samples)
    settings = {runtime: Settings().replace(**{"embed.runtime": runtime}) for runtime in ("torch", "onnx")}
    raw = Featurizer(settings["torch"]).embedder.embed(photos * 3)
    noisy = raw + 0.01 * np.random.default_rng(0).random(raw.shape)
    transform = create_transform("pca", HeadSettings(dim=3)).fit(noisy)
    vectors = {}
    for runtime, chosen in settings.items():
        featurizer = Featurizer(chosen, transform=transform, may_export=True)
        vectors[runtime] = np.stack([f.vector for f in featurizer.describe(photos)])
        assert featurizer.runtime == runtime and featurizer.dim == 3
    assert np.abs(vectors["onnx"] - vectors["torch"]).max() <= 10 * TOLERANCE  # whitening scales differences up


def test_an_export_that_disagrees_is_refused() -> None:
    embedder = create_embedder(EmbedSettings())
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* expected <= 1e-12\); queries use torch"):
        export_embedder(embedder, tolerance=1e-12)


def test_an_index_is_built_with_its_export_and_searched_on_onnxruntime(built_index: Path) -> None:
    facts = json.loads((built_index / RUNTIME_DIR / "embedder.json").read_text())
    assert facts["max_abs_difference"] <= facts["tolerance"] == TOLERANCE
    with Engine.open(built_index) as engine:
        assert engine.featurizer.runtime == "onnx" and engine.featurizer.runtime_note is None
        assert engine.info()["runtime"] == {"embedder": "onnx", "note": None}


def test_a_search_process_does_not_import_torch(built_index: Path, sample_queries: list[Path]) -> None:
    script = (
        "import sys\n"
        "from lookalike.cli import app\n"
        f"app(['search', {str(sample_queries[0])!r}, {str(sample_queries[1])!r}, '--index', {str(built_index)!r},"
        " '--json'], standalone_mode=False)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'efficientnet_lite_pytorch', 'sklearn', 'scipy', 'onnx')"
        " if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('NO-TORCH')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("NO-TORCH")
    answers = json.loads(done.stdout.rsplit("NO-TORCH", 1)[0])
    assert [answer["query"] for answer in answers] == [str(sample_queries[0]), str(sample_queries[1])]
    assert all(product_of(answer["hits"][0]["path"]) == product_of(answer["query"]) for answer in answers)
    assert "load" in answers[0]["timings_ms"] and "embed" in answers[0]["timings_ms"]
    assert "load" not in answers[1]["timings_ms"]  # models load once per process


def test_an_older_index_without_export_searches_on_torch_until_a_write(
    built_index: Path, tmp_path: Path, sample_queries: list[Path]
) -> None:
    path = copy_index(built_index, tmp_path)
    shutil.rmtree(path / RUNTIME_DIR)
    with Engine.open(path) as engine:
        before = engine.search(sample_queries[0], k=3)
        assert engine.featurizer.runtime == "torch"
        assert "no ONNX export" in engine.featurizer.runtime_note and "check --repair" in engine.featurizer.runtime_note
        assert not (path / RUNTIME_DIR).exists(), "a search never writes"
        report = engine.check(repair=True)
        assert any("exported it" in line for line in report.repaired)
    with Engine.open(path) as engine:
        after = engine.search(sample_queries[0], k=3)
        assert engine.featurizer.runtime == "onnx"
    assert [h.id for h in after] == [h.id for h in before]
    assert np.allclose([h.score for h in after], [h.score for h in before], atol=1e-4)


def test_a_damaged_or_foreign_export_is_not_used(built_index: Path, tmp_path: Path, samples: Path) -> None:
    path = copy_index(built_index, tmp_path)
    onnx_file = path / RUNTIME_DIR / WEIGHTS_FILE
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])
    with Engine.open(path) as engine:
        engine.search(samples / "queries" / PHOTOS[0], k=1)
        assert engine.featurizer.runtime == "torch"
        assert "do not belong together" in engine.featurizer.runtime_note
        engine.add([])  # any write exports it again
    with Engine.open(path) as engine:
        assert engine.featurizer.runtime == "onnx"
    facts_file = path / RUNTIME_DIR / "embedder.json"
    facts = json.loads(facts_file.read_text())
    facts_file.write_text(json.dumps({**facts, "source": "efficientnet-lite0|weights=0000"}))
    with Engine.open(path) as engine:
        assert engine.featurizer.runtime == "torch"
        assert "was made from embedder efficientnet-lite0|weights=0000" in engine.featurizer.runtime_note


def test_runtime_torch_makes_no_export(tmp_path: Path, samples: Path) -> None:
    settings = Settings().replace(**{"embed.runtime": "torch"})
    with Engine.create(tmp_path / "torch.index", settings) as engine:
        engine.add([samples / "catalog" / "Milk"])
        assert engine.featurizer.runtime == "torch" and engine.featurizer.runtime_note is None
    assert not (tmp_path / "torch.index" / RUNTIME_DIR).exists()


def test_runtime_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="embed.runtime must be 'onnx' or 'torch', got 'tensorflow'"):
        Settings().replace(**{"embed.runtime": "tensorflow"})
    with pytest.raises(SettingsError, match="embed.threads must be >= 1 or None, got 0"):
        Settings().replace(**{"embed.threads": 0})


def test_localised_features_are_the_same_with_and_without_the_thread_pool(samples: Path) -> None:
    settings = Settings().replace(**{"localize.enabled": True, "localize.features": "both", "embed.threads": 1})
    featurizer = Featurizer(settings, may_export=True)
    photos = _photos(samples)[:2]
    together = featurizer.describe(photos)
    featurizer.concurrent = False
    apart = featurizer.describe(photos)
    featurizer.close()
    for a, b in zip(together, apart, strict=True):
        assert np.allclose(a.vector, b.vector, atol=1e-6)
        assert a.blobs["silhouette"] == b.blobs["silhouette"]


def test_a_fine_tuned_featurizer_saves_its_export_and_loads_it_without_torch(samples: Path, tmp_path: Path) -> None:
    pristine = create_embedder(EmbedSettings())
    tuned = Featurizer(Settings()).with_tuning(_tuning(pristine, seed=1))
    photos = _photos(samples)[:2]
    expected = np.stack([f.vector for f in tuned.describe(photos)])  # the writer exports on first use
    assert tuned.runtime == "onnx"
    tuned.save(tmp_path)
    facts = json.loads((tmp_path / RUNTIME_DIR / "embedder.json").read_text())
    assert "|tuned=" in facts["source"] and facts["gem_p"] == 3.5
    loaded = Featurizer.load(tmp_path, Settings())
    assert np.abs(np.stack([f.vector for f in loaded.describe(photos)]) - expected).max() <= TOLERANCE
    assert loaded.runtime == "onnx" and loaded.fingerprint() == tuned.fingerprint()
    on_torch = Featurizer.load(tmp_path, Settings().replace(**{"embed.runtime": "torch"}))
    assert np.abs(np.stack([f.vector for f in on_torch.describe(photos)]) - expected).max() <= TOLERANCE


def test_search_answers_a_folder_and_lists_unreadable_photos(built_index: Path, tmp_path: Path, samples: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app

    folder = tmp_path / "queries"
    folder.mkdir()
    for name in PHOTOS[:2]:
        shutil.copy(samples / "queries" / name, folder / name)
    (folder / "broken.jpg").write_text("not an image")
    result = CliRunner().invoke(app, ["search", str(folder), "--index", str(built_index), "-k", "2"])
    assert result.exit_code == 3, result.output
    assert result.output.count("timings:") == 2 and "broken.jpg: not an image" in result.output
    assert "load" in result.output.split("timings:")[1][:60]  # the first answer loads the models


def test_engine_open_sets_the_models_threads(built_index: Path) -> None:
    with Engine.open(built_index, threads=1) as engine:
        featurizer = engine.featurizer
        assert featurizer.settings.embed.threads == featurizer.settings.localize.threads == 1
        assert featurizer.embedder.threads == 1
        assert engine.settings.embed.threads is None  # the index's own settings are unchanged


def test_the_segmenter_freed_of_its_fixed_size_is_cached(tmp_path: Path) -> None:
    from lookalike.localize.u2net import fit_input_size, open_session, u2netp_path

    first = fit_input_size(u2netp_path(), 224, tmp_path)
    assert isinstance(first, Path) and first.parent == tmp_path and first.name.endswith("-free-hw.onnx")
    assert fit_input_size(u2netp_path(), 160, tmp_path) == first  # one file for every size, onnx not needed
    session = open_session(first, 1)
    saliency = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 160, 160), np.float32)})[0]
    assert saliency.shape[-2:] == (160, 160)
