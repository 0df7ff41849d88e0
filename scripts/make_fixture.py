"""Rebuild the bundled sample catalogue from the grocery-store data set (MIT licence).

Usage: python scripts/make_fixture.py [../shared/data/grocery-store]

Picks a few fine classes across categories, evenly spaced train images as the catalogue,
test images as queries and the iconic images, and writes `src/lookalike/samples/grocery/manifest.csv`
(path, item, category, split) in the manifest format the evaluation reads.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

FINE_CLASSES = [
    "Arla-Standard-Milk",
    "Garant-Ecological-Standard-Milk",
    "Bravo-Apple-Juice",
    "Tropicana-Apple-Juice",
    "Oatly-Natural-Oatghurt",
    "Granny-Smith",
    "Royal-Gala",
    "Banana",
    "Red-Bell-Pepper",
    "Vine-Tomato",
]
CATALOG_PER_CLASS = 6
QUERIES_PER_CLASS = 2


def _read_split(dataset: Path, split: str) -> dict[str, list[str]]:
    by_class: dict[str, list[str]] = {}
    for line in (dataset / f"{split}.txt").read_text().splitlines():
        rel_path = line.split(",")[0].strip()
        fine = Path(rel_path).parent.name
        by_class.setdefault(fine, []).append(rel_path)
    return by_class


def _evenly(items: list[str], count: int) -> list[str]:
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def main(source: Path, target: Path) -> None:
    dataset = source / "dataset"
    coarse_of = {}
    iconic_of = {}
    with open(dataset / "classes.csv", newline="") as handle:
        for row in csv.reader(handle):
            if row[0] in FINE_CLASSES:
                coarse_of[row[0]] = row[2]
                iconic_of[row[0]] = row[4].lstrip("/")
    train, test = _read_split(dataset, "train"), _read_split(dataset, "test")
    if target.exists():
        shutil.rmtree(target)
    rows = []
    for fine in FINE_CLASSES:
        category = coarse_of[fine]
        picks = [("catalog", p) for p in _evenly(train[fine], CATALOG_PER_CLASS)]
        picks += [("queries", p) for p in _evenly(test[fine], QUERIES_PER_CLASS)]
        picks.append(("iconic", iconic_of[fine]))
        for split, rel_path in picks:
            name = Path(rel_path).name
            dest = target / split / category / name if split == "catalog" else target / split / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dataset / rel_path, dest)
            rows.append((dest.relative_to(target).as_posix(), fine, category, split))
    with open(target / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "item", "category", "split"])
        writer.writerows(rows)
    shutil.copyfile(source / "LICENSE", target / "LICENSE")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    source_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared/data/grocery-store"
    main(source_dir, root / "src" / "lookalike" / "samples" / "grocery")
