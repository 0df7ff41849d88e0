"""Static int8 quantisation of a U^2-Net-like segmenter, written once to a cache file.

Recipe (measured in benchmarks/segmentation.py; dynamic quantisation is slower than float32 on
CPUs without VNNI, and per-tensor weights wreck the masks):
- input height/width freed, opset raised to 13 (per-channel QDQ needs it);
- QDQ format, uint8 activations, int8 weights per output channel, min-max calibration;
- the side-output convolutions that feed the sigmoids stay in float32 (they set the mask's edge);
- calibrated on deterministic synthetic images, so every machine builds the same model.

Needs the `onnx` package (`pip install "lookalike[quantize]"`). Never writes next to the
installed weights: the file goes to the cache folder given (by default ~/.cache/lookalike).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from lookalike.errors import MissingDependency
from lookalike.io.images import file_hash
from lookalike.localize.u2net import free_spatial_dims, preprocess

RECIPE = "int8-qdq-pc-v1"
CALIBRATION_IMAGES = 16
CALIBRATION_SIZE = 256  # activation ranges hardly depend on the input size: one file serves every size
_log = logging.getLogger(__name__)


def cached_int8_model(source: Path, cache_dir: Path) -> Path:
    """The int8 version of `source`, built on first use and kept in `cache_dir`; it runs at any size."""
    target = Path(cache_dir) / f"{source.stem}-{file_hash(source)[:12]}-{RECIPE}.onnx"
    if not target.is_file():
        _log.info("quantising %s to int8 (once; about half a minute): %s", source.name, target)
        quantize_model(source, target)
    return target


def quantize_model(
    source: Path, target: Path, images: Sequence[Image.Image] | None = None, size: int = CALIBRATION_SIZE
) -> Path:
    """Write an int8 copy of the ONNX segmenter `source` to `target`, calibrated on `images` at `size`.

    `images` default to deterministic synthetic scenes; pass a few real catalogue photos to
    calibrate on the domain instead (the result then depends on them).
    """
    onnx, quantization = _require_quantization()
    calibration = list(images) if images is not None else synthetic_images(CALIBRATION_IMAGES)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lookalike-quant-") as work:
        prepared = _prepare(onnx, quantization, source, Path(work))
        partial = Path(work) / "int8.onnx"
        quantization.quantize_static(
            str(prepared),
            str(partial),
            _Reader(calibration, size, _input_name(onnx, prepared)),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=side_output_convs(onnx.load(str(prepared))),
        )
        _move_into_place(partial, target)
    return target


def side_output_convs(model: Any) -> list[str]:
    """Names of the convolutions that feed a Sigmoid, directly or through a Resize: the side outputs."""
    producer = {output: node for node in model.graph.node for output in node.output}
    names = []
    for node in model.graph.node:
        if node.op_type != "Sigmoid":
            continue
        upstream = producer.get(node.input[0])
        while upstream is not None and upstream.op_type != "Conv":
            upstream = producer.get(upstream.input[0])
        if upstream is not None:
            names.append(upstream.name)
    return names


def synthetic_images(count: int, size: int = 256, seed: int = 0) -> list[Image.Image]:
    """Product-like scenes: boxes and ellipses with stripes on noisy gradients; same seed, same images."""
    rng = np.random.default_rng(seed)
    return [_synthetic_scene(rng, size) for _ in range(count)]


def _synthetic_scene(rng: np.random.Generator, size: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    ramp = xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    canvas = start * (1 - ramp[..., None]) + end * ramp[..., None]
    canvas += rng.normal(0, rng.uniform(2, 20), canvas.shape)
    for _ in range(rng.integers(1, 4)):
        _draw_object(canvas, rng, size)
    canvas = cv2.GaussianBlur(canvas, (3, 3), 0)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _draw_object(canvas: np.ndarray, rng: np.random.Generator, size: int) -> None:
    cx, cy = (rng.uniform(0.25, 0.75, 2) * size).astype(int)
    w, h = (rng.uniform(0.1, 0.35, 2) * size).astype(int)
    color = rng.uniform(0, 255, 3).tolist()
    if rng.random() < 0.5:
        cv2.ellipse(canvas, (int(cx), int(cy)), (int(w), int(h)), float(rng.uniform(0, 180)), 0, 360, color, -1)
    else:
        cv2.rectangle(canvas, (int(cx - w), int(cy - h)), (int(cx + w), int(cy + h)), color, -1)
    for _ in range(rng.integers(0, 6)):
        y = int(rng.uniform(cy - h, cy + h))
        stripe = rng.uniform(0, 255, 3).tolist()
        cv2.line(canvas, (int(cx - 0.8 * w), y), (int(cx + 0.8 * w), y), stripe, int(rng.integers(1, 5)))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of images."""

    def __init__(self, images: Sequence[Image.Image], size: int, input_name: str) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: preprocess(image, size)} for image in images]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _prepare(onnx: Any, quantization: Any, source: Path, work: Path) -> Path:
    from onnx import version_converter

    model = onnx.load(str(source))
    free_spatial_dims(model)
    if max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) < 13:
        model = version_converter.convert_version(model, 13)
    floating = work / "float.onnx"
    onnx.save(model, str(floating))
    prepared = work / "prepared.onnx"
    quantization.shape_inference.quant_pre_process(str(floating), str(prepared))
    return prepared


def _input_name(onnx: Any, path: Path) -> str:
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _require_quantization() -> tuple[Any, Any]:
    if importlib.util.find_spec("onnx") is None:
        raise MissingDependency("onnx", "int8 quantisation of the segmenter (localize.quantize)", extra="quantize")
    import onnx
    from onnxruntime import quantization

    return onnx, quantization


def _move_into_place(partial: Path, target: Path) -> None:
    """Copy beside the target, then rename: readers never see a half-written model."""
    staging = target.with_suffix(f".{os.getpid()}.tmp")
    staging.write_bytes(partial.read_bytes())
    os.replace(staging, target)
