"""lookalike: domain-specific image similarity search.

Index a catalogue of product photos, then search it with a photo. Heavy names are loaded lazily,
so `import lookalike` does not import torch, faiss or onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Engine", "Hit", "SearchResult", "Settings", "__version__"]

if TYPE_CHECKING:
    from lookalike.pipeline import Engine, Hit, SearchResult
    from lookalike.settings import Settings

_LAZY = {
    "Engine": "lookalike.pipeline",
    "Hit": "lookalike.pipeline",
    "SearchResult": "lookalike.pipeline",
    "Settings": "lookalike.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
