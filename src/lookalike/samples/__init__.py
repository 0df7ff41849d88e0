"""The sample catalogue shipped inside the package, so that `lookalike demo` works from a wheel.

`grocery/` holds 90 photos (about 2 MB) from the Grocery Store Dataset of Klasson, Zhang and
Kjellström (WACV 2019, MIT licence, see `grocery/LICENSE`): 10 products from 7 categories, 6
catalogue photos (`catalog/<category>/`) and 2 query photos (`queries/`) each, plus the product's
iconic image (`iconic/`), and `manifest.csv` (path, item, category, split) in the manifest format
`lookalike evaluate --dataset` reads. `scripts/make_fixture.py` rebuilds it from the full data set.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["sample_dir"]

_extracted: dict[str, Path] = {}


def sample_dir(name: str = "grocery") -> Path:
    """The folder of a bundled sample set (`catalog/`, `queries/`, `iconic/`, `manifest.csv`).

    From an ordinary install (a wheel, or `pip install -e`) this is the folder inside the package;
    when the package is imported from a zip file, the set is extracted once to a temporary folder
    that is deleted when the process exits. Cheap to call: nothing is read from a plain folder.
    """
    resource = files(__name__) / name
    if isinstance(resource, Path):
        return resource  # callers check it: `lookalike demo` names the folder when it is missing
    if name not in _extracted:
        if not resource.is_dir():
            raise FileNotFoundError(f"no bundled sample set named {name!r} in {__name__}")
        scratch = Path(tempfile.mkdtemp(prefix="lookalike-samples-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        _copy_tree(resource, scratch / name)
        _extracted[name] = scratch / name
    return _extracted[name]


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        if child.is_dir():
            _copy_tree(child, target / child.name)
        else:
            (target / child.name).write_bytes(child.read_bytes())
