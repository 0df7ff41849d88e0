"""Find the images of a catalogue: folders (category = sub-folder) and CSV manifests."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lookalike.errors import LookalikeError, SettingsError
from lookalike.io.images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class CatalogEntry:
    """One image to index: where it is and which category it belongs to (None = unknown)."""

    path: Path
    category: str | None = None
    item: str | None = None  # the product or object instance, where known (manifests)
    split: str | None = None
    mask: Path | None = None


def scan_folder(root: str | Path, *, category_depth: int = 1) -> list[CatalogEntry]:
    """Every image file under `root`, sorted; category = the first `category_depth` folders below it.

    Images directly in `root` (or `category_depth=0`) get no category.
    """
    root = Path(root)
    if not root.is_dir():
        raise LookalikeError(f"{root}: not a folder; expected a folder of images (sub-folders = categories)")
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
        folders = path.relative_to(root).parts[:-1]
        category = "/".join(folders[:category_depth]) if folders and category_depth > 0 else None
        entries.append(CatalogEntry(path=path, category=category))
    return entries


def expand_paths(paths: list[str | Path], *, category_depth: int = 1) -> list[CatalogEntry]:
    """Files as given (no category) and folders scanned with `scan_folder`."""
    entries: list[CatalogEntry] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            entries.extend(scan_folder(path, category_depth=category_depth))
        else:
            entries.append(CatalogEntry(path=path))
    return entries


MANIFEST_COLUMNS = ("path", "item", "category", "split", "mask")


def read_manifest(manifest: str | Path) -> list[CatalogEntry]:
    """Read a CSV manifest: a header with `path` and any of item, category, split, mask.

    Relative paths are taken relative to the manifest's folder.
    """
    manifest = Path(manifest)
    base = manifest.parent
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise LookalikeError(
                f"{manifest}: a manifest needs a 'path' column; found {columns}. "
                f"Expected a CSV header with some of {list(MANIFEST_COLUMNS)}"
            )
        unknown = sorted(set(columns) - set(MANIFEST_COLUMNS))
        if unknown:
            raise LookalikeError(f"{manifest}: unknown column(s) {unknown}; expected some of {list(MANIFEST_COLUMNS)}")
        return [_entry(row, base) for row in reader]


def _entry(row: dict[str, str], base: Path) -> CatalogEntry:
    def optional(name: str) -> str | None:
        value = (row.get(name) or "").strip()
        return value or None

    mask = optional("mask")
    return CatalogEntry(
        path=base / row["path"].strip(),
        category=optional("category"),
        item=optional("item"),
        split=optional("split"),
        mask=base / mask if mask else None,
    )


def entries_for(
    paths: Iterable[str | Path | CatalogEntry],
    categories: Sequence[str | None] | str | None = None,
    *,
    category_depth: int = 1,
) -> list[CatalogEntry]:
    """What `Engine.add` indexes: entries as given, files, and folders scanned with `scan_folder`.

    `categories` is one category for everything, or one per path (None keeps a folder's sub-folder names).
    """
    items = list(paths)
    if isinstance(categories, str) or categories is None:
        labels: list[str | None] = [categories] * len(items)
    else:
        labels = list(categories)
        if len(labels) != len(items):
            raise SettingsError(f"expected one category per path ({len(items)}), got {len(labels)}")
    entries: list[CatalogEntry] = []
    for item, label in zip(items, labels, strict=True):
        if isinstance(item, CatalogEntry):
            entries.append(item if label is None else CatalogEntry(item.path, label, item.item))
            continue
        for entry in expand_paths([item], category_depth=category_depth):
            entries.append(entry if label is None else CatalogEntry(entry.path, label))
    return entries
