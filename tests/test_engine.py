"""The offline and online stages end to end on the sample catalogue."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Engine, Settings
from lookalike.errors import IndexMismatchError, IndexNotFoundError, LookalikeError, SettingsError

from .conftest import copy_index, product_of


def test_a_photo_of_a_product_ranks_another_photo_of_it_first(engine: Engine, sample_queries: list[Path]) -> None:
    first_right = 0
    for query in sample_queries:
        hits = engine.search(query, k=5)
        assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        first_right += product_of(hits[0].path) == product_of(query)
    assert first_right >= 16, f"only {first_right}/20 queries found their product first"


def test_hits_carry_path_category_scores_and_timings(engine: Engine, samples: Path) -> None:
    result = engine.search(samples / "queries" / "Banana_023.jpg", k=3)
    hit = result[0]
    assert hit.category == "Banana" and Path(hit.path).is_file()
    assert hit.scores["vector"] == pytest.approx(hit.score) and 0.0 < hit.score <= 1.0001
    assert {"decode", "embed", "search", "total"} <= set(result.timings)
    assert result.searched_categories is None
    assert result.to_dict()["hits"][0]["id"] == hit.id


def test_search_within_a_category(engine: Engine, samples: Path) -> None:
    result = engine.search(samples / "queries" / "Banana_023.jpg", k=20, category="Milk")
    assert len(result) == 12 and {h.category for h in result} == {"Milk"}
    assert result.searched_categories == ["Milk"]
    with pytest.raises(LookalikeError, match=r"unknown category 'Shoes'; the index holds: Apple, Banana"):
        engine.search(samples / "queries" / "Banana_023.jpg", category="Shoes")


def test_k_larger_than_the_catalogue(engine: Engine, sample_queries: list[Path]) -> None:
    assert len(engine.search(sample_queries[0], k=500)) == 60
    with pytest.raises(SettingsError, match="k must be >= 1"):
        engine.search(sample_queries[0], k=0)


def test_reopening_gives_identical_results(built_index: Path, sample_queries: list[Path]) -> None:
    with Engine.open(built_index) as first:
        before = [[(h.id, h.score) for h in first.search(q, k=10)] for q in sample_queries[:4]]
    with Engine.open(built_index) as second:
        after = [[(h.id, h.score) for h in second.search(q, k=10)] for q in sample_queries[:4]]
    assert before == after


def test_add_remove_and_re_add(engine: Engine, samples: Path, tmp_path: Path) -> None:
    query = samples / "queries" / "Royal-Gala_033.jpg"
    new_file = tmp_path / "extra" / "Royal-Gala_new.jpg"
    new_file.parent.mkdir()
    shutil.copyfile(query, new_file)

    report = engine.add([new_file], categories="Apple")
    assert len(report.added) == 1 and len(engine) == 61
    top = engine.search(query, k=1)[0]
    assert top.path == str(new_file.resolve()) and top.score == pytest.approx(1.0, abs=1e-4)

    again = engine.add([new_file], categories="Apple")
    assert again.added == [] and again.unchanged == [str(new_file.resolve())] and len(engine) == 61

    Image.open(samples / "queries" / "Banana_023.jpg").save(new_file)  # same path, new content
    changed = engine.add([new_file], categories="Apple")
    assert len(changed.updated) == 1 and len(engine) == 61
    assert engine.search(query, k=1)[0].path != str(new_file.resolve())

    removed = engine.remove([str(new_file)])
    assert removed.removed == changed.updated and len(engine) == 60
    assert engine.remove([999999, "no/such.jpg"]).missing == ["999999", "no/such.jpg"]
    assert all(h.path != str(new_file.resolve()) for h in engine.search(query, k=60))


def test_remove_by_id_survives_reopening(engine: Engine, sample_queries: list[Path]) -> None:
    victim = engine.search(sample_queries[0], k=1)[0]
    engine.remove([victim.id])
    path = engine.path
    engine.close()
    with Engine.open(path) as reopened:
        assert len(reopened) == 59
        assert victim.id not in [h.id for h in reopened.search(sample_queries[0], k=60)]


def test_bad_files_are_skipped_and_reported_without_losing_anything(
    engine: Engine, tmp_path: Path, samples: Path
) -> None:
    folder = tmp_path / "incoming" / "Milk"
    folder.mkdir(parents=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not pixels")
    good = folder / "good.jpg"
    shutil.copyfile(samples / "queries" / "Arla-Standard-Milk_001.jpg", good)
    data = good.read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 3])

    report = engine.add([tmp_path / "incoming"])
    assert len(report.added) == 1 and len(engine) == 61
    reasons = dict((Path(p).name, r) for p, r in report.failed)
    assert set(reasons) == {"empty.jpg", "text.png", "cut.jpg"}
    assert "empty" in reasons["empty.jpg"] and "not an image" in reasons["text.png"]
    assert "truncated" in reasons["cut.jpg"]
    assert engine.search(good, k=1)[0].path == str(good.resolve())


def test_search_by_catalogue_id_leaves_the_image_out(engine: Engine) -> None:
    item = engine.store.items(category="Juice")[0]
    result = engine.search_by_id(item.id, k=3)
    assert item.id not in [h.id for h in result] and len(result) == 3
    assert product_of(result[0].path) == product_of(item.path)


def test_info(engine: Engine) -> None:
    facts = engine.info()
    assert facts["images"] == 60 and facts["dim"] == 1280
    assert facts["categories"]["Milk"] == 12 and facts["partitions"]["Juice"] == 12
    assert facts["embedder"]["embedder"].startswith("efficientnet-lite0|weights=")
    assert facts["embedder"]["tuning"] is None and facts["embedder"]["transform"] is None
    assert facts["settings"]["embed"]["gem_p"] == 3.0 and facts["size_bytes"] > 60 * 1280 * 4


def test_settings_are_saved_with_the_index(tmp_path: Path) -> None:
    settings = Settings().replace(**{"embed.input_size": 192, "embed.grayscale": True})
    Engine.create(tmp_path / "x.index", settings).close()
    with Engine.open(tmp_path / "x.index") as engine:
        assert engine.settings == settings


def test_create_refuses_to_clobber(tmp_path: Path, built_index: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(LookalikeError, match="not empty and is not a lookalike index"):
            Engine.create(tmp_path / "mine", overwrite=overwrite)
    assert (tmp_path / "mine" / "thesis.txt").exists()
    copy = copy_index(built_index, tmp_path)
    with pytest.raises(LookalikeError, match="already exists and is not empty.*--rebuild"):
        Engine.create(copy)
    with Engine.create(copy, overwrite=True) as fresh:  # replaced only once the new one is complete
        assert len(fresh) == 0
    assert not list(tmp_path.glob(".*.creating-*")) and not list(tmp_path.glob(".*.old-*"))


def test_open_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="no lookalike index here"):
        Engine.open(tmp_path / "nothing")


def test_vectors_from_another_model_are_refused(engine: Engine, sample_queries: list[Path]) -> None:
    engine.store.set_meta("embedder", "efficientnet-lite0|weights=0000|size=224|gem=3|grey=0")
    with pytest.raises(IndexMismatchError, match="cannot be compared: rebuild the index"):
        engine.search(sample_queries[0])


@pytest.mark.parametrize("damage", ["stale", "deleted"])
def test_vector_snapshot_is_rebuilt_from_the_database(engine: Engine, sample_queries: list[Path], damage: str) -> None:
    expected = [h.id for h in engine.search(sample_queries[3], k=10)]
    path = engine.path
    if damage == "stale":  # a write committed after the last snapshot, as after a crash
        engine.store.set_meta("note", "committed after the snapshot")
    engine.close()
    if damage == "deleted":
        for snapshot in (path / "vectors").glob("gen-*"):
            shutil.rmtree(snapshot)
    with Engine.open(path) as reopened:
        assert [h.id for h in reopened.search(sample_queries[3], k=10)] == expected
        snapshot = path / "vectors" / f"gen-{reopened.store.generation}"
        assert not snapshot.is_dir(), "a search is read-only: it rebuilds in memory and never writes"
        report = reopened.check(repair=True)
        assert report.repaired and (path / "vectors" / f"gen-{reopened.store.generation}").is_dir()
        assert reopened.check().ok
        assert [h.id for h in reopened.search(sample_queries[3], k=10)] == expected


def test_embeddings_are_deterministic_and_unit_length(engine: Engine, sample_queries: list[Path]) -> None:
    embedder = engine.featurizer.embedder
    image = Image.open(sample_queries[0])
    first, second = embedder.embed([image]), embedder.embed([image, Image.open(sample_queries[1])])
    np.testing.assert_allclose(first[0], second[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(second, axis=1), 1.0, atol=1e-5)


def test_the_same_file_twice_in_one_batch_is_indexed_once(engine: Engine, tmp_path: Path, samples: Path) -> None:
    photo = sorted((samples / "queries").iterdir())[0]
    alias = tmp_path / "alias.jpg"
    alias.symlink_to(photo)
    report = engine.add([photo, photo, alias], categories="Twice")
    assert len(report.added) == 1 and report.duplicates == [str(photo), str(alias)] and not report.failed
    assert engine.categories()["Twice"] == 1
