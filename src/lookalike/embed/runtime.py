"""The embedder on onnxruntime: exported from PyTorch when an index is built or tuned, run without torch.

`export_embedder` traces a `TorchEmbedder` (pretrained backbone, fine-tuned tail when set, GeM with its
p, L2 normalisation) to ONNX and checks the exported graph against PyTorch on a few seeded synthetic
images: an export whose unit vectors differ by more than `TOLERANCE` (max absolute difference) is
refused with `ExportError`, and the engine keeps using torch. `OnnxExport` is the result: the model's
bytes and `embedder.json` (what it was exported from, the measured difference, versions), saved in
`<index>/onnx/` beside the other learned parts. Its `source` is the torch embedder's fingerprint
(weights, preprocessing, fine-tuning): an export made from other weights is never used.

`OrtEmbedder` runs an export with onnxruntime and numpy preprocessing (the torch embedder's own),
so searching an index imports neither torch nor the network's Python code. Measured on the 2-core
development machine, one 224 px image on one thread: ~12 ms on onnxruntime against ~43 ms on
torch, hence `embed.runtime = "onnx"` by default (docs/speed.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike._files import read_component
from lookalike._onnx import open_session
from lookalike.embed.base import ModelSpec, l2_normalize, preprocess
from lookalike.errors import IndexMismatchError, LookalikeError, MissingDependency
from lookalike.settings import EmbedSettings

RUNTIME_DIR = "onnx"
MODEL_FILE = "embedder.json"
WEIGHTS_FILE = "embedder.onnx"
FORMAT_VERSION = 1
TOLERANCE = 1e-4  # max |onnxruntime - torch| over the unit vectors' components, checked at export
OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAME = "vector"


class ExportError(LookalikeError):
    """The embedder could not be exported to ONNX, or the export does not agree with PyTorch."""


@dataclass
class OnnxExport:
    """An exported embedder: the ONNX model's bytes and the facts checked when it is used."""

    model: bytes
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The fingerprint of the torch embedder it was exported from (weights, preprocessing, tuning)."""
        return str(self.facts["source"])

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / WEIGHTS_FILE).write_bytes(self.model)
        (folder / MODEL_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **self.facts}, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> OnnxExport:
        folder = Path(folder)
        facts = read_component(folder, MODEL_FILE, WEIGHTS_FILE, "ONNX embedder", FORMAT_VERSION)
        facts.pop("format")
        model = (folder / WEIGHTS_FILE).read_bytes()
        digest = hashlib.sha256(model).hexdigest()[:16]
        if digest != facts.get("sha256"):
            raise IndexMismatchError(
                f"{folder / WEIGHTS_FILE}: its bytes hash to {digest}, but {MODEL_FILE} records "
                f"{facts.get('sha256')}; the files do not belong together: run `lookalike check --repair` "
                "to export the embedder again"
            )
        return cls(model, facts)


def load_index_export(index: Path) -> tuple[OnnxExport | None, str | None]:
    """The export in `<index>/onnx/` and, when there is none or it cannot be read, why."""
    folder = index / RUNTIME_DIR
    if not folder.exists():
        return None, f"{index}: no ONNX export of the embedder (an index made before lookalike exported one)"
    try:
        return OnnxExport.load(folder), None
    except LookalikeError as exc:
        return None, str(exc)


def install_export(index: Path, export: OnnxExport | None) -> None:
    """Replace `<index>/onnx/` with the export's files (or remove it), through a staging folder."""
    from lookalike.embed.train import replace_folder

    replace_folder(index / RUNTIME_DIR, None if export is None else export.save)


# -- running an export


class OrtEmbedder:
    """An exported embedder run by onnxruntime: the `Embedder` protocol, with no torch import.

    The session is created on first use and kept (`load()` creates it now); it may be called from
    several threads at once."""

    runtime = "onnx"

    def __init__(self, export: OnnxExport, settings: EmbedSettings, *, threads: int | None = None) -> None:
        facts = export.facts
        self.export = export
        self.settings = settings
        self.name = str(facts["model"])
        self.dim = int(facts["dim"])
        self.spec = ModelSpec(tuple(facts["mean"]), tuple(facts["std"]), self.dim)  # type: ignore[arg-type]
        self.threads = threads
        self._session: Any = None

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> OrtEmbedder:
        if self._session is None:
            self._session = open_session(self.export.model, self.threads)
        return self

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.vectors_of_pixels(self.pixels(images))

    def vectors_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
        session = self.load()._session
        out = [
            session.run([OUTPUT_NAME], {INPUT_NAME: pixels[start : start + self.settings.batch_size]})[0]
            for start in range(0, len(pixels), self.settings.batch_size)
        ]
        return l2_normalize(np.concatenate(out))

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        return preprocess(images, self.settings.input_size, self.spec, grayscale=self.settings.grayscale)

    def fingerprint(self) -> str:
        return self.export.source


# -- exporting (torch)


def export_embedder(embedder: Any, tolerance: float = TOLERANCE) -> OnnxExport:
    """Export a torch embedder (with its fine-tuned tail, if set) to ONNX and check it against PyTorch.

    Raises `ExportError` when the network cannot be traced or the exported graph's unit vectors differ
    from torch's by more than `tolerance` on the check images; `MissingDependency` without torch."""
    for module in ("torch", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(module, "exporting the embedder to ONNX")
    import io
    import warnings

    import onnxruntime
    import torch

    network = _exportable(embedder)
    pixels = embedder.pixels(check_images(embedder.settings.input_size))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (torch.from_numpy(pixels[:2]),),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # the tracer's errors have no common base class
        raise ExportError(f"the {embedder.name} embedder could not be exported to ONNX ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); set embed.runtime = 'torch'") from None  # fmt: skip
    model = buffer.getvalue()
    expected = embedder.vectors_of_pixels(pixels)
    got = l2_normalize(open_session(model, None).run([OUTPUT_NAME], {INPUT_NAME: pixels})[0])
    difference = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not difference <= tolerance:
        raise ExportError(
            f"the {embedder.name} embedder's ONNX export differs from PyTorch by {difference:.2e} (max absolute "
            f"difference of unit vectors; expected <= {tolerance:.0e}); queries use torch instead"
        )
    spec = embedder.spec
    facts = {
        "source": embedder.fingerprint(),
        "model": embedder.name,
        "sha256": hashlib.sha256(model).hexdigest()[:16],
        "dim": int(embedder.dim),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "gem_p": network.p,
        "max_abs_difference": difference,
        "tolerance": tolerance,
        "check_images": len(pixels),
        "opset": OPSET,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return OnnxExport(model, facts)


def check_images(size: int, count: int = 4, seed: int = 0) -> list[Image.Image]:
    """Seeded synthetic photos for the export check: smooth colour fields with sharp-edged blocks."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        coarse = rng.integers(0, 256, (4 + index, 4 + index, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size + 16 * index, size), Image.Resampling.BICUBIC)
        pixels = np.array(image)
        top, left = rng.integers(0, size // 2, 2)
        pixels[top : top + size // 3, left : left + size // 4] = rng.integers(0, 256, 3, dtype=np.uint8)
        images.append(Image.fromarray(pixels))
    return images


def _exportable(embedder: Any) -> Any:
    """The embedder's network + GeM + L2 normalisation as one torch module, for the tracer."""
    import torch

    class Exportable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            feature_map = embedder.network_module()
            self.net = getattr(feature_map, "_module", feature_map)  # registered: its weights become the graph's
            self.feature_map = feature_map
            self.p = float(embedder.gem_p)

        def forward(self, pixels: Any) -> Any:
            fmap = self.feature_map(pixels)
            pooled = fmap.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
            return torch.nn.functional.normalize(pooled, dim=1)

    return Exportable().eval()
