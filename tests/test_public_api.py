"""A small public surface, and `import lookalike` stays light."""

from __future__ import annotations

import subprocess
import sys

import lookalike


def test_all_names_resolve() -> None:
    assert sorted(lookalike.__all__) == ["Engine", "Hit", "SearchResult", "Settings", "__version__"]
    for name in lookalike.__all__:
        assert getattr(lookalike, name) is not None


def test_import_and_help_do_not_load_heavy_libraries() -> None:
    code = (
        "import sys, lookalike, lookalike.cli; from lookalike import Settings; "
        "heavy = [m for m in ('torch', 'faiss', 'onnxruntime', 'cv2') if m in sys.modules]; print(heavy)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
