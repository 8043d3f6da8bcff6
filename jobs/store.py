"""The Redis layout shared by the producer (bot side) and the workers.

Per job ``{id}`` (the names come from :mod:`jobs.keys`):
- ``detbot:image:{id}``      the image bytes (TTL ``IMAGE_TTL``), deleted when the job completes;
- ``detbot:job:{id}``        a hash: routing (opaque JSON from the producer), params, language (of the labels
                             drawn), status (``queued`` → ``ok``/``error``), code, message, details (JSON:
                             what an error's message says, as data), detection (JSON), attempts;
- ``detbot:annotated:{id}``  the annotated JPEG of a successful job.
Completion is announced on the stream of the job's queue, ``detbot:events`` for the default one (named in
the job's record as ``events`` by the producer; fields ``job_id``, ``status``, ``routing``: the
routing travels with the event so an answer can be sent even if the job's record has expired). ``complete()`` writes the
result and the event in one Lua script guarded by the status field, so a job run twice (after a worker
was killed) still yields exactly one completion event; the same script releases the chat's next held job
(:mod:`jobs.fair`), so that happens exactly once too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from redis import Redis
from redis.client import Pipeline

from jobs import fair, keys
from jobs.defaults import EVENTS_MAXLEN, IMAGE_TTL, RESULT_TTL

STATUS_QUEUED = "queued"
STATUS_OK = "ok"
STATUS_ERROR = "error"

# Reason codes of error completions; the bot maps each to a friendly reply. The ``message`` stored with
# them is an operator's note: only a detector error's message is written for people (the bot may show it).
# Detector errors use their own ``DetectorError.code`` (bad_image, empty_image, not_an_image,
# unsupported_format, corrupt_image, image_too_large, unknown_class, invalid_confidence).
CODE_TIMEOUT = "timeout"
CODE_RETRIES_EXHAUSTED = "failed_after_retries"
CODE_IMAGE_EXPIRED = "image_expired"
CODE_INTERNAL = "internal_error"
# The result was stored but expired before the bot could deliver it.
CODE_EXPIRED = "result_expired"

_COMPLETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'ok' or status == 'error' then return 0 end
local routing = redis.call('HGET', KEYS[1], 'routing') or '{}'
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'code', ARGV[2], 'message', ARGV[3], 'detection', ARGV[4],
           'details', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[6]) end
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'job_id', ARGV[8], 'status', ARGV[1], 'routing', routing)
""" + fair.RELEASE_ON_COMPLETE + """
return 1
"""


@dataclass(frozen=True)
class Completion:
    """The outcome of one job as the bot sees it."""

    job_id: str
    ok: bool
    routing: dict[str, Any]
    code: str = ""
    message: str = ""
    detection: dict[str, Any] | None = None
    annotated: bytes | None = None
    event_id: str = ""
    # An error's particulars as data (e.g. the unknown and the known classes), so the bot can say them in
    # the chat's language; ``message`` is the worker's English sentence.
    details: dict[str, Any] = field(default_factory=dict)
    # The stream the event came on ("": the client's own); its acknowledgement goes there.
    stream: str = ""


class JobInput(NamedTuple):
    """What a worker needs to run a job, read in one round trip."""

    image: bytes | None  # None: expired
    params: dict[str, Any]
    waiting: int  # jobs still waiting behind it
    language: str  # of the labels to draw; "" for the model's own names


def save_job(redis: Redis, job_id: str, image: bytes, params: dict[str, Any], routing: dict[str, Any],
             language: str = "", events: str = keys.EVENTS_STREAM) -> None:
    """Producer side: store the image and the job's record before it is enqueued."""
    pipe = redis.pipeline(transaction=True)
    queue_save_job(pipe, job_id, image, params, routing, language, events)
    pipe.execute()


def queue_save_job(
    pipe: Pipeline, job_id: str, image: bytes, params: dict[str, Any], routing: dict[str, Any], language: str = "",
    events: str = keys.EVENTS_STREAM,
) -> None:
    """:func:`save_job`'s commands on the caller's pipeline (to enqueue in the same transaction).

    ``events`` is the stream the completion goes to: the producer's queue's, wherever the job runs.
    """
    pipe.set(keys.image(job_id), image, ex=IMAGE_TTL)
    pipe.hset(keys.job(job_id), mapping={
        "status": STATUS_QUEUED,
        "routing": json.dumps(routing),
        "params": json.dumps(params),
        "language": language,
        "attempts": 0,
        "events": events,
    })
    pipe.expire(keys.job(job_id), RESULT_TTL)


def load_image(redis: Redis, job_id: str) -> bytes | None:
    """Worker side: the job's image bytes, or None when they expired."""
    data = redis.get(keys.image(job_id))
    return bytes(data) if data is not None else None  # type: ignore[arg-type]


def load_job(redis: Redis, job_id: str, queue_key: str | None = None) -> JobInput:
    """Worker side: the image bytes (None when expired), the parameters, how many jobs still wait in
    ``queue_key`` (0 without one) and the labels' language, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys.image(job_id))
    pipe.hmget(keys.job(job_id), ["params", "language"])
    if queue_key:
        pipe.llen(queue_key)
    data, (raw, language), *waiting = pipe.execute()
    return JobInput(
        bytes(data) if data is not None else None, json.loads(raw) if raw else {}, int(sum(waiting)),
        language.decode() if language else "",
    )


def complete(
    redis: Redis,
    job_id: str,
    *,
    ok: bool,
    code: str = "",
    message: str = "",
    detection: dict[str, Any] | None = None,
    annotated: bytes | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Worker side: record the outcome and announce it, once. Returns False if the job was already done."""
    # The stream is read first (declared to the script as a key): a record from before per-queue streams,
    # or one already expired, has none and goes to the default stream.
    stream = redis.hget(keys.job(job_id), "events")
    events = stream.decode() if isinstance(stream, bytes) else keys.EVENTS_STREAM
    script_keys = [keys.job(job_id), keys.annotated(job_id), keys.image(job_id), events]
    args: list[str | bytes | int] = [
        STATUS_OK if ok else STATUS_ERROR, code, message, json.dumps(detection) if detection else "",
        annotated or b"", RESULT_TTL, EVENTS_MAXLEN, job_id, json.dumps(details) if details else "",
    ]
    return bool(redis.eval(_COMPLETE, len(script_keys), *script_keys, *args))


def incr_attempts(redis: Redis, job_id: str) -> int:
    """Count one more start of a job (a worker that dies mid-job leaves its count behind)."""
    return int(redis.hincrby(keys.job(job_id), "attempts", 1))


def read_completion(redis: Redis, job_id: str, event_id: str = "", stream: str = "", *,
                    image: bool = True) -> Completion | None:
    """The stored outcome of a job, or None if its record expired or it has not completed. ``stream``: the
    one its event came on. ``image=False`` leaves the annotated JPEG in Redis (``annotated`` is None): the web
    reads results more often than images."""
    pipe = redis.pipeline(transaction=False)  # one round trip: the bot reads every completion this way
    pipe.hgetall(keys.job(job_id))
    if image:
        pipe.get(keys.annotated(job_id))
    data, *found = pipe.execute()
    annotated = found[0] if found else None
    status = data.get(b"status", b"").decode()
    if status not in (STATUS_OK, STATUS_ERROR):
        return None
    detection = data.get(b"detection") or b""
    details = data.get(b"details") or b""
    if status != STATUS_OK:
        annotated = None
    return Completion(
        job_id=job_id,
        ok=status == STATUS_OK,
        routing=json.loads(data.get(b"routing") or b"{}"),
        code=data.get(b"code", b"").decode(),
        message=data.get(b"message", b"").decode(),
        detection=json.loads(detection) if detection else None,
        annotated=bytes(annotated) if annotated is not None else None,
        event_id=event_id,
        details=json.loads(details) if details else {},
        stream=stream,
    )


def statuses(redis: Redis, job_ids: list[str]) -> list[str | None]:
    """Each job's status (``queued``, ``ok``, ``error``) in one round trip; None where the record is gone."""
    pipe = redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "status")
    return [status.decode() if status else None for status in pipe.execute()]
def finished(redis: Redis, job_id: str) -> bool:
    """Whether the job completed (ok or error)."""
    return redis.hget(keys.job(job_id), "status") in (STATUS_OK.encode(), STATUS_ERROR.encode())


def job_params(redis: Redis, job_id: str) -> dict[str, Any]:
    """The parameters (confidence, classes) the producer stored with a job."""
    raw = redis.hget(keys.job(job_id), "params")
    return json.loads(raw) if raw else {}


def publish_class_names(redis: Redis, queue_name: str, names: dict[int, str]) -> None:
    """Worker side, at start: the model's class names in id order, for the bot to check filters against."""
    redis.set(keys.class_names(queue_name), json.dumps([names[i] for i in sorted(names)]))


def class_names(redis: Redis, queue_name: str) -> list[str] | None:
    """The class names the queue's workers published, or None before any worker started."""
    raw = redis.get(keys.class_names(queue_name))
    return [str(n) for n in json.loads(raw)] if raw else None
