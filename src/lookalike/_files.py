"""Reading a saved component: its JSON description beside its arrays (classifier, transform, backbone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lookalike.errors import LookalikeError


def read_component(folder: Path, model_file: str, weights_file: str, what: str, version: int) -> dict[str, Any]:
    """The parsed `model_file` of `folder`, checked: both files present, valid JSON, this format version."""
    path = folder / model_file
    if not path.is_file() or not (folder / weights_file).is_file():
        raise LookalikeError(f"{folder}: no saved {what} here (expected {model_file} and {weights_file})")
    try:
        model = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LookalikeError(f"{path}: not valid JSON ({exc})") from None
    if model.get("format") != version:
        raise LookalikeError(f"{path}: {what} format {model.get('format')!r} is not supported (expected {version})")
    return model
