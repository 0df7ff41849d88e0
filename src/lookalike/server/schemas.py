"""The JSON the API answers with (pydantic models, shown in the OpenAPI docs at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    type: str = Field(examples=["invalid_image"])
    message: str = Field(examples=["upload 'notes.txt': not an image Pillow can read (expected JPEG, PNG, ...)"])


class ErrorOut(BaseModel):
    """Every error: a type to branch on and a message for people."""

    error: ErrorDetail


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    images: int
    version: str


class WritesInfo(BaseModel):
    """Whether this server lets clients add and remove images, and whether that needs the API key."""

    enabled: bool
    key_required: bool
    cors_origins: list[str]  # the other sites whose pages may call the API from a browser


class ServerInfo(BaseModel):
    max_upload_bytes: int
    max_files_per_add: int
    max_k: int
    default_k: int
    thumbnail_size: int
    localization: bool  # whether searches cut the object out (cut-outs, masks, silhouettes)
    rerankers: list[str]  # the engine's re-ranking chain, in order
    rerank_switchable: bool  # whether a search can turn the chain off (`rerank=false`)
    gating_switchable: bool  # whether a search can turn classifier gating off (`gating=false`)
    queries_cached: int
    query_cache_size: int
    max_pixels_per_request: int
    writes: WritesInfo


class StatusOut(BaseModel):
    """The index (`Engine.info()`), the classifier when the index has one, and the server's limits."""

    index: dict[str, Any]
    classifier: dict[str, Any] | None = None
    server: ServerInfo


class CategoryOut(BaseModel):
    name: str | None
    count: int


class ItemOut(BaseModel):
    """One catalogue image; files are reached through the URLs only (by id, never by path)."""

    id: int
    name: str
    category: str | None
    added_at: float
    image_url: str
    thumbnail_url: str
    silhouette_url: str | None = None


class ItemPage(BaseModel):
    total: int
    limit: int
    offset: int
    category: str | None
    items: list[ItemOut]


class LocalizationOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    found: bool
    reason: str | None = None
    box: list[int] = Field(
        description="left, top, right, bottom in the decoded photo's pixels (over 2048 px a side: reduced scale)"
    )
    object_fraction: float


class CategoryProbability(BaseModel):
    model_config = ConfigDict(extra="allow")

    category: str | None = None
    probability: float | None = None


class ClassificationOut(BaseModel):
    """The classifier's prediction and whether it narrowed the search ("gated") to some categories."""

    model_config = ConfigDict(extra="allow")

    category: str | None = None
    probability: float | None = None
    margin: float | None = Field(None, description="lead of the first category's probability over the second's")
    top: list[CategoryProbability] = Field(default_factory=list)
    gated: bool | None = None
    reason: str | None = None


class HitOut(BaseModel):
    rank: int
    id: int
    name: str
    category: str | None
    score: float
    scores: dict[str, float] = Field(description="the score's parts: vector similarity, silhouette IoU, ...")
    image_url: str
    thumbnail_url: str
    silhouette_url: str | None = None
    overlay_url: str | None = Field(None, description="the query's silhouette over this image's (PNG)")


class SearchOut(BaseModel):
    query_id: str = Field(description="names this query's cut-out, mask and silhouette for a while")
    query: str
    k: int
    category: str | None
    rerank: bool
    gating: bool | None
    hits: list[HitOut]
    searched_categories: list[str] | None
    timings_ms: dict[str, float]
    localization: LocalizationOut | None = None
    classification: ClassificationOut | None = None
    cutout_url: str | None = None
    mask_url: str | None = None
    silhouette_url: str | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="anything else the engine reported")


class AddedItem(BaseModel):
    """One uploaded photo and the catalogue image it is now; "duplicate": the same photo as an earlier
    upload of the same request (`duplicate_of`), indexed once under that one's id."""

    id: int
    name: str = Field(description="the saved file's name")
    upload: str | None = Field(None, description="the uploaded file's name, as the client sent it")
    category: str | None
    status: Literal["added", "updated", "unchanged", "duplicate"]
    duplicate_of: str | None = Field(None, description="with status duplicate: the earlier upload's name")


class FailedUpload(BaseModel):
    name: str
    reason: str


class AddOut(BaseModel):
    items: list[AddedItem]
    failed: list[FailedUpload] = Field(default_factory=list)


class RemoveOut(BaseModel):
    removed: list[int]


class ArchiveOut(BaseModel):
    """The photo archive: its photos, whether they are the index's model's, whether the re-ranker is on."""

    photos: int
    current: bool
    reranker: bool
    added: int = 0  # photos this request added (a photo already in the archive is embedded again, not counted)


class ViewsOut(BaseModel):
    """The catalogue views: views per image, images with and without them, whether the index's model made
    them and the re-ranker is on (all zero and false when the index has none); whether views are being made
    now (catalogue images `done` of `total`) and why the last making failed, if it did."""

    images: int
    missing: int
    count: int
    current: bool
    reranker: bool
    making: bool = False
    done: int = 0
    total: int = 0
    error: str | None = None


class CategoryChangeOut(BaseModel):
    """An image filed under another category: it keeps its vector and gets a new id."""

    old_id: int
    id: int
    category: str | None


class HealthImageOut(BaseModel):
    id: int
    name: str
    category: str | None
    image_url: str
    thumbnail_url: str


class DuplicateMemberOut(HealthImageOut):
    width: int
    height: int
    keeper: bool
    exact_copy_of: int | None = None


class DuplicateGroupOut(BaseModel):
    kind: Literal["near", "exact"]
    keeper: int
    members: list[DuplicateMemberOut]
    pairs: list[tuple[int, int, float]] = Field(description="(id, id, cosine similarity) at or above the threshold")


class DuplicatesOut(BaseModel):
    threshold: float
    keep: str
    expected_precision: float | None = Field(description="measured on the benchmark's pairs at this threshold")
    images: int
    seconds: float
    groups: list[DuplicateGroupOut]
    notes: list[str]


class SuspectOut(HealthImageOut):
    label: Literal["category", "item"]
    current: str | None
    voted: str | None
    share: float
    own_share: float
    neighbours: list[int]


class OutlierOut(HealthImageOut):
    centroid_similarity: float
    density: float
    score: float


class AuditOut(BaseModel):
    images: int
    labels: list[str]
    seconds: float
    mislabelled: list[SuspectOut]
    outliers: list[OutlierOut]
