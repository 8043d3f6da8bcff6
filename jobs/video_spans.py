"""The worker's side of clips (:mod:`jobs.video`): one span job decodes, detects, tracks, draws and encodes a
few frames, keeps them, and queues the next span; the last one answers the clip."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any

from redis import Redis
from redis.exceptions import WatchError
from rq.timeouts import JobTimeoutException

from detector.clip import finish, reader_at, run_span, tracker_at
from detector.errors import DetectorError
from detector.params import DetectParams
from detector.render import boxes_to_rows, rows_to_boxes
from detector.result import Box
from detector.tracking import ClipTracker
from detector.video import ClipPlan, ClipReader, VideoLimits
from jobs import fair, keys, store
from jobs.client import DetectionClient
from jobs.defaults import DELIVERED_TTL, QUEUE_NAME, RESULT_TTL
from jobs.tasks import OUTCOME_DUPLICATE, OUTCOME_ERROR, OUTCOME_OK, Outcome, complete_in_room, get_context
from jobs.video import CODE_CANCELLED, SPAN_DONE, parse_span_id, queue_span_record, rq_job, span_id

log = logging.getLogger("detbot.worker")

# Clips whose tracker and decoder a worker keeps between their spans (a span of a clip not kept replays the
# detections of the spans before it — the same ids, a few ms per frame — and seeks its decoder; a kept
# decoder holds the clip's bytes: at most 20 MB each).
KEPT_CLIPS = 4
# RQ's list of a queue is this prefix and the queue's name (``Queue.key``).
RQ_QUEUE_PREFIX = "rq:queue:"

# A span's record once it completed (``SPAN_DONE``).
SPAN_OVER = (store.STATUS_OK.encode(), store.STATUS_ERROR.encode())
# The clip's frames done only ever grow: a span that runs again (its worker killed before it completed) does
# not move the progress message back.
RAISE_DONE = """
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'done') or '0') then
  redis.call('HSET', KEYS[1], 'done', ARGV[1])
end
"""

_trackers: OrderedDict[str, ClipTracker] = OrderedDict()
_readers: OrderedDict[str, ClipReader] = OrderedDict()


def _kept_tracker(video_id: str, tracker: ClipTracker, reader: ClipReader) -> None:
    _trackers[video_id] = tracker
    _trackers.move_to_end(video_id)
    _readers[video_id] = reader
    _readers.move_to_end(video_id)
    while len(_trackers) > KEPT_CLIPS:
        _trackers.popitem(last=False)
    while len(_readers) > KEPT_CLIPS:
        _readers.popitem(last=False)[1].close()


def _forget(video_id: str) -> None:
    _trackers.pop(video_id, None)
    reader = _readers.pop(video_id, None)
    if reader is not None:
        reader.close()


def _frames_of(raw: Any) -> list[list[Box]]:
    return [list(rows_to_boxes(rows)) for rows in json.loads(raw)] if raw else []


def run_span_job(job_id: str) -> Outcome:
    """One span of a clip: worked, kept, and the next one queued (or the clip answered)."""
    ctx = get_context()
    redis = ctx.redis
    video_id, index = parse_span_id(job_id)
    record = keys.job(video_id)
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(record, ["status", "params", "language", "video", "limits", "spans", "cancel"])
    pipe.hget(keys.job(job_id), "status")
    fields, span_status = pipe.execute()
    status, raw_params, language, raw_plan, raw_limits, spans, cancelled = fields
    if span_status in SPAN_OVER:
        # A second copy of a span that completed (a worker thought dead, or one paused while Redis handed it
        # the span, that came back): its clip has moved on; running it again would move the progress back.
        return Outcome(OUTCOME_DUPLICATE)
    if status is None:
        _span_done(redis, job_id, None)
        return Outcome(OUTCOME_ERROR, store.CODE_IMAGE_EXPIRED)
    if status.decode() != store.STATUS_QUEUED:
        _span_done(redis, job_id, None)  # answered already (cancelled, failed, or this span ran before)
        return Outcome(OUTCOME_DUPLICATE)
    if cancelled:
        _complete(redis, video_id, ok=False, code=CODE_CANCELLED, message="cancelled by the person who sent it")
        _span_done(redis, job_id, None)
        return Outcome(OUTCOME_ERROR, CODE_CANCELLED)
    data = store.load_image(redis, video_id)
    if data is None:
        _complete(redis, video_id, ok=False, code=store.CODE_IMAGE_EXPIRED, message="clip expired")
        _span_done(redis, job_id, None)
        return Outcome(OUTCOME_ERROR, store.CODE_IMAGE_EXPIRED)
    clip = ClipPlan.from_dict(json.loads(raw_plan))
    limits = VideoLimits(**json.loads(raw_limits))
    params = DetectParams.from_dict(json.loads(raw_params))
    spans_list = clip.spans()
    first, count = spans_list[index]
    if ctx.test_delay_ms:
        time.sleep(ctx.test_delay_ms / 1000)
    parts = keys.video_parts(video_id)
    earlier_raw = redis.hmget(parts, [f"det:{i}" for i in range(index)]) if index else []
    try:
        earlier = [frame for raw in earlier_raw for frame in _frames_of(raw)]
        tracker = tracker_at(clip, params, first, earlier, _trackers.get(video_id))
        reader = reader_at(data, clip, limits, first, _readers.pop(video_id, None))
        span = run_span(ctx.detector, data, clip, limits, first, count, params, tracker,
                        ctx.labels(language.decode() if language else ""), waiting=0, reader=reader)
    except DetectorError as exc:
        _complete(redis, video_id, ok=False, code=exc.code, message=str(exc), details=exc.details)
        _span_done(redis, job_id, None)
        return Outcome(OUTCOME_ERROR, exc.code)
    _kept_tracker(video_id, tracker, reader)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(parts, mapping={f"det:{index}": json.dumps([boxes_to_rows(f) for f in span.detections]),
                              f"seg:{index}": span.segment})
    pipe.expire(parts, RESULT_TTL)
    pipe.eval(RAISE_DONE, 1, record, first + count)
    pipe.execute()
    if index + 1 < int(spans or len(spans_list)):
        _queue_next(redis, job_id, span_id(video_id, index + 1))
        return Outcome(OUTCOME_OK, boxes=sum(len(f) for f in span.detections))
    return _answer(redis, video_id, job_id, clip, tracker, len(spans_list))


def _answer(redis: Redis, video_id: str, job_id: str, clip: ClipPlan, tracker: ClipTracker, spans: int) -> Outcome:
    """The last span: the whole clip's summary and its answer, completing the clip's record once."""
    parts = keys.video_parts(video_id)
    segments: list[Any] = redis.hmget(parts, [f"seg:{i}" for i in range(spans)])
    if any(s is None for s in segments):
        _complete(redis, video_id, ok=False, code=store.CODE_INTERNAL, message="a span's segment is missing")
        _span_done(redis, job_id, None)
        return Outcome(OUTCOME_ERROR, store.CODE_INTERNAL)
    try:
        summary, answer = finish(clip, tracker, [bytes(s) for s in segments if s is not None])
    except DetectorError as exc:
        _complete(redis, video_id, ok=False, code=exc.code, message=str(exc), details=exc.details)
        _span_done(redis, job_id, None)
        return Outcome(OUTCOME_ERROR, exc.code)
    detection = {**summary.to_dict(), "video": clip.to_dict(), "confidence": json.loads(
        redis.hget(keys.job(video_id), "params") or b"{}")}
    first = _complete(redis, video_id, ok=True, detection=detection, annotated=answer)
    redis.delete(parts)
    _span_done(redis, job_id, None)
    _forget(video_id)
    if not first:
        return Outcome(OUTCOME_DUPLICATE)
    return Outcome(OUTCOME_OK, boxes=len(summary.tracks), classes=tuple(t.class_name for t in summary.tracks))


def _complete(redis: Redis, video_id: str, **fields: Any) -> bool:
    return complete_in_room(redis, video_id, **fields)


def _client(redis: Redis, job_id: str) -> DetectionClient:
    """The queue the span came from, and the stream its clip's completion goes to (the span's record)."""
    ctx = get_context()
    queue_name = ctx.queue_key.removeprefix(RQ_QUEUE_PREFIX) if ctx.queue_key else QUEUE_NAME
    client = DetectionClient(redis, queue_name=queue_name)
    events: Any = redis.hget(keys.job(job_id), "events")
    client.events = events.decode() if events else client.events
    return client


def _queue_next(redis: Redis, job_id: str, next_id: str) -> None:
    """The next span's record and RQ job, then this span done and the next one into its chat's lane. Killed
    in between, this span runs again and writes the same next span again: nothing is queued twice."""
    client = _client(redis, job_id)
    in_lane = redis.hget(keys.job(job_id), fair.FIELD_IN_FLIGHT) is not None
    routing = json.loads(redis.hget(keys.job(job_id), "routing") or b"{}")
    routing = {k: v for k, v in routing.items() if k not in ("video_id", "span")}
    with redis.pipeline(transaction=True) as pipe:
        try:
            # Watched: a copy of this span that completed meanwhile queued the next one, which may have run
            # already; its record is not rewritten as waiting.
            pipe.watch(keys.job(job_id))
            if pipe.hget(keys.job(job_id), "status") in SPAN_OVER:
                return
            pipe.multi()
            queue_span_record(pipe, client, next_id, routing, fair.lane_of([routing]) if in_lane else None)
            rq_job(client, next_id).save(pipeline=pipe)
            pipe.execute()
        except WatchError:
            return
    _span_done(redis, job_id, next_id, client)


def _span_done(redis: Redis, job_id: str, next_id: str | None, client: DetectionClient | None = None) -> None:
    """The span completes (once): its chat's lane moves on, with the next span (if any) at its back."""
    queue_key = (client or _client(redis, job_id)).queue.key
    redis.eval(SPAN_DONE, 2, keys.job(job_id), queue_key, job_id, next_id or "", DELIVERED_TTL)


def video_span_job(job_id: str) -> str:
    """RQ entry point of a clip's span. Returns the outcome's status."""
    started = time.perf_counter()
    ctx = get_context()
    try:
        outcome = run_span_job(job_id)
    except JobTimeoutException:
        outcome = _fail(job_id, store.CODE_TIMEOUT, "a span ran past the job timeout")
    except Exception as exc:  # anything unexpected still answers the person, and never with a traceback
        log.error("span %s internal error: %s: %s", job_id, type(exc).__name__, exc, exc_info=exc)
        outcome = _fail(job_id, store.CODE_INTERNAL, f"{type(exc).__name__} in video_span_job")
    log.info("span %s %s %s %.0f ms", job_id, outcome.status, outcome.code or f"{outcome.boxes} boxes",
             (time.perf_counter() - started) * 1e3)
    if ctx.metrics is not None:
        ctx.metrics.job_done(outcome, time.perf_counter() - started)
    return outcome.status


def _fail(job_id: str, code: str, message: str) -> Outcome:
    ctx = get_context()
    video_id, _ = parse_span_id(job_id)
    _complete(ctx.redis, video_id, ok=False, code=code, message=message)
    _span_done(ctx.redis, job_id, None)
    return Outcome(OUTCOME_ERROR, code)
