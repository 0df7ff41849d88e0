"""Find the images of a catalogue: folders (category = sub-folder), CSV / Parquet manifests, and
images or folders named by URI (`s3://`, `gs://`, `https://`, `file://`...: lookalike.io.uris)."""

from __future__ import annotations

import csv
import errno
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lookalike.errors import LookalikeError, SettingsError
from lookalike.io import uris
from lookalike.io.images import IMAGE_EXTENSIONS, UNSUPPORTED_EXTENSIONS, path_problem


@dataclass(frozen=True)
class CatalogEntry:
    """One image to index: where it is (a local path, or a URI string) and which category it belongs
    to (None = unknown)."""

    path: Path | str
    category: str | None = None
    item: str | None = None  # the product or object instance, where known (manifests)
    split: str | None = None
    mask: Path | str | None = None


UNCATEGORISED = "uncategorised"  # the category of an image added with none (no --category, no sub-folder)
Skipped = list[tuple[str, str]]  # (path, reason): files met while collecting that will not be indexed
FOLDER_NAMED_LIKE_IMAGE = "a folder named like an image, not an image file (the images inside it are indexed)"


def scan_folder(root: str | Path, *, category_depth: int = 1, skipped: Skipped | None = None) -> list[CatalogEntry]:
    """Every image file under `root`, sorted; category = the first `category_depth` folders below it.

    Images directly in `root` (or `category_depth=0`) get no category. What looks like an image but
    will not be indexed is appended to `skipped` with the reason: files in formats lookalike does not
    index (GIF, SVG, HEIC...), folders named like images, broken symbolic links, symbolic link loops
    and links to folders (not followed). Other files (README.txt, .DS_Store, manifest.csv) are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise LookalikeError(f"{root}: not a folder; expected a folder of images (sub-folders = categories)")
    entries = []
    passed: Skipped = []
    for path in _image_files(root, passed):
        folders = path.relative_to(root).parts[:-1]
        category = "/".join(folders[:category_depth]) if folders and category_depth > 0 else None
        entries.append(CatalogEntry(path=path, category=category))
    if skipped is not None:
        skipped.extend(sorted(passed))
    return entries


def _image_files(root: Path, skipped: Skipped) -> list[Path]:
    """The image files below `root`, sorted. Links to folders are never followed, so the walk cannot loop."""
    found: list[Path] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                items = list(listing)
        except OSError as exc:
            skipped.append((str(folder), f"cannot read the folder ({exc.strerror or exc})"))
            continue
        for item in items:
            path = Path(item.path)
            extension = path.suffix.lower()
            named_like_image = extension in IMAGE_EXTENSIONS or extension in UNSUPPORTED_EXTENSIONS
            if item.is_dir(follow_symlinks=False):
                folders.append(path)
                if named_like_image:
                    skipped.append((str(path), FOLDER_NAMED_LIKE_IMAGE))
                continue
            if item.is_symlink():
                reason = _link_to_folder_or_loop(path)
                if reason is not None:
                    skipped.append((str(path), reason))
                    continue
            if extension in IMAGE_EXTENSIONS:
                problem = path_problem(path)  # a broken link, a pipe...
                if problem is None:
                    found.append(path)
                else:
                    skipped.append((str(path), problem))
            elif extension in UNSUPPORTED_EXTENSIONS:
                skipped.append((str(path), UNSUPPORTED_EXTENSIONS[extension]))
    return sorted(found)


def _link_to_folder_or_loop(link: Path) -> str | None:
    """Why the symbolic link `link` is not followed when it leads to a folder or loops; None otherwise."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop, in Python < 3.13
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            return "symbolic link loop (the link leads back to itself); not followed"
        return None  # broken: listed with the reason when named like an image
    if not target.is_dir():
        return None
    parent = link.parent.resolve()
    if target == parent or target in parent.parents:
        return f"symbolic link to a folder above it ({target}): a loop, not followed"
    return f"symbolic link to a folder ({target}): not followed; index that folder itself"


def expand_paths(
    paths: list[str | Path], *, category_depth: int = 1, skipped: Skipped | None = None
) -> list[CatalogEntry]:
    """Files as given (no category) and folders scanned with `scan_folder`; what is passed over is
    appended to `skipped` when given.

    A file is taken as given whatever its extension (the decoder then says whether it can be read),
    except one that is missing, a broken symbolic link or a link loop: passed over with the reason.
    """
    entries: list[CatalogEntry] = []
    passed: Skipped = []
    for raw in paths:
        if uris.is_uri(raw):
            entries.extend(_uri_entries(str(raw), category_depth, passed))
            continue
        path = Path(raw)
        if path.is_dir():
            entries.extend(scan_folder(path, category_depth=category_depth, skipped=passed))
            continue
        problem = path_problem(path)
        if problem is not None and not path.exists():
            passed.append((str(path), problem))
        else:
            entries.append(CatalogEntry(path=path))
    if skipped is not None:
        skipped.extend(passed)
    return entries


def _uri_entries(uri: str, category_depth: int, skipped: Skipped) -> list[CatalogEntry]:
    """An image URI as given, or the images below a folder URI (category = the first `category_depth`
    folders below it), like `scan_folder`; a folder that cannot be listed is passed over with the reason."""
    if uris.suffix(uri) in IMAGE_EXTENSIONS:
        return [CatalogEntry(path=uri)]  # read when indexed: a failure then names the URI and the reason
    try:
        files = uris.list_folder(uri)
    except LookalikeError as exc:
        skipped.append((uri, str(exc).removeprefix(f"{uri}: ")))
        return []
    if files is None:
        return [CatalogEntry(path=uri)]  # a file: the decoder says whether it is an image
    entries = []
    for file in files:
        extension = uris.suffix(file)
        if extension in UNSUPPORTED_EXTENSIONS:
            skipped.append((file, UNSUPPORTED_EXTENSIONS[extension]))
        if extension not in IMAGE_EXTENSIONS:
            continue
        folders = file[len(uri.rstrip("/")) + 1 :].split("/")[:-1]
        category = "/".join(folders[:category_depth]) if folders and category_depth > 0 else None
        entries.append(CatalogEntry(path=file, category=category))
    return entries


MANIFEST_COLUMNS = ("path", "item", "category", "split", "mask")


def read_manifest(manifest: str | Path) -> list[CatalogEntry]:
    """Read a CSV (or Parquet: `.parquet`, needs pyarrow) manifest: a header with `path` and any of
    item, category, split, mask. The manifest may itself be a URI (read through fsspec).

    Relative paths are taken relative to the manifest's folder; a path that is a URI is kept as given.
    """
    if uris.is_uri(manifest):
        return _read_uri_manifest(str(manifest))
    manifest = Path(manifest)
    if manifest.suffix == ".parquet":
        return _read_parquet(manifest, manifest, manifest.parent)
    base = manifest.parent
    with open(manifest, newline="") as handle:
        return _read_csv(handle, manifest, base)


def _read_uri_manifest(manifest: str) -> list[CatalogEntry]:
    fs, path = uris.filesystem(manifest)
    base = uris.parent(manifest)
    try:
        if uris.suffix(manifest) == ".parquet":
            return _read_parquet(path, manifest, base, filesystem=fs)
        with fs.open(path, "rt", newline="") as handle:
            return _read_csv(handle, manifest, base)
    except LookalikeError:
        raise
    except Exception as exc:  # each fsspec backend raises its own
        raise LookalikeError(f"{manifest}: cannot read the manifest ({type(exc).__name__}: {exc})") from None


def _read_csv(handle: Iterable[str], manifest: str | Path, base: Path | str) -> list[CatalogEntry]:
    reader = csv.DictReader(handle)
    _check_columns(manifest, reader.fieldnames or [])
    return [_entry(row, base) for row in reader]


def _read_parquet(
    source: str | Path, manifest: str | Path, base: Path | str, filesystem: object = None
) -> list[CatalogEntry]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise LookalikeError(f"{manifest}: reading a Parquet manifest needs pyarrow (pip install pyarrow)") from None
    try:
        table = parquet.read_table(source, filesystem=filesystem)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...: all mean an unreadable manifest
        raise LookalikeError(f"{manifest}: not a readable Parquet file ({exc})") from None
    _check_columns(manifest, table.column_names)
    rows = table.to_pylist()
    return [_entry({key: "" if value is None else str(value) for key, value in row.items()}, base) for row in rows]


def _check_columns(manifest: str | Path, columns: Sequence[str]) -> None:
    if "path" not in columns:
        raise LookalikeError(
            f"{manifest}: a manifest needs a 'path' column; found {list(columns)}. "
            f"Expected a header with some of {list(MANIFEST_COLUMNS)}"
        )
    unknown = sorted(set(columns) - set(MANIFEST_COLUMNS))
    if unknown:
        raise LookalikeError(f"{manifest}: unknown column(s) {unknown}; expected some of {list(MANIFEST_COLUMNS)}")


def _entry(row: dict[str, str], base: Path | str) -> CatalogEntry:
    def optional(name: str) -> str | None:
        value = (row.get(name) or "").strip()
        return value or None

    def located(value: str) -> Path | str:
        """A URI as given; a path under the manifest's folder (a URI folder for a manifest read by URI)."""
        if uris.is_uri(value):
            return value
        if isinstance(base, str) and not value.startswith("/"):
            return uris.join(base, value)
        return Path(base) / value

    mask = optional("mask")
    return CatalogEntry(
        path=located(row["path"].strip()),
        category=optional("category"),
        item=optional("item"),
        split=optional("split"),
        mask=located(mask) if mask else None,
    )


def entries_for(
    paths: Iterable[str | Path | CatalogEntry],
    categories: Sequence[str | None] | str | None = None,
    *,
    category_depth: int = 1,
) -> tuple[list[CatalogEntry], Skipped]:
    """What `Engine.add` indexes: entries as given, files, and folders scanned with `scan_folder`,
    and the (path, reason) of what was passed over.

    `categories` is one category for everything, or one per path (None keeps a folder's sub-folder names).
    An image left with no category (a file named on its own, an image at the top of a folder, a
    manifest row without one) gets `UNCATEGORISED`.
    """
    skipped: Skipped = []
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
        for entry in expand_paths([item], category_depth=category_depth, skipped=skipped):
            entries.append(entry if label is None else CatalogEntry(entry.path, label))
    return [entry if entry.category else replace(entry, category=UNCATEGORISED) for entry in entries], skipped
