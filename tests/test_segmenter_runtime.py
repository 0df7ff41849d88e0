"""The segmenter's runtimes (onnxruntime, OpenVINO) and precisions (fp32, bf16, "auto")."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Engine, Settings
from lookalike.errors import SettingsError
from lookalike.localize import Localizer, create_segmenter, resolve_settings
from lookalike.localize.openvino import cpu_computes_bf16
from lookalike.samples import sample_dir
from lookalike.settings import LocalizeSettings

pytest.importorskip("openvino", reason="OpenVINO runs the segmenter (a dependency of lookalike)")

MILK = sample_dir() / "catalog" / "Milk" / "Arla-Standard-Milk_021.jpg"
MILK_BOX = (158, 53, 266, 348)
MILK_INSIDE = (180, 80, 250, 340)
MILK_OUTSIDE = [(0, 0, 120, 348), (300, 0, 348, 348), (150, 0, 260, 35)]  # fridge, floor, shelf above


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def test_openvino_fp32_gives_onnxruntimes_saliency_and_fingerprint() -> None:
    milk = Image.open(MILK).convert("RGB")
    settings = LocalizeSettings(precision="fp32", input_size=224)
    on_onnx = create_segmenter(LocalizeSettings(runtime="onnx", precision="fp32", input_size=224))
    on_openvino = create_segmenter(LocalizeSettings(runtime="openvino", precision="fp32", input_size=224))
    assert on_onnx.runtime == "onnx" and on_openvino.runtime == "openvino"
    expected, got = on_onnx.predict(milk), on_openvino.predict(milk)
    assert np.abs(expected.saliency - got.saliency).max() < 1e-3
    assert abs(expected.peak - got.peak) < 1e-4
    # the runtime does not change the masks, so it does not change what an index records
    assert on_onnx.fingerprint() == on_openvino.fingerprint() == create_segmenter(settings).fingerprint()


@pytest.mark.parametrize("size", [224, 320])
def test_bf16_mask_covers_the_milk_carton_and_excludes_the_background(size: int) -> None:
    localizer = Localizer(LocalizeSettings(precision="bf16", input_size=size))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = localizer.localize(Image.open(MILK))
    fell_back = [w for w in caught if "no bf16 arithmetic" in str(w.message)]
    assert len(fell_back) == (0 if cpu_computes_bf16() else 1)  # said once, where the CPU lacks bf16
    assert result.found
    assert np.abs(np.subtract(result.box, MILK_BOX)).max() <= 12, result.box
    left, top, right, bottom = MILK_INSIDE
    assert result.mask[top:bottom, left:right].mean() > 0.98
    for left, top, right, bottom in MILK_OUTSIDE:
        assert result.mask[top:bottom, left:right].mean() < 0.01
    fp32 = Localizer(LocalizeSettings(precision="fp32", input_size=size))
    assert _iou(result.mask, fp32.localize(Image.open(MILK)).mask) > 0.95
    assert "|bf16|" in localizer.fingerprint() and "|fp32|" in fp32.fingerprint()


def test_auto_precision_follows_the_cpu() -> None:
    resolved = resolve_settings(LocalizeSettings())
    assert resolved.precision == ("bf16" if cpu_computes_bf16() else "fp32") and resolved.input_size == 224
    assert resolve_settings(LocalizeSettings(runtime="onnx")).precision == "fp32"
    assert resolve_settings(LocalizeSettings(quantize=True)).precision == "fp32"
    built = LocalizeSettings(precision="fp32")
    assert resolve_settings(LocalizeSettings(), like=built) == built  # an index's own choice wins
    assert Localizer().settings == resolved


def test_runtime_and_precision_are_checked() -> None:
    with pytest.raises(SettingsError, match="'bf16' runs with OpenVINO: set localize.runtime"):
        LocalizeSettings(runtime="onnx", precision="bf16").validate()
    with pytest.raises(SettingsError, match="quantize \\(int8\\) and localize.precision 'bf16' exclude each other"):
        LocalizeSettings(quantize=True, precision="bf16").validate()
    with pytest.raises(SettingsError, match="localize.runtime must be 'auto', 'onnx'"):
        Settings().replace(**{"localize.runtime": "tensorrt"})
    with pytest.raises(SettingsError, match="localize.precision must be 'auto', 'fp32' or 'bf16', got 'fp16'"):
        Settings().replace(**{"localize.precision": "fp16"})


def test_settings_saved_before_precision_existed_read_as_fp32() -> None:
    saved = Settings().to_dict()
    del saved["localize"]["precision"], saved["localize"]["runtime"]
    assert Settings.from_dict(saved).localize.precision == "fp32"
    assert Settings.from_dict({"localize": {"enabled": True}}).localize.precision == "auto"  # a user's file


def test_an_index_records_the_precision_it_was_made_with(tmp_path: Path) -> None:
    settings = Settings().replace(**{"localize.enabled": True, "localize.features": "whole"})
    with Engine.create(tmp_path / "a.index", settings) as engine:
        made = engine.settings.localize
        assert made.precision == ("bf16" if cpu_computes_bf16() else "fp32")
    assert json.loads((tmp_path / "a.index" / "settings.json").read_text())["localize"]["precision"] == made.precision
    from typer.testing import CliRunner

    from lookalike.cli import app

    shown = CliRunner().invoke(app, ["info", "--index", str(tmp_path / "a.index")])
    assert f"u2netp {made.precision} at {made.input_size} px" in shown.output, shown.output
    # the same "auto" settings open it; explicit other ones are refused
    with Engine.open_or_create(tmp_path / "a.index", settings) as engine:
        assert engine.settings.localize == made
    other = "fp32" if made.precision == "bf16" else "bf16"
    with pytest.raises(SettingsError, match="built with other settings"):
        Engine.open_or_create(tmp_path / "a.index", settings.replace(**{"localize.precision": other}))


def test_one_openvino_segmenter_serves_threads_at_once() -> None:
    segmenter = create_segmenter(LocalizeSettings(runtime="openvino", precision="fp32", input_size=160))
    images = [Image.open(path).convert("RGB") for path in sorted((sample_dir() / "catalog").rglob("*.jpg"))[:4]]
    expected = [segmenter.predict(image).saliency for image in images]
    answers: dict[int, list[np.ndarray]] = {}

    def run(worker: int) -> None:
        answers[worker] = [segmenter.predict(image).saliency for image in images]

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got in answers.values():
        for a, b in zip(expected, got, strict=True):
            assert np.abs(a - b).max() < 1e-5


def test_a_cpu_without_bf16_runs_fp32_says_so_and_defaults_to_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike.localize import openvino

    monkeypatch.setattr(openvino, "_bf16_capable", lambda core: False)
    assert resolve_settings(LocalizeSettings()).precision == "fp32"
    with pytest.warns(RuntimeWarning, match="no bf16 arithmetic: OpenVINO runs the segmenter in fp32"):
        segmenter = create_segmenter(LocalizeSettings(precision="bf16"))
        saliency = segmenter.predict(Image.open(MILK).convert("RGB")).saliency
    assert segmenter._run.precision == "fp32"  # type: ignore[attr-defined]
    expected = create_segmenter(LocalizeSettings(precision="fp32")).predict(Image.open(MILK).convert("RGB"))
    assert np.abs(saliency - expected.saliency).max() < 1e-3
    assert segmenter.fingerprint().endswith("|bf16")  # the index's request is what it records
