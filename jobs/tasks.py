"""The job function the queue runs: ``jobs.tasks.detect_job(job_id)``.

It needs a :class:`WorkerContext` (the Redis connection and the loaded Detector) that ``detbot worker`` sets
once, before it takes any job: the model is never loaded per job. Every path ends in exactly one call of
``store.complete`` (the script makes a second call of a job run twice a no-op).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import OutOfMemoryError, ResponseError
from rq.timeouts import JobTimeoutException

from detector.errors import DetectorError
from detector.names import ClassNames
from detector.params import DetectParams
from detector.render import boxes_to_rows
from detector.result import Box
from jobs import keys, store
from jobs.defaults import DETECTION_FLOOR
from jobs.render import (
    CLEAN_MAX_BYTES,
    CLEAN_MAX_SIDE,
    CLEAN_QUALITIES,
    KIND_CLEAN,
    KIND_CROPS,
    KIND_CUTOUTS,
    KIND_STICKER,
)

if TYPE_CHECKING:
    from jobs.metrics import WorkerMetrics

log = logging.getLogger("detbot.worker")

# A result Redis has no room for (past maxmemory) waits this long for deliveries to free some: the bot
# deletes each delivered result, so room comes back within seconds unless the bot is down.
COMPLETE_OOM_WAIT = 60.0
COMPLETE_OOM_POLL = 1.0

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
# A job run a second time (its first worker died after completing it): no event, nothing recorded.
OUTCOME_DUPLICATE = "duplicate"


class ContextMissingError(RuntimeError):
    """The job ran in a process that is not ``detbot worker`` (e.g. a plain ``rq worker``)."""


@dataclass
class WorkerContext:
    """What one worker process shares with its jobs: set once, read by every job (arq-style)."""

    redis: Redis
    detector: Any  # detector.model.Detector; typed loosely so importing this module never imports torch
    metrics: WorkerMetrics | None = None
    test_delay_ms: int = 0
    # The RQ list of the worker's queue: a photo with others waiting behind it keeps to the worker's own
    # core when other workers share the machine (they will want theirs for the backlog); a lone photo, or
    # the backlog of the machine's only worker, spreads over idle cores.
    queue_key: str | None = None
    # Class names in people's languages (DETBOT_CLASS_NAMES and the built-in COCO table), for the labels.
    class_names: ClassNames = field(default_factory=ClassNames)
    # Boxes down to this confidence are kept in every result (DETBOT_DETECTION_FLOOR): buttons re-draw them.
    floor: float = DETECTION_FLOOR
    _labels: dict[str, dict[int, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.metrics is not None:  # the model's own count: a re-drawing that ran it would show
            self.metrics.watch_model_runs(lambda: self.detector.model_runs)

    def labels(self, language: str) -> dict[int, str] | None:
        """The name drawn for each of the model's classes in ``language`` (built once per language);
        None for no language: the model's own names."""
        if not language:
            return None
        if language not in self._labels:
            self._labels[language] = self.class_names.labels(self.detector.names, language)
        return self._labels[language]


_context: WorkerContext | None = None


def set_context(context: WorkerContext | None) -> None:
    global _context
    _context = context


def get_context() -> WorkerContext:
    if _context is None:
        raise ContextMissingError("detect_job runs only inside `detbot worker` (the model is loaded there once)")
    return _context


@dataclass(frozen=True)
class Outcome:
    """What one run of a job did, for the log line and the metrics."""

    status: str
    code: str = ""
    boxes: int = 0
    classes: tuple[str, ...] = ()
    inference_ms: float = 0.0
    threads: int = 0


def _finish(redis: Redis, job_id: str, outcome: Outcome, **fields: Any) -> Outcome:
    first = complete_in_room(redis, job_id, ok=outcome.status == OUTCOME_OK, code=outcome.code, **fields)
    return outcome if first else Outcome(OUTCOME_DUPLICATE, outcome.code)


def complete_in_room(redis: Redis, job_id: str, **fields: Any) -> bool:
    """``store.complete``, also when Redis is past its maxmemory (noeviction refuses the write): the job's
    photo, no longer needed once detected, is deleted first to make room, then the write is tried again
    while deliveries free memory, for up to COMPLETE_OOM_WAIT. A result is never dropped for want of room
    while there is any chance of room."""
    deadline = time.monotonic() + COMPLETE_OOM_WAIT
    while True:
        try:
            return store.complete(redis, job_id, **fields)
        except ResponseError as exc:
            if not _out_of_memory(exc):
                raise
            freed = redis.delete(keys.image(job_id))  # DEL is allowed past maxmemory: it frees
            if time.monotonic() >= deadline:
                raise
            log.warning("job %s: Redis is full, its result waits for room%s", job_id,
                        " (photo deleted)" if freed else "")
            if not freed:
                time.sleep(COMPLETE_OOM_POLL)


def _out_of_memory(exc: ResponseError) -> bool:
    """Redis past maxmemory: a plain command raises OutOfMemoryError, a script a ResponseError saying so."""
    return isinstance(exc, OutOfMemoryError) or "OOM command not allowed" in str(exc)


def run_detection(ctx: WorkerContext, job_id: str) -> Outcome:
    """Detect one stored image and record the outcome; raises only what the worker must see (timeouts)."""
    image, params, waiting, language = store.load_job(ctx.redis, job_id, ctx.queue_key)
    if image is None:
        return _finish(
            ctx.redis, job_id, Outcome(OUTCOME_ERROR, store.CODE_IMAGE_EXPIRED),
            message="image expired before a worker took the job",
        )
    if ctx.test_delay_ms:
        time.sleep(ctx.test_delay_ms / 1000)
    try:
        # The parameters crossed Redis: DetectParams checks them like any other input.
        asked = DetectParams.from_dict(params)
        det, jpeg, candidates = ctx.detector.detect_adjustable(image, asked, ctx.floor, waiting=waiting,
                                                               labels=ctx.labels(language))
    except DetectorError as exc:
        return _finish(ctx.redis, job_id, Outcome(OUTCOME_ERROR, exc.code), message=str(exc), details=exc.details)
    outcome = Outcome(
        OUTCOME_OK, boxes=len(det.boxes), classes=tuple(b.class_name for b in det.boxes),
        inference_ms=det.timings.inference_ms, threads=det.timings.threads,
    )
    # Every box down to the floor rides with the result: the answer's buttons re-draw from them.
    detection = {**det.to_dict(), "candidates": boxes_to_rows(candidates),
                 "floor": min(ctx.floor, asked.min_confidence)}
    return _finish(ctx.redis, job_id, outcome, detection=detection, annotated=jpeg)


def render(ctx: WorkerContext, kind: str, image: bytes, boxes: tuple[Box, ...], language: str,
           index: int | None = None) -> list[bytes]:
    """A render request (:mod:`jobs.render`): the clean photo decoded as a first answer decodes it, then the
    kept objects drawn with the same renderer (labels in ``language``; masks and keypoints as the rows carry
    them), or cut out (boxes, or along their masks: ``cutouts``, a ``sticker`` of the box at ``index``, else of
    the largest), or the clean photo itself down-scaled (``clean``). Never the model."""
    from detector.cutout import cutouts, largest_first, sticker
    from detector.draw import crop_jpegs, draw_boxes, encode_jpeg
    from detector.image import decode

    array = decode(image, ctx.detector.max_pixels)
    if kind == KIND_CROPS:
        return crop_jpegs(array, boxes)
    if kind == KIND_CLEAN:
        return [clean_copy(array, encode_jpeg)]
    if kind == KIND_CUTOUTS:
        return cutouts(array, boxes)
    if kind == KIND_STICKER:
        if not boxes:
            raise ValueError("a sticker needs a box")
        if index is not None and not 0 <= index < len(boxes):
            raise ValueError(f"no box {index} among {len(boxes)}")
        return [sticker(array, boxes[index] if index is not None else largest_first(boxes, 1)[0])]
    return [encode_jpeg(draw_boxes(array, boxes, ctx.labels(language), skeleton=ctx.detector.skeleton))]


def clean_copy(array: Any, encode: Callable[..., bytes]) -> bytes:
    """The clean image at most CLEAN_MAX_SIDE long, at the best quality of CLEAN_QUALITIES that fits
    CLEAN_MAX_BYTES (the last one otherwise: a noisy 2560 px image at quality 60 is still well under it)."""
    jpeg = b""
    for quality in CLEAN_QUALITIES:
        jpeg = encode(array, CLEAN_MAX_SIDE, quality)
        if len(jpeg) <= CLEAN_MAX_BYTES:
            break
    return bytes(jpeg)


def fail_job(redis: Redis, job_id: str, code: str, message: str) -> Outcome:
    """An error completion for a job that could not run to its end (timeout, internal error).

    ``message`` is a note for operators (``redis-cli hget``): for these codes the bot answers in its own
    words (``bot.replies``, translated there), so no sentence for people is written here.
    """
    return _finish(redis, job_id, Outcome(OUTCOME_ERROR, code), message=message)


def _log(job_id: str, outcome: Outcome, started: float) -> None:
    ms = (time.perf_counter() - started) * 1e3
    detail = f"{outcome.boxes} boxes" if outcome.status == OUTCOME_OK else outcome.code
    log.info("job %s %s %s %.0f ms", job_id, outcome.status, detail, ms)


def detect_job(job_id: str) -> str:
    """RQ entry point. Returns the outcome's status (the result RQ keeps is small and JSON-able)."""
    started = time.perf_counter()
    ctx = get_context()
    try:
        outcome = run_detection(ctx, job_id)
    except JobTimeoutException:
        outcome = fail_job(ctx.redis, job_id, store.CODE_TIMEOUT, "detection ran past the job timeout")
    except Exception as exc:  # anything unexpected still answers the person, and never with a traceback
        log.error("job %s internal error: %s: %s", job_id, type(exc).__name__, exc)
        outcome = fail_job(ctx.redis, job_id, store.CODE_INTERNAL, f"{type(exc).__name__} in detect_job")
    _log(job_id, outcome, started)
    if ctx.metrics is not None:
        ctx.metrics.job_done(outcome, time.perf_counter() - started)
    return outcome.status
