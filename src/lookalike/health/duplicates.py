"""Near-duplicate groups: connected components of the kNN graph thresholded at a calibrated
similarity, each with its pairwise scores, its exact copies (same content hash) and a keeper.

`find_duplicates(engine)` runs one pass over the catalogue (one batched k-nearest search per image);
`update_duplicates(engine, previous)` queries only the images added since `previous` and merges their
edges into its groups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from lookalike._registry import Registry
from lookalike.errors import SettingsError
from lookalike.health.calibration import DEFAULT_THRESHOLD, MODEL, expected_precision, expected_recall
from lookalike.health.neighbours import UnionFind, neighbour_chunks

if TYPE_CHECKING:
    from lookalike.index import Item
    from lookalike.pipeline import Engine


@dataclass(frozen=True)
class DuplicateSettings:
    """`threshold`: cosine similarity at or above which two images are duplicates (default: the
    calibrated one); `k`: neighbours looked at per image (a group grows through chains, so a small k
    finds groups larger than k); `keep`: the keeper rule (see KEEPERS)."""

    threshold: float = DEFAULT_THRESHOLD
    k: int = 8
    keep: str = "largest"
    batch: int = 1024

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise SettingsError(
                f"a duplicate threshold is a cosine similarity in [-1, 1], got {self.threshold}; "
                f"the calibrated default is {DEFAULT_THRESHOLD}"
            )
        if self.k < 1:
            raise SettingsError(f"k (neighbours per image) must be >= 1, got {self.k}")
        KEEPERS.get(self.keep)  # an unknown rule fails here, listing the valid ones


@dataclass
class Member:
    """One image of a group, with what the keeper rules look at."""

    id: int
    path: str
    category: str | None
    item: str | None
    content_hash: str
    added_at: float
    width: int = 0
    height: int = 0
    keeper: bool = False
    exact_copy_of: int | None = None  # the first member with the same content hash


@dataclass
class DuplicateGroup:
    members: list[Member]
    pairs: list[tuple[int, int, float]]  # (id, id, similarity) edges at or above the threshold
    kind: str = "near"  # "exact": every member has the same content hash

    @property
    def keeper(self) -> int:
        return next(member.id for member in self.members if member.keeper)


@dataclass
class DuplicateReport:
    settings: DuplicateSettings
    groups: list[DuplicateGroup]
    images: int  # images in the catalogue when the report was made
    last_id: int  # the highest id looked at: an update queries only newer images
    seconds: float
    model: str | None = None
    calibrated_for: str = MODEL
    expected_precision: float | None = None
    expected_recall: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["groups"] = [{**asdict(group), "keeper": group.keeper} for group in self.groups]
        payload["duplicate_images"] = sum(len(group.members) - 1 for group in self.groups)
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> DuplicateReport:
        groups = [
            DuplicateGroup(
                [Member(**member) for member in group["members"]],
                [(int(a), int(b), float(s)) for a, b, s in group["pairs"]],
                group.get("kind", "near"),
            )
            for group in payload["groups"]
        ]
        known = {"threshold", "k", "keep", "batch"}
        settings = DuplicateSettings(**{key: value for key, value in payload["settings"].items() if key in known})
        return cls(settings, groups, payload["images"], payload["last_id"], payload["seconds"], payload.get("model"))


# -- keeper rules: which member of a group to keep
Keeper = Callable[[list[Member]], Member]
KEEPERS: Registry[Keeper] = Registry("keeper rule")


@KEEPERS.register("largest")
def _largest(members: list[Member]) -> Member:
    """The most pixels; ties: the oldest in the index, then the first path."""
    return min(members, key=lambda m: (-m.width * m.height, m.added_at, m.path))


@KEEPERS.register("oldest")
def _oldest(members: list[Member]) -> Member:
    """The first added to the index; ties: the first path."""
    return min(members, key=lambda m: (m.added_at, m.id, m.path))


@KEEPERS.register("first-path")
def _first_path(members: list[Member]) -> Member:
    """The first path in alphabetical order."""
    return min(members, key=lambda m: m.path)


def create_keeper(name: str) -> Keeper:
    return KEEPERS.get(name)


# -- the passes
def find_duplicates(engine: Engine, settings: DuplicateSettings | None = None) -> DuplicateReport:
    """Every near-duplicate group of the catalogue (one k-nearest search per image)."""
    settings = settings or DuplicateSettings()
    started = time.perf_counter()
    edges, last_id = _strong_edges(engine, settings, after_id=-1)
    edges += [(ids[0], other, 1.0) for ids in exact_copies(engine.items()) for other in ids[1:]]  # however many
    groups = _groups(engine, edges, settings)
    return _report(engine, settings, groups, last_id, time.perf_counter() - started)


def update_duplicates(engine: Engine, previous: DuplicateReport) -> DuplicateReport:
    """`previous` brought up to date: removed images dropped, images added since queried and their
    edges merged into the stored groups (old images are not searched again)."""
    settings = previous.settings
    started = time.perf_counter()
    old_edges = [pair for group in previous.groups for pair in group.pairs]
    new_edges, last_id = _strong_edges(engine, settings, after_id=previous.last_id)
    present = set(engine.store.get_many({i for a, b, _ in old_edges for i in (a, b)}))
    kept = [(a, b, s) for a, b, s in old_edges if a in present and b in present]
    groups = _groups(engine, kept + new_edges, settings)
    report = _report(engine, settings, groups, max(last_id, previous.last_id), time.perf_counter() - started)
    report.notes.append(f"updated from a report of {previous.images} images (last id {previous.last_id})")
    return report


def _strong_edges(
    engine: Engine, settings: DuplicateSettings, after_id: int
) -> tuple[list[tuple[int, int, float]], int]:
    """(a, b, similarity) with a < b for every kNN edge at or above the threshold, plus exact copies."""
    edges: dict[tuple[int, int], float] = {}
    last_id = after_id
    for chunk in neighbour_chunks(engine, settings.k, after_id=after_id, batch=settings.batch):
        last_id = max(last_id, int(chunk.ids.max()))
        rows, cols = (chunk.scores >= settings.threshold).nonzero()
        for row, col in zip(rows, cols, strict=True):
            a, b = sorted((int(chunk.ids[row]), int(chunk.neighbour_ids[row, col])))
            edges[(a, b)] = max(edges.get((a, b), -1.0), float(chunk.scores[row, col]))
    return [(a, b, score) for (a, b), score in edges.items()], last_id


def _groups(engine: Engine, edges: list[tuple[int, int, float]], settings: DuplicateSettings) -> list[DuplicateGroup]:
    strongest: dict[tuple[int, int], float] = {}
    for a, b, score in edges:  # an exact copy can come from the search and from its hash
        strongest[(a, b)] = max(score, strongest.get((a, b), -1.0))
    edges = [(a, b, score) for (a, b), score in strongest.items()]
    sets = UnionFind()
    for a, b, _ in edges:
        sets.union(a, b)
    ids = [i for group in sets.groups() for i in group]
    items = engine.store.get_many(ids)
    by_root: dict[int, list[tuple[int, int, float]]] = {}
    for edge in edges:
        if edge[0] in items and edge[1] in items:
            by_root.setdefault(sets.find(edge[0]), []).append(edge)
    keeper = create_keeper(settings.keep)
    groups = []
    for members_ids in sets.groups():
        members = [_member(items[i]) for i in members_ids if i in items]
        if len(members) > 1:
            groups.append(_group(members, sorted(by_root.get(sets.find(members_ids[0]), [])), keeper))
    return sorted(groups, key=lambda g: (-len(g.members), -max(s for *_, s in g.pairs), g.members[0].id))


def _group(members: list[Member], pairs: list[tuple[int, int, float]], keeper: Keeper) -> DuplicateGroup:
    first_of_hash: dict[str, int] = {}
    for member in members:
        first = first_of_hash.setdefault(member.content_hash, member.id)
        member.exact_copy_of = None if first == member.id else first
    keeper(members).keeper = True
    kind = "exact" if len(first_of_hash) == 1 else "near"
    return DuplicateGroup(members, [(a, b, round(s, 4)) for a, b, s in pairs], kind)


def _member(item: Item) -> Member:
    width, height = _size(item.path)
    product = item.extra.get("item") if item.extra else None
    return Member(item.id, item.path, item.category, product, item.content_hash, item.added_at, width, height)


def _size(path: str) -> tuple[int, int]:
    """The image's pixel size from its header (0, 0 when the file is gone or unreadable)."""
    try:
        with Image.open(Path(path)) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0, 0


def _report(
    engine: Engine, settings: DuplicateSettings, groups: list[DuplicateGroup], last_id: int, seconds: float
) -> DuplicateReport:
    model = engine.settings.embed.model
    report = DuplicateReport(settings, groups, len(engine), last_id, round(seconds, 3), model)
    report.expected_precision = expected_precision(settings.threshold)
    report.expected_recall = expected_recall(settings.threshold)
    if model != MODEL or engine.settings.localize.enabled:
        report.notes.append(
            f"the threshold was calibrated for {MODEL} on whole images; this index uses {model}"
            + (" with localisation" if engine.settings.localize.enabled else "")
            + ": its expected precision may differ (run benchmarks/health.py with this model)"
        )
    return report


def exact_copies(items: Iterable[Item]) -> list[list[int]]:
    """Ids sharing one content hash (byte-identical files), groups of two or more."""
    by_hash: dict[str, list[int]] = {}
    for item in items:
        by_hash.setdefault(item.content_hash, []).append(item.id)
    return [sorted(ids) for ids in by_hash.values() if len(ids) > 1]
