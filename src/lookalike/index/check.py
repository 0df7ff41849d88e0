"""`lookalike check`: is an index whole? Database, vector snapshot, image files, learned models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.io.images import file_hash


@dataclass
class CheckReport:
    """What `Engine.check` found: `problems` (each with how to fix it), `notes`, and what `repair` fixed."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "notes": self.notes, "repaired": self.repaired,
                "missing_files": self.missing_files, "changed_files": self.changed_files}  # fmt: skip


def check_database(store: Any, report: CheckReport) -> bool:
    """The metadata store's own integrity check (SQLite's quick_check, or Milvus's collections);
    False when the store cannot be trusted."""
    problem = store.integrity()
    if problem:
        report.problems.append(problem)
        return False
    report.notes.append(f"database: {store.count()} images, generation {store.generation}, integrity ok")
    return True


def check_files(store: Any, report: CheckReport, *, hashes: bool) -> None:
    """Every image's file exists (and, with `hashes`, still has the content that was indexed)."""
    for item in store.items():
        path = Path(item.path)
        if not path.is_file():
            report.missing_files.append(item.path)
        elif hashes and file_hash(path) != item.content_hash:
            report.changed_files.append(item.path)
    if report.missing_files:
        report.problems.append(
            f"{len(report.missing_files)} indexed image file(s) no longer exist (first: {report.missing_files[0]}); "
            "search still works, but results point at missing files: `lookalike remove` them or restore the files"
        )
    if report.changed_files:
        report.problems.append(
            f"{len(report.changed_files)} image file(s) changed since they were indexed (first: "
            f"{report.changed_files[0]}); run `lookalike index` or `lookalike add` on them again to re-embed them"
        )
