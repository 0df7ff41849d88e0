"""The catalogue: browse, fetch images, thumbnails and silhouettes by id, add and remove images.

Files are found by id in the index's own metadata, never from a client-given path; uploads are
saved inside the index folder (`uploads/`), and only those are deleted when their image is removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import FileResponse

from lookalike.errors import ImageError
from lookalike.io.images import IMAGE_EXTENSIONS
from lookalike.server import catalog_files
from lookalike.server.context import ServerContext
from lookalike.server.errors import ApiError, not_found
from lookalike.server.media import png_bytes, silhouette_image
from lookalike.server.respond import item_out
from lookalike.server.routes.common import MAX_INT64, PNG, Context, ItemId, Scale, errors, optional
from lookalike.server.schemas import AddOut, CategoryChangeOut, ItemOut, ItemPage, RemoveOut

router = APIRouter(prefix="/api", tags=["catalogue"])
# files served by id: the indexed formats, and GIF (an upload or an explicit `add` of one: its first frame is indexed)
SERVED_EXTENSIONS = IMAGE_EXTENSIONS | {".gif"}
CACHE_IMMUTABLE = {"Cache-Control": "public, max-age=86400"}  # ids are never reused
Photos = Annotated[list[UploadFile], File(description="one or more photos to add")]
NewCategory = Annotated[str | None, Form(description="the photos' category (optional)")]
ChangedCategory = Annotated[str | None, Form(description="the image's new category (empty: uncategorised)")]


@router.get("/items", response_model=ItemPage, responses=errors(404, 422))
def list_items(
    context: Context,
    category: Annotated[str | None, Query(description="only this category")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 48,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> ItemPage:
    """One page of the catalogue, in id order, optionally of one category."""
    category = optional(category)
    counts = context.engine.categories()
    if category is not None and category not in counts:
        known = ", ".join(sorted(str(name) for name in counts if name is not None)) or "none"
        raise not_found(f"unknown category {category!r}; the index holds: {known}")
    total = counts[category] if category is not None else sum(counts.values())
    items = context.engine.items(category, limit=limit, offset=offset)
    page = [item_out(item, context.localization) for item in items]
    return ItemPage(total=total, limit=limit, offset=offset, category=category, items=page)


@router.get("/items/{item_id}", response_model=ItemOut, responses=errors(404, 422))
def get_item(item_id: ItemId, context: Context) -> ItemOut:
    return item_out(context.item_or_404(item_id), context.localization)


@router.post("/items", response_model=AddOut, status_code=201, responses=errors(400, 401, 403, 413, 422, 503, 507))
def add_items(files: Photos, context: Context, response: Response, category: NewCategory = None) -> AddOut:
    """Add uploaded photos to the catalogue (saved in the index folder's `uploads/`), indexed at once.

    A write: off unless the server allows writes (403), with the API key when it has one
    (`Authorization: Bearer <key>`; 401 without, 403 when wrong), never from another site's page (403).
    Every photo is checked before any is saved: one bad photo refuses the whole request (422); too many
    bytes or pixels, 413. The same photo twice in one request is indexed once: the repeat answers with
    status "duplicate" and `duplicate_of`. 201 when something was added, 200 when every photo was
    already indexed; 507 when the server's disk is full, 503 when its index folder is gone.
    """
    if len(files) > context.settings.max_files_per_add:
        raise ApiError(
            413, "too_large", f"at most {context.settings.max_files_per_add} photos per request, got {len(files)}"
        )
    added = catalog_files.add_uploads(context, files, category)
    if not any(item.status == "added" for item in added.items):
        response.status_code = 200
    return added


@router.delete("/items/{item_id}", response_model=RemoveOut, responses=errors(401, 403, 404, 422, 503, 507))
def remove_item(item_id: ItemId, context: Context) -> RemoveOut:
    """Remove an image from the index (and its file, when it was uploaded through this server).

    A write: needs what `POST /api/items` needs (writes allowed, the API key when set, not cross-site).
    """
    return RemoveOut(removed=catalog_files.remove(context, item_id))


@router.post("/items/{item_id}/category", response_model=CategoryChangeOut, responses=errors(401, 403, 404, 422, 503))
def change_category(item_id: ItemId, context: Context, category: ChangedCategory = None) -> CategoryChangeOut:
    """File an image under another category (form field `category`; empty: uncategorised). It keeps its
    vector (nothing is re-embedded) and gets a new id, answered as `id`.

    A write: needs what `POST /api/items` needs (writes allowed, the API key when set, not cross-site).
    """
    new_id, label = catalog_files.set_category(context, item_id, category)
    return CategoryChangeOut(old_id=item_id, id=new_id, category=label)


@router.get("/images/{item_id}", response_class=FileResponse, responses=errors(404, 422))
def image(item_id: ItemId, context: Context) -> FileResponse:
    """The catalogue image's original file."""
    path = _file_of(context, item_id)
    return FileResponse(path, headers=CACHE_IMMUTABLE)


@router.get("/thumbnails/{item_id}", response_class=FileResponse, responses=errors(404, 422))
def thumbnail(
    item_id: ItemId,
    context: Context,
    size: Annotated[int | None, Query(description="longest side in pixels (default: thumbnail_size)")] = None,
) -> FileResponse:
    """A JPEG thumbnail, made on first request and cached in the index folder."""
    sizes = context.settings.thumbnail_sizes
    size = context.settings.thumbnail_size if size is None else size
    if size not in sizes:
        raise ApiError(422, "invalid_request", f"thumbnail size must be one of {list(sizes)}, got {size}")
    source = _file_of(context, item_id)
    try:
        path = catalog_files.thumbnail(context, context.item_or_404(item_id), source, size)
    except ImageError as exc:
        raise not_found(f"catalogue image {item_id} cannot be read: {exc.reason}") from None
    return FileResponse(path, media_type="image/jpeg", headers=CACHE_IMMUTABLE)


@router.get("/silhouettes/{item_id}", response_class=Response, responses={200: PNG, **errors(404, 422)})
def silhouette(item_id: ItemId, context: Context, scale: Scale = 1) -> Response:
    """The catalogue image's stored silhouette: white object on black (needs localisation)."""
    context.item_or_404(item_id)
    packed = context.engine.silhouette(item_id)
    if packed is None:
        raise not_found(f"catalogue image {item_id} has no silhouette (the index was built without localisation)")
    return Response(png_bytes(silhouette_image(packed, scale)), media_type="image/png", headers=CACHE_IMMUTABLE)


def _file_of(context: ServerContext, item_id: int) -> Path:
    """The file of a catalogue image, from the index's metadata only."""
    path = Path(context.item_or_404(item_id).path)
    if path.suffix.lower() not in SERVED_EXTENSIONS or not path.is_file():
        raise not_found(f"the file of catalogue image {item_id} is no longer on disk")
    return path
