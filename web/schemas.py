"""The API's documents as pydantic models: what ``/api/v1/openapi.json`` shows and what the routes return.

The detection object is the ``detbot detect --json`` schema (:meth:`detector.result.Detection.to_dict`),
so a client reads the CLI's output and the API's result with the same code; a box is the detector's own
:class:`~detector.result.Box` (pydantic reads a dataclass as it is).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from detector.result import Box


class TimingsModel(BaseModel):
    decode_ms: float = 0.0
    inference_ms: float = 0.0
    annotate_ms: float = 0.0
    threads: int = 0
    total_ms: float = 0.0


class DetectionModel(BaseModel):
    """The ``detbot detect --json`` object: the boxes at the asked threshold, best first."""

    boxes: list[Box]
    width: int
    height: int
    confidence: float = Field(description="The threshold the boxes were kept at.")
    classes: list[str] | None = Field(None, description="The class filter asked for; null: every class.")
    model: str = ""
    timings: TimingsModel = Field(default_factory=TimingsModel)
    class_confidence: dict[str, float] = Field(default_factory=dict, description="Per-class thresholds.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, for programs: too_big, not_an_image, rate_limited, busy, ...")
    message: str = Field(description="For people, in the request's language (?lang= or Accept-Language).")


class ErrorModel(BaseModel):
    error: ErrorBody


class Accepted(BaseModel):
    id: str = Field(description="The job's id: 32 hex digits.")
    status: Literal["queued"] = "queued"
    status_url: str


class JobModel(BaseModel):
    """A job's state; the fields after ``status`` appear as it applies."""

    id: str
    status: Literal["queued", "running", "done", "failed"]
    position: int | None = Field(None, description="While queued: 1 is next.")
    result: DetectionModel | None = None
    candidates: list[Box] | None = Field(
        None, description="When done: every box kept down to `floor`, best first, to re-threshold without a request.",
    )
    floor: float | None = Field(None, description="The lowest confidence kept in `candidates`.")
    names: dict[str, dict[str, str]] | None = Field(
        None, description="When done: each class's name as people read it, per language (en, ru).",
    )
    image_url: str | None = Field(None, description="When done: the annotated JPEG (send the same X-API-Key).")
    expires_in: int | None = Field(None, description="When done: seconds the result is still kept.")
    error: ErrorBody | None = Field(None, description="When failed: why, in the request's language.")


class ModelInfo(BaseModel):
    name: str = Field(description="What the `model` field of /api/v1/detect takes.")
    classes: list[str] | None = Field(None, description="The model's classes; null until a worker started.")


class InfoModel(BaseModel):
    keys_required: bool
    max_bytes: int
    max_pixels: int
    default_confidence: float
    result_ttl: int = Field(description="Seconds a result is kept after the job finished.")
    languages: list[str]
    models: list[ModelInfo]


class PhotoModel(BaseModel):
    index: int = Field(description="Place in an album (1-based); 0 for a single photo.")
    width: int
    height: int
    candidates: list[Box]
    names: dict[str, dict[str, str]]


class AnswerModel(BaseModel):
    """An answer in a chat, for its Mini App: every box kept, the view its buttons show now."""

    id: str
    language: str
    floor: float
    start: dict[str, Any] = Field(description="The parameters the answer was first drawn with.")
    view: dict[str, Any] = Field(description="The parameters its buttons show now.")
    photos: list[PhotoModel]
