"""Catalogue health on the sample catalogue: duplicates grouped, planted mislabels flagged, reports written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike import Engine, Settings
from lookalike.cli import app
from lookalike.errors import SettingsError, UnknownNameError
from lookalike.health import (
    DEFAULT_THRESHOLD,
    AuditSettings,
    DuplicateReport,
    DuplicateSettings,
    audit,
    expected_precision,
    find_duplicates,
    update_duplicates,
)
from lookalike.health.neighbours import UnionFind
from lookalike.io.catalog import CatalogEntry

runner = CliRunner()
ORIGINAL = "Oatghurt/Oatly-Natural-Oatghurt_012.jpg"


def edited_copy(samples: Path, folder: Path) -> Path:
    """A catalogue photo re-encoded at 70% of its size, the way a re-upload looks."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "reupload.jpg"
    with Image.open(samples / "catalog" / ORIGINAL) as image:
        image.convert("RGB").resize((image.width * 7 // 10, image.height * 7 // 10)).save(target, quality=70)
    return target


def group_of(report: DuplicateReport, item_id: int) -> list[int] | None:
    return next(([m.id for m in g.members] for g in report.groups if item_id in [m.id for m in g.members]), None)


def test_a_reencoded_copy_is_grouped_with_its_original_and_the_larger_kept(
    engine: Engine, samples: Path, tmp_path: Path
) -> None:
    original = engine.find(samples / "catalog" / ORIGINAL)
    (added,) = engine.add([edited_copy(samples, tmp_path / "new")], "Oatghurt").added
    report = find_duplicates(engine)
    members = group_of(report, added)
    assert members is not None and original.id in members, [[m.path for m in g.members] for g in report.groups]
    group = next(g for g in report.groups if added in [m.id for m in g.members])
    assert group.kind == "near" and group.keeper == original.id  # the original has more pixels
    assert max(s for a, b, s in group.pairs if added in (a, b)) >= DEFAULT_THRESHOLD
    oldest = find_duplicates(engine, DuplicateSettings(keep="oldest"))
    assert next(g for g in oldest.groups if added in [m.id for m in g.members]).keeper == original.id
    assert report.expected_precision == expected_precision(DEFAULT_THRESHOLD) is not None


def test_exact_copies_are_flagged_apart(engine: Engine, samples: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copies" / "same-bytes.jpg"
    copy.parent.mkdir()
    shutil.copy(samples / "catalog" / ORIGINAL, copy)
    (added,) = engine.add([copy], "Oatghurt").added
    group = next(g for g in find_duplicates(engine).groups if added in [m.id for m in g.members])
    assert group.kind == "exact" and len(group.members) == 2
    copied = next(m for m in group.members if m.id == added)
    assert copied.exact_copy_of == engine.find(samples / "catalog" / ORIGINAL).id


def test_distinct_products_are_not_grouped_at_the_default_threshold(engine: Engine) -> None:
    report = find_duplicates(engine)
    for group in report.groups:
        assert len({m.item or Path(m.path).stem.rsplit("_", 1)[0] for m in group.members}) == 1, group


def test_an_update_queries_only_new_images_and_merges_them(engine: Engine, samples: Path, tmp_path: Path) -> None:
    before = find_duplicates(engine)
    (added,) = engine.add([edited_copy(samples, tmp_path / "new")], "Oatghurt").added
    updated = update_duplicates(engine, DuplicateReport.from_dict(json.loads(json.dumps(before.to_dict()))))
    assert updated.last_id == added and group_of(updated, added) is not None
    full = find_duplicates(engine)
    assert sorted(map(sorted, ([m.id for m in g.members] for g in updated.groups))) == sorted(
        map(sorted, ([m.id for m in g.members] for g in full.groups))
    )
    engine.remove([added])
    assert group_of(update_duplicates(engine, updated), added) is None


def test_settings_errors_say_what_was_expected() -> None:
    with pytest.raises(SettingsError, match=r"cosine similarity in \[-1, 1\], got 1.5"):
        DuplicateSettings(threshold=1.5)
    with pytest.raises(UnknownNameError, match="expected one of: first-path, largest, oldest"):
        DuplicateSettings(keep="newest")
    with pytest.raises(SettingsError, match="vote share in"):
        AuditSettings(min_share=0)


def test_the_default_threshold_is_the_calibrated_one() -> None:
    from lookalike.health.calibration import CURVE, TARGET_PRECISION

    meeting = [threshold for threshold, precision, _ in CURVE if precision >= TARGET_PRECISION]
    assert min(meeting) == DEFAULT_THRESHOLD
    assert expected_precision(DEFAULT_THRESHOLD) >= TARGET_PRECISION
    assert expected_precision(0.5) is None and expected_precision(0.887) == expected_precision(DEFAULT_THRESHOLD)


def test_union_find_joins_chains() -> None:
    sets = UnionFind()
    for a, b in [(5, 9), (9, 2), (7, 8)]:
        sets.union(a, b)
    assert sets.groups() == [[2, 5, 9], [7, 8]]


def test_a_photo_filed_under_the_wrong_category_is_flagged(engine: Engine, samples: Path) -> None:
    (planted,) = engine.add([samples / "queries" / "Banana_023.jpg"], "Milk").added
    report = audit(engine)
    suspect = next(s for s in report.mislabelled if s.id == planted)
    assert suspect.label == "category" and suspect.current == "Milk" and suspect.voted == "Banana"
    assert suspect.share >= 0.5 > suspect.own_share
    assert report.ranked()[0] == planted
    assert len(report.outliers) == 2  # 2% of 61, rounded up


def test_a_photo_filed_under_the_wrong_product_is_flagged(tmp_path: Path, samples: Path) -> None:
    rows = list(csv.DictReader((samples / "manifest.csv").open()))
    entries = [CatalogEntry(samples / r["path"], r["category"], r["item"]) for r in rows if r["split"] == "catalog"]
    entries.append(CatalogEntry(samples / "queries" / "Banana_023.jpg", "Banana", "Arla-Standard-Milk"))
    with Engine.create(tmp_path / "items.index", Settings()) as engine:
        engine.add(entries)
        planted = engine.find(samples / "queries" / "Banana_023.jpg").id
        report = audit(engine)
    assert report.labels == ["category", "item"]
    suspect = next(s for s in report.mislabelled if s.id == planted and s.label == "item")
    assert suspect.current == "Arla-Standard-Milk" and suspect.voted == "Banana"


def test_set_category_keeps_the_vector_and_moves_the_image(engine: Engine, samples: Path) -> None:
    item = engine.find(samples / "catalog" / ORIGINAL)
    counts = engine.categories()
    before = engine.store.vectors_of([item.id], engine.catalog.dim)[item.id]
    report = engine.set_category([item.id, "/no/such.jpg"], "Milk")
    assert report.removed == [item.id] and report.missing == ["/no/such.jpg"]
    moved = engine.item(report.moved[item.id])
    assert moved.category == "Milk" and moved.path == item.path and engine.item(item.id) is None
    assert (engine.store.vectors_of([moved.id], engine.catalog.dim)[moved.id] == before).all()
    assert engine.search_by_id(moved.id, 1, category="Milk").hits  # searchable in its new category
    assert engine.categories() == {**counts, "Oatghurt": counts["Oatghurt"] - 1, "Milk": counts["Milk"] + 1}


def test_cli_reports_parse(built_index: Path, tmp_path: Path, samples: Path) -> None:
    index = tmp_path / "copy.index"
    shutil.copytree(built_index, index)
    runner.invoke(app, ["add", str(edited_copy(samples, tmp_path / "new")), "--index", str(index)])
    out = tmp_path / "report"
    found = runner.invoke(app, ["duplicates", "--index", str(index), "--out", str(out)])
    assert found.exit_code == 0, found.output
    assert "expected precision" in found.output
    payload = json.loads((out / "duplicates.json").read_text())
    assert payload["groups"] and payload["expected_precision"] is not None
    rows = list(csv.DictReader((out / "duplicates.csv").open()))
    assert {row["group"] for row in rows} == {str(n) for n in range(1, len(payload["groups"]) + 1)}
    page = (out / "duplicates.html").read_text()
    assert "<table class=sortable>" in page and "thumbs/" in page and "expected precision" in page
    assert all(f.stat().st_size < 20_000 for f in (out / "thumbs").iterdir())
    again = runner.invoke(app, ["duplicates", "--index", str(index), "--out", str(out), "--update"])
    assert again.exit_code == 0 and json.loads((out / "duplicates.json").read_text())["notes"]
    audited = runner.invoke(app, ["audit", "--index", str(index), "--out", str(out)])
    assert audited.exit_code == 0, audited.output
    assert json.loads((out / "audit.json").read_text())["images"] == 61
    assert list(csv.DictReader((out / "audit-outliers.csv").open()))
    assert "Likely mislabelled" in (out / "audit.html").read_text()
    bad = runner.invoke(app, ["duplicates", "--index", str(index), "--keep", "newest", "--out", str(out)])
    assert bad.exit_code == 2 and "first-path, largest, oldest" in bad.output


@pytest.mark.slow
def test_health_on_the_milvus_backend(tmp_path: Path, samples: Path) -> None:
    pytest.importorskip("pymilvus", reason="the milvus backend needs pymilvus + milvus-lite (pip install .[scale])")
    settings = Settings().replace(**{"index.backend": "milvus", "index.uri": str(tmp_path / "milvus.db")})
    copy = tmp_path / "copy.jpg"
    shutil.copy(samples / "catalog" / "Banana" / "Banana_001.jpg", copy)
    with Engine.create(tmp_path / "milvus.index", settings) as engine:
        engine.add([samples / "catalog" / name for name in ("Banana", "Milk")], categories=["Banana", "Milk"])
        (copied,) = engine.add([copy], "Banana").added
        (planted,) = engine.add([samples / "queries" / "Banana_023.jpg"], "Milk").added
        group = next(g for g in find_duplicates(engine).groups if copied in [m.id for m in g.members])
        original = engine.find(samples / "catalog" / "Banana" / "Banana_001.jpg").id
        assert next(m for m in group.members if m.id == copied).exact_copy_of == original
        assert (original, copied, 1.0) in group.pairs and len(group.pairs) == len(set(group.pairs))
        assert any(s.id == planted and s.voted == "Banana" for s in audit(engine).mislabelled)
        moved = engine.set_category([planted], "Banana").moved[planted]
        assert engine.item(moved).category == "Banana"
        assert not any(s.id == moved and s.label == "category" for s in audit(engine).mislabelled)


def test_an_approximate_index_gives_the_exact_groups(engine: Engine, samples: Path, tmp_path: Path) -> None:
    engine.add([edited_copy(samples, tmp_path / "new")], "Oatghurt")
    exact = find_duplicates(engine, DuplicateSettings(threshold=0.8))
    engine.rebuild("hnsw", min_vectors=8)
    with engine.catalog.searching() as store:
        assert store.plan(None).approximate  # the shortlist is re-scored from the stored vectors
    approximate = find_duplicates(engine, DuplicateSettings(threshold=0.8))
    assert [[m.id for m in g.members] for g in approximate.groups] == [[m.id for m in g.members] for g in exact.groups]
    assert [g.pairs for g in approximate.groups] == [g.pairs for g in exact.groups]
