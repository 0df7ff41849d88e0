"""Learned embedding transforms: losses, whitening, trained heads, and an index that uses one."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.embed.base import l2_normalize
from lookalike.embed.head import leave_one_out_map
from lookalike.embed.losses import contrastive_loss, mine, sos_loss, triplet_loss
from lookalike.embed.train import HEAD_DIR, check_kind
from lookalike.embed.transform import available_transforms, create_transform
from lookalike.errors import IndexMismatchError, LookalikeError, SettingsError, UnknownNameError
from lookalike.settings import HeadSettings

from .conftest import copy_index, products_by_path

FAST = HeadSettings(dim=8, max_epochs=6, products_per_batch=6, images_per_product=4)


def tensor(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def clusters(seed: int, products: int = 12, per_product: int = 8, dim: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Products = points around fixed centres, blurred by a strong shared nuisance direction."""
    centres = np.random.default_rng(100).standard_normal((products, dim))
    nuisance = np.random.default_rng(101).standard_normal((2, dim)) * 2.0
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(products), per_product)
    noise = rng.standard_normal((len(labels), 2)) @ nuisance + 0.6 * rng.standard_normal((len(labels), dim))
    return l2_normalize(centres[labels] + noise), labels


# -- losses against hand-computed values


def test_contrastive_loss_by_hand() -> None:
    anchors = tensor([[1, 0], [1, 0]])
    others = tensor([[0, 1], [0.8, 0.6]])  # distances sqrt(2) and sqrt(0.4)
    same = torch.tensor([True, False])
    # matching: 0.5 * 2 = 1; non-matching: 0.5 * (0.7 - sqrt(0.4))^2
    expected = (1.0 + 0.5 * (0.7 - np.sqrt(0.4)) ** 2) / 2
    assert float(contrastive_loss(anchors, others, same, margin=0.7)) == pytest.approx(expected, rel=1e-5)
    assert float(contrastive_loss(anchors, others, ~same, margin=0.7)) == pytest.approx(0.5 * 0.4 / 2, rel=1e-5)


def test_triplet_loss_with_margin_by_hand() -> None:
    anchors = tensor([[1, 0], [1, 0]])
    positives = tensor([[0.6, 0.8], [0, 1]])  # squared distances 0.8 and 2
    negatives = tensor([[0, 1], [0.6, 0.8]])  # squared distances 2 and 0.8
    # max(0, 0.8 - 2 + 0.2) = 0 and max(0, 2 - 0.8 + 0.2) = 1.4
    assert float(triplet_loss(anchors, positives, negatives, margin=0.2)) == pytest.approx(0.7, rel=1e-5)


def test_sos_loss_by_hand() -> None:
    anchors = tensor([[1, 0], [0, 1]])
    positives = tensor([[0.6, 0.8], [0, 1]])
    negatives = tensor([[0, 1], [1, 0]])
    # tuple 1: d(a, n)^2 = 2, d(p, n)^2 = 0.4 -> 1.6; tuple 2: 2 - 2 = 0; sqrt(1.6^2) / 2 tuples
    assert float(sos_loss(anchors, positives, negatives)) == pytest.approx(0.8, rel=1e-5)


def test_mining_takes_the_nearest_images_of_other_products() -> None:
    points = np.array([[0.0], [0.1], [0.3], [5.0], [0.2]])
    labels = np.array([0, 0, 1, 1, 2])
    mined = mine(np.abs(points - points.T), labels, hard_negatives=1)
    pairs = set(zip(mined.pair_anchor.tolist(), mined.pair_other.tolist(), mined.pair_same.tolist(), strict=True))
    assert {(0, 1, True), (1, 0, True), (2, 3, True), (3, 2, True)} <= pairs
    assert (0, 4, False) in pairs and (1, 4, False) in pairs and (3, 2, False) not in pairs
    triplets = set(zip(mined.anchor.tolist(), mined.positive.tolist(), mined.negative.tolist(), strict=True))
    assert triplets == {(0, 1, 4), (1, 0, 4), (2, 3, 4), (3, 2, 4)}


# -- whitening


def test_pca_whitening_gives_identity_covariance_on_training_data() -> None:
    X, _ = clusters(0)
    pca = create_transform("pca", HeadSettings(kind="pca", dim=0, shrinkage=0.0)).fit(X)
    projected = pca.project(X)
    np.testing.assert_allclose(np.cov(projected, rowvar=False, bias=True), np.eye(X.shape[1]), atol=1e-3)
    reduced = create_transform("pca", HeadSettings(kind="pca", dim=5, shrinkage=0.0)).fit(X)
    assert reduced.transform(X).shape == (len(X), 5)
    np.testing.assert_allclose(np.linalg.norm(reduced.transform(X), axis=1), 1.0, rtol=1e-5)


def _pair_ratio(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean distance of matching pairs over mean distance of the other pairs."""
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(distances[same & off_diagonal].mean() / distances[~same].mean())


def test_supervised_whitening_brings_matching_pairs_closer() -> None:
    X, y = clusters(0)
    held_x, held_y = clusters(1)
    lw = create_transform("supervised", HeadSettings(kind="supervised", dim=12)).fit(X, y)
    assert _pair_ratio(lw.transform(held_x), held_y) < 0.8 * _pair_ratio(held_x, held_y)
    assert leave_one_out_map(lw.transform(held_x), held_y) > leave_one_out_map(held_x, held_y) + 0.1
    with pytest.raises(LookalikeError, match="supervised transform learns from products: pass y"):
        create_transform("supervised").fit(X)


# -- trained heads


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_training_lowers_the_loss_and_helps_held_out_products(kind: str) -> None:
    X, y = clusters(0)
    val_x, val_y = clusters(1)
    settings = HeadSettings(kind=kind, dim=8, init="random", max_epochs=8, products_per_batch=6)
    head = create_transform(kind, settings).fit(X, y, validation=(val_x, val_y))
    losses = head.history_["loss"]
    assert losses[-1] < losses[1] and len(losses) == len(head.history_["val_map"])
    assert head.history_["val_map"][head.best_epoch_] > head.history_["val_map"][0]
    assert head.transform(val_x).shape == (len(val_x), 8)


def test_same_seed_same_head() -> None:
    X, y = clusters(0)
    first = create_transform("linear", FAST).fit(X, y)
    second = create_transform("linear", FAST).fit(X, y)
    assert first.fingerprint() == second.fingerprint()
    np.testing.assert_array_equal(first.transform(X), second.transform(X))
    other = create_transform("linear", replace(FAST, seed=1)).fit(X, y)
    assert other.fingerprint() != first.fingerprint()


def test_registry_and_settings() -> None:
    assert available_transforms() == ["linear", "mlp", "pca", "supervised"]
    with pytest.raises(UnknownNameError, match="expected one of: linear, mlp, pca, supervised"):
        create_transform("lda")
    lda = Settings().replace(**{"head.kind": "lda"})  # a kind registered later may be named in settings...
    with pytest.raises(UnknownNameError, match="expected one of: finetune, self, linear, mlp, pca, supervised"):
        check_kind(lda.head.kind)  # ...and is checked against the registry when training starts
    with pytest.raises(SettingsError, match=r"head.dim = 64 is larger than the input's 24 features"):
        create_transform("pca", HeadSettings(dim=64)).fit(clusters(0)[0])
    old = Settings().to_dict()
    del old["head"]  # an index saved before heads existed
    assert Settings.from_dict(old).head == HeadSettings()


# -- an index with a learned transform


def test_engine_trains_a_head_and_queries_use_it(built_index: Path, tmp_path: Path, sample_queries: list[Path]) -> None:
    path = copy_index(built_index, tmp_path)
    settings = HeadSettings(kind="linear", dim=32, max_epochs=3, validation_fraction=0.3, products_per_batch=8)
    with Engine.open(path) as engine:
        raw_before = engine.store.vectors_of([1], 1280)[1].copy()
        epochs: list[int] = []
        items = products_by_path(engine)
        report = engine.train_embedding(settings, items=items, progress=lambda e, n, v: epochs.append(e), force=True)
        assert report.dim == 32 and report.n_images == 60 and epochs[0] == 1 and report.refit
        assert report.n_validation_products >= 2 and set(report.before) == {"map", "recall@1", "recall@5", "recall@10"}
        assert engine.info()["dim"] == 32 and engine.info()["head"]["fingerprint"] == report.fingerprint
        hits = engine.search(sample_queries[0], k=3)
        assert len(hits) == 3
        raw_blob = engine.store.blobs("raw", [1])[1]
        np.testing.assert_array_equal(np.frombuffer(raw_blob, dtype=np.float32), raw_before)
    with Engine.open(path) as reopened:  # the head travels with the index
        again = reopened.search(sample_queries[0], k=3)
        assert [h.id for h in again] == [h.id for h in hits]
        assert reopened.train_embedding(settings, items=products_by_path(reopened)).fingerprint == report.fingerprint
        assert reopened.remove_embedding() and not (path / HEAD_DIR).exists()
        assert reopened.info()["dim"] == 1280
        np.testing.assert_array_equal(reopened.store.vectors_of([1], 1280)[1], raw_before)


def test_vectors_of_another_head_are_refused(built_index: Path, tmp_path: Path, sample_queries: list[Path]) -> None:
    first, second = copy_index(built_index, tmp_path, "a.index"), copy_index(built_index, tmp_path, "b.index")
    for path, seed in ((first, 0), (second, 1)):
        with Engine.open(path) as engine:
            engine.train_embedding(HeadSettings(kind="pca", dim=16, seed=seed, shrinkage=0.1 + seed / 10), force=True)
    shutil.rmtree(first / HEAD_DIR)
    shutil.copytree(second / HEAD_DIR, first / HEAD_DIR)
    with Engine.open(first) as engine, pytest.raises(IndexMismatchError, match="made with the embedding head pca:"):
        engine.search(sample_queries[0])


def test_cli_train_embedding(built_index: Path, tmp_path: Path, samples: Path) -> None:
    path = copy_index(built_index, tmp_path)
    manifest = samples / "manifest.csv"  # path,item,category,split: item = the product
    args = ["train-embedding", "--index", str(path), "--kind", "supervised", "--dim", "16", "--items", str(manifest)]
    result = CliRunner().invoke(app, [*args, "--set", "head.validation_fraction=0.3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "supervised" and report["after"]["map"] > 0
    pca = ["train-embedding", "--index", str(path), "--kind", "pca", "--dim", "16", "--force"]
    table = CliRunner().invoke(app, pca)
    assert table.exit_code == 0 and "trained a pca embedding" in table.output, table.output
    assert "installed unchecked (--force)" in table.output
    removed = CliRunner().invoke(app, ["train-embedding", "--index", str(path), "--remove"])
    assert removed.exit_code == 0 and "removed the learned transform" in removed.output
    bad = CliRunner().invoke(app, ["train-embedding", "--index", str(path), "--kind", "linear", "--label", "item"])
    assert bad.exit_code == 2 and "needs 2+ products with 2+ images" in bad.output


# -- kept only when it helps


def test_an_embedding_is_installed_only_when_it_beats_the_one_in_use(built_index: Path, tmp_path: Path) -> None:
    path = copy_index(built_index, tmp_path)
    worse = HeadSettings(kind="pca", dim=2, validation_fraction=0.3)  # 2-d vectors cannot tell 20 products apart
    with Engine.open(path) as engine:
        items = products_by_path(engine)
        report = engine.train_embedding(worse, items=items)
        assert report.after["map"] < report.current["map"] and report.current == report.before
        assert not report.kept and report.verdict.startswith("not installed") and "--force" in report.verdict
        assert not (path / HEAD_DIR).exists() and engine.info()["dim"] == 1280 and engine.info()["head"] is None
        forced = engine.train_embedding(worse, items=items, force=True)
        assert forced.kept and "installed (--force)" in forced.verdict and engine.info()["dim"] == 2
        # now the 2-d embedding is the one in use: a 16-d one beats it, and replaces it
        better = engine.train_embedding(HeadSettings(kind="supervised", dim=16, validation_fraction=0.3), items=items)
        assert better.current["map"] < better.before["map"] and better.after["map"] > better.current["map"]
        assert better.kept and better.verdict.startswith("installed: it beats the current learned embedding")
        assert engine.info()["dim"] == 16 and better.n_labelled_images == 60


def test_product_ids_naming_few_images_are_warned_about(built_index: Path, tmp_path: Path) -> None:
    path = copy_index(built_index, tmp_path)
    with Engine.open(path) as engine:
        items = dict(sorted(products_by_path(engine).items())[:15])
        items["/nowhere/else.jpg"] = "ghost"
        report = engine.train_embedding(HeadSettings(kind="supervised", dim=8, validation_fraction=0.0), items=items)
    assert report.n_labelled_images == 15
    assert "name 15 of the 60 indexed images (25%)" in report.warnings[0]
    assert "1 of the 16 images the product ids name are not in the index" in report.warnings[1]
    assert not report.kept and "no products could be held out" in report.verdict


def test_cli_says_what_was_kept_and_why(built_index: Path, tmp_path: Path, samples: Path) -> None:
    from lookalike.cli import best_epoch_line

    path = copy_index(built_index, tmp_path)
    args = [
        "train-embedding",
        "--index",
        str(path),
        "--kind",
        "pca",
        "--dim",
        "2",
        "--items",
        str(samples / "manifest.csv"),
    ]
    result = CliRunner().invoke(app, [*args, "--set", "head.validation_fraction=0.3"])
    assert result.exit_code == 0, result.output
    assert "not installed: it does not beat the pretrained vectors" in result.output
    assert "held-out mAP" in result.output and "pretrained" in result.output and "re-embedded" not in result.output
    assert "30 of the 90 images the product ids name are not in the index" in result.stderr
    assert not (path / HEAD_DIR).exists()
    assert "untrained starting point" in best_epoch_line(0) and "best epoch 3" in best_epoch_line(3)
