"""Carrying a tuned model from one index to another: a model folder, exported and imported.

A model folder holds what turns an image into a vector, and nothing about a catalogue:

- `model.json`: the settings sections that define the featurizer (`embed`, `localize`) and the
  featurizer's fingerprint (what queries and catalogue must share);
- `backbone/` (a fine-tuned backbone tail), `head/` (a learned transform), `onnx/` (its export),
  as an index folder holds them.

Typical use: fine-tune with product ids on a shop's labelled photos (one index), export the model,
then build or re-embed a catalogue of studio images with it (`lookalike index ... --model-from M`,
`lookalike model use M --index I`). An index folder can be given wherever a model folder is.
Loading checks the files against the recorded fingerprint, so a folder whose files were changed is
refused; an index keeps refusing queries whose featurizer does not match its vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.featurizer import Featurizer, describe_fingerprint, mismatch_message
from lookalike.settings import Settings

MODEL_FILE = "model.json"
MODEL_SECTIONS = ("embed", "localize")  # the settings that decide what a vector means
MODEL_VERSION = 1


def export_model(featurizer: Featurizer, folder: Path) -> dict[str, Any]:
    """Write `featurizer`'s model into `folder` (new, or empty); returns what model.json records."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise LookalikeError(f"{folder}: not empty; export a model into a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    featurizer.save(folder)
    record = {
        "version": MODEL_VERSION,
        "settings": {name: featurizer.settings.to_dict()[name] for name in MODEL_SECTIONS},
        "fingerprint": featurizer.fingerprint(),
        "dim": featurizer.dim,
        "description": describe_fingerprint(featurizer.fingerprint()),
    }
    (folder / MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def model_settings(source: Path, settings: Settings) -> Settings:
    """`settings` with the featurizer-defining sections of the model at `source` (a model folder
    exported by `export_model`, or an index folder)."""
    sections = _read_sections(source)
    return Settings.from_dict({**settings.to_dict(), **sections})


def load_model(source: Path, settings: Settings, describers: Any = ()) -> Featurizer:
    """The featurizer of the model at `source` under `settings` (already holding its sections),
    refused when its files do not make the vectors its model.json (or its index) records."""
    source = Path(source)
    featurizer = Featurizer.load(source, settings, describers=describers)
    recorded = _recorded_fingerprint(source)
    if recorded is not None and not featurizer.matches(recorded):
        raise IndexMismatchError(mismatch_message(source, recorded, featurizer.fingerprint()))
    return featurizer


def _read_sections(source: Path) -> dict[str, Any]:
    source = Path(source)
    if (source / MODEL_FILE).is_file():
        record = json.loads((source / MODEL_FILE).read_text())
        return {name: record["settings"][name] for name in MODEL_SECTIONS}
    if (source / "settings.json").is_file():
        saved = Settings.from_json(source / "settings.json").to_dict()
        return {name: saved[name] for name in MODEL_SECTIONS}
    raise LookalikeError(
        f"{source}: not a model folder ({MODEL_FILE}) nor an index (settings.json); "
        "make one with `lookalike model export --index I FOLDER`"
    )


def _recorded_fingerprint(source: Path) -> Any:
    if (source / MODEL_FILE).is_file():
        return json.loads((source / MODEL_FILE).read_text())["fingerprint"]
    from lookalike.pipeline import Engine

    with Engine.open(source) as engine:  # an index: its vectors' fingerprint
        return engine.store.get_meta("embedder")


def differs(settings: Settings, other: Settings) -> bool:
    """Whether two settings define different featurizers."""
    return any(getattr(settings, name) != getattr(other, name) for name in MODEL_SECTIONS)
