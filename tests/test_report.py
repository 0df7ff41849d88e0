"""`lookalike evaluate`: presets, the report folder, results.json and the comparison with an older run.

One CLI run on the bundled fixture manifest (3 of its 20 queries, its 60 catalogue photos) is
shared by the tests that need real results; the rest use hand-made results and need no model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.errors import LookalikeError, SettingsError
from lookalike.evaluate import harness
from lookalike.evaluate.compare import compare, comparison_rows, headline, load_results
from lookalike.evaluate.configs import (
    PRESETS,
    available_presets,
    configs_from_file,
    create_config,
    load_dataset,
    register_preset,
    resolve_configs,
    subsample,
)
from lookalike.evaluate.datasets import from_manifest
from lookalike.evaluate.harness import ConfigResult, QueryOutcome, evenly_spaced
from lookalike.evaluate.report import Evaluation, worst_failures, write_report
from lookalike.samples import sample_dir

runner = CliRunner()
MANIFEST = sample_dir() / "manifest.csv"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(report folder, work folder, CLI output) of one run: two configurations, one build setting."""
    root = tmp_path_factory.mktemp("evaluate")
    configs = root / "configs.json"
    configs.write_text(json.dumps({"weighted": {"rerank.mask_iou_weight": 0.3}}))
    old = root / "old.json"
    old.write_text(json.dumps({"configs": [{"name": "baseline", "retrieval": {"map": 0.125}}]}))
    out, work = root / "report", root / "work"
    args = ["evaluate", "--dataset", str(MANIFEST), "-c", "baseline", "--config-file", str(configs)]
    args += ["--limit", "3", "--latency-queries", "2", "--samples", "2", "--out", str(out), "--work-dir", str(work)]
    result = runner.invoke(app, [*args, "--compare", str(old)])
    assert result.exit_code == 0, result.output
    return out, work, result.output


@pytest.mark.slow
def test_cli_writes_the_report_folder(evaluated: tuple[Path, Path, str]) -> None:
    out, _, output = evaluated
    for name in ("report.md", "report.html", "results.json", "recall-at-k.png", "per-category.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.glob("samples-*.png")) == ["samples-1-baseline.png", "samples-2-weighted.png"]
    markdown = (out / "report.md").read_text()
    assert "| config | mAP | mAP@10 | R@1 | R@5 | R@10 | R@20 | P@5 | R-prec | p50 ms | p95 ms |" in markdown
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert linked and all((out / name).is_file() for name in linked)
    html = (out / "report.html").read_text()
    assert "<table>" in html and all(f'src="{name}"' in html for name in linked)
    assert "mAP" in output and "report.html" in output


@pytest.mark.slow
def test_results_json_holds_every_configuration(evaluated: tuple[Path, Path, str]) -> None:
    out, _, _ = evaluated
    results = load_results(out / "results.json")
    assert [c["name"] for c in results["configs"]] == ["baseline", "weighted"]
    assert results["dataset"]["n_queries"] == 3 and results["dataset"]["n_queries_total"] == 20
    assert results["dataset"]["n_gallery"] == 60 and results["date"]
    baseline = results["configs"][0]
    assert 0.0 <= baseline["retrieval"]["map"] <= 1.0
    assert baseline["latency_ms"]["total"]["n"] == 2  # the latency pass, not the 3 metric queries
    assert baseline["indexing"]["images_per_second"] > 0 and baseline["indexing"]["index_bytes"] > 0
    assert results["configs"][1]["settings"]["rerank"]["mask_iou"]["weight"] == 0.3


@pytest.mark.slow
def test_configurations_sharing_build_settings_share_one_index(evaluated: tuple[Path, Path, str]) -> None:
    out, work, _ = evaluated
    assert [p.name for p in work.iterdir() if p.is_dir()] == ["index-0"]
    assert {c["index"] for c in load_results(out / "results.json")["configs"]} == {"index-0"}


@pytest.mark.slow
def test_cli_compare_prints_deltas(evaluated: tuple[Path, Path, str]) -> None:
    out, _, output = evaluated
    new_map = load_results(out / "results.json")["configs"][0]["retrieval"]["map"]
    assert "against" in output and "0.125" in output and f"{new_map - 0.125:+.3f}" in output
    assert "## Against" in (out / "report.md").read_text()


@pytest.mark.slow
def test_compare_a_results_file_with_a_modified_copy(evaluated: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, _, _ = evaluated
    new = load_results(out / "results.json")
    old = json.loads(json.dumps(new))
    old["configs"][0]["retrieval"]["map"] -= 0.1
    old["configs"][0]["latency_ms"]["total"]["p50_ms"] *= 2
    old["configs"].append({"name": "retired", "retrieval": {"map": 0.5}})
    deltas = {(d.config, d.metric): d for d in compare(old, new)}
    assert deltas["baseline", "mAP"].delta == pytest.approx(0.1) and deltas["baseline", "mAP"].improved
    assert deltas["baseline", "p50 ms"].delta < 0 and deltas["baseline", "p50 ms"].improved  # faster is better
    assert deltas["weighted", "R@1"].delta == 0 and deltas["weighted", "R@1"].improved is None
    assert deltas["retired", "mAP"].new is None and deltas["retired", "mAP"].delta is None

    rows = comparison_rows(list(deltas.values()))
    old_map = f"{old['configs'][0]['retrieval']['map']:.3f}"
    assert rows[0][:3] == ["baseline", "mAP", old_map] and rows[0][4:] == ["+0.100", "better"]
    assert ["retired", "-", "-", "-", "-", "only in the old results"] in rows

    copy = tmp_path / "old.json"
    copy.write_text(json.dumps(old))
    assert compare(load_results(copy), new) == list(deltas.values())


# ---------------------------------------------------------------------------------------------
# Presets, configuration files, data sets (no model needed)
# ---------------------------------------------------------------------------------------------


def test_unknown_preset_is_an_error_listing_the_valid_ones() -> None:
    with pytest.raises(LookalikeError, match="unknown configuration preset 'nope'; expected one of: .*baseline"):
        create_config("nope")
    result = runner.invoke(app, ["evaluate", "--dataset", str(MANIFEST), "-c", "nope"])
    assert result.exit_code == 2 and "baseline" in result.output and "grey" in result.output


def test_preset_with_a_setting_that_does_not_exist_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRESETS, "future", PRESETS["baseline"])
    register_preset("future", {"embed.no_such_key": True}, description="a stage not written yet")
    with pytest.raises(SettingsError, match="configuration 'future': unknown setting 'embed.no_such_key'"):
        create_config("future")


def test_presets_cover_the_existing_stages() -> None:
    assert {"baseline", "grey", "lite2"} <= set(available_presets())
    assert create_config("grey").settings.embed.grayscale is True
    assert create_config("lite2").settings.embed.model == "efficientnet-lite2"
    assert create_config("baseline").build_key() == create_config("baseline").build_key()
    assert create_config("grey").build_key() != create_config("baseline").build_key()


def test_every_preset_is_valid_and_rerankers_share_the_index_only_when_they_store_nothing() -> None:
    configs = {name: create_config(name) for name in available_presets()}  # each validates its settings
    assert {"qe", "diffusion", "sift", "rerank-all", "whiten"} <= set(configs)
    baseline = configs["baseline"].build_key()
    assert configs["qe"].build_key() == baseline and configs["diffusion"].build_key() == baseline
    assert configs["sift"].build_key() != baseline  # its keypoints are extracted at indexing time
    assert configs["iou"].build_key() == configs["localize"].build_key()
    assert configs["finetune-iou"].build_key() == configs["finetune-localize"].build_key()
    shape_only = configs["iou-whole"]
    assert shape_only.settings.localize.features == "whole"
    assert len({shape_only.build_key(), baseline, configs["localize"].build_key()}) == 3  # silhouettes are stored
    assert configs["whiten"].prepare == ("train_embedding",) and configs["whiten"].settings.head.label == "item"


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "configs.json"
    path.write_text(json.dumps({"big": {"embed.input_size": 288}, "k": {"search": {"category": "Milk"}}}))
    big, k = configs_from_file(path)
    assert big.settings.embed.input_size == 288 and k.search == {"category": "Milk"}
    assert big.build_key() != k.build_key() and k.build_key() == create_config("baseline").build_key()
    assert [c.name for c in resolve_configs(["grey"], path)] == ["grey", "big", "k"]
    assert [c.name for c in resolve_configs()] == ["baseline"]
    with pytest.raises(SettingsError, match="given twice"):
        resolve_configs(["grey", "grey"])
    path.write_text("[1, 2]")
    with pytest.raises(SettingsError, match="expected"):
        configs_from_file(path)


def test_datasets_by_name_and_subsample(tmp_path: Path) -> None:
    with pytest.raises(LookalikeError, match="unknown data set 'nope'; expected one of: eth80, grocery-photo2catalog"):
        load_dataset("nope")
    with pytest.raises(LookalikeError, match="pass --data-root"):
        load_dataset("eth80", tmp_path)
    dataset = from_manifest(MANIFEST)
    assert evenly_spaced(20, 3) == [0, 10, 19] and evenly_spaced(3, 10) == [0, 1, 2]
    assert [q.path for q in subsample(dataset, 3).queries] == [dataset.queries[i].path for i in (0, 10, 19)]
    assert subsample(dataset, 0) is dataset


# ---------------------------------------------------------------------------------------------
# Classification, segmentation and the report's rendering, from hand-made results
# ---------------------------------------------------------------------------------------------


def _outcome(
    path: Path, label: str, category: str, predicted: str, ranks: list[bool], iou: float | None
) -> QueryOutcome:
    hits = sorted((MANIFEST.parent / "catalog" / category).iterdir())[:5]
    return QueryOutcome(
        path=str(path),
        label=label,
        category=category,
        relevance=np.array(ranks),
        top=[(str(hit.resolve()), 0.9 - 0.1 * i) for i, hit in enumerate(hits)],
        timings={"embed": 0.02, "total": 0.03},
        details={"classification": {"category": predicted, "probability": 0.8}},
        mask=np.pad(np.ones((40, 40), dtype=bool), 28),
        iou=iou,
    )


def test_report_with_classification_and_segmentation(tmp_path: Path) -> None:
    queries = sorted((MANIFEST.parent / "queries").iterdir())[:3]
    outcomes = [
        _outcome(queries[0], "Arla-Standard-Milk", "Milk", "Milk", [True, False, True], 0.95),
        _outcome(queries[1], "Bravo-Apple-Juice", "Juice", "Milk", [False, False, True], 0.6),
        _outcome(queries[2], "Granny-Smith", "Apple", "Apple", [False, True, False], None),
    ]
    classification, segmentation = harness._classification(outcomes), harness._segmentation(outcomes)
    assert classification["accuracy"] == pytest.approx(2 / 3) and classification["labels"] == ["Apple", "Juice", "Milk"]
    assert segmentation["n"] == 2 and segmentation["fraction_above"] == 0.5
    assert [o.first_relevant_rank for o in outcomes] == [1, 3, 2]
    result = ConfigResult(
        "gating", {}, {"map": 0.5, "recall_at_k": {1: 1 / 3}}, {"total": {"p50_ms": 30.0, "p95_ms": 31.0}},
        {"images_per_second": 10.0, "index_bytes": 2e6}, outcomes,
        classification=classification, segmentation=segmentation,
    )  # fmt: skip
    assert [o.first_relevant_rank for o in worst_failures(result, 5)] == [3, 2]
    assert headline(result.summary())["accuracy"] == pytest.approx(2 / 3)
    evaluation = Evaluation(
        dataset={"name": "hand-made", "protocol": "test", "relevance": "item", "n_queries": 3, "n_gallery": 60,
                 "n_gallery_labels": 10, "n_queries_without_relevant": 0, "n_queries_total": 3},
        results=[result], options={"latency_queries": 0}, date="today",
        label_of={hit: "Arla-Standard-Milk" for o in outcomes for hit, _ in o.top}, n_relevant=[2, 1, 1],
    )  # fmt: skip
    write_report(evaluation, tmp_path, samples=3)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Classification" in markdown and "## Segmentation" in markdown and "| gating | 2 | 0.775 |" in markdown
    assert (tmp_path / "confusion-1-gating.png").is_file() and (tmp_path / "failures-1-gating.png").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["configs"][0]["classification"]["accuracy"] > 0.6


def test_predicted_mask_hook_reads_the_localization() -> None:
    from types import SimpleNamespace

    located = SimpleNamespace(mask=np.eye(3, dtype=np.uint8))
    assert harness.predicted_mask(SimpleNamespace(localization=located, details={})).dtype == bool
    assert harness.predicted_mask(SimpleNamespace(localization=None, details={})) is None
