"""Evaluation data sets: which images are queries, which form the gallery, and what counts as relevant.

A `Dataset` holds query and gallery entries (`CatalogEntry`: `item` = the product or object
instance, `category` = its coarse class, `mask` = ground-truth mask where there is one) and the
label that decides relevance (`"item"` by default: a gallery image is relevant to a query when
it shows the same item). Adapters build one from the grocery-store and ETH-80 layouts or from a
CSV manifest; `require_dataset` finds the shared development data and explains when it is absent.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lookalike.errors import LookalikeError
from lookalike.io.catalog import CatalogEntry, read_manifest

DATA_ENV_VAR = "LOOKALIKE_DATA"
RELEVANCE_KEYS = ("item", "category")
GALLERY_SPLITS = ("gallery", "train", "catalog")
QUERY_SPLITS = ("query", "queries", "test")
TRAINING_SPLITS = ("training",)  # labelled photos for the model-carry route, neither query nor gallery
# ETH-80 views are named <elevation>-<azimuth>; the default queries are the eight views of the
# 66-degree ring, which lies between the 45 and 68-degree rings left in the gallery.
ETH80_QUERY_VIEWS = ("066-027", "066-063", "066-117", "066-153", "066-207", "066-243", "066-297", "066-333")


class DatasetNotFound(LookalikeError, FileNotFoundError):
    """A data set folder or one of its index files is missing; the message names the path."""


@dataclass(frozen=True)
class Dataset:
    """Queries and gallery of one evaluation protocol.

    `relevance` names the `CatalogEntry` field that decides relevance: "item" (same product or
    object instance) or "category" (same coarse class). `training`: labelled photos apart from the
    queries and the gallery (grocery-store: the train split), which the model-carry route fine-tunes on.
    """

    name: str
    protocol: str
    queries: tuple[CatalogEntry, ...]
    gallery: tuple[CatalogEntry, ...]
    relevance: Literal["item", "category"] = "item"
    root: Path | None = None
    training: tuple[CatalogEntry, ...] = ()

    def __post_init__(self) -> None:
        if self.relevance not in RELEVANCE_KEYS:
            raise LookalikeError(f"Dataset relevance must be one of {RELEVANCE_KEYS}; got {self.relevance!r}")
        for role, entries in (("query", self.queries), ("gallery", self.gallery)):
            missing = [e.path for e in entries if getattr(e, self.relevance) is None]
            if missing:
                raise LookalikeError(
                    f"{self.name}: {len(missing)} {role} entries have no {self.relevance} "
                    f"(first: {missing[0]}); every entry needs one to decide relevance"
                    + (
                        " (only categories known? evaluate at category level: --relevance category)"
                        if self.relevance == "item"
                        else ""
                    )
                )

    def query_labels(self) -> list[str]:
        """The relevance label of each query, in order."""
        return [getattr(e, self.relevance) for e in self.queries]

    def gallery_labels(self) -> list[str]:
        """The relevance label of each gallery entry, in order."""
        return [getattr(e, self.relevance) for e in self.gallery]

    def n_relevant(self) -> list[int]:
        """For each query, how many gallery entries are relevant to it."""
        counts = Counter(self.gallery_labels())
        return [counts[label] for label in self.query_labels()]

    def describe(self) -> dict[str, object]:
        """Counts for a report: queries, gallery, distinct labels, queries with no relevant item."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "relevance": self.relevance,
            "n_queries": len(self.queries),
            "n_gallery": len(self.gallery),
            "n_gallery_labels": len(set(self.gallery_labels())),
            "n_queries_without_relevant": sum(1 for n in self.n_relevant() if n == 0),
            "n_training": len(self.training),
        }


# ---------------------------------------------------------------------------------------------
# Where the shared data lives
# ---------------------------------------------------------------------------------------------


def shared_data_dir() -> Path:
    """The shared data folder: $LOOKALIKE_DATA if set, else `../shared/data` beside the repository."""
    override = os.environ.get(DATA_ENV_VAR)
    if override:
        return Path(override)
    repo_root = Path(__file__).resolve().parents[3]  # src/lookalike/evaluate/datasets.py
    return repo_root.parent / "shared" / "data"


def require_dataset(name: str) -> Path:
    """Path of the shared data set `name` (e.g. "grocery-store"); raises `DatasetNotFound` with the reason."""
    folder = shared_data_dir() / name
    if not folder.is_dir():
        raise DatasetNotFound(
            f"data set {name!r} not found: {folder} is not a folder; "
            f"set {DATA_ENV_VAR} to the folder that holds it (currently {os.environ.get(DATA_ENV_VAR)!r})"
        )
    if not any(folder.iterdir()):
        raise DatasetNotFound(f"data set {name!r} not found: {folder} is empty")
    return folder


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetNotFound(f"{path}: missing; expected {what}")
    return path


# ---------------------------------------------------------------------------------------------
# Grocery Store (Klasson et al., WACV 2019)
# ---------------------------------------------------------------------------------------------

GroceryProtocol = Literal["photo2photo", "photo2catalog"]
GrocerySplit = Literal["train", "val", "test", "iconic"]


@dataclass(frozen=True)
class _GroceryClass:
    fine: str
    coarse: str
    iconic: str  # relative to dataset/


def _grocery_dir(root: str | Path) -> Path:
    """The `dataset/` folder, given the data set's root or that folder itself."""
    root = Path(root)
    for candidate in (root / "dataset", root):
        if (candidate / "classes.csv").is_file():
            return candidate
    raise DatasetNotFound(
        f"{root}: not a grocery-store data set; expected {root / 'dataset' / 'classes.csv'} "
        "(the folder that holds dataset/ from github.com/marcusklasson/GroceryStoreDataset)"
    )


def _grocery_classes(dataset_dir: Path) -> dict[int, _GroceryClass]:
    path = dataset_dir / "classes.csv"
    with open(path, newline="") as handle:  # headers carry type suffixes: "Class Name (str)"
        rows = [{k.split(" (")[0].strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(handle)]
    needed = {"Class Name", "Class ID", "Coarse Class Name", "Iconic Image Path"}
    if not rows or not needed <= rows[0].keys():
        found = sorted(rows[0]) if rows else []
        raise LookalikeError(f"{path}: expected columns {sorted(needed)} (with type suffixes); found {found}")
    return {
        int(row["Class ID"]): _GroceryClass(
            fine=row["Class Name"], coarse=row["Coarse Class Name"], iconic=row["Iconic Image Path"].lstrip("/")
        )
        for row in rows
    }


def _grocery_line(line: str, where: str, classes: dict[int, _GroceryClass]) -> tuple[str, _GroceryClass]:
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != 3 or not parts[1].isdigit():
        raise LookalikeError(f"{where}: expected 'path, fine_id, coarse_id'; got {line!r}")
    fine_id = int(parts[1])
    if fine_id not in classes:
        known = f"{min(classes)}-{max(classes)}"
        raise LookalikeError(f"{where}: fine class id {fine_id} is not in classes.csv (ids {known})")
    return parts[0], classes[fine_id]


def grocery_store_entries(root: str | Path, split: GrocerySplit) -> list[CatalogEntry]:
    """The images of one grocery-store split ("train", "val", "test" or "iconic"), in file order.

    item = fine class name (the product), category = coarse class name, split = `split`.
    """
    dataset_dir = _grocery_dir(root)
    classes = _grocery_classes(dataset_dir)
    if split == "iconic":
        return [CatalogEntry(dataset_dir / c.iconic, c.coarse, c.fine, "iconic") for _, c in sorted(classes.items())]
    if split not in ("train", "val", "test"):
        raise LookalikeError(f"Unknown grocery-store split {split!r}; expected train, val, test or iconic")
    listing = _require_file(dataset_dir / f"{split}.txt", f"the {split} listing of the grocery-store data set")
    entries = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if line.strip():
            rel_path, cls = _grocery_line(line, f"{listing}:{number}", classes)
            entries.append(CatalogEntry(dataset_dir / rel_path, cls.coarse, cls.fine, split))
    return entries


def grocery_store(
    root: str | Path,
    protocol: GroceryProtocol = "photo2photo",
    label: Literal["fine", "coarse"] = "fine",
) -> Dataset:
    """Grocery-store retrieval: queries = the test images; gallery = the train images ("photo2photo")
    or the 81 iconic catalogue images ("photo2catalog"); training = the train images (labelled
    photos for the model-carry route).

    Relevant = same fine class (`label="fine"`, the product) or same coarse class (`label="coarse"`).
    """
    galleries = {"photo2photo": "train", "photo2catalog": "iconic"}
    if protocol not in galleries:
        raise LookalikeError(f"Unknown grocery-store protocol {protocol!r}; expected one of {sorted(galleries)}")
    if label not in ("fine", "coarse"):
        raise LookalikeError(f"Unknown grocery-store label {label!r}; expected 'fine' or 'coarse'")
    train = tuple(grocery_store_entries(root, "train"))
    return Dataset(
        name="grocery-store",
        protocol=f"{protocol} ({label})",
        queries=tuple(grocery_store_entries(root, "test")),
        gallery=train if protocol == "photo2photo" else tuple(grocery_store_entries(root, "iconic")),
        relevance="item" if label == "fine" else "category",
        root=Path(root),
        training=train,
    )


# ---------------------------------------------------------------------------------------------
# ETH-80 (Leibe and Schiele, CVPR 2003)
# ---------------------------------------------------------------------------------------------


def _eth80_instances(root: Path, instances: Iterable[int] | None) -> list[tuple[str, int, Path]]:
    """(category, instance number, folder) for every instance folder, sorted; checks requested ones exist."""
    if not root.is_dir():
        raise DatasetNotFound(f"{root}: not a folder; expected the ETH-80 layout <category>/<category><n>/")
    found = []
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        pattern = re.compile(re.escape(category_dir.name) + r"(\d+)")
        for folder in sorted(p for p in category_dir.iterdir() if p.is_dir()):
            match = pattern.fullmatch(folder.name)
            if match:
                found.append((category_dir.name, int(match.group(1)), folder))
    if not found:
        raise DatasetNotFound(f"{root}: no ETH-80 instance folders; expected <category>/<category><n>/ inside it")
    if instances is None:
        return found
    wanted = set(instances)
    for category in sorted({c for c, _, _ in found}):
        have = {n for c, n, _ in found if c == category}
        if not wanted <= have:
            raise LookalikeError(f"{root}: ETH-80 {category} has instances {sorted(have)}; asked for {sorted(wanted)}")
    return [row for row in found if row[1] in wanted]


def _eth80_view(path: Path) -> str:
    """The "<elevation>-<azimuth>" view of an image named <name>-<elevation>-<azimuth>.jpg."""
    parts = path.stem.rsplit("-", 2)
    if len(parts) != 3:
        raise LookalikeError(f"{path}: expected an ETH-80 name <name>-<elevation>-<azimuth>.jpg")
    return f"{parts[1]}-{parts[2]}"


def _eth80_folder(category: str, number: int, folder: Path) -> list[tuple[str, CatalogEntry]]:
    rows = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png") and p.is_file()):
        mask = folder / "masks" / f"{path.stem}.png"
        entry = CatalogEntry(
            path=path, category=category, item=f"{category}{number}", mask=mask if mask.is_file() else None
        )
        rows.append((_eth80_view(path), entry))
    if not rows:
        raise DatasetNotFound(f"{folder}: no images; expected <name>-<elevation>-<azimuth>.jpg files")
    return rows


def eth80_entries(
    root: str | Path, *, instances: Iterable[int] | None = None, views: Sequence[str] | None = None
) -> list[tuple[str, CatalogEntry]]:
    """(view, entry) for every ETH-80 image of the chosen instances (all by default), sorted by path.

    item = "<category><n>" (the object), category = the category, mask = masks/<stem>.png when present.
    `views` keeps only those "<elevation>-<azimuth>" views.
    """
    rows = [row for instance in _eth80_instances(Path(root), instances) for row in _eth80_folder(*instance)]
    if views is None:
        return rows
    kept = set(views)
    return [(view, entry) for view, entry in rows if view in kept]


def eth80(
    root: str | Path,
    *,
    query_views: Sequence[str] = ETH80_QUERY_VIEWS,
    instances: Iterable[int] | None = None,
) -> Dataset:
    """ETH-80 cross-view instance retrieval: relevant = the same object, seen from another viewpoint.

    Queries = the `query_views` of every instance (default: the eight views of the 66-degree ring);
    gallery = all other views of all instances, so no query view is in the gallery. With the 41 views
    of ETH-80 and the default, each query has 33 relevant gallery images.
    """
    rows = eth80_entries(root, instances=instances)
    wanted = set(query_views)
    _check_views(rows, wanted, Path(root))
    queries = tuple(_with_split(entry, "query") for view, entry in rows if view in wanted)
    gallery = tuple(_with_split(entry, "gallery") for view, entry in rows if view not in wanted)
    protocol = f"cross-view instance retrieval (queries: {len(wanted)} views)"
    return Dataset("eth80", protocol, queries, gallery, relevance="item", root=Path(root))


def _check_views(rows: list[tuple[str, CatalogEntry]], wanted: set[str], root: Path) -> None:
    if not wanted:
        raise LookalikeError("ETH-80: expected one or more query views, e.g. '066-027'; got none")
    for item in sorted({entry.item for _, entry in rows if entry.item}):
        have = {view for view, entry in rows if entry.item == item}
        if not wanted <= have:
            raise LookalikeError(
                f"{root}: ETH-80 {item} has no view(s) {sorted(wanted - have)}; views are named "
                f"<elevation>-<azimuth>, e.g. {sorted(have)[:3]}"
            )
        if have <= wanted:
            raise LookalikeError(f"{root}: ETH-80 {item}: every view is a query view; none is left for the gallery")


def eth80_classification_split(
    root: str | Path,
    *,
    train_instances: Iterable[int] = (1, 2, 3),
    test_instances: Iterable[int] = (4, 5),
) -> tuple[list[CatalogEntry], list[CatalogEntry]]:
    """(train, test) entries for category prediction on unseen objects: all views of each instance."""
    train, test = set(train_instances), set(test_instances)
    if train & test:
        raise LookalikeError(f"ETH-80: train and test instances overlap: {sorted(train & test)}")
    return (
        [_with_split(entry, "train") for _, entry in eth80_entries(root, instances=train)],
        [_with_split(entry, "test") for _, entry in eth80_entries(root, instances=test)],
    )


def _with_split(entry: CatalogEntry, split: str) -> CatalogEntry:
    return CatalogEntry(entry.path, entry.category, entry.item, split, entry.mask)


# ---------------------------------------------------------------------------------------------
# CSV manifests
# ---------------------------------------------------------------------------------------------


def from_manifest(
    path: str | Path,
    *,
    gallery_splits: Sequence[str] = GALLERY_SPLITS,
    query_splits: Sequence[str] = QUERY_SPLITS,
    relevance: Literal["item", "category"] = "item",
    name: str | None = None,
) -> Dataset:
    """A data set from a CSV manifest (path,item,category,split,mask; see `read_manifest`).

    Rows whose `split` (case-insensitive) is in `gallery_splits` (default gallery, train, catalog)
    form the gallery; those in `query_splits` (default query, queries, test) the queries. Rows with
    another split (e.g. "iconic", "val") or none are left out; pass e.g. `gallery_splits=("iconic",)`
    to use them. Rows of split "training" are the data set's `training` photos (the model-carry route).
    """
    path = _require_file(Path(path), "a CSV manifest with a header path,item,category,split[,mask]")
    entries = read_manifest(path)
    gallery_set, query_set = {s.lower() for s in gallery_splits}, {s.lower() for s in query_splits}
    if gallery_set & query_set:
        raise LookalikeError(f"A split cannot be both gallery and query: {sorted(gallery_set & query_set)}")
    queries = tuple(e for e in entries if (e.split or "").lower() in query_set)
    gallery = tuple(e for e in entries if (e.split or "").lower() in gallery_set)
    if not queries or not gallery:
        found = sorted({e.split or "<none>" for e in entries})
        raise LookalikeError(
            f"{path}: {len(queries)} query and {len(gallery)} gallery rows; the split column holds {found}, "
            f"expected some of {sorted(query_set)} (queries) and of {sorted(gallery_set)} (gallery)"
        )
    training = tuple(e for e in entries if (e.split or "").lower() in TRAINING_SPLITS)
    protocol = f"manifest (queries: {'|'.join(sorted(query_set))}; gallery: {'|'.join(sorted(gallery_set))})"
    name = name or f"{path.parent.name}/{path.name}"
    return Dataset(name, protocol, queries, gallery, relevance, path.parent, training=training)
