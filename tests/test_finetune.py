"""Fine-tuning the backbone's last stages on the catalogue: the tuner, its files, an index that uses it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Engine
from lookalike.cli import app
from lookalike.embed import create_embedder
from lookalike.embed.finetune import (
    TUNING_DIR,
    WEIGHTS_FILE,
    BackboneTuner,
    BackboneTuning,
    images_maps,
    tail_start,
)
from lookalike.errors import ImageError, IndexMismatchError, LookalikeError, NotFittedError, SettingsError
from lookalike.io.images import load_image
from lookalike.settings import EmbedSettings, HeadSettings, Settings

from .conftest import copy_index, product_of, products_by_path

FAST = HeadSettings(kind="finetune", finetune_epochs=3, finetune_stages=1, validation_fraction=0.3, finetune_batch=8)


@pytest.fixture(scope="module")
def catalogue_maps(samples: Path) -> tuple[np.ndarray, list[str], object]:
    """Frozen feature maps of the 60 sample catalogue photos, their products, and the embedder."""
    paths = sorted((samples / "catalog").rglob("*.jpg"))
    embedder = create_embedder(EmbedSettings())
    first = tail_start(embedder.network(), FAST.finetune_stages)
    maps = images_maps(embedder, lambda a, b: [load_image(p) for p in paths[a:b]], len(paths), first)
    return maps, [product_of(p) for p in paths], embedder


def _fit(catalogue_maps: tuple, settings: HeadSettings = FAST, **options: object) -> BackboneTuner:
    import copy

    maps, labels, embedder = catalogue_maps
    network = copy.deepcopy(embedder.network())
    context = {"first_block": tail_start(network, settings.finetune_stages), "model": embedder.name,
               "base_fingerprint": embedder.fingerprint(), "gem_p": 3.0}  # fmt: skip
    return BackboneTuner(settings).fit(maps, labels, network=network, **context, **options)


def test_the_tail_is_the_last_stages() -> None:
    network = create_embedder(EmbedSettings()).network()  # Lite0: stages of 16, 24, 40, 80, 112, 192, 320 channels
    assert tail_start(network, 1) == 15 and tail_start(network, 2) == 11 and tail_start(network, 3) == 8
    with pytest.raises(LookalikeError, match=r"head.finetune_stages must be in \[1, 6\] .* got 9"):
        tail_start(network, 9)


def test_frozen_maps_hold_the_image_and_its_mirror(catalogue_maps: tuple) -> None:
    maps, labels, _ = catalogue_maps
    assert maps.shape == (60, 2, 192, 7, 7) and maps.dtype == np.float16 and len(set(labels)) == 10
    assert not np.array_equal(maps[0, 0], maps[0, 1])  # the mirror differs...
    original = maps[0, 0].astype(np.float32).ravel()
    as_is = np.corrcoef(maps[0, 1].astype(np.float32).ravel(), original)[0, 1]
    mirrored_back = np.corrcoef(maps[0, 1, :, :, ::-1].astype(np.float32).ravel(), original)[0, 1]
    assert mirrored_back > 0.6 and mirrored_back > as_is + 0.1  # ...it is the map of the mirrored photo


def test_training_lowers_the_loss_and_separates_the_products(catalogue_maps: tuple) -> None:
    maps, labels, _ = catalogue_maps
    held = np.isin(labels, ["Banana", "Arla-Standard-Milk", "Bravo-Apple-Juice"])
    names = np.array(labels)
    validation = (maps[held], names[held])
    tuner = _fit((maps[~held], list(names[~held]), catalogue_maps[2]), validation=validation)
    losses = tuner.history_["loss"][1:]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert len(tuner.history_["val_map"]) == 4 and 0 <= tuner.best_epoch_ <= 3
    vectors = tuner.vectors(maps[~held])
    assert vectors.shape == (int((~held).sum()), 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    same = names[~held][:, None] == names[~held][None, :]
    scores = vectors @ vectors.T
    assert scores[same].mean() > scores[~same].mean() + 0.2  # the trained products form clusters


def test_same_seed_same_tuning_and_files_round_trip(catalogue_maps: tuple, tmp_path: Path) -> None:
    short = replace(FAST, finetune_epochs=1)
    first, second = _fit(catalogue_maps, short), _fit(catalogue_maps, short)
    assert first.tuning_.fingerprint() == second.tuning_.fingerprint()
    assert _fit(catalogue_maps, replace(short, seed=1)).tuning_.fingerprint() != first.tuning_.fingerprint()
    folder = first.tuning_.save(tmp_path / "tuned")
    loaded = BackboneTuning.load(folder)
    assert loaded.fingerprint() == first.tuning_.fingerprint() and loaded.first_block == 15
    assert json.loads((folder / "backbone.json").read_text())["fingerprint"] == loaded.fingerprint()
    state = dict(np.load(folder / WEIGHTS_FILE))
    state["_conv_head.weight"] = state["_conv_head.weight"] * 1.01
    np.savez(folder / WEIGHTS_FILE, **state)
    with pytest.raises(IndexMismatchError, match="the files do not belong together"):
        BackboneTuning.load(folder)


def test_clear_errors(catalogue_maps: tuple) -> None:
    with pytest.raises(NotFittedError, match="not fitted yet"):
        BackboneTuner(FAST).vectors(catalogue_maps[0])
    with pytest.raises(LookalikeError, match="of 2\\+ products; got 60 maps, 60 labels, 1 product"):
        _fit((catalogue_maps[0], ["one"] * 60, catalogue_maps[2]))
    with pytest.raises(SettingsError, match="head.finetune_batch must be >= 2"):
        Settings().replace(**{"head.finetune_batch": 1})
    resnet = create_embedder(EmbedSettings(model="resnet50", weights="/nonexistent.pth"))
    with pytest.raises(LookalikeError, match="resnet50"):
        resnet.network()


# -- an index with a fine-tuned backbone


def _top1(engine: Engine, queries: list[Path]) -> float:
    return float(np.mean([product_of(engine.search(q, k=1)[0].path) == product_of(q) for q in queries]))


def test_engine_fine_tunes_and_queries_use_it(built_index: Path, tmp_path: Path, sample_queries: list[Path]) -> None:
    path = copy_index(built_index, tmp_path)
    with Engine.open(path) as engine:
        before_vector = engine.store.vectors_of([1], 1280)[1].copy()
        before_top1 = _top1(engine, sample_queries)
        epochs: list[int] = []
        items = products_by_path(engine)
        settings = replace(FAST, finetune_stages=2, finetune_epochs=4)  # one stage learns too little here
        report = engine.train_embedding(settings, items=items, progress=lambda e, n, v: epochs.append(e), force=True)
        assert report.kind == "finetune" and report.n_images == 60 and report.dim == 1280
        assert epochs == [1, 2, 3, 4]
        assert report.n_validation_products >= 2 and report.before is not None and report.after is not None
        assert (path / TUNING_DIR / "backbone.json").is_file()
        assert engine.info()["embedder"]["tuning"] == report.fingerprint
        assert engine.info()["head"]["kind"] == "finetune"
        assert not np.allclose(engine.store.vectors_of([1], 1280)[1], before_vector)
        after_top1 = _top1(engine, sample_queries)
        assert after_top1 >= 0.6 and after_top1 >= before_top1 - 0.1  # known products are still found
        hits = engine.search(sample_queries[0], k=3)
    with Engine.open(path) as reopened:  # the tuned backbone travels with the index
        assert [h.id for h in reopened.search(sample_queries[0], k=3)] == [h.id for h in hits]
        assert reopened.remove_embedding() and not (path / TUNING_DIR).exists()
        np.testing.assert_allclose(reopened.store.vectors_of([1], 1280)[1], before_vector, atol=1e-5)
        assert reopened.info()["embedder"]["tuning"] is None


def test_another_indexs_backbone_is_refused(built_index: Path, tmp_path: Path, sample_queries: list[Path]) -> None:
    first, second = copy_index(built_index, tmp_path, "a.index"), copy_index(built_index, tmp_path, "b.index")
    for path, seed in ((first, 0), (second, 1)):
        with Engine.open(path) as engine:
            quick = replace(FAST, finetune_epochs=1, finetune_stages=1, validation_fraction=0.0, seed=seed)
            engine.train_embedding(quick, items=products_by_path(engine), force=True)
    shutil.rmtree(first / TUNING_DIR)
    shutil.copytree(second / TUNING_DIR, first / TUNING_DIR)
    with Engine.open(first) as engine, pytest.raises(IndexMismatchError, match="made with the fine-tuned backbone"):
        engine.search(sample_queries[0])


def test_an_unreadable_image_leaves_the_index_as_it_was(built_index: Path, tmp_path: Path, samples: Path) -> None:
    path = copy_index(built_index, tmp_path)
    victim = tmp_path / "Banana_999.jpg"
    shutil.copy(next((samples / "catalog" / "Banana").glob("*.jpg")), victim)
    with Engine.open(path) as engine:
        engine.add([victim], categories="Banana")
        victim.write_bytes(b"not an image any more")
        vectors_before = engine.store.vectors_of([1], 1280)[1].copy()
        with pytest.raises(ImageError, match="Banana_999.jpg"):
            engine.train_embedding(replace(FAST, finetune_epochs=1), items=products_by_path(engine))
        assert not (path / TUNING_DIR).exists() and engine.store.count() == 61
        np.testing.assert_array_equal(engine.store.vectors_of([1], 1280)[1], vectors_before)


def test_cli_fine_tunes(built_index: Path, tmp_path: Path, samples: Path) -> None:
    path = copy_index(built_index, tmp_path)
    args = ["train-embedding", "--index", str(path), "--kind", "finetune", "--items", str(samples / "manifest.csv")]
    quick = ["--epochs", "1", "--set", "head.validation_fraction=0.3", "--set", "head.finetune_stages=1"]
    result = CliRunner().invoke(app, [*args, *quick, "--json", "--force"], env={"LOOKALIKE_PROGRESS_INTERVAL": "0"})
    assert result.exit_code == 0, result.output
    # stderr is not a terminal here: the long image passes are logged as lines
    assert "frozen feature maps: 60/60 (100%)" in result.stderr and "re-embedding: 60/60 (100%)" in result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "finetune" and report["after"]["map"] > 0 and (path / TUNING_DIR).is_dir()
    removed = CliRunner().invoke(app, ["train-embedding", "--index", str(path), "--remove"])
    assert removed.exit_code == 0 and not (path / TUNING_DIR).exists()
