"""The JSON API's response shapes, for the OpenAPI document (`/openapi.json`, `/docs`).

They document; they do not filter. Handlers return the same dicts as `copytrace query --json`
(other tools read those field names), and these models are attached as `responses=` so FastAPI
neither validates nor reshapes a response: a field the engine adds later still goes out. Each
model allows extra fields for the same reason.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OPEN = ConfigDict(extra="allow")

_MATCH_EXAMPLE = {
    "reference_id": "astronaut", "score": 0.9731, "similarity": 0.8712, "global_score": 0.6124,
    "view": "full", "verified": True, "inliers": 212, "matches": 260,
    "homography": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    "query_box": [4, 10, 500, 480], "reference_box": [4, 10, 500, 480],
    "query_coverage": 0.91, "reference_coverage": 0.9,
}


class MatchOut(BaseModel):
    """One candidate original. `score` is the calibrated P(copy); 0.5 is the decision threshold.
    The keypoint fields (`inliers` ... `mirrored`) are there when `verified` is true."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [_MATCH_EXAMPLE]})

    reference_id: str = Field(description="the catalog's image id (thumbnail: /v1/images/{id}/thumb)")
    score: float = Field(description="calibrated probability that the query copies this image")
    similarity: float = Field(description="raw cosine similarity of the global descriptors")
    global_score: float = Field(description="background-normalized similarity, best view")
    view: str = Field(description="the query view that gave global_score (full, or a crop)")
    verified: bool | Literal["unavailable"] | None = Field(
        description="true: keypoint geometry found; false: none found; 'unavailable': the "
        "reference could not be read; null: not attempted (decided by the global score)")
    decided_by_global_score: Literal["accept", "reject", "verify"] | None = Field(
        None, description="when not verified: what the calibrated global score alone decided")
    verify_error: str | None = Field(None, description="why verification was unavailable")
    inliers: int | None = None
    matches: int | None = None
    homography: list[list[float]] | None = Field(
        None, description="3x3, query pixels -> reference pixels (original resolutions)")
    query_box: list[int] | None = Field(None, description="x0, y0, x1, y1 of the matched area, query pixels")
    reference_box: list[int] | None = Field(None, description="the same on the reference")
    query_coverage: float | None = None
    reference_coverage: float | None = None
    mirrored: bool | None = None


class QueryOut(BaseModel):
    """The answer of `POST /v1/query`: the JSON of `copytrace query --json`."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"query_id": "suspicious.jpg", "uri": "", "error": None, "matches": [_MATCH_EXAMPLE]}]})

    query_id: str
    uri: str
    error: str | None
    matches: list[MatchOut] = Field(description="best first")


class RegionOut(BaseModel):
    model_config = OPEN

    kind: str = Field(description="what the edit is (added, removed, text, ...) or outside")
    box: list[int] = Field(description="x0, y0, x1, y1 in query pixels")
    area: int
    score: float
    confidence: float
    original_box: list[int] | None = Field(None, description="the box mapped into the original")


class LocalizeOut(BaseModel):
    """The answer of `POST /v1/localize`: the localized edits of the query against one
    reference (the JSON of `copytrace localize --json`) plus where its overlay picture is."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "query_id": "suspicious.jpg", "reference_id": "astronaut", "edited": 0.93,
        "edited_fraction": 0.012, "added_fraction": 0.0, "size": {"width": 512, "height": 512},
        "regions": [{"kind": "added", "box": [40, 60, 120, 110], "area": 3100, "score": 0.93,
                     "confidence": 0.9, "original_box": [40, 60, 120, 110]}],
        "registration": {"method": "keypoints", "confidence": 0.97},
        "overlay": "/v1/overlays/3q2b5v7xGm0.png"}]})

    query_id: str
    reference_id: str
    edited: float = Field(description="0..1, the strongest edit region's score")
    edited_fraction: float
    added_fraction: float
    size: dict[str, int]
    regions: list[RegionOut] = Field(description="numbered 1.. in this order on the overlay")
    registration: dict
    overlay: str = Field(description="URL of the overlay PNG: original | copy | difference")


class ImageOut(BaseModel):
    model_config = OPEN

    image_id: str
    width: int
    height: int
    thumbnail: str = Field(description="URL of the JPEG thumbnail")


class HealthOut(BaseModel):
    model_config = OPEN

    status: Literal["ok"]
    images: int
    model: str
    queue: int


class IndexOut(BaseModel):
    """The index manifest: model, FAISS spec and tuning, counts, version."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "model": {"id": "lite0-gem-ft", "name": "efficientnet_lite0", "sha256": "…", "dims": 256,
                  "image_size": 224},
        "index": {"spec": "Flat", "nprobe": None, "shards": ["faiss/shard-00000.faiss"],
                  "shard_size": 1000000, "reason": "small catalog: exact search"},
        "counts": {"inputs": 12, "indexed": 12, "errors": 0}, "version": 1}]})

    model: dict
    index: dict
    counts: dict[str, int]
    version: int


class ErrorOut(BaseModel):
    detail: str


def documented(model: type[BaseModel], *errors: int) -> dict:
    """`responses=` for a route: the 200 shape plus the error statuses it answers."""
    out: dict = {200: {"model": model}}
    for status in errors:
        out[status] = {"model": ErrorOut}
    return out
