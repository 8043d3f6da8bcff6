"""Re-drawing answers on the workers, never running the model: the request the bot makes, the thread that
serves it in every ``detbot worker``.

A press on an answer's button asks for the same photo drawn with other boxes (or its boxes cut out). The
bot sends the clean photo's bytes and the boxes to draw; a worker draws them with the one renderer
(:mod:`detector.draw`), so an adjusted image looks exactly like a first answer. Requests go on a Redis list
of their own (:func:`jobs.keys.renders`), served by a thread in each worker beside its inference loop: a
press never waits behind a backlog of photos, nor behind the photo being detected (drawing is tens of
milliseconds and releases the GIL in OpenCV). The bot waits for the outcome on a list of the request's own
(BLPOP), so no polling and no stream bookkeeping: a render nobody waits for any more simply expires.

The bot's side is asynchronous (``redis.asyncio``): a render's wait of up to ``RENDER_WAIT`` never holds a
thread, so presses cannot use up the threads that polling, the intake and the acknowledgements share. A
request's image is what the bot sends: a clean image at most ``CLEAN_MAX_SIDE`` on its long side and about
``CLEAN_MAX_BYTES`` in size; a larger original (an image sent as a 20 MB file) crosses Redis once, in a
``clean`` request that brings back its down-scaled copy. Every request passes the same memory guard as a
photo's submit (``jobs.client.photo_memory_left``): near Redis's ``maxmemory`` a press is refused, never
the results the workers must write.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from detector.errors import DetectorError
from detector.render import boxes_to_rows, rows_to_boxes
from detector.result import Box
from jobs import keys
from jobs.client import photo_memory_left
from jobs.defaults import QUEUE_NAME

log = logging.getLogger("detbot.render")

KIND_DRAW = "draw"
KIND_CROPS = "crops"
# The clean image itself, down-scaled to CLEAN_MAX_SIDE and re-encoded under CLEAN_MAX_BYTES: what the
# bot re-draws from when the person's file is larger than that.
KIND_CLEAN = "clean"
# The objects cut along their masks, transparent around them: PNGs, largest first, at most 10
# (detector.cutout.cutouts); objects without a mask come out as their whole box.
KIND_CUTOUTS = "cutouts"
# One object as a Telegram sticker (WebP, 512 px, transparent; detector.cutout.sticker): the box at the
# request's ``index`` among the boxes sent, or the largest without one.
KIND_STICKER = "sticker"
KINDS = (KIND_DRAW, KIND_CROPS, KIND_CLEAN, KIND_CUTOUTS, KIND_STICKER)
# The long side of the clean image a re-drawing starts from: the annotated answer's own cap
# (detector.settings.MAX_ANNOTATED_SIDE), so an adjusted image has the size of the first answer. Telegram's
# own photos are never larger; images sent as files may be.
CLEAN_MAX_SIDE = 2560
# A clean image at most this large rides in a render request as it is; a larger one is down-scaled once
# (KIND_CLEAN). A phone photo at CLEAN_MAX_SIDE is 0.3-1.5 MB as Telegram recompresses it.
CLEAN_MAX_BYTES = 2 * 1024 * 1024
# Down-scaled copies are encoded at this JPEG quality, lower steps until they fit CLEAN_MAX_BYTES: they are
# drawn on and encoded again, so they start close to the original.
CLEAN_QUALITIES = (92, 85, 75, 60)
# Code of a render refused because Redis is near its maxmemory (the photos' memory guard).
REFUSED_MEMORY = "redis_full"
# A request no worker took within this long is stale: the bot stopped waiting for it long before.
REQUEST_TTL = 30
# The outcome waits this long for the bot to read it (it reads at once; this only bounds a leak).
OUTPUT_TTL = 30
# How long the bot waits for a worker's render: drawing takes tens of ms, so this covers a busy machine; it
# stays below the bot's Redis socket timeout (5 s), which a longer BLPOP would trip.
RENDER_WAIT = 4
# The worker's thread wakes at least this often (seconds) to notice that it must stop.
SERVE_BLOCK = 1
# Outcome of a render that failed for a reason other than the image (an operator's log line says which).
FAILED_INTERNAL = "internal_error"



class Renderer(Protocol):
    """What a worker runs per request: (kind, clean image bytes, boxes, language, the chosen box's index)
    -> images (JPEG, PNG or WebP bytes)."""

    def __call__(self, kind: str, image: bytes, boxes: tuple[Box, ...], language: str,
                 index: int | None = None) -> list[bytes]: ...


class RenderError(Exception):
    """No render came back: ``code`` is ``timeout`` (no worker took it in time) or the worker's error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def room_for(redis: AsyncRedis, size: int) -> bool:
    """Whether ``size`` more bytes of image fit the photos' share of Redis's maxmemory (the memory guard of
    every submit, ``jobs.client.photo_memory_left``)."""
    info: Any = await redis.info("memory")
    room = photo_memory_left(info)
    return room is None or size <= room


class RenderClient:
    """The bot's side: one request, one wait (awaited, never in a thread), the images back."""

    def __init__(self, redis: AsyncRedis, queue_name: str = QUEUE_NAME, wait: int = RENDER_WAIT) -> None:
        self.redis = redis
        self.list = keys.renders(queue_name)
        self.wait = wait

    async def render(self, kind: str, image: bytes, boxes: Sequence[Box], language: str,
                     index: int | None = None, *, queue_name: str | None = None) -> list[bytes]:
        """The images a worker drew (one for ``draw``, ``clean`` and ``sticker``, one per box for ``crops``, up
        to 10 for ``cutouts``); ``index``: the box a ``sticker`` is made of (default: the largest). Raises
        RenderError (``timeout``, ``redis_full``, the worker's code) or a RedisError. ``queue_name``: whose
        workers draw it (an answer of another model than the default is drawn by that model's workers)."""
        requests = keys.renders(queue_name) if queue_name else self.list
        if not await room_for(self.redis, len(image)):
            raise RenderError(REFUSED_MEMORY)
        render_id = uuid.uuid4().hex
        fields: dict[str, Any] = {"kind": kind, "boxes": boxes_to_rows(list(boxes)), "language": language}
        if index is not None:
            fields["index"] = index
        spec = json.dumps(fields)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.render_request(render_id), mapping={"image": image, "spec": spec})
        pipe.expire(keys.render_request(render_id), REQUEST_TTL)
        pipe.rpush(requests, render_id)
        # Every id in the list is useless once its request expired: with no worker taking them, the list
        # goes with its last request instead of growing press by press.
        pipe.expire(requests, REQUEST_TTL)
        await pipe.execute()
        reply: Any = await self.redis.blpop([keys.render_done(render_id)], timeout=self.wait)
        if reply is None:
            await self.redis.delete(keys.render_request(render_id))  # a worker that takes it now finds nothing
            raise RenderError("timeout")
        status = reply[1].decode()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(keys.render_output(render_id))
        pipe.delete(keys.render_output(render_id))
        out: dict[bytes, bytes] = (await pipe.execute())[0]
        if status != "ok":
            raise RenderError(status)
        return [out[str(i).encode()] for i in range(len(out))]


class RenderServer(threading.Thread):
    """A worker's render thread: takes requests off the queue's render list and answers each."""

    def __init__(self, redis: Redis, queue_name: str, renderer: Renderer,
                 done: Callable[[str], None] | None = None) -> None:
        super().__init__(name="renders", daemon=True)
        self.redis = redis
        self.list = keys.renders(queue_name)
        self.renderer = renderer
        self.done = done  # told each kind rendered (the metric)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                item: Any = self.redis.blpop([self.list], timeout=SERVE_BLOCK)
                if item is not None:
                    self.serve(item[1].decode())
            except RedisError as exc:
                log.warning("render thread: Redis error %s; retrying", type(exc).__name__)
                self._stop_event.wait(SERVE_BLOCK)

    def serve(self, render_id: str) -> None:
        """One request: draw it and push the outcome (``ok`` and the images, or an error code)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(keys.render_request(render_id))
        pipe.delete(keys.render_request(render_id))
        request, _ = pipe.execute()
        if not request:
            return  # the bot gave up on it already
        images: list[bytes] = []
        try:
            spec = json.loads(request[b"spec"])
            kind = str(spec["kind"])
            if kind not in KINDS:
                raise ValueError(f"unknown render kind {kind!r}")
            index = spec.get("index")
            if index is not None and not isinstance(index, int):
                raise ValueError(f"box index {index!r} is not a number")
            args = (kind, bytes(request[b"image"]), rows_to_boxes(spec["boxes"]), str(spec.get("language") or ""))
            images = self.renderer(*args) if index is None else self.renderer(*args, index)
            status = "ok"
        except DetectorError as exc:
            status = exc.code
        except Exception as exc:  # a bad request must not stop the thread, and never shows a traceback
            log.error("render %s failed: %s: %s", render_id, type(exc).__name__, exc)
            status = FAILED_INTERNAL
        pipe = self.redis.pipeline(transaction=True)
        if images:
            pipe.hset(keys.render_output(render_id), mapping={str(i): img for i, img in enumerate(images)})
            pipe.expire(keys.render_output(render_id), OUTPUT_TTL)
        pipe.rpush(keys.render_done(render_id), status)
        pipe.expire(keys.render_done(render_id), OUTPUT_TTL)
        if status == "ok" and self.done is not None:
            self.done(kind)  # counted before the bot can see it: whoever reads the count after the answer finds it
        pipe.execute()
