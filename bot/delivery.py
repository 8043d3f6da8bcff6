"""Delivering the workers' results: read completions from Redis, send them to Telegram, then acknowledge.

An event is acknowledged only after Telegram accepted the answer (or refused it for good), so a bot
that stops mid-way finds the answer again in ``pending()`` after its restart: every accepted photo gets
exactly one answer. The one unavoidable gap: killed between Telegram's "ok" and the ack, an answer is
sent twice rather than never. An album's results wait in :class:`bot.albums.PendingAlbums` until the album
is complete, then go out as one answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError
from telegram import Bot, InputMediaPhoto, Message
from telegram.error import BadRequest, ChatMigrated

from bot.albums import AssembledAlbum, PendingAlbums, album_answer, album_reply_to
from bot.i18n import ENGLISH
from bot.metrics import BotMetrics
from bot.outcome import Wording, detection_of
from bot.status import StatusBoard
from bot.telegram_io import PermanentSendError, describe, reply_to, with_retry
from bot.text import MESSAGE_LIMIT, pack_lines, split_caption
from detector.names import ClassNames
from jobs.client import DetectionClient
from jobs.exceptions import JobsError
from jobs.store import Completion

log = logging.getLogger(__name__)

# The blocking read returns at least this often: it bounds how long a shutdown waits for the reader thread.
WAIT_BLOCK_MS = 2000
# Answers sent at once; AIORateLimiter still paces them to Telegram's limits.
MAX_CONCURRENT_DELIVERIES = 8
# A graceful stop waits this long for answers being sent, so they are not sent again after the restart.
DRAIN_TIMEOUT = 15.0
# Pause before reading again after Redis was unreachable or lost the consumer group.
REDIS_RETRY_DELAY = 2.0
# Unacknowledged events read per call at start-up (an outage can leave many).
PENDING_BATCH = 500


@dataclass
class Target:
    """Where an answer goes; ChatMigrated (group became a supergroup) re-targets it."""

    chat_id: int
    thread: int | None
    reply: int | None


def _target(routing: dict[str, Any]) -> Target:
    reply = album_reply_to(routing) or routing.get("message_id")
    return Target(int(routing["chat_id"]), routing.get("thread_id"), reply)


class Delivery:
    """The loop that turns completion events into Telegram answers."""

    def __init__(
        self,
        bot: Bot,
        make_reader: Callable[[], DetectionClient],
        metrics: BotMetrics,
        status: StatusBoard,
        names: ClassNames | None = None,
        default_language: str = ENGLISH,
    ) -> None:
        self.bot = bot
        self.wording = Wording(names or ClassNames(), default_language)
        self.make_reader = make_reader
        self.metrics = metrics
        self.status = status
        self._reader: DetectionClient | None = None
        self._known: set[str] = set()
        self._albums = PendingAlbums()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)
        self._stopping = asyncio.Event()
        self._redis_down = False
        # The blocking read gets a thread of its own: it must not hold one of the handlers' threads.
        self._reader_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="results-reader")

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver what a previous run left unacknowledged, then new completions, until ``stop()``."""
        self._reader = self.make_reader()
        await self._read_pending()
        while not self._stopping.is_set():
            batch = await self._read(lambda r: r.wait(WAIT_BLOCK_MS))
            for completion in batch or []:
                self._accept(completion)
            for album in self._albums.ready():
                self._spawn(self._deliver_album(album))

    async def stop(self) -> None:
        """Stop reading, and give answers in flight a moment to finish (they are acked, not re-sent)."""
        self._stopping.set()
        self._reader_thread.shutdown(wait=False)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()

    async def _read_pending(self) -> None:
        while not self._stopping.is_set():
            batch = await self._read(lambda r: r.pending(PENDING_BATCH))
            if batch is None:
                continue
            fresh = [c for c in batch if c.event_id not in self._known]
            if batch:
                log.info("delivering %d answer(s) left from before the restart", len(fresh))
            for completion in fresh:
                self._accept(completion)
            if len(batch) < PENDING_BATCH or not fresh:
                return

    async def _read(self, call: Callable[[DetectionClient], list[Completion]]) -> list[Completion] | None:
        """One read; None (after a pause) while Redis is unreachable or was emptied."""
        reader = self._reader or self.make_reader()
        try:
            batch = await asyncio.get_running_loop().run_in_executor(self._reader_thread, call, reader)
        except JobsError as exc:
            if not self._redis_down:
                log.warning("cannot read results: %s; retrying every %.0f s", describe(exc), REDIS_RETRY_DELAY)
            self._redis_down = True
            await asyncio.sleep(REDIS_RETRY_DELAY)
            return None
        except ResponseError as exc:
            # Redis restarted without its data: the consumer group is gone, a fresh client re-creates it.
            log.warning("results stream unusable (%s); reconnecting", describe(exc))
            self._reader = self.make_reader()
            await asyncio.sleep(REDIS_RETRY_DELAY)
            return None
        if self._redis_down:
            log.info("results readable again")
            self._redis_down = False
        return batch

    def _accept(self, completion: Completion) -> None:
        if completion.event_id in self._known:
            return
        self._known.add(completion.event_id)
        if not isinstance(completion.routing.get("chat_id"), int):
            # Not one of the bot's jobs (no chat to answer): nothing to deliver, acknowledge it away.
            log.warning("result %s has no chat to answer; dropped", completion.job_id)
            self._spawn(self._ack([completion]))
            return
        if not self._albums.add(completion):
            self._spawn(self._deliver_single(completion))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            async with self._sem:
                try:
                    await coro
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Left unacknowledged: the next start tries it again; one line, no traceback.
                    log.error("delivering an answer failed: %s", describe(exc))

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- answers ----------------------------------------------------------------------------------------

    async def _deliver_single(self, c: Completion) -> None:
        target = _target(c.routing)
        det = detection_of(c)
        try:
            if det is not None and c.annotated is not None:
                await self._send_detection(target, self.wording.detection_lines(c, det), c.annotated)
            else:
                await self._send_text(target, [self.wording.error_text(c)])
            log.info("answered chat=%s msg=%s job=%s %s", target.chat_id, target.reply, c.job_id,
                     "ok" if det else f"error={c.code}")
        except PermanentSendError as exc:
            self._dropped(target, c.job_id, exc)
        self.metrics.answered.labels("ok" if det else "error").inc()
        await self.status.clear(c.job_id)
        await self._ack([c])

    async def _deliver_album(self, album: AssembledAlbum) -> None:
        answer = album_answer(album, self.wording)
        completions = album.completions
        target = _target(completions[0].routing)
        try:
            await self._send_album_photos(target, answer.photos)
            await self._send_text(target, answer.lines)
            log.info("answered album chat=%s msg=%s photos=%d ok=%d", target.chat_id, target.reply,
                     len(completions), answer.ok)
        except PermanentSendError as exc:
            self._dropped(target, album.album_id, exc)
        self.metrics.answered.labels("ok").inc(answer.ok)
        self.metrics.answered.labels("error").inc(answer.failed)
        await self.status.clear(album.album_id)
        await self._ack(completions)

    async def _send_album_photos(self, target: Target, photos: list[tuple[bytes, str]]) -> None:
        """One photo as a photo, more as one media group (Telegram refuses a media group of one)."""
        if len(photos) == 1:
            await self._send_photo(target, *photos[0])
        elif photos:
            media = [InputMediaPhoto(image, caption=caption) for image, caption in photos]
            await self._call(target, lambda t: self.bot.send_media_group(
                t.chat_id, media, reply_parameters=reply_to(t.reply), message_thread_id=t.thread), "album")

    async def _send_detection(self, target: Target, lines: list[str], photo: bytes) -> None:
        caption, rest = split_caption(lines)
        try:
            await self._send_photo(target, photo, caption)
        except PermanentSendError as exc:
            if not isinstance(exc.__cause__, BadRequest):
                raise
            # The photo itself was refused (e.g. its dimensions): the boxes as text are still an answer.
            log.warning("photo refused in chat %s (%s); sending the text alone", target.chat_id, exc)
            rest = pack_lines(lines, MESSAGE_LIMIT)
        await self._send_chunks(target, rest)

    async def _send_photo(self, target: Target, photo: bytes, caption: str) -> Message:
        return await self._call(target, lambda t: self.bot.send_photo(
            t.chat_id, photo, caption=caption, reply_parameters=reply_to(t.reply), message_thread_id=t.thread,
        ), "photo")

    async def _send_text(self, target: Target, lines: list[str]) -> None:
        await self._send_chunks(target, pack_lines(lines, MESSAGE_LIMIT))

    async def _send_chunks(self, target: Target, chunks: list[str]) -> None:
        for chunk in chunks:
            await self._call(target, lambda t, text=chunk: self.bot.send_message(  # type: ignore[misc]
                t.chat_id, text, reply_parameters=reply_to(t.reply), message_thread_id=t.thread,
            ), "message")

    async def _call(self, target: Target, send: Callable[[Target], Awaitable[Any]], what: str) -> Any:
        while True:
            try:
                return await with_retry(lambda: send(target), f"sending {what} to chat {target.chat_id}")
            except ChatMigrated as exc:
                log.info("chat %s moved to %s; answering there", target.chat_id, exc.new_chat_id)
                target.chat_id, target.thread, target.reply = int(exc.new_chat_id), None, None

    def _dropped(self, target: Target, job: str, exc: PermanentSendError) -> None:
        log.warning("answer for %s in chat %s dropped: Telegram refused it (%s)", job, target.chat_id, exc)
        self.metrics.delivery_failed.labels(str(exc).split(":", 1)[0]).inc()

    async def _ack(self, completions: list[Completion]) -> None:
        """Acknowledge after delivery; retried while Redis is away (else the answer would be sent again)."""
        for c in completions:
            while True:
                try:
                    await asyncio.to_thread((self._reader or self.make_reader()).ack, c)
                    break
                except ResponseError as exc:
                    log.warning("could not acknowledge %s: %s", c.job_id, describe(exc))  # its event is gone
                    break
                except JobsError as exc:
                    if self._stopping.is_set():
                        log.warning("could not acknowledge %s: %s", c.job_id, describe(exc))
                        return
                    await asyncio.sleep(REDIS_RETRY_DELAY)
            self._known.discard(c.event_id)
