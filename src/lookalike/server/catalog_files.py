"""The catalogue's files as the server manages them: uploads in, thumbnails made, files removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Protocol

from lookalike.server.context import ServerContext
from lookalike.server.errors import not_found
from lookalike.server.media import ensure_thumbnail
from lookalike.server.schemas import AddedItem, AddOut, FailedUpload
from lookalike.server.uploads import Upload, check_category, read_upload, save_upload


class UploadedFile(Protocol):
    filename: str | None
    file: BinaryIO


def add_uploads(context: ServerContext, files: list[UploadedFile], category: str | None) -> AddOut:
    """Check every upload, then save and index them all (one writer at a time)."""
    label = check_category(category)
    uploads = [read_upload(f.file, f.filename, context.settings.max_upload_bytes) for f in files]
    with context.writing():
        saved = [save_upload(upload, context.uploads_dir, label) for upload in uploads]
        try:
            report = context.engine.add([path for path, _ in saved], categories=label)
        except BaseException:
            for path, created in saved:
                if created:
                    path.unlink(missing_ok=True)
            raise
    return _answer(context, uploads, [path for path, _ in saved], report)


def _answer(context: ServerContext, uploads: list[Upload], paths: list[Path], report: Any) -> AddOut:
    failed = dict(report.failed)
    out = AddOut(items=[])
    for upload, path in zip(uploads, paths, strict=True):
        item = None if str(path) in failed else context.engine.find(path)
        if item is None:
            path.unlink(missing_ok=True)
            out.failed.append(FailedUpload(name=upload.name, reason=failed.get(str(path), "not indexed")))
            continue
        status = "added" if item.id in report.added else "updated" if item.id in report.updated else "unchanged"
        out.items.append(AddedItem(id=item.id, name=path.name, category=item.category, status=status))
    return out


def remove(context: ServerContext, item_id: int) -> list[int]:
    """Remove one image from the index; delete its thumbnails, and its file if it was uploaded here."""
    with context.writing():
        item = context.item_or_404(item_id)
        report = context.engine.remove([item_id])
        if not report.removed:
            raise not_found(f"no catalogue image with id {item_id}")
        for cached in context.thumbnails_dir.glob(f"{item_id}_*.jpg"):
            cached.unlink(missing_ok=True)
        if _is_inside(Path(item.path), context.uploads_dir):
            Path(item.path).unlink(missing_ok=True)
    return report.removed


def thumbnail(context: ServerContext, item: Any, source: Path, size: int) -> Path:
    """The cached thumbnail of `item`, named by id, content and size (so never stale)."""
    target = context.thumbnails_dir / f"{item.id}_{item.content_hash[:12]}_{size}.jpg"
    return ensure_thumbnail(source, target, size)


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
