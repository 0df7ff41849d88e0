"""Catalogue health for the web page's "Catalogue health" tab: near-duplicate groups and the audit
(likely mislabelled images, outliers). Reads only; fixing goes through the catalogue's write routes.
`/api/health` is the liveness probe (routes/system.py), hence `/api/catalogue-health`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query

from lookalike.errors import SettingsError, UnknownNameError
from lookalike.health import DEFAULT_THRESHOLD, AuditSettings, DuplicateSettings, audit, find_duplicates
from lookalike.server.errors import ApiError
from lookalike.server.respond import item_urls
from lookalike.server.routes.common import Context, errors
from lookalike.server.schemas import AuditOut, DuplicateGroupOut, DuplicatesOut, OutlierOut, SuspectOut

router = APIRouter(prefix="/api/catalogue-health", tags=["catalogue health"])


@router.get("/duplicates", response_model=DuplicatesOut, responses=errors(422))
def duplicates(
    context: Context,
    threshold: Annotated[float, Query(ge=-1, le=1, description="cosine similarity (default: calibrated)")] = (
        DEFAULT_THRESHOLD
    ),
    keep: Annotated[str, Query(description="keeper rule: largest, oldest or first-path")] = "largest",
    k: Annotated[int, Query(ge=1, le=50, description="neighbours looked at per image")] = 8,
) -> DuplicatesOut:
    """Groups of near-duplicates and exact copies, each with a suggested image to keep."""
    report = find_duplicates(context.engine, _checked(DuplicateSettings, threshold=threshold, keep=keep, k=k))
    groups = [
        DuplicateGroupOut(
            kind=group.kind,
            keeper=group.keeper,
            members=[
                {
                    **_image(m.id, m.path, m.category),
                    "width": m.width,
                    "height": m.height,
                    "keeper": m.keeper,
                    "exact_copy_of": m.exact_copy_of,
                }
                for m in group.members
            ],
            pairs=group.pairs,
        )
        for group in report.groups
    ]
    return DuplicatesOut(
        threshold=report.settings.threshold,
        keep=report.settings.keep,
        expected_precision=report.expected_precision,
        images=report.images,
        seconds=report.seconds,
        groups=groups,
        notes=report.notes,
    )


@router.get("/audit", response_model=AuditOut, responses=errors(422))
def audit_catalogue(
    context: Context,
    k: Annotated[int, Query(ge=1, le=50, description="neighbours that vote")] = 10,
    min_share: Annotated[float, Query(gt=0, le=1, description="vote share for another label")] = 0.5,
    outliers: Annotated[float, Query(ge=0, le=1, description="fraction of images listed as outliers")] = 0.02,
) -> AuditOut:
    """Images whose neighbours vote for another category or product, and outliers."""
    report = audit(context.engine, _checked(AuditSettings, k=k, min_share=min_share, outlier_fraction=outliers))
    suspects = [
        SuspectOut(**_image(s.id, s.path, s.current if s.label == "category" else _category(context, s.id)),
                   label=s.label, current=s.current, voted=s.voted, share=s.share, own_share=s.own_share,
                   neighbours=s.neighbours)
        for s in report.mislabelled
    ]  # fmt: skip
    found = [
        OutlierOut(**_image(o.id, o.path, o.category), centroid_similarity=o.centroid_similarity,
                   density=o.density, score=o.score)
        for o in report.outliers
    ]  # fmt: skip
    return AuditOut(
        images=report.images, labels=report.labels, seconds=report.seconds, mislabelled=suspects, outliers=found
    )


def _checked(kind: type, **values: Any) -> Any:
    try:
        return kind(**values)
    except (SettingsError, UnknownNameError) as exc:  # an unknown keeper rule: the message lists the valid ones
        raise ApiError(422, "invalid_request", str(exc.args[0])) from None


def _image(item_id: int, path: str, category: str | None) -> dict[str, Any]:
    urls = item_urls(item_id, False)
    return {"id": item_id, "name": Path(path).name, "category": category,
            "image_url": urls["image_url"], "thumbnail_url": urls["thumbnail_url"]}  # fmt: skip


def _category(context: Any, item_id: int) -> str | None:
    item = context.engine.item(item_id)
    return item.category if item else None
