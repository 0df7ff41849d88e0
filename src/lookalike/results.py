"""What the engine answers: hits of a search, and reports of additions and removals."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, overload


@dataclass(frozen=True)
class Hit:
    """One search result: a catalogue image, its score and the breakdown of that score."""

    rank: int
    id: int
    path: str
    score: float
    category: str | None
    scores: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult(Sequence[Hit]):
    """The hits of one query (a sequence of `Hit`), with what the engine did to find them."""

    hits: list[Hit]
    timings: dict[str, float]  # seconds per stage, and "total"
    searched_categories: list[str] | None  # None = every category
    query: str = "<image>"
    details: dict[str, Any] = field(default_factory=dict)
    localization: Any = None  # the query's `Localization` (mask, cut-out...) when localisation is on

    @overload
    def __getitem__(self, index: int) -> Hit: ...
    @overload
    def __getitem__(self, index: slice) -> list[Hit]: ...
    def __getitem__(self, index: int | slice) -> Hit | list[Hit]:
        return self.hits[index]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "hits": [hit.to_dict() for hit in self.hits],
            "searched_categories": self.searched_categories,
            "timings_ms": {stage: round(seconds * 1000, 3) for stage, seconds in self.timings.items()},
            **self.details,
        }


@dataclass
class AddReport:
    """What `Engine.add` did with each file."""

    added: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicates: list[str] = field(default_factory=list)  # the same file named twice: indexed once
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return len(self.added) + len(self.updated)


@dataclass
class RemoveReport:
    removed: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    moved: dict[int, int] = field(default_factory=dict)  # set_category: old id -> new id
