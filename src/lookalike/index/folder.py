"""An index folder's life: what a path holds, and creating a new index atomically.

A new index is written into a staging folder beside its target (`.NAME.creating-PID`) and renamed
into place once its database and settings are complete, so a kill during creation leaves either
no index or a whole one. Folders left by older versions (a database without settings.json) are
recognised as half-created and may be replaced.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

SETTINGS_FILE = "settings.json"
DATABASE_FILE = "catalog.sqlite"
INDEX_ENTRIES = frozenset(
    {DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm", f"{DATABASE_FILE}-journal", "vectors", "write.lock"}
)

FolderState = Literal["absent", "file", "empty", "index", "half", "other"]


def folder_state(path: Path) -> FolderState:
    """absent, a file, an empty folder, an index, a half-created index, or another folder."""
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "file"
    names = {entry.name for entry in path.iterdir()}
    if not names:
        return "empty"
    if SETTINGS_FILE in names:
        return "index"
    if DATABASE_FILE in names and names <= INDEX_ENTRIES | {SETTINGS_FILE + ".tmp"}:
        return "half"
    return "other"


def half_created_message(path: Path) -> str:
    return (
        f"{path}: a half-created index ({DATABASE_FILE} without {SETTINGS_FILE}: an interrupted "
        "`lookalike index`?); build it again with --rebuild (Engine.create(..., overwrite=True)) to replace it"
    )


def staging_folder(target: Path) -> Path:
    """A fresh, empty folder beside `target` to build a new index in; stale ones of dead processes are removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.creating-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = target.parent / f".{target.name}.creating-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def swap_in(staging: Path, target: Path) -> None:
    """Put the complete index in `staging` at `target`, replacing what was there (an old index, a
    half-created one, an empty folder); the old one is removed only once the new one is in place."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
