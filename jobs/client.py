"""The producer's API: what ``bot/`` uses to submit photos and receive completions.

No torch, no detector model: the job function is named by dotted path, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import uuid
from collections.abc import Iterator, Sequence
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
# A completion another consumer (a bot replica) read and has not touched for this long is taken over by one
# that is alive (XAUTOCLAIM): that replica died or stalled. A live one touches what it holds far more often
# (:meth:`DetectionClient.touch`), however long an answer waits (a chat's "retry after", a backlog), so
# nothing it holds is ever taken; a replica killed mid-answer has its answers sent within about this long.
CLAIM_IDLE_MS = 20_000
# Consumers with nothing pending and silent this long are deleted from the group: replicas that stopped
# (every start is a new consumer). A live one reads every few seconds, so it is never among them.
CONSUMER_FORGET_MS = 10 * 60 * 1000

# KEYS[1]: a stream; ARGV: group, consumer, the idle time to set (ms), then event ids. Each id still pending
# for ``consumer`` gets that idle time (0: "I hold it, still alive"; CLAIM_IDLE_MS: "take it now", at a
# graceful stop); returns the ids it no longer holds (another consumer took them: an album's finisher).
_TOUCH = """
local lost = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""


# The oldest Redis detbot runs on: bot replicas take over each other's answers with XAUTOCLAIM, status
# messages are taken with GETDEL (both came with 6.2). ``detbot doctor`` and ``detbot bot`` check it.
MIN_REDIS = (6, 2)


def redis_version_ok(version: str) -> bool:
    """Whether a Redis ``redis_version`` (e.g. "7.2.4") is MIN_REDIS or newer; an unreadable one passes."""
    parts = version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return True
    return (int(parts[0]), int(parts[1])) >= MIN_REDIS


def consumer_name() -> str:
    """A name no other bot process uses, now or later: host, process id and a random tail (a restarted
    process is a new consumer; the pending completions of the one before are taken over by idle time)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def new_job_ids(count: int) -> list[str]:
    """Ids for ``count`` new jobs (``submit_many(job_ids=...)``)."""
    return [uuid.uuid4().hex for _ in range(count)]


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
    return photo_memory_left(redis.info("memory"))


def photo_memory_left(info: Any) -> int | None:
    """:func:`_memory_left` from an ``INFO memory`` answer (the render requests read it asynchronously)."""
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
        chat_limit: int | None = None,
        bot_id: int | None = None,
        events: str | None = None,
    ) -> None:
        """``per_chat``: jobs of one chat in RQ's list at once; its other photos are held (``jobs.fair``).
        ``chat_limit``: photos one chat may have waiting at once (default: ``fair.chat_limit(max_queued)``).
        ``bot_id``: the bot whose jobs these are: their completions go to the bot's own stream, which no other
        bot on the queue reads (None: the queue's stream, for a bench or a tool). ``events``: another stream
        for them, which no bot reads (the web face's, :func:`jobs.keys.web_events`)."""
        self.redis = redis
        self.queue = make_queue(redis, queue_name)
        self.max_queued = max_queued
        self.job_timeout = job_timeout
        self.per_chat = per_chat
        self.chat_limit = fair.chat_limit(max_queued) if chat_limit is None else chat_limit
        self.consumer = consumer
        self.bot_id = bot_id
        # Every group sees every completion: only the bot's group may deliver to chats (a bench uses its own).
        self.group = group
        # The completion stream of this client's jobs on this queue: other queues and other bots never see them.
        self.events = events or keys.events(queue_name, bot_id)
        # Read too: the queue's stream of before bots had namespaces, where jobs queued by an older bot (an
        # upgrade, a rolling restart) complete; it empties once they are answered.
        self.streams = [self.events] + ([keys.events(queue_name)] if bot_id is not None and events is None else [])
        self._group_ready = False

    def submit(self, image: bytes, params: DetectParams, *, routing: dict[str, Any] | None = None,
               language: str = "", once: str | None = None) -> str:
        """Queue one image with what the person asked for; returns the job id.

        Raises QueueFullError, AlreadyQueuedError (see :meth:`submit_many`) or QueueUnavailableError.
        """
        return self.submit_many([image], params, [routing or {}], language, once=once)[0]

    def submit_many(self, images: list[bytes], params: DetectParams, routings: list[dict[str, Any]],
                    language: str = "", *, once: str | None = None, job_ids: list[str] | None = None) -> list[str]:
        """Queue several images in one transaction, all of them or none; returns their job ids in order.
        ``language``: the labels on the annotated images are drawn in it ("": the model's own names).

        All or none, so a producer that writes the number of photos into each routing (an album) writes
        exactly the number of jobs that exist. ``once``: a key naming what is asked (e.g. a chat's message);
        written in the same transaction, and a submit that finds it raises AlreadyQueuedError, so a
        request handled again after a crash is never queued twice. Raises QueueFullError when they do not
        all fit under ``max_queued``, ChatQueueFullError (a QueueFullError) when they would take their chat
        past ``chat_limit``, or QueueUnavailableError. ``job_ids``: the ids to give the jobs (from
        :func:`new_job_ids`, when the routings name them, as an album's do); new ones by default.
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
            job_ids = list(job_ids) if job_ids is not None else new_job_ids(len(images))
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
                fair.check_chat_room(pipe, self.queue.name, lane, len(images), self.chat_limit)
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

    def chat_room(self, chat_id: int) -> int:
        """How many more photos the chat may queue now (``chat_limit`` less those it has waiting)."""
        with _redis_errors():
            return max(0, self.chat_limit - fair.chat_waiting(self.redis, self.queue.name, chat_id))

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
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    def wait(self, block_ms: int = 5000, count: int = 100) -> list[Completion]:
        """New completions (never read by any consumer of the group), waiting up to ``block_ms`` for the first."""
        with _redis_errors():
            self._ensure_group()
            reply: Any = self.redis.xreadgroup(self.group, self.consumer, dict.fromkeys(self.streams, ">"), count,
                                               block_ms)
            return [self._completion(stream.decode(), event_id.decode(), fields)
                    for stream, entries in reply or [] for event_id, fields in entries]

    def claim_idle(self, count: int = 100, idle_ms: int = CLAIM_IDLE_MS) -> list[Completion]:
        """Completions another consumer read and has not touched for ``idle_ms`` (it died): this one's now."""
        out: list[Completion] = []
        with _redis_errors():
            self._ensure_group()
            for stream in self.streams:
                reply: Any = self.redis.xautoclaim(stream, self.group, self.consumer, idle_ms, "0-0", count=count)
                out += [self._completion(stream, event_id.decode(), fields)
                        for event_id, fields in reply[1] if event_id is not None and fields is not None]
        return out

    def touch(self, held: Sequence[Completion], idle_ms: int = 0) -> list[Completion]:
        """Tell the group this consumer still holds ``held`` (idle time 0), so no other consumer takes them;
        returns those it no longer holds (taken by another consumer). ``idle_ms`` = CLAIM_IDLE_MS hands them
        over at once instead: a graceful stop."""
        lost: list[Completion] = []
        with _redis_errors():
            for stream in self.streams:
                mine = {c.event_id: c for c in held if (c.stream or self.events) == stream}
                if mine:
                    gone: Any = self.redis.eval(_TOUCH, 1, stream, self.group, self.consumer, idle_ms, *mine)
                    lost += [mine[i.decode() if isinstance(i, bytes) else str(i)] for i in gone]
        return lost

    def take(self, parts: Sequence[tuple[str, str]]) -> list[Completion]:
        """``(stream, event id)`` pending for other consumers, now this one's (an album's finisher takes
        every photo's completion); an id no longer pending (answered meanwhile) is left out."""
        out: list[Completion] = []
        with _redis_errors():
            for stream in self.streams:
                ids: list[Any] = [event_id for s, event_id in parts if s == stream]
                if ids:
                    reply: Any = self.redis.xclaim(stream, self.group, self.consumer, 0, ids)
                    out += [self._completion(stream, event_id.decode(), fields)
                            for event_id, fields in reply if event_id is not None and fields is not None]
        return out

    def forget_consumers(self) -> int:
        """Delete the group's consumers that hold nothing and were silent for CONSUMER_FORGET_MS (stopped
        replicas); returns how many."""
        forgotten = 0
        with _redis_errors():
            for stream in self.streams:
                found: Any = self.redis.xinfo_consumers(stream, self.group)
                for info in found:
                    name = info["name"].decode() if isinstance(info["name"], bytes) else str(info["name"])
                    if name != self.consumer and not info["pending"] and info["idle"] > CONSUMER_FORGET_MS:
                        self.redis.xgroup_delconsumer(stream, self.group, name)
                        forgotten += 1
        return forgotten

    def _completion(self, stream: str, event_id: str, fields: dict[bytes, bytes]) -> Completion:
        job_id = fields.get(b"job_id", b"").decode()
        found = store.read_completion(self.redis, job_id, event_id, stream)
        # The record expired (bot down for longer than RESULT_TTL): still an answer, never a silent drop.
        routing = json.loads(fields.get(b"routing") or b"{}")
        return found or Completion(job_id, ok=False, routing=routing, code=store.CODE_EXPIRED, event_id=event_id,
                                   stream=stream)

    def finished(self, job_id: str) -> bool:
        """Whether the job has completed (its answer is on its way, or out)."""
        with _redis_errors():
            return store.finished(self.redis, job_id)

    def ack(self, completion: Completion) -> None:
        """The answer was delivered: acknowledge the event and let the job's data expire soon."""
        stream = completion.stream or self.events
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.xack(stream, self.group, completion.event_id)
            pipe.xdel(stream, completion.event_id)
            pipe.delete(keys.annotated(completion.job_id))
            pipe.expire(keys.job(completion.job_id), DELIVERED_TTL)
            pipe.execute()
