"""The producer's API: what ``bot/`` uses to submit photos and receive completions.

No torch, no detector model: the job function is named by dotted path, so importing this module is cheap.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now as utcnow

from detector.params import DetectParams
from jobs import fair, keys, store
from jobs.defaults import (
    DELIVERED_TTL,
    EVENTS_GROUP,
    JOB_TIMEOUT,
    MAX_QUEUED_JOBS,
    ONCE_TTL,
    QUEUE_NAME,
    RESULT_TTL,
    RQ_RESULT_TTL,
)
from jobs.exceptions import AlreadyQueuedError, QueueFullError, QueueUnavailableError
from jobs.store import Completion

# A submit whose watched keys (the chat's lane, the "once" marker) changed this many times in a row gives
# up with "busy": one chat's completions racing it that often means a storm, and the person may resend.
SUBMIT_RETRIES = 10
# The job function, by dotted path: the producer never imports it (it would pull in torch).
DETECT_JOB = "jobs.tasks.detect_job"
# New photos may fill Redis's maxmemory only up to this share: the rest is for what must never be refused
# for want of memory — the workers' results (an annotated JPEG replaces its photo), completion events, the
# bot's bookkeeping. Redis runs noeviction, so past maxmemory those writes would fail, not evict.
PHOTO_MEMORY_SHARE = 0.8


def make_queue(redis: Redis, name: str = QUEUE_NAME) -> Queue:
    """The RQ queue, always with JSON serialization: pickle would let anyone who can write Redis run code."""
    return Queue(name, connection=redis, serializer=JSONSerializer)


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise QueueUnavailableError("Redis is unreachable") from exc
    except OutOfMemoryError as exc:  # maxmemory reached (noeviction): the queue is full, in bytes
        raise QueueFullError("Redis is out of memory") from exc


def _memory_left(redis: Redis) -> int | None:
    """Bytes new photos may still take in Redis, None when it has no maxmemory."""
    info: Any = redis.info("memory")
    limit = int(info.get("maxmemory", 0))
    if not limit:
        return None
    return int(limit * PHOTO_MEMORY_SHARE) - int(info.get("used_memory", 0))


class DetectionClient:
    """Submit images for detection and consume their completion events."""

    def __init__(
        self,
        redis: Redis,
        *,
        queue_name: str = QUEUE_NAME,
        max_queued: int = MAX_QUEUED_JOBS,
        job_timeout: int = JOB_TIMEOUT,
        consumer: str = "bot",
        group: str = EVENTS_GROUP,
        per_chat: int = fair.MAX_IN_FLIGHT_PER_CHAT,
        events: str | None = None,
    ) -> None:
        """``per_chat``: jobs of one chat in RQ's list at once; its other photos are held (``jobs.fair``).
        ``events``: the stream this client's jobs announce their completion on; by default the queue's own,
        which the bot delivers from (the web face names one the bot never reads)."""
        self.redis = redis
        self.queue = make_queue(redis, queue_name)
        self.max_queued = max_queued
        self.job_timeout = job_timeout
        self.per_chat = per_chat
        self.consumer = consumer
        # Every group sees every completion: only the bot's group may deliver to chats (a bench uses its own).
        self.group = group
        # The queue's own completion stream: clients of different queues never see each other's events.
        self.events = events or keys.events(queue_name)
        self._group_ready = False

    def submit(self, image: bytes, params: DetectParams, *, routing: dict[str, Any] | None = None,
               language: str = "", once: str | None = None) -> str:
        """Queue one image with what the person asked for; returns the job id.

        Raises QueueFullError, AlreadyQueuedError (see :meth:`submit_many`) or QueueUnavailableError.
        """
        return self.submit_many([image], params, [routing or {}], language, once=once)[0]

    def submit_many(self, images: list[bytes], params: DetectParams, routings: list[dict[str, Any]],
                    language: str = "", *, once: str | None = None) -> list[str]:
        """Queue several images in one transaction, all of them or none; returns their job ids in order.
        ``language``: the labels on the annotated images are drawn in it ("": the model's own names).

        All or none, so a producer that writes the number of photos into each routing (an album) writes
        exactly the number of jobs that exist. ``once``: a key naming what is asked (e.g. a chat's message);
        written in the same transaction, and a submit that finds it raises AlreadyQueuedError, so a
        request handled again after a crash is never queued twice. Raises QueueFullError when they do not
        all fit under ``max_queued``, or QueueUnavailableError.
        """
        if len(images) != len(routings):
            raise ValueError(f"{len(images)} images but {len(routings)} routings")
        if not images:
            return []
        lane = fair.lane_of(routings)
        with _redis_errors():
            waiting = self.queued()
            if waiting + len(images) > self.max_queued:
                raise QueueFullError(f"{waiting} jobs are already waiting; {len(images)} more would pass "
                                     f"the limit of {self.max_queued}")
            memory = _memory_left(self.redis)
            if memory is not None and sum(map(len, images)) > memory:
                raise QueueFullError(f"Redis is near its maxmemory: {max(memory, 0)} bytes left for photos")
            if lane is not None:
                fair.sweep(self.redis, self.queue.name, self.queue.key, lane, self.per_chat)
            job_ids = [uuid.uuid4().hex for _ in images]
            for _ in range(SUBMIT_RETRIES):
                try:
                    self._submit_once(job_ids, images, params, routings, language, lane, once)
                    return job_ids
                except WatchError:
                    continue  # the chat's lane or the marker changed meanwhile: decide again
        raise QueueFullError(f"the submit kept racing other changes {SUBMIT_RETRIES} times")

    def _submit_once(self, job_ids: list[str], images: list[bytes], params: DetectParams,
                     routings: list[dict[str, Any]], language: str, lane: int | None, once: str | None) -> None:
        """The photos, their records, the RQ jobs and the "once" marker in one transaction: all of them or
        none. Of a chat's photos, those beyond its in-flight room are held (:mod:`jobs.fair`), the rest go
        into RQ's list."""
        with self.redis.pipeline(transaction=True) as pipe:
            watched = [*fair.watched(self.queue.name, lane)] if lane is not None else []
            if once is not None:
                watched.append(once)  # the transaction fails if another submit writes the marker meanwhile
            if watched:
                pipe.watch(*watched)
            if once is not None and pipe.exists(once):
                raise AlreadyQueuedError(f"{once} was queued before")
            room = len(images)
            if lane is not None:
                room = fair.free_slots(pipe, self.queue.name, lane, self.per_chat)
            pipe.multi()  # explicit, as RQ's enqueue expects of a pipeline handed to it
            for n, (job_id, image, routing) in enumerate(zip(job_ids, images, routings, strict=True)):
                store.queue_save_job(pipe, job_id, image, params.to_dict(), routing, language, self.events)
                if lane is None:
                    self._enqueue(pipe, job_id)
                    continue
                pipe.hset(keys.job(job_id), mapping=fair.job_fields(self.queue.name, self.queue.key, lane))
                if n < room:
                    self._enqueue(pipe, job_id)
                    fair.queue_in_flight(pipe, self.queue.name, lane, job_id)
                else:
                    self._hold(pipe, job_id)
                    fair.queue_hold(pipe, self.queue.name, lane, job_id)
            if once is not None:
                pipe.set(once, ",".join(job_ids), ex=ONCE_TTL)
            pipe.execute()

    def _enqueue(self, pipe: Pipeline, job_id: str) -> None:
        # No RQ ttl on purpose: RQ silently drops an expired job; ours still runs and answers image_expired.
        self.queue.enqueue(
            DETECT_JOB, job_id, job_id=job_id, job_timeout=self.job_timeout, result_ttl=RQ_RESULT_TTL,
            failure_ttl=RESULT_TTL, pipeline=pipe,
        )

    def _hold(self, pipe: Pipeline, job_id: str) -> None:
        """The RQ job, complete and "queued", but its id not in RQ's list yet: the completion of one of the
        chat's jobs pushes it there (``fair.RELEASE_ON_COMPLETE``)."""
        job = self.queue.create_job(DETECT_JOB, args=(job_id,), job_id=job_id, timeout=self.job_timeout,
                                    result_ttl=RQ_RESULT_TTL, failure_ttl=RESULT_TTL, status=JobStatus.QUEUED)
        job.origin = self.queue.name
        job.enqueued_at = utcnow()
        job.save(pipeline=pipe)
        pipe.sadd(self.queue.redis_queues_keys, self.queue.key)

    def room(self) -> int:
        """How many more photos the queue takes now (``max_queued`` less those waiting)."""
        return max(0, self.max_queued - self.queued())

    def position(self, job_id: str) -> int | None:
        """1-based position in the queue, or None once a worker has taken the job. A held photo (its chat
        has others in the queue) counts as behind the whole queue and its chat's earlier held photos."""
        with _redis_errors():
            pos = self.queue.get_job_position(job_id)
            if pos is not None:
                return pos + 1
            held = fair.held_position(self.redis, job_id)
            return None if held is None else self.queue.count + held + 1

    def missing(self, job_ids: list[str]) -> list[str]:
        """The jobs of ``job_ids`` whose record Redis no longer has (it lost its data, or they expired)."""
        if not job_ids:
            return []
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.exists(keys.job(job_id))
            found = pipe.execute()
        return [job_id for job_id, there in zip(job_ids, found, strict=True) if not there]

    def class_names(self) -> list[str] | None:
        """The class names the queue's workers published at start (None before any worker ran)."""
        with _redis_errors():
            return store.class_names(self.redis, self.queue.name)

    def queued(self) -> int:
        """Photos waiting for a worker: in RQ's list, and held back behind their chat's (``jobs.fair``)."""
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.llen(self.queue.key)
            fair.held_count(pipe, self.queue.name)
            in_list, held = pipe.execute()
            return int(in_list) + int(held)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.events, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def pending(self, count: int = 100, after: str = "0") -> list[Completion]:
        """Completions delivered to this consumer before but never acknowledged (e.g. the bot restarted),
        oldest first, with event ids after ``after``.

        Page through any number of them by passing the last event id of one page as ``after`` of the next:
        reading from "0" again would return entries still being delivered a second time.
        """
        return self._read(after, count, None)

    def wait(self, block_ms: int = 5000, count: int = 100) -> list[Completion]:
        """New completions, waiting up to ``block_ms`` for the first one."""
        return self._read(">", count, block_ms)

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Completion]:
        with _redis_errors():
            self._ensure_group()
            reply: Any = self.redis.xreadgroup(self.group, self.consumer, {self.events: start}, count, block_ms)
            out: list[Completion] = []
            for _stream, entries in reply or []:
                for event_id, fields in entries:
                    out.append(self._completion(event_id.decode(), fields))
        return out

    def _completion(self, event_id: str, fields: dict[bytes, bytes]) -> Completion:
        job_id = fields.get(b"job_id", b"").decode()
        found = store.read_completion(self.redis, job_id, event_id)
        # The record expired (bot down for longer than RESULT_TTL): still an answer, never a silent drop.
        routing = json.loads(fields.get(b"routing") or b"{}")
        return found or Completion(job_id, ok=False, routing=routing, code=store.CODE_EXPIRED, event_id=event_id)

    def ack(self, completion: Completion) -> None:
        """The answer was delivered: acknowledge the event and let the job's data expire soon."""
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.xack(self.events, self.group, completion.event_id)
            pipe.xdel(self.events, completion.event_id)
            pipe.delete(keys.annotated(completion.job_id))
            pipe.expire(keys.job(completion.job_id), DELIVERED_TTL)
            pipe.execute()
