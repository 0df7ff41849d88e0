"""Category classifier and gated search, on the sample catalogue (7 categories, 60 images)."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.classify import (
    augment_image,
    create_classifier,
    load_classifier,
    plan_search,
    stratified_split,
)
from lookalike.classify.indexed import training_data
from lookalike.classify.mlp import MIN_IMPROVEMENT
from lookalike.cli import app
from lookalike.errors import IndexMismatchError, LookalikeError, SettingsError, UnknownNameError
from lookalike.settings import ClassifySettings

from .conftest import product_of


def _category_of_product(samples: Path) -> dict[str, str]:
    return {product_of(path): path.parent.name for path in (samples / "catalog").glob("*/*.jpg")}


@pytest.fixture(scope="module")
def trained_index(built_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample index with the default (mlp) classifier trained once."""
    path = tmp_path_factory.mktemp("classified") / "samples.index"
    shutil.copytree(built_index, path)
    with Engine.open(path) as engine:
        result = engine.train_classifier()
    assert result.n_train + result.n_validation == 60 and result.report is not None
    return path


@pytest.fixture()
def trained(trained_index: Path, tmp_path: Path) -> Engine:
    """A private, writable copy of the trained sample index."""
    copy = tmp_path / "trained.index"
    shutil.copytree(trained_index, copy)
    with Engine.open(copy) as opened:
        yield opened


@pytest.fixture(scope="module")
def stored(built_index: Path) -> tuple[np.ndarray, np.ndarray]:
    """The sample index's stored vectors and categories."""
    with Engine.open(built_index) as engine:
        _, vectors, labels = training_data(engine.store, engine._dim)
    return vectors, labels


def re_match(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def _with(engine: Engine, **changes: object) -> None:
    engine.settings = engine.settings.replace(**{f"classify.{k}": v for k, v in changes.items()})


# -- the classifier on unseen photos, through the engine


def test_predicts_the_category_of_unseen_photos_far_above_chance(
    trained_index: Path, samples: Path, sample_queries: list[Path]
) -> None:
    truth = _category_of_product(samples)
    right = 0
    with Engine.open(trained_index) as engine:
        for query in sample_queries:
            result = engine.search(query, k=3)
            predicted = result.details["classification"]
            assert 0.0 < predicted["probability"] <= 1.0 and len(predicted["top"]) == 5
            assert predicted["top"][0] == {"category": predicted["category"], "probability": predicted["probability"]}
            right += predicted["category"] == truth[product_of(query)]
    assert right >= 16, f"only {right}/20 sample photos got their category (chance: about 3)"


def test_a_confident_prediction_searches_only_that_category(trained_index: Path, samples: Path) -> None:
    with Engine.open(trained_index) as engine:
        result = engine.search(samples / "queries" / "Banana_023.jpg", k=10)
    predicted = result.details["classification"]
    assert predicted["category"] == "Banana" and predicted["gated"] and predicted["reason"].startswith("confident")
    assert result.searched_categories == ["Banana"] and {hit.category for hit in result} == {"Banana"}
    assert "classify" in result.timings
    assert result.to_dict()["classification"]["category"] == "Banana"


def test_low_confidence_falls_back_to_the_top_k_or_to_all(trained: Engine, samples: Path) -> None:
    query = samples / "queries" / "Arla-Standard-Milk_016.jpg"
    _with(trained, threshold=0.999, min_margin=0.0, fallback="top_k", fallback_k=3)
    result = trained.search(query, k=30)
    predicted = result.details["classification"]
    assert predicted["gated"] and re_match(r"low confidence \(probability 0\.\d+ < 0\.999\)", predicted["reason"])
    assert result.searched_categories == [entry["category"] for entry in predicted["top"][:3]]
    assert {hit.category for hit in result} <= set(result.searched_categories)

    _with(trained, fallback="all")
    result = trained.search(query, k=60)
    assert result.searched_categories is None and not result.details["classification"]["gated"]
    assert "searched every category" in result.details["classification"]["reason"]
    assert len(result) == 60

    _with(trained, threshold=0.0, min_margin=1.0, fallback="top_k", fallback_k=2)
    result = trained.search(query, k=5)
    assert "margin" in result.details["classification"]["reason"] and len(result.searched_categories) == 2


def test_a_forced_category_and_gating_off(trained: Engine, samples: Path) -> None:
    query = samples / "queries" / "Banana_023.jpg"
    forced = trained.search(query, k=5, category="Milk")
    assert forced.searched_categories == ["Milk"] and {hit.category for hit in forced} == {"Milk"}
    assert forced.details["classification"]["category"] == "Banana"
    assert forced.details["classification"]["reason"] == "category given by the caller"

    off = trained.search(query, k=30, gating=False)
    assert off.searched_categories is None and not off.details["classification"]["gated"]
    assert off.details["classification"]["reason"].startswith("gating off")
    assert len({hit.category for hit in off}) > 1

    _with(trained, gating=False)
    assert trained.search(query, k=5).searched_categories is None
    assert trained.search(query, k=5, gating=True).searched_categories == ["Banana"]


def test_search_by_id_carries_the_prediction_too(trained: Engine) -> None:
    item = trained.store.items(category="Tomato")[0]
    result = trained.search_by_id(item.id, k=3)
    assert result.details["classification"]["category"] == "Tomato" and item.id not in [h.id for h in result]


def test_without_a_classifier_nothing_changes(engine: Engine, samples: Path) -> None:
    result = engine.search(samples / "queries" / "Banana_023.jpg", k=3)
    assert "classification" not in result.details and result.searched_categories is None
    status = engine.info()["classifier"]
    assert status["state"] == "absent" and "lookalike train-classifier" in status["reason"]


# -- staleness


def test_adding_an_image_makes_the_classifier_stale(trained: Engine, samples: Path) -> None:
    assert trained.info()["classifier"]["state"] == "fresh"
    trained.add([samples / "queries" / "Banana_023.jpg"], categories="Banana")
    status = trained.info()["classifier"]
    assert status["state"] == "stale"
    assert re_match(r"images per category changed: Banana 6 -> 7; retrain it", status["reason"])


def test_a_new_category_is_stale_and_always_searched(trained: Engine, samples: Path) -> None:
    trained.add([samples / "queries" / "Red-Bell-Pepper_017.jpg"], categories="Snacks")
    assert "new categories ['Snacks']" in trained.info()["classifier"]["reason"]
    result = trained.search(samples / "queries" / "Banana_023.jpg", k=5)
    assert result.searched_categories == ["Banana", "Snacks"]  # unknown to the classifier: never hidden


def test_removing_and_replacing_images_is_noticed(trained: Engine) -> None:
    milk = trained.store.items(category="Milk")[0]
    trained.remove([milk.id])
    assert "Milk 12 -> 11" in trained.info()["classifier"]["reason"]
    trained.add([Path(milk.path)], categories="Milk")  # same count again, but another image id
    assert "images were replaced since training" in trained.info()["classifier"]["reason"]


def test_retraining_makes_it_fresh_again(trained: Engine, samples: Path) -> None:
    trained.add([samples / "queries" / "Banana_023.jpg"], categories="Banana")
    result = trained.train_classifier("logreg")
    assert result.classifier.kind == "logreg" and trained.info()["classifier"]["state"] == "fresh"
    assert trained.info()["classifier"]["kind"] == "logreg"


def test_the_same_seed_gives_the_same_weights(stored: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, labels = stored
    settings = ClassifySettings(max_epochs=15, seed=3)
    first = create_classifier("mlp", settings).fit(vectors, labels)
    second = create_classifier("mlp", settings).fit(vectors, labels)
    other = create_classifier("mlp", dataclasses.replace(settings, seed=4)).fit(vectors, labels)
    for a, b in zip(first.weights_, second.weights_, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.history_ == second.history_
    assert not np.array_equal(first.weights_[0], other.weights_[0])


def test_training_follows_the_papers_recipe(stored: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, labels = stored
    fast = ClassifySettings(max_epochs=120, learning_rate=0.05, plateau_patience=2, early_stopping_patience=4)
    classifier = create_classifier("mlp", fast).fit(vectors, labels)
    assert [w.shape for w in classifier.weights_] == [(1280, 1024), (1024, 512), (512, 7)]
    history = classifier.history_
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert len(history["loss"]) < 120  # stopped early
    assert len(history["loss"]) - classifier.best_epoch_ == 4  # patience, then the best epoch's weights
    # the best epoch: no later epoch improved the validation loss by more than the minimum delta
    assert history["val_loss"][classifier.best_epoch_ - 1] <= min(history["val_loss"]) + MIN_IMPROVEMENT
    assert history["lr"][0] == pytest.approx(0.05) and min(history["lr"]) < 0.05  # halved on plateaus
    assert history["val_accuracy"][classifier.best_epoch_ - 1] == 1.0


def test_errors_say_what_was_expected(stored: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    vectors, labels = stored
    with pytest.raises(UnknownNameError, match="Unknown classifier kind 'svm'; expected one of: knn, logreg, mlp"):
        create_classifier("svm")
    with pytest.raises(LookalikeError, match=r"at least 2 classes; got 1 \(\['Milk'\]\)"):
        create_classifier("logreg").fit(vectors[:3], ["Milk"] * 3)
    with pytest.raises(LookalikeError, match=r"expected X of shape \(n, d\) and y of shape \(n,\)"):
        create_classifier("logreg").fit(vectors, labels[:5])
    fitted = create_classifier("logreg").fit(vectors, labels)
    with pytest.raises(IndexMismatchError, match=r"expected vectors of 1280 features .* got shape \(1, 64\)"):
        fitted.predict(np.zeros((1, 64)))
    with pytest.raises(LookalikeError, match=r"validation labels \['Shoes'\] do not occur"):
        create_classifier("mlp").fit(vectors, labels, validation=(vectors[:1], ["Shoes"]))
    with pytest.raises(LookalikeError, match="no saved classifier here"):
        load_classifier(tmp_path)
    with pytest.raises(SettingsError, match="classify.fallback must be 'top_k' or 'all', got 'some'"):
        Settings().replace(**{"classify.fallback": "some"})


def test_one_category_cannot_train(tmp_path: Path, samples: Path, built_index: Path) -> None:
    copy = tmp_path / "one.index"
    shutil.copytree(built_index, copy)
    with Engine.open(copy) as engine:
        engine.remove([item.id for item in engine.store.items() if item.category != "Milk"])
        with pytest.raises(LookalikeError, match=r"at least 2 categories; the index holds 1 \(\['Milk'\]\)"):
            engine.train_classifier()


def test_the_split_is_stratified_and_seeded() -> None:
    labels = np.array(["a"] * 10 + ["b"] * 5 + ["c"] * 2 + ["d"])
    train, held = stratified_split(labels, 0.2, seed=1)
    assert sorted(labels[held].tolist()) == ["a", "a", "b", "c"]  # d has one image: kept for training
    assert set(labels[train]) == {"a", "b", "c", "d"} and len(train) + len(held) == len(labels)
    again = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(held, again[1]) and not np.array_equal(held, stratified_split(labels, 0.2, seed=2)[1])


def test_old_settings_without_a_classify_section_still_load() -> None:
    data = Settings().to_dict()
    del data["classify"]
    assert Settings.from_dict(data).classify == ClassifySettings()


def test_plan_search_never_hides_uncategorised_images(stored: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, labels = stored
    classifier = create_classifier("logreg").fit(vectors, labels)
    settings = ClassifySettings(threshold=0.0, min_margin=0.0)
    decision = plan_search(classifier, vectors[0], settings, partitions=["Apple", "Milk", ""])
    assert decision.searched == [labels[0], None] and decision.categories == [labels[0]]
    unpartitioned = plan_search(classifier, vectors[0], settings, partitions=None)
    assert unpartitioned.searched is None and unpartitioned.details["reason"] == "index not partitioned by category"


# -- augmentation from images


def test_augmentation_is_seeded_and_changes_the_image(samples: Path) -> None:
    image = Image.open(samples / "catalog" / "Milk" / "Arla-Standard-Milk_001.jpg").convert("RGB")
    settings = ClassifySettings()
    first = augment_image(image, np.random.default_rng(0), settings)
    again = augment_image(image, np.random.default_rng(0), settings)
    assert first.size == image.size and np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(image))
    plain = ClassifySettings(augment_rotation=0.0, augment_zoom=0.0, augment_flip=False)
    assert np.array_equal(np.asarray(augment_image(image, np.random.default_rng(0), plain)), np.asarray(image))


def test_training_with_augmented_copies_on_a_tiny_catalogue(tmp_path: Path, samples: Path) -> None:
    catalog = tmp_path / "catalog"
    for category, product in (("Banana", "Banana"), ("Pepper", "Red-Bell-Pepper")):
        (catalog / category).mkdir(parents=True)
        for path in sorted((samples / "catalog" / category).glob(f"{product}_*.jpg"))[:3]:
            shutil.copy(path, catalog / category / path.name)
    with Engine.create(tmp_path / "tiny.index") as engine:
        engine.add([catalog])
        result = engine.train_classifier("logreg", augment_copies=1, validation_fraction=0.0)
        assert result.n_train == 6 and result.n_augmented == 6 and result.report is None
        assert engine.search(samples / "queries" / "Banana_023.jpg", k=1).details["classification"]["category"] == (
            "Banana"
        )


# -- the command line


def test_train_classifier_command_writes_report_and_figures(trained_index: Path, tmp_path: Path, samples: Path) -> None:
    runner = CliRunner()
    copy = tmp_path / "cli.index"
    shutil.copytree(trained_index, copy)
    out = tmp_path / "figures"
    command = ["train-classifier", "--index", str(copy), "--out", str(out), "--seed", "1"]
    result = runner.invoke(app, command, env={"LOOKALIKE_PROGRESS_INTERVAL": "0"})
    assert result.exit_code == 0, result.output
    assert "average per-class accuracy" in result.output and "precision" in result.output
    assert "training the classifier (epochs): 1/300" in result.stderr  # progress lines: stderr is not a terminal
    for name in ("confusion.png", "training_curves.png", "report.json"):
        assert (out / name).is_file(), name
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    info = runner.invoke(app, ["info", "--index", str(copy)])
    assert re.search(r"classifier:\s+fresh", info.output), info.output

    query = str(samples / "queries" / "Banana_023.jpg")
    found = runner.invoke(app, ["search", query, "--index", str(copy), "-k", "2"])
    assert found.exit_code == 0 and "predicted category: Banana" in found.output
    off = runner.invoke(app, ["search", query, "--index", str(copy), "--no-gating", "--json"])
    assert off.exit_code == 0 and '"reason": "gating off: searched every category"' in off.output

    bad = runner.invoke(app, ["train-classifier", "--index", str(copy), "--set", "embed.model=x"])
    assert bad.exit_code == 2 and "--set expects classify.<name>=value" in bad.output


def test_knn_votes_of_the_nearest_images(trained: Engine, samples: Path, sample_queries: list[Path]) -> None:
    from lookalike.classify import NeighbourClassifier

    train = np.array([[1, 0], [0.9, 0.436], [0.8, 0.6], [0, 1]], np.float32)
    labels = np.array(["Milk", "Juice", "Juice", "Apple"])
    query = np.array([[0.99, 0.14]], np.float32)  # nearest: the one Milk; then the two Juices
    sharp = NeighbourClassifier(ClassifySettings(knn_k=3, knn_temperature=0.01)).fit(train, labels)
    assert sharp.predict(query).tolist() == ["Milk"]
    apple, juice, milk = sharp.predict_proba(query)[0]  # columns: the sorted classes
    assert apple == 0.0 and milk > 0.95 and apple + juice + milk == pytest.approx(1.0)  # Apple is not among the 3
    broad = NeighbourClassifier(ClassifySettings(knn_k=3, knn_temperature=10.0)).fit(train, labels)
    assert broad.predict(query).tolist() == ["Juice"]  # two votes of about equal weight beat one
    with pytest.raises(SettingsError, match="classify.knn_k must be >= 1, got 0"):
        ClassifySettings(knn_k=0).validate()
    result = trained.train_classifier("knn")  # on the index: its stored vectors and categories
    assert result.classifier.kind == "knn" and trained.info()["classifier"]["kind"] == "knn"
    assert result.n_validation > 0 and len(result.classifier.vectors_) == len(trained)  # held out, then joined
    truth = _category_of_product(samples)
    predicted = [trained.search(query, k=3).details["classification"]["category"] for query in sample_queries]
    right = sum(category == truth[product_of(query)] for category, query in zip(predicted, sample_queries, strict=True))
    assert right >= 16, f"only {right}/20 sample photos got their category (chance: about 3)"
