"""The catalogue's files as the server manages them: uploads in, thumbnails made, files removed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from lookalike.server.context import ServerContext
from lookalike.server.errors import not_found
from lookalike.server.media import ensure_thumbnail
from lookalike.server.schemas import AddedItem, AddOut, FailedUpload
from lookalike.server.uploads import (
    PixelBudget,
    StagedUpload,
    check_category,
    check_upload,
    save_upload,
    stage_upload,
    staging_folder,
)

log = logging.getLogger("lookalike.server")


class UploadedFile(Protocol):
    filename: str | None
    file: BinaryIO


def add_uploads(context: ServerContext, files: Sequence[UploadedFile], category: str | None) -> AddOut:
    """Check every upload, then save and index them one by one (one writer at a time).

    Memory stays at about one decoded photo: each upload is copied to disk in chunks, decoded once to
    check it and let go, and the engine indexes one photo per call. A photo sent twice in one request
    is indexed once; the repeat is answered with status "duplicate". A failure while indexing (a
    full disk) takes back what this request had added, so a request is kept whole or not at all.
    """
    label = check_category(category)
    settings = context.settings
    with context.writing():
        context.check_index()
        with staging_folder(Path(context.engine.path)) as staging:
            budget = PixelBudget(settings.max_pixels_per_request)
            uploads: list[StagedUpload] = []
            first_with: dict[str, int] = {}  # content digest -> the first upload with it
            repeats: list[int | None] = []  # per upload: the earlier upload it repeats, or None
            for file in files:
                upload = stage_upload(file.file, file.filename, staging, settings.max_upload_bytes)
                earlier = first_with.get(upload.digest)
                if earlier is None:
                    first_with[upload.digest] = len(uploads)
                    upload = check_upload(upload, budget)
                else:
                    upload.path.unlink()
                uploads.append(upload)
                repeats.append(earlier)
            outcomes = _index_one_by_one(context, uploads, repeats, label)
    return _answer(uploads, repeats, outcomes)


# what became of one upload: the catalogue item (and its status), or why it failed
_Outcome = tuple[AddedItem | None, str | None]


def _index_one_by_one(
    context: ServerContext, uploads: list[StagedUpload], repeats: list[int | None], label: str | None
) -> list[_Outcome]:
    engine = context.engine
    outcomes: list[_Outcome] = []
    added_ids: list[int] = []
    created: list[Path] = []
    try:
        for upload, earlier in zip(uploads, repeats, strict=True):
            if earlier is not None:
                outcomes.append((None, None))  # answered from the earlier upload's outcome
                continue
            path, new_file = save_upload(upload, context.uploads_dir, label)
            if new_file:
                created.append(path)
            report = engine.add([path], categories=label)
            item = None if report.failed else engine.find(path)
            if item is None:
                if new_file:
                    path.unlink(missing_ok=True)
                reason = report.failed[0][1] if report.failed else "not indexed"
                outcomes.append((None, reason))
                continue
            if item.id in report.added:
                added_ids.append(item.id)
            status = "added" if item.id in report.added else "updated" if item.id in report.updated else "unchanged"
            outcomes.append((AddedItem(id=item.id, name=path.name, upload=upload.name, category=item.category,
                                       status=status), None))  # fmt: skip
        context.check_index()  # the folder went away meanwhile: the additions are lost, say so
    except BaseException:
        _take_back(context, added_ids, created)
        raise
    return outcomes


def _take_back(context: ServerContext, added_ids: list[int], created: list[Path]) -> None:
    """Undo a request's additions after a failure (best effort: the disk may be full)."""
    try:
        if added_ids:
            context.engine.remove(added_ids)
    except Exception as exc:
        log.error("could not take back the images %s added before a failure: %s", added_ids, exc)
    for path in created:
        path.unlink(missing_ok=True)


def _answer(uploads: list[StagedUpload], repeats: list[int | None], outcomes: list[_Outcome]) -> AddOut:
    out = AddOut(items=[])
    for upload, earlier, (item, reason) in zip(uploads, repeats, outcomes, strict=True):
        if earlier is not None:
            first = uploads[earlier].name
            item, reason = outcomes[earlier]
            if item is not None:
                item = item.model_copy(update={"upload": upload.name, "status": "duplicate", "duplicate_of": first})
            else:
                reason = f"the same photo as upload {first!r} of this request, which failed: {reason}"
        if item is not None:
            out.items.append(item)
        else:
            out.failed.append(FailedUpload(name=upload.name, reason=reason or "not indexed"))
    return out


def remove(context: ServerContext, item_id: int) -> list[int]:
    """Remove one image from the index; delete its thumbnails, and its file if it was uploaded here."""
    with context.writing():
        context.check_index()
        item = context.item_or_404(item_id)
        report = context.engine.remove([item_id])
        if not report.removed:
            raise not_found(f"no catalogue image with id {item_id}")
        for cached in context.thumbnails_dir.glob(f"{item_id}_*.jpg"):
            cached.unlink(missing_ok=True)
        if _is_inside(Path(item.path), context.uploads_dir):
            Path(item.path).unlink(missing_ok=True)
    return report.removed


def set_category(context: ServerContext, item_id: int, category: str | None) -> tuple[int, str | None]:
    """File one image under another category (its vector kept; it gets a new id): (new id, category)."""
    label = check_category(category)
    with context.writing():
        context.check_index()
        context.item_or_404(item_id)
        report = context.engine.set_category([item_id], label)
        if not report.moved:
            raise not_found(f"no catalogue image with id {item_id}")
        for cached in context.thumbnails_dir.glob(f"{item_id}_*.jpg"):
            cached.unlink(missing_ok=True)
    return report.moved[item_id], label


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
