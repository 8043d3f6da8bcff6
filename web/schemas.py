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

    task: Literal["detect", "segment", "pose"] = Field(
        "detect", description="The model's task: a segment answer's boxes carry `polygon`, a pose answer's "
        "`keypoints`.",
    )
    boxes: list[Box]
    width: int
    height: int
    confidence: float = Field(description="The threshold the boxes were kept at.")
    classes: list[str] | None = Field(None, description="The class filter asked for; null: every class.")
    model: str = ""
    timings: TimingsModel = Field(default_factory=TimingsModel)
    class_confidence: dict[str, float] = Field(default_factory=dict, description="Per-class thresholds.")
    skeleton: list[list[int]] | None = Field(None, description="Pose: the keypoint pairs joined in the drawing.")


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
    task: str | None = Field(
        None, description="What it finds: `detect` (boxes), `segment` (boxes with masks: `polygon`) or `pose` (boxes "
        "with `keypoints`); null until a worker started.",
    )


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
    width: int = Field(description="The original's width: the boxes are in its pixels.")
    height: int
    photo_url: str = Field(description="The clean photo (send the same Authorization); it may be a down-scaled "
                           "copy of the original: scale the boxes by its width over `width`.")
    candidates: list[Box]
    names: dict[str, dict[str, str]]


class AnswerModel(BaseModel):
    """An answer in a chat, for its Mini App: every box kept, the view its buttons show now."""

    id: str
    language: str
    floor: float
    start: dict[str, Any] = Field(description="The parameters the answer was first drawn with.")
    view: dict[str, Any] = Field(description="The parameters its buttons show now.")
    private: bool = Field(description="Whether the answer is in a private chat (else a group's).")
    asker: bool = Field(description="Whether the signed-in person asked for it (in a group, its admins may "
                        "apply a view too: the bot decides).")
    photos: list[PhotoModel]


class ViewModel(BaseModel):
    """A view to apply to an answer in its chat, as its buttons would: the threshold, the classes shown."""

    confidence: float = Field(gt=0, le=1, description="The threshold, at least the answer's `floor`.")
    classes: list[str] | None = Field(None, description="Only these classes (the answer's own); null: every class.")
    class_confidence: dict[str, float] = Field(default_factory=dict, description="Per-class thresholds.")


class AppliedModel(BaseModel):
    status: Literal["applied", "unchanged", "sent"] = Field(
        description="applied: the answer in the chat shows it now; unchanged: it showed it already; sent (202): "
        "the bot has the request and applies it as soon as it can.",
    )
    view: dict[str, Any]
