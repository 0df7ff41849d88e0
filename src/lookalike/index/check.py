"""`lookalike check`: is an index whole? Database, vector snapshot, image files, learned models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.errors import ImageError, LookalikeError
from lookalike.io.images import bytes_hash, file_hash
from lookalike.io.uris import filesystem, is_uri, read_uri


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
    """Every image's file exists (and, with `hashes`, still has the content that was indexed); an image
    stored under a URI is read through fsspec (with `hashes`) or looked up (without)."""
    for item in store.items():
        if is_uri(item.path):
            state = _uri_state(item.path, item.content_hash if hashes else None)
        else:
            path = Path(item.path)
            state = "missing" if not path.is_file() else None
            if state is None and hashes and file_hash(path) != item.content_hash:
                state = "changed"
        if state == "missing":
            report.missing_files.append(item.path)
        elif state == "changed":
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


def _uri_state(uri: str, digest: str | None) -> str | None:
    """ "missing", "changed" (its bytes no longer hash to `digest`, when given) or None for a URI."""
    if digest is not None:
        try:
            return "changed" if bytes_hash(read_uri(uri)) != digest else None
        except ImageError:
            return "missing"
    try:
        fs, path = filesystem(uri)
        return None if fs.isfile(path) else "missing"
    except (LookalikeError, OSError):
        return "missing"
