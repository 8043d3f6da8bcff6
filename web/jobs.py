"""The web face's side of the queue: an upload submitted as a job, a job's state read back, a wait for it.

Web jobs are the bot's jobs in every way (same RQ queue, same workers, same records, same recovery) but
two: their routing says ``"kind": "web"`` and whose they are, and their completion goes to a stream of the
web's own (:func:`jobs.keys.web_events`) that the bot never reads. So the bot's consumer group never sees
them: nothing is delivered to a chat, nothing is acknowledged for the web, and the bot's stream stays its
own. Nothing is lost either: the result waits in the job's record (:mod:`jobs.store`), which this module
reads whenever it is asked, whether or not a web process was up when the job finished. The stream only
wakes requests that wait for a job (:class:`Completions`); a web process that was down simply was not
waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from detector.names import ClassNames
from detector.params import DetectParams
from detector.render import rows_to_boxes
from jobs import keys, store
from jobs.client import DetectionClient
from jobs.exceptions import AlreadyQueuedError
from jobs.store import Completion
from web.access import Caller

log = logging.getLogger(__name__)

KIND = "web"
STATUS_QUEUED, STATUS_RUNNING, STATUS_DONE, STATUS_FAILED = "queued", "running", "done", "failed"
# Web completion events are kept this long (seconds): a request waits far less, so older ones only take room.
EVENTS_KEPT = 600
# The stream is trimmed at most this often (seconds).
TRIM_INTERVAL = 60.0
# One read of the completion streams blocks at most this long (ms), so the reader notices it must stop.
READ_BLOCK_MS = 1000
# After Redis failed, the reader tries again after this long (seconds).
READ_RETRY = 1.0


@dataclass(frozen=True)
class JobState:
    """What a client may know of one of its jobs now."""

    status: str
    position: int | None = None
    completion: Completion | None = None
    routing: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in (STATUS_DONE, STATUS_FAILED)


class WebQueue:
    """Submit and read web jobs on the queues (models) the web serves. Blocking: call it in a thread."""

    def __init__(self, redis: Redis, models: tuple[str, ...], max_queued: int, result_ttl: int) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.clients = {
            model: DetectionClient(redis, queue_name=model, max_queued=max_queued, events=keys.web_events(model))
            for model in models
        }

    def submit(self, model: str, image: bytes, params: DetectParams, caller: Caller, language: str,
               idempotency: str | None = None) -> str:
        """Queue one upload in the caller's lane; returns its job id. A repeated ``idempotency`` token of the
        same caller returns the first submit's job. Raises QueueFullError or QueueUnavailableError."""
        routing = {"kind": KIND, "chat_id": caller.lane, "owner": caller.owner, "model": model,
                   "language": language, "accepted_at": time.time(), "ttl": self.result_ttl}
        once = keys.web_once(caller.owner or "local", idempotency) if idempotency else None
        try:
            return self.clients[model].submit(image, params, routing=routing, language=language, once=once)
        except AlreadyQueuedError:
            assert once is not None
            first = self.redis.get(once)
            return bytes(first).decode().split(",")[0] if first else ""  # type: ignore[arg-type]

    def state(self, job_id: str, owner: str) -> JobState | None:
        """The job's state, None when it does not exist (never did, expired) or is not the caller's."""
        found: Any = self.redis.hmget(keys.job(job_id), ["status", "routing"])
        status, raw = found
        if status is None:
            return None
        routing = json.loads(raw or b"{}")
        if routing.get("kind") != KIND or routing.get("owner", "") != owner:
            return None  # a chat's photo, or another key's: as if it did not exist
        if status.decode() in (store.STATUS_OK, store.STATUS_ERROR):
            completion = store.read_completion(self.redis, job_id, image=False)
            if completion is None:
                return None
            return JobState(STATUS_DONE if completion.ok else STATUS_FAILED, completion=completion, routing=routing)
        client = self.clients.get(str(routing.get("model")))
        position = client.position(job_id) if client is not None else None
        return JobState(STATUS_QUEUED if position else STATUS_RUNNING, position=position, routing=routing)

    def annotated(self, job_id: str, owner: str) -> bytes | None:
        """The annotated JPEG of a finished job of the caller's, None otherwise."""
        state = self.state(job_id, owner)
        if state is None or state.status != STATUS_DONE:
            return None
        data = self.redis.get(keys.annotated(job_id))
        return bytes(data) if data is not None else None  # type: ignore[arg-type]

    def ttl(self, job_id: str) -> int:
        """Seconds the job's result is still kept (0 when unknown)."""
        seconds: Any = self.redis.ttl(keys.job(job_id))
        return max(0, int(seconds))


def boxes_document(rows: list[list[Any]], names: ClassNames, languages: tuple[str, ...]) -> dict[str, Any]:
    """Boxes kept with a result (compact rows, best first) as the API shows them, and each of their classes'
    name as people of each language read it."""
    candidates = [asdict(box) for box in rows_to_boxes(rows)]
    classes = sorted({(box["class_id"], box["class_name"]) for box in candidates})
    shown = {language: {name: names.display(class_id, name, language) for class_id, name in classes}
             for language in languages}
    return {"candidates": candidates, "names": shown}


def result_document(state: JobState, names: ClassNames, languages: tuple[str, ...]) -> dict[str, Any]:
    """A finished job's result for the API: the ``detbot detect --json`` object at the asked threshold,
    every box kept down to the detection floor (``candidates``, best first) with that floor, and the class
    names per language (``names``)."""
    assert state.completion is not None and state.completion.detection is not None
    detection = dict(state.completion.detection)
    rows = detection.pop("candidates", [])
    floor = detection.pop("floor", None)
    return {"result": detection, "floor": floor, **boxes_document(rows, names, languages)}


class Completions:
    """Wakes the requests of this process that wait for a job, as the job's completion event arrives.

    One task per process reads the web's completion streams (plain XREAD: every web process sees every
    event, and each wakes only its own waiters); it also gives each finished web result the answers' TTL
    and trims the streams to the last :data:`EVENTS_KEPT` seconds.
    """

    def __init__(self, redis: AsyncRedis, streams: list[str], result_ttl: int) -> None:
        self.redis = redis
        self.streams = streams
        self.result_ttl = result_ttl
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._trimmed_at = 0.0
        self._stopping = False

    @contextlib.asynccontextmanager
    async def waiter(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when ``job_id`` completes (or the server stops); register it *before* reading the
        job's state, so a completion in between is never missed."""
        event = asyncio.Event()
        if self._stopping:
            event.set()
        self._waiting.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[job_id]

    @property
    def waiting(self) -> int:
        return sum(map(len, self._waiting.values()))

    def stop(self) -> None:
        """The server stops: every waiting request answers now with the job's state (a client asks again,
        of another web process or after the restart), and new ones do not wait; so a stop takes moments,
        not a long poll's seconds."""
        self._stopping = True
        for events in self._waiting.values():
            for event in events:
                event.set()

    async def run(self) -> None:
        """Read until cancelled; Redis errors are logged once per outage and retried."""
        last: dict[str, str] = {}
        failing = False
        while True:
            try:
                if not last:
                    last = await self._newest()
                reply: Any = await self.redis.xread(last, count=100, block=READ_BLOCK_MS)  # type: ignore[arg-type]
                for stream, entries in reply or []:
                    for event_id, fields in entries:
                        last[stream.decode()] = event_id.decode()
                        await self._completed(fields)
                await self._trim()
                if failing:
                    log.info("completion events readable again")
                failing = False
            except RedisError as exc:
                if not failing:
                    log.warning("cannot read completion events (waiting requests fall back to their timeout): %s",
                                type(exc).__name__)
                failing = True
                await asyncio.sleep(READ_RETRY)

    async def _newest(self) -> dict[str, str]:
        """Where to read from: after each stream's newest entry. Not "$", which each XREAD takes anew and
        would skip an event written between two reads."""
        newest = {}
        for stream in self.streams:
            found: Any = await self.redis.xrevrange(stream, count=1)
            newest[stream] = found[0][0].decode() if found else "0-0"
        return newest

    async def _completed(self, fields: dict[bytes, bytes]) -> None:
        job_id = fields.get(b"job_id", b"").decode()
        if not job_id:
            return
        # Results are kept as long as answers are (DETBOT_ANSWER_TTL of the web that took the job: every
        # web process reads every event), whatever the worker set.
        try:
            ttl = int(json.loads(fields.get(b"routing") or b"{}").get("ttl") or self.result_ttl)
        except (ValueError, TypeError, AttributeError):
            ttl = self.result_ttl
        pipe = self.redis.pipeline(transaction=False)
        pipe.expire(keys.job(job_id), ttl)
        pipe.expire(keys.annotated(job_id), ttl)
        await pipe.execute()
        for event in self._waiting.get(job_id, ()):
            event.set()

    async def _trim(self) -> None:
        now = time.time()
        if now - self._trimmed_at < TRIM_INTERVAL:
            return
        self._trimmed_at = now
        oldest = f"{int((now - EVENTS_KEPT) * 1000)}-0"
        for stream in self.streams:
            await self.redis.xtrim(stream, minid=oldest, approximate=True)
