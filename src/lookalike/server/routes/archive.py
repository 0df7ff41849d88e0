"""The photo archive: unlabelled photos of the catalogue's products, kept beside the index for the
"archive" re-ranker (`lookalike archive`, `Engine.archive_photos`). Never search results.

Uploads are saved inside the index folder (`archive/photos/`), named by their content; clearing the
archive deletes only those files. Adding and clearing are writes: the same guard as the catalogue's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile

from lookalike.index.archive import FOLDER
from lookalike.server.context import ServerContext
from lookalike.server.errors import ApiError
from lookalike.server.routes.common import Context, errors
from lookalike.server.schemas import ArchiveOut
from lookalike.server.uploads import PixelBudget, StagedUpload, check_upload, save_upload, stage_upload, staging_folder

router = APIRouter(prefix="/api", tags=["archive"])
PHOTOS_DIR = "photos"  # under the index's archive folder: the photos uploaded through the API
ArchivePhotos = Annotated[list[UploadFile], File(description="one or more unlabelled photos of the products")]


@router.get("/archive", response_model=ArchiveOut, responses=errors(503))
def archive_info(context: Context) -> ArchiveOut:
    """How many photos the archive holds, whether they are the index's model's and the re-ranker is on."""
    return _out(context, added=0)


ALREADY_KEPT = {200: {"model": ArchiveOut, "description": "every photo was in the archive already"}}


@router.post(
    "/archive",
    response_model=ArchiveOut,
    status_code=201,
    responses={**errors(400, 401, 403, 413, 422, 503, 507), **ALREADY_KEPT},
)
def add_to_archive(files: ArchivePhotos, context: Context, response: Response) -> ArchiveOut:
    """Add uploaded photos to the archive, embedded by the index's model; the "archive" re-ranker is
    switched on. A write (the catalogue's guard: 403 unless allowed, the API key when set). Every photo is
    checked before any is kept: one bad photo refuses the request (422); too many bytes or pixels, 413."""
    settings = context.settings
    if len(files) > settings.max_files_per_add:
        raise ApiError(413, "too_large", f"at most {settings.max_files_per_add} photos per request, got {len(files)}")
    folder = _photos_dir(context)
    with context.writing():
        context.check_index()
        with staging_folder(Path(context.engine.path)) as staging:
            budget, uploads = PixelBudget(settings.max_pixels_per_request), []
            for file in files:
                uploads.append(check_upload(stage_upload(file.file, file.filename, staging, settings.max_upload_bytes),
                                            budget))  # fmt: skip
            paths, created = _saved(uploads, folder)
            try:
                report = context.engine.archive_photos(paths)
            except BaseException:
                for path in created:
                    path.unlink(missing_ok=True)
                raise
    if not created:
        response.status_code = 200
    return _out(context, added=report["added"])


@router.delete("/archive", response_model=ArchiveOut, responses=errors(401, 403, 503, 507))
def clear_archive(context: Context) -> ArchiveOut:
    """Drop the archive, switch the re-ranker off and delete the photos uploaded to it. A write."""
    with context.writing():
        context.check_index()
        context.engine.clear_archive()  # the archive folder goes, the uploaded photos with it
    return _out(context, added=0)


def _saved(uploads: list[StagedUpload], folder: Path) -> tuple[list[str], list[Path]]:
    """Each upload moved into the archive's photos folder: every path, and the files that are new."""
    paths, created = [], []
    for upload in uploads:
        path, new_file = save_upload(upload, folder, None)
        paths.append(str(path))
        if new_file:
            created.append(path)
    return list(dict.fromkeys(paths)), created


def _photos_dir(context: ServerContext) -> Path:
    folder = Path(context.engine.path) / FOLDER
    folder.mkdir(exist_ok=True)
    return folder / PHOTOS_DIR


def _out(context: ServerContext, added: int) -> ArchiveOut:
    info = context.engine.archive_info() or {"photos": 0, "current": True, "reranker": False}
    return ArchiveOut(photos=info["photos"], current=info["current"], reranker=info["reranker"], added=added)
