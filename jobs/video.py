"""Clips on the queue: one job per span of a few frames, run one after the other, taking turns with photos.

A clip is one record like a photo's (``detbot:job:<id>``: routing, params, language, status, the clip's bytes
in ``detbot:image:<id>``), plus its plan (``video``: size, sampling, limits) and its progress (``done``: frames
finished). Its work is a chain of span jobs ``<id>.<n>`` (RQ job and record each, as a photo has): a span
decodes, detects, tracks, draws and encodes a few frames (:func:`detector.clip.run_span`), keeps its frames'
detections and its segment in ``detbot:video:<id>``, and in one script marks itself done and puts the next
span at the back of its chat's lane (:mod:`jobs.fair`) — so between two spans every other chat's photos
and clips go first, and a clip holds the queue no longer than one span at a time (about one photo's work).

The last span tracks the whole clip (its summary), joins the segments into the answer and completes the
clip's record with ``store.complete`` — one completion event, whatever was run twice. A worker killed in a
span is noticed by the reaper like one killed in a photo (:mod:`jobs.recovery`): the span runs again on
another worker from the spans already done. A span given up after ``DETBOT_MAX_ATTEMPTS`` completes its own
record with the error, and its event (routing: the clip's, ``span`` added) answers the clip.

Cancelling (the bot's button) sets ``cancel`` on the clip's record: the next span completes the clip with
:data:`CODE_CANCELLED` instead of working.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis
from redis.exceptions import WatchError
from rq.job import JobStatus
from rq.utils import now as utcnow

from detector.params import DetectParams
from detector.video import ClipPlan, VideoLimits
from jobs import fair, keys, store
from jobs.client import SUBMIT_RETRIES, DetectionClient, new_job_ids, photo_memory_left
from jobs.defaults import ONCE_TTL, RESULT_TTL, RQ_RESULT_TTL
from jobs.exceptions import AlreadyQueuedError, QueueFullError

# The span job function, by dotted path (:mod:`jobs.video_spans`: the producer never imports the detector).
VIDEO_SPAN_JOB = "jobs.video_spans.video_span_job"
SPAN_SEPARATOR = "-"
# The error code of a clip cancelled by the person who sent it.
CODE_CANCELLED = "cancelled"

# KEYS: the span's record, RQ's list of the queue; ARGV: the span's id, the next span's id ('' for none).
# The span completes once (its status guards it); it leaves its chat's in-flight set, the next span goes to
# the back of the chat's held list, and the chat's first held job (that span, unless photos of the chat wait
# before it) takes the freed place at the back of RQ's list. Without a lane the next span goes to RQ's list.
SPAN_DONE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'ok' or status == 'error' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'ok')
redis.call('EXPIRE', KEYS[1], ARGV[3])
""" + fair.LANE_OF_JOB + f"if {fair.HAS_LANE} then" + """
  if ARGV[2] ~= '' then
    redis.call('RPUSH', lane[2], ARGV[2])
    redis.call('SADD', lane[3], ARGV[2])
  end
""" + fair.lane_release("ARGV[1]") + """elseif ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
return 1
"""


def span_id(video_id: str, index: int) -> str:
    return f"{video_id}{SPAN_SEPARATOR}{index}"


def parse_span_id(job_id: str) -> tuple[str, int]:
    video_id, _, index = job_id.rpartition(SPAN_SEPARATOR)
    if not video_id or not index.isdigit():
        raise ValueError(f"{job_id!r} is not a span id")
    return video_id, int(index)


# -- the producer's side ----------------------------------------------------------------------------------

def submit(client: DetectionClient, data: bytes, clip: ClipPlan, limits: VideoLimits, params: DetectParams,
           routing: dict[str, Any], language: str = "", *, once: str | None = None) -> str:
    """Queue a clip: its record and first span in one transaction (as :meth:`DetectionClient.submit_many`
    queues a photo: the queue's and the chat's room, Redis's memory, the "once" marker); returns its id.
    Raises QueueFullError, AlreadyQueuedError or QueueUnavailableError like a photo's submit."""
    video_id = new_job_ids(1)[0]
    routing = {**routing, "video": True}
    lane = fair.lane_of([routing])
    with client_errors():
        if client.queued() + 1 > client.max_queued:
            raise QueueFullError(f"the queue is full ({client.max_queued} jobs waiting)")
        memory = photo_memory_left(client.redis.info("memory"))
        if memory is not None and len(data) > memory:
            raise QueueFullError(f"Redis is near its maxmemory: {max(memory, 0)} bytes left for photos")
        if lane is not None:
            fair.sweep(client.redis, client.queue.name, client.queue.key, lane, client.per_chat)
        for _ in range(SUBMIT_RETRIES):
            try:
                _submit_once(client, video_id, data, clip, limits, params, routing, language, lane, once)
                return video_id
            except WatchError:
                continue
    raise QueueFullError(f"the submit kept racing other changes {SUBMIT_RETRIES} times")


def client_errors() -> Any:
    """The client's translation of Redis errors into the queue's (QueueUnavailableError, QueueFullError)."""
    from jobs.client import _redis_errors

    return _redis_errors()


def _submit_once(client: DetectionClient, video_id: str, data: bytes, clip: ClipPlan, limits: VideoLimits,
                 params: DetectParams, routing: dict[str, Any], language: str, lane: int | None,
                 once: str | None) -> None:
    redis = client.redis
    with redis.pipeline(transaction=True) as pipe:
        watched = [*fair.watched(client.queue.name, lane)] if lane is not None else []
        if once is not None:
            watched.append(once)
        if watched:
            pipe.watch(*watched)
        if once is not None and pipe.exists(once):
            raise AlreadyQueuedError(f"{once} was queued before")
        room = 1
        if lane is not None:
            room = fair.free_slots(pipe, client.queue.name, lane, client.per_chat)
            fair.check_chat_room(pipe, client.queue.name, lane, 1, client.chat_limit)
        pipe.multi()
        store.queue_save_job(pipe, video_id, data, params.to_dict(), routing, language, client.events)
        pipe.hset(keys.job(video_id), mapping={
            "video": json.dumps(clip.to_dict()), "limits": json.dumps(_limits_dict(limits)),
            "spans": len(clip.spans()), "done": 0, "frames": len(clip.times),
        })
        first = span_id(video_id, 0)
        queue_span_record(pipe, client, first, routing, lane)
        job = rq_job(client, first)
        if lane is None or room > 0:
            job.save(pipeline=pipe)
            pipe.rpush(client.queue.key, first)
            if lane is not None:
                fair.queue_in_flight(pipe, client.queue.name, lane, first)
        else:
            job.save(pipeline=pipe)
            fair.queue_hold(pipe, client.queue.name, lane, first)
        pipe.sadd(client.queue.redis_queues_keys, client.queue.key)
        if once is not None:
            pipe.set(once, video_id, ex=ONCE_TTL)
        pipe.execute()


def _limits_dict(limits: VideoLimits) -> dict[str, Any]:
    return {"max_seconds": limits.max_seconds, "sample_fps": limits.sample_fps, "max_frames": limits.max_frames,
            "max_pixels": limits.max_pixels, "max_bytes": limits.max_bytes}


def queue_span_record(pipe: Any, client: DetectionClient, job_id: str, routing: dict[str, Any],
                       lane: int | None) -> None:
    """A span's record: what the reaper and the lanes need (status, attempts, where its error goes)."""
    video_id, index = parse_span_id(job_id)
    pipe.hset(keys.job(job_id), mapping={
        "status": store.STATUS_QUEUED, "attempts": 0, "events": client.events,
        "routing": json.dumps({**routing, "video_id": video_id, "span": index}),
    })
    if lane is not None:
        pipe.hset(keys.job(job_id), mapping=fair.job_fields(client.queue.name, client.queue.key, lane))
    pipe.expire(keys.job(job_id), RESULT_TTL)


def rq_job(client: DetectionClient, job_id: str) -> Any:
    """The span's RQ job, complete and "queued"; the caller puts its id into RQ's list or the chat's lane."""
    job = client.queue.create_job(VIDEO_SPAN_JOB, args=(job_id,), job_id=job_id, timeout=client.job_timeout,
                                  result_ttl=RQ_RESULT_TTL, failure_ttl=RESULT_TTL, status=JobStatus.QUEUED)
    job.origin = client.queue.name
    job.enqueued_at = utcnow()
    return job


def progress(redis: Redis, video_id: str) -> tuple[int, int, str] | None:
    """(frames done, frames in all, status) of a clip; None when its record is gone."""
    found: list[Any] = redis.hmget(keys.job(video_id), ["done", "frames", "status"])
    done, frames, status = found
    if frames is None:
        return None
    return int(done or 0), int(frames), status.decode() if status else ""


def cancel(redis: Redis, video_id: str) -> bool:
    """Ask a clip's next span to stop it; False when the clip has finished already (or is gone)."""
    record = keys.job(video_id)
    status = redis.hget(record, "status")
    if status != store.STATUS_QUEUED.encode():
        return False
    redis.hset(record, "cancel", 1)
    return True
