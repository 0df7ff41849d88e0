"""Label-free adaptation (`head.kind = "self"`): the views, the tuner, an index of studio images adapted to photos."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.embed import create_embedder
from lookalike.embed.adapt import SelfTuner, _neighbours, view_retrieval
from lookalike.embed.finetune import TUNING_DIR, BackboneTuning
from lookalike.embed.runtime import TOLERANCE
from lookalike.embed.views import AUGMENTATIONS, PhotoViews, Source, thumbnail, without
from lookalike.errors import LookalikeError, NotFittedError, SettingsError, UnknownNameError
from lookalike.io.images import load_image
from lookalike.settings import AdaptSettings, EmbedSettings, HeadSettings

from .conftest import product_of

FAST = HeadSettings(kind="self", finetune_batch=16, adapt=AdaptSettings(views=6, epochs=3, lr=3e-4, validation_views=1))
# a phone photo whose product the pretrained backbone ranks below others, and the adaptation ranks first
KNOWN_PHOTO = "Tropicana-Apple-Juice_015.jpg"


def _rank(engine: Engine, photo: Path) -> int:
    """1-based rank of the photo's product among the catalogue's studio images."""
    hits = engine.search(photo, k=len(engine))
    return next(
        rank for rank, hit in enumerate(hits, 1) if product_of(hit.path.replace("_Iconic", "_0")) == product_of(photo)
    )


@pytest.fixture(scope="module")
def adapted(samples: Path, sample_queries: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 10 studio images indexed, every photo's rank before, then adapted with no labels."""
    path = tmp_path_factory.mktemp("adapt") / "studio.index"
    with Engine.create(path, Settings()) as engine:
        engine.add([samples / "iconic"])
        before = {photo.name: _rank(engine, photo) for photo in sample_queries}
        epochs: list[int] = []
        stages: set[str] = set()
        report = engine.train_embedding(
            FAST, progress=lambda e, n, v: epochs.append(e), on_stage=lambda s, d, t: stages.add(s)
        )
        after = {photo.name: _rank(engine, photo) for photo in sample_queries}
        hits = engine.search(sample_queries[0], k=3)
    return {"path": path, "before": before, "after": after, "report": report, "epochs": epochs, "stages": stages,
            "hits": [h.id for h in hits]}  # fmt: skip


def test_adaptation_moves_a_known_photos_product_up(adapted: dict) -> None:
    before, after = adapted["before"], adapted["after"]
    assert before[KNOWN_PHOTO] > 1 and after[KNOWN_PHOTO] == 1
    reciprocal = [np.mean([1 / ranks[name] for name in ranks]) for ranks in (before, after)]
    assert reciprocal[1] >= reciprocal[0]  # and the photos as a whole do not lose


def test_the_report_and_the_index_record_the_adaptation(adapted: dict) -> None:
    report, path = adapted["report"], adapted["path"]
    assert report.kind == "self" and report.kept and report.n_images == 10 and report.dim == 1280
    assert report.n_train_images == report.n_train_products == 10  # each image its own class
    assert report.n_validation_images == 10 and report.n_validation_products == 10
    assert adapted["epochs"] == [1, 2, 3] and 0 <= report.best_epoch <= 3
    assert report.after["map"] >= report.before["map"] and report.current == report.before
    assert "validation-view mAP" in report.verdict and set(report.timings) >= {"views_and_maps", "training"}
    assert adapted["stages"] == {"views and frozen maps", "re-embedding"}
    assert report.timings["images_masked"] == 10  # every studio image's object was cut out
    tuning = BackboneTuning.load(path / TUNING_DIR)
    assert tuning.facts["kind"] == "self" and tuning.facts["views"] == 6
    settings = json.loads((path / "settings.json").read_text())
    assert settings["head"]["adapt"]["views"] == AdaptSettings().views  # the index's own settings are unchanged
    with Engine.open(path) as engine:
        assert engine.info()["head"]["kind"] == "self" and engine.info()["embedder"]["tuning"] == report.fingerprint


def test_the_adapted_index_reopens_and_its_onnx_export_agrees(adapted: dict, sample_queries: list[Path]) -> None:
    path = adapted["path"]
    with Engine.open(path) as engine:
        assert engine.featurizer.runtime == "onnx"
        assert [h.id for h in engine.search(sample_queries[0], k=3)] == adapted["hits"]
        served = engine.embed(sample_queries[:3])
        tuning = engine.featurizer.tuning
    torch_embedder = create_embedder(EmbedSettings(runtime="torch"))
    torch_embedder.set_tuning(tuning)  # type: ignore[attr-defined]
    expected = torch_embedder.embed([load_image(p) for p in sample_queries[:3]])
    assert np.abs(served - expected).max() <= TOLERANCE


# -- the views


def _sources(samples: Path, count: int = 3) -> list[Source]:
    """Studio images with a rough object mask (everything that is not near-white)."""
    images = [load_image(p) for p in sorted((samples / "iconic").glob("*.jpg"))[:count]]
    return [Source.of(image, np.asarray(image.convert("L")) < 235) for image in images]


def test_views_are_seeded_and_look_like_the_settings(samples: Path) -> None:
    sources = _sources(samples)
    tiles = [thumbnail(Image.fromarray(s.pixels), s.alpha > 0.5) for s in sources]
    views = PhotoViews(AdaptSettings(), tiles, seed=0)
    first, _ = views.make(sources[0], 0, 1)
    again, _ = PhotoViews(AdaptSettings(), tiles, seed=0).make(sources[0], 0, 1)
    other, _ = PhotoViews(AdaptSettings(), tiles, seed=1).make(sources[0], 0, 1)
    assert first.size == (256, 256) and np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    made = [views.make(sources[i % 3], i % 3, i)[1] for i in range(1, 40)]
    assert {"background", "pile", "crop", "color"} <= {name for names in made for name in names}
    off = {name: 0 for names in AUGMENTATIONS.values() for name in names if name != "flip"}
    plain = PhotoViews(AdaptSettings(**off, flip=False), tiles).make(sources[0], 0, 1)
    assert plain[1] == () and plain[0].size == (256, 256)


@pytest.mark.parametrize("augmentation", list(AUGMENTATIONS))
def test_a_view_without_one_augmentation_differs_only_where_it_was_applied(samples: Path, augmentation: str) -> None:
    sources = _sources(samples)
    tiles = [thumbnail(Image.fromarray(s.pixels), s.alpha > 0.5) for s in sources]
    full, cut = PhotoViews(AdaptSettings(), tiles), PhotoViews(without(AdaptSettings(), augmentation), tiles)
    for number in range(1, 13):
        picture, applied = full.make(sources[1], 1, number)
        reduced, left = cut.make(sources[1], 1, number)
        assert augmentation not in left
        if augmentation not in applied:
            assert np.array_equal(np.asarray(picture), np.asarray(reduced))


def test_settings_are_checked_and_travel_with_the_index(built_index: Path) -> None:
    with pytest.raises(SettingsError, match=r"head.adapt.views must be >= 2 .* got 1"):
        Settings().replace(**{"head.adapt.views": 1})
    with pytest.raises(SettingsError, match=r"head.adapt.jpeg must be 0 \(off\) or in \[5, 95\], got 3"):
        Settings().replace(**{"head.adapt.jpeg": 3})
    with pytest.raises(SettingsError, match="head.adapt.start must be 'pretrained' or 'current', got 'latest'"):
        Settings().replace(**{"head.adapt.start": "latest"})
    with pytest.raises(SettingsError, match=r"head.adapt.crop must be in \[0, 1\), got 1.5"):
        Settings().replace(**{"head.adapt.crop": 1.5})
    with pytest.raises(SettingsError, match=r"head.adapt.pseudo_labels must be one of .*, got 'vote'"):
        Settings().replace(**{"head.adapt.pseudo_labels": "vote"})
    with pytest.raises(SettingsError, match=r"head.adapt.pseudo_alpha must be in \(0, 1\), got 1.0"):
        Settings().replace(**{"head.adapt.pseudo_alpha": 1.0})
    with pytest.raises(SettingsError, match="head.adapt.pseudo_neighbours must be >= 1, got 0"):
        Settings().replace(**{"head.adapt.pseudo_neighbours": 0})
    with pytest.raises(SettingsError, match="unknown setting 'head.adapt.colour'"):
        Settings().replace(**{"head.adapt.colour": 0.1})
    with pytest.raises(UnknownNameError, match="Unknown augmentation 'sepia'; expected one of: background, pile"):
        without(AdaptSettings(), "sepia")
    changed = Settings().replace(**{"head.kind": "self", "head.adapt.views": 8, "head.adapt.background_dir": "/x"})
    assert Settings.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed
    assert changed.get("head.adapt.views") == 8


# -- the tuner


def test_the_tuner_follows_the_estimator_contract_and_checks_its_input() -> None:
    with pytest.raises(NotFittedError, match="not fitted yet"):
        SelfTuner(FAST).vectors(np.zeros((2, 1, 80, 14, 14), np.float16))
    network = create_embedder(EmbedSettings()).network()  # type: ignore[attr-defined]
    with pytest.raises(LookalikeError, match=r"needs \(n >= 2, views, c, h, w\) maps; got shape \(1, 3, 80, 14, 14\)"):
        SelfTuner(FAST).fit(np.zeros((1, 3, 80, 14, 14), np.float16), network=network, first_block=8, model="m",
                            base_fingerprint="f", gem_p=3.0)  # fmt: skip


def test_view_retrieval_and_mutual_neighbours() -> None:
    import torch

    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 0, 1]], np.float32)
    figures = view_retrieval(queries, np.array([0, 0, 3]), gallery)
    assert figures["recall@1"] == pytest.approx(2 / 3) and figures["map"] == pytest.approx((1 + 0.5 + 1) / 3)
    bank = torch.nn.functional.normalize(torch.tensor([[1, 0.1], [1, 0.2], [0.1, 1], [-1, 0.05]]), dim=1)
    pairs = _neighbours(bank, 1)
    assert pairs[:, 0].tolist() == [1, 0, -1, -1]  # 0 and 1 are each other's nearest; 2 and 3 are nobody's
    assert _neighbours(bank, 0) is None


# -- the engine and the CLI


def test_without_validation_views_it_is_installed_only_when_forced(engine: Engine) -> None:
    quick = replace(FAST, finetune_stages=1, adapt=AdaptSettings(views=2, epochs=1, validation_views=0, background=0,
                    pile=0))  # fmt: skip
    report = engine.train_embedding(quick)
    assert not report.kept and "no validation views" in report.verdict and "--force" in report.verdict
    assert not (engine.path / TUNING_DIR).exists()
    with pytest.raises(LookalikeError, match="head.adapt.start is 'current' but the index has no fine-tuned backbone"):
        engine.train_embedding(replace(quick, adapt=replace(quick.adapt, start="current")))


def test_cli_adapts_with_no_labels(built_index: Path, tmp_path: Path) -> None:
    from .conftest import copy_index

    path = copy_index(built_index, tmp_path)
    args = ["train-embedding", "--index", str(path), "--kind", "self", "--epochs", "1", "--backgrounds",
            str(Path(__file__).parent), "--set", "head.finetune_stages=1", "--set", "head.adapt.views=2",
            "--json", "--force"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"LOOKALIKE_PROGRESS_INTERVAL": "0"})
    assert result.exit_code != 0 and "holds no images" in result.output  # a folder without photos is refused
    samples_dir = Path(__file__).resolve().parents[1] / "src" / "lookalike" / "samples" / "grocery" / "queries"
    args[args.index("--backgrounds") + 1] = str(samples_dir)
    result = CliRunner().invoke(app, args, env={"LOOKALIKE_PROGRESS_INTERVAL": "0"})
    assert result.exit_code == 0, result.output
    assert "views and frozen maps: 60/60 (100%)" in result.stderr and "re-embedding: 60/60 (100%)" in result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "self" and report["n_train_products"] == 60 and (path / TUNING_DIR).is_dir()


# -- the evaluation: both routes, their combination, the queries whose top-1 changed


def test_evaluation_runs_both_routes_and_shows_the_top1_changes(samples: Path, tmp_path: Path) -> None:
    import csv

    from lookalike.evaluate.configs import create_config
    from lookalike.evaluate.harness import Config
    from lookalike.evaluate.report import run

    manifest = tmp_path / "studio.csv"  # studio images searched with photos; labelled photos to carry a model from
    with open(samples / "manifest.csv", newline="") as source, open(manifest, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "item", "category", "split"])
        split = {"iconic": "gallery", "queries": "query", "catalog": "training"}
        for row in csv.DictReader(source):
            writer.writerow([str(samples / row["path"]), row["item"], row["category"], split[row["split"]]])
    quick = {"head.finetune_epochs": 1, "head.finetune_stages": 1, "head.adapt.views": 2, "head.adapt.epochs": 1,
             "head.adapt.background": 0, "head.adapt.pile": 0, "head.adapt.pseudo_rounds": 1,
             "head.adapt.pseudo_epochs": 1, "rerank.views.count": 2}  # fmt: skip
    configs = [create_config("baseline")]
    for name in ("self", "carry", "carry-self", "self-photos", "archive", "views"):
        preset = create_config(name)
        configs.append(Config(name, preset.settings.replace(**quick), preset.search, preset.prepare))
    evaluation = run(manifest, configs, limit=6, latency_queries=0, samples=2, out=tmp_path / "out",
                     work_dir=tmp_path / "work")  # fmt: skip
    results = {result.name: result for result in evaluation.results}
    assert results["self"].training["train_embedding"]["kind"] == "self"
    assert results["carry"].training["carry_model"]["n_training_images"] == 60
    assert results["carry-self"].training["train_embedding"]["kind"] == "self"
    rounds = results["self-photos"].training["adapt_with_photos"]["rounds"]
    assert len(rounds) == 1 and rounds[0]["photos"] == 60 and rounds[0]["photos_kept"] > 0
    assert results["archive"].training["archive_photos"] == {"photos": 60, "added": 60, "reranker": True}
    views = {"images": 10, "missing": 0, "count": 2, "current": True, "reranker": True}
    assert results["views"].training["make_views"] == views
    for name in ("self-photos", "archive", "views"):  # the queries ran the re-rankers the steps' data is for
        assert all("rerank" in outcome.timings for outcome in results[name].queries), name
    assert all("rerank" not in outcome.timings for outcome in results["self"].queries)
    assert len(list((tmp_path / "work").glob("carry-*.index"))) == 1  # both carrying configurations share the model
    for name in ("self", "carry", "carry-self"):
        changes = results[name].top1_changes
        assert changes["against"] == "baseline" and changes["fixed"] + changes["broken"] <= 6
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Top-1 changes against baseline" in report
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["configs"]
    assert saved[2]["top1_changes"]["against"] == "baseline" and saved[0].get("top1_changes") is None


def test_top1_changes_are_counted_and_drawn(samples: Path, tmp_path: Path) -> None:
    from lookalike.evaluate.figures import render_changes
    from lookalike.evaluate.harness import QueryOutcome, top1_changes

    photos = sorted((samples / "queries").iterdir())[:3]
    hit = str(sorted((samples / "iconic").iterdir())[0])

    def run(first: list[bool]) -> list[QueryOutcome]:
        return [QueryOutcome(str(p), "x", None, np.array([right, True]), [(hit, 0.5)], {}, {}) for p, right in
                zip(photos, first, strict=True)]  # fmt: skip

    before, after = run([True, False, False]), run([False, True, False])
    assert top1_changes(before, after) == ([1], [0])
    grid, counts = render_changes(before, after, ("pretrained", "self"), lambda path: "x", tmp_path / "c.png")
    assert counts == {"fixed": 1, "broken": 1} and grid is not None and Image.open(grid).height > 4 * 132
    assert render_changes(before, before, ("a", "b"), lambda path: "x", tmp_path / "d.png")[0] is None
    with pytest.raises(ValueError, match="same queries"):
        top1_changes(before, after[:2])


def test_a_large_view_cache_is_memory_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike.embed import adapt

    assert type(adapt._allocate((2, 3, 4, 5, 5))) is np.ndarray
    monkeypatch.setattr(adapt, "MEMORY_LIMIT", 100)
    cache = adapt._allocate((2, 3, 4, 5, 5))
    cache[1, 2] = 1.5
    assert isinstance(cache, np.memmap) and float(cache.sum()) == 1.5 * 100 and cache.dtype == np.float16


# -- unlabelled photos: pseudo-labels


def test_each_catalogue_image_keeps_its_clearest_photos() -> None:
    from lookalike.embed.adapt import most_confident, nearest_with_margin

    catalogue = np.eye(3, dtype=np.float32)
    photos = np.array([[1, 0, 0], [0.9, 0.44, 0], [0.6, 0.8, 0], [0.8, 0.6, 0], [0, 0, 1]], np.float32)
    assigned, margin = nearest_with_margin(photos, catalogue)
    assert assigned.tolist() == [0, 0, 1, 0, 2]
    assert margin == pytest.approx([1.0, 0.46, 0.2, 0.2, 1.0])
    assert most_confident(assigned, margin, 2).tolist() == [0, 1, 2, 4]  # image 0 keeps its 2 clearest of 3
    assert most_confident(assigned, margin, 1).tolist() == [0, 2, 4]


def test_propagated_labels_follow_the_photos_graph() -> None:
    from lookalike.embed.adapt import nearest_with_margin, propagated_with_margin
    from lookalike.embed.base import l2_normalize

    def at(degrees: float) -> list[float]:
        return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees)), 0.0]

    catalogue = l2_normalize(np.array([at(0), at(90)], np.float32))
    # product 0's photos drift from its studio image towards 48 degrees, nearer the other product's image;
    # the last photo is orthogonal to everything (no edge in the graph)
    chain = [at(10), at(20), at(30), at(40), at(48), at(85), at(95), at(100), [0.0, 0.0, 1.0]]
    photos = l2_normalize(np.array(chain, np.float32))
    nearest, _ = nearest_with_margin(photos, catalogue)
    assigned, margin = propagated_with_margin(photos, catalogue, neighbours=2, alpha=0.95)
    assert nearest[4] == 1 and assigned[4] == 0  # the chain of photos carries image 0's id to the drifted one
    assert assigned[:8].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert assigned[8] == nearest[8] and margin[8] == 0.0  # unreachable: its nearest image, with no confidence
    assert np.all(margin[:8] > 0.5)


def test_propagation_in_blocks_of_catalogue_images_agrees_with_one_solve() -> None:
    from lookalike.embed.adapt import propagated_with_margin
    from lookalike.embed.base import l2_normalize

    rng = np.random.default_rng(0)
    catalogue = l2_normalize(rng.normal(size=(7, 16)).astype(np.float32))
    photos = l2_normalize(np.repeat(catalogue, 5, axis=0) + 0.15 * rng.normal(size=(35, 16)).astype(np.float32))
    whole = propagated_with_margin(photos, catalogue, neighbours=8, alpha=0.9, block=7)
    for block in (1, 2, 3):
        assigned, margin = propagated_with_margin(photos, catalogue, neighbours=8, alpha=0.9, block=block)
        assert assigned.tolist() == whole[0].tolist()
        np.testing.assert_allclose(margin, whole[1], atol=1e-5)  # conjugate gradients stop at 1e-6 residual
    assert whole[0].tolist() == np.repeat(np.arange(7), 5).tolist() and np.all(whole[1] < 1)  # one connected graph


@pytest.fixture(scope="module")
def pseudo(samples: Path, sample_queries: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 10 studio images indexed and adapted, with the 60 catalogue photos as an unlabelled archive."""
    path = tmp_path_factory.mktemp("pseudo") / "studio.index"
    quick = replace(FAST, adapt=replace(FAST.adapt, pseudo_rounds=2, pseudo_per_image=4, pseudo_epochs=2))
    photos = sorted((samples / "catalog").rglob("*.jpg"))
    with Engine.create(path, Settings()) as engine:
        engine.add([samples / "iconic"])
        before = {photo.name: _rank(engine, photo) for photo in sample_queries}
        stages: set[str] = set()
        report = engine.train_embedding(quick, photos=photos, on_stage=lambda s, d, t: stages.add(s), force=True)
        after = {photo.name: _rank(engine, photo) for photo in sample_queries}
        count, archive = len(engine), engine.archive_info()
    return {"path": path, "report": report, "stages": stages, "before": before, "after": after, "count": count,
            "photos": len(photos), "archive": archive}  # fmt: skip


def test_pseudo_labels_train_on_the_photos_without_indexing_them(pseudo: dict) -> None:
    report = pseudo["report"]
    assert pseudo["after"][KNOWN_PHOTO] < pseudo["before"][KNOWN_PHOTO]  # a photo the pretrained model ranks 3rd
    assert [r["round"] for r in report.rounds] == [1, 2] and report.kept
    first, second = report.rounds
    assert first["photos"] == pseudo["photos"] == 60 and first["photos_changed"] is None
    assert 0 < first["photos_kept"] <= 4 * 10 and first["catalogue_images_with_photos"] <= 10
    assert 0 <= second["photos_changed"] <= 60
    assert "2 round(s) of pseudo-labels on 60 unlabelled photos" in report.verdict
    assert {"photos' frozen maps", "catalogue frozen maps"} <= pseudo["stages"]
    assert pseudo["count"] == 10  # the photos taught the backbone; only the catalogue is indexed
    assert pseudo["archive"] == {"photos": 60, "current": True, "reranker": True}  # kept for the archive re-ranker
    assert "60 photos joined the index's photo archive" in report.verdict
    tuning = BackboneTuning.load(pseudo["path"] / TUNING_DIR)
    assert tuning.fingerprint() == report.fingerprint
    assert {"kind": "self", "pseudo_labels": "propagate", "round": 2, "photos": 60}.items() <= tuning.facts.items()


def test_unusable_photos_are_refused_and_the_index_is_left_as_it_was(
    samples: Path, tmp_path: Path, sample_queries: list[Path]
) -> None:
    from lookalike.errors import ImageError

    quick = replace(FAST, finetune_stages=1, adapt=AdaptSettings(views=2, epochs=1, validation_views=1, background=0,
                    pile=0, pseudo_rounds=1, pseudo_epochs=1))  # fmt: skip
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with Engine.create(tmp_path / "studio.index", Settings()) as engine:
        engine.add([samples / "iconic"])
        before = engine.search(sample_queries[0], k=3)
        with pytest.raises(ImageError, match=r"missing\.jpg.*no such file.*nothing was trained"):
            engine.train_embedding(quick, photos=[sample_queries[0], tmp_path / "missing.jpg"])
        with pytest.raises(ImageError, match=r"broken\.jpg"):
            engine.train_embedding(quick, photos=[sample_queries[0], broken], force=True)
        with pytest.raises(LookalikeError, match="photos are used by label-free adaptation only"):
            engine.train_embedding(replace(quick, kind="finetune"), photos=[sample_queries[0]])
        assert not (engine.path / TUNING_DIR).exists()
        assert [h.id for h in engine.search(sample_queries[0], k=3)] == [h.id for h in before]
    result = CliRunner().invoke(app, ["train-embedding", "--index", str(tmp_path / "studio.index"), "--kind", "self",
                                      "--photos", str(tmp_path / "nowhere")])  # fmt: skip
    assert result.exit_code != 0 and "--photos" in result.output and "not a folder" in result.output
