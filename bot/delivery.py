"""Delivering the workers' results: read completions from Redis, send them to Telegram, then acknowledge.

An event is acknowledged only after Telegram accepted the answer (or refused it for good), so a bot
that stops mid-way leaves the answer pending, to be taken over by its successor or another replica (below):
every accepted photo gets exactly one answer. The one unavoidable gap: killed between Telegram's "ok" and
the ack, an answer is sent twice rather than never. An album's results meet in Redis (:mod:`bot.assembly`)
until the album is complete (or Redis says the rest is lost or will not come), then go out as one answer.

Any number of bot processes (replicas) deliver side by side: each reads the completion stream as a consumer
of its own, so each completion goes to one of them; each touches what it holds every ``TOUCH_INTERVAL``,
and takes over (XAUTOCLAIM) what another one read and stopped touching for ``CLAIM_IDLE_MS`` — that replica
was killed. A replica that stops gracefully hands over what it could not send in time at once.

Answers go out in per-chat lanes (:mod:`bot.lanes`): a chat waiting out Telegram's "retry after" delays
no other chat. What Telegram does not take is given up after a bounded number of attempts, a send that may
have arrived (read timeout) is not repeated, and a chat that blocked or removed the bot has its waiting
answers dropped at once: each of these acknowledges the result with one log line and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError
from telegram import Bot, InlineKeyboardMarkup, InputMediaPhoto, Message
from telegram.error import BadRequest, ChatMigrated, Forbidden

from bot.albums import AssembledAlbum, album_answer, album_reply_to
from bot.assembly import ALBUM_CHECK, ALONE, ANSWERED, COMPLETE, DUE, AlbumParts, HeldAlbums, Parts, album_of
from bot.buttons import Buttons, Offer
from bot.i18n import ENGLISH
from bot.lanes import Lanes
from bot.metrics import BotMetrics
from bot.outcome import Wording, detection_of
from bot.status import StatusBoard
from bot.telegram_io import (
    RETRY_FIRST_DELAY,
    GaveUpError,
    PermanentSendError,
    UncertainSendError,
    describe,
    reply_to,
    with_retry,
)
from bot.text import MESSAGE_LIMIT, pack_lines, split_caption
from bot.video_answers import VideoAnswers
from detector.names import ClassNames
from jobs import store
from jobs.client import CLAIM_IDLE_MS, DetectionClient
from jobs.exceptions import JobsError
from jobs.store import Completion

log = logging.getLogger(__name__)

# The blocking read returns at least this often: it bounds how long a shutdown waits for the reader thread.
WAIT_BLOCK_MS = 2000
# A graceful stop waits this long for answers being sent, so they are not sent again after the restart.
DRAIN_TIMEOUT = 15.0
# Pause before reading again after Redis was unreachable or lost the consumer group.
REDIS_RETRY_DELAY = 2.0
# Completions taken over per pass from replicas that died; the next pass takes more.
CLAIM_BATCH = 100
# How often a replica looks for completions a dead replica left (XAUTOCLAIM), and tells the group it still
# holds its own: several times within CLAIM_IDLE_MS, so a live replica's answers never look abandoned.
CLAIM_INTERVAL = 5.0
TOUCH_INTERVAL = CLAIM_IDLE_MS / 1000 / 4
# How often the group's consumers of stopped replicas are cleared away.
FORGET_INTERVAL = 600.0
# Answers read from Redis and not yet acknowledged: reading waits below this, so a backlog of thousands
# of annotated photos never sits in the bot's memory at once (~200 KB each).
MAX_OUTSTANDING = 200


@dataclass(frozen=True)
class _Unit:
    """What one lane item answers: a job's result, or an album's (``album`` set)."""

    completions: list[Completion]
    album: AssembledAlbum | None = None


@dataclass
class Target:
    """Where an answer goes; ChatMigrated (group became a supergroup) re-targets it."""

    chat_id: int
    thread: int | None
    reply: int | None


def _reply_missing(exc: PermanentSendError) -> bool:
    """Telegram's "message to be replied not found": the person deleted the photo meanwhile."""
    return isinstance(exc.__cause__, BadRequest) and "replied" in str(exc).lower()


# Chats that blocked or removed the bot, remembered until they come back, and groups that became supergroups;
# a bound for a bot in many chats.
GONE_MEMORY = 10_000


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
        *,
        migrated: Callable[[int, int], Awaitable[None]] | None = None,
        retry_delay: float = RETRY_FIRST_DELAY,
        album_check: float = ALBUM_CHECK,
    ) -> None:
        """``migrated(old, new)`` is told of a group that became a supergroup; ``retry_delay`` is the first
        pause between attempts of a send that failed with a network error or a 5xx; ``album_check``: an album
        none of whose photos came for this long is checked in Redis (:mod:`bot.assembly`)."""
        self.bot = bot
        self.wording = Wording(names or ClassNames(), default_language)
        self.migrated = migrated
        # The buttons under answers (set by the application; None: answers without buttons).
        self.buttons: Buttons | None = None
        # Clips' answers (bot.video_answers; set by the application).
        self.videos: VideoAnswers | None = None
        self.retry_delay = retry_delay
        self._moved: dict[int, int] = {}
        self._gone: dict[int, None] = {}
        self.make_reader = make_reader
        self.metrics = metrics
        self.status = status
        self._reader: DetectionClient | None = None
        self.album_check = album_check
        self._parts: AlbumParts | None = None
        # Every completion read and not yet acknowledged (in a lane, or an album part waiting for the
        # others), by (stream, event id): what this replica touches, and hands over at a graceful stop.
        self._held: dict[tuple[str, str], Completion] = {}
        # Albums this replica holds parts of: when to check them in Redis, when to answer them as they are.
        self._albums = HeldAlbums(album_check)
        # One lane per chat: a chat waiting out a "retry after" never delays another chat's answers.
        self._lanes: Lanes[_Unit] = Lanes(self._deliver)
        self._stopping = asyncio.Event()
        self._redis_down = False
        # The blocking read gets a thread of its own: it must not hold one of the handlers' threads.
        self._reader_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="results-reader")
        self._upkeep: asyncio.Task[None] | None = None

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Take over what a dead replica (or this bot's previous run) left, then deliver new completions,
        until ``stop()``."""
        self._reader = self.make_reader()
        self._parts = None
        self._upkeep = asyncio.create_task(self._keep_up())
        try:
            while not self._stopping.is_set():
                await self._room()
                batch = await self._read(lambda r: r.wait(WAIT_BLOCK_MS))
                for completion in batch or []:
                    await self._accept(completion)
                await self._albums_due()
        finally:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep

    async def stop(self) -> None:
        """Stop reading, and give answers in flight a moment to finish (they are acked, not re-sent); what
        is left goes to the other replicas at once."""
        self._stopping.set()
        self._reader_thread.shutdown(wait=False)
        if self._upkeep is not None:
            self._upkeep.cancel()  # a stopping replica takes nothing more over, and touches nothing more
        await self._lanes.close(DRAIN_TIMEOUT)
        if self._held and self._reader is not None:
            left = list(self._held.values())
            try:
                await asyncio.to_thread(self._reader.touch, left, CLAIM_IDLE_MS)
                log.info("%d answer(s) not sent before the stop: handed over to the other replicas", len(left))
            except (JobsError, ResponseError) as exc:
                log.warning("%d answer(s) not sent before the stop; another replica takes them over within "
                            "%.0f s: %s", len(left), CLAIM_IDLE_MS / 1000, describe(exc))

    async def _keep_up(self) -> None:
        """Every CLAIM_INTERVAL: take over what dead replicas left; every TOUCH_INTERVAL: tell the group this
        replica holds what it holds; now and then: clear away the consumers of stopped replicas."""
        touched = forgotten = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - touched >= TOUCH_INTERVAL:
                await self._touch()
                touched = now
            if now - forgotten >= FORGET_INTERVAL:
                await self._redis_call(lambda r: r.forget_consumers())
                forgotten = now
            while len(self._lanes) < MAX_OUTSTANDING:
                batch = await self._redis_call(lambda r: r.claim_idle(CLAIM_BATCH))
                if not batch:
                    break
                log.info("taking over %d answer(s) another replica (or a previous run) left unsent", len(batch))
                for completion in batch:
                    await self._accept(completion, reclaimed=True)
            await asyncio.sleep(CLAIM_INTERVAL)

    async def _touch(self) -> None:
        held = list(self._held.values())
        if not held:
            return
        lost = await self._redis_call(lambda r: r.touch(held)) or []
        for c in lost:
            # Taken by the replica answering its album (or, after a stall, by one that thought this one dead).
            self._held.pop((c.stream, c.event_id), None)

    async def _redis_call(self, call: Callable[[DetectionClient], Any]) -> Any:
        """A short Redis call of the upkeep; None when Redis is away (the read loop reports that)."""
        reader = self._reader or self.make_reader()
        try:
            return await asyncio.to_thread(call, reader)
        except (JobsError, ResponseError) as exc:
            log.debug("delivery upkeep skipped: %s", describe(exc))
            return None

    async def _room(self) -> None:
        """Wait until fewer than MAX_OUTSTANDING answers are on their way (a backlog is read as it drains)."""
        await self._lanes.room(MAX_OUTSTANDING)

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

    async def _accept(self, completion: Completion, reclaimed: bool = False) -> None:
        key = (completion.stream, completion.event_id)
        if key in self._held or self._stopping.is_set():
            return  # stopping: left pending, handed over with the rest (:meth:`stop`), never half-sent here
        self._held[key] = completion
        if not isinstance(completion.routing.get("chat_id"), int):
            # Not one of the bot's jobs (no chat to answer): nothing to deliver, acknowledge it away.
            log.warning("result %s has no chat to answer; dropped", completion.job_id)
            self._lanes.add(0, _Unit([completion]))
            return
        album = album_of(completion)
        if album is None:
            self._lanes.add(int(completion.routing["chat_id"]), _Unit([completion]))
            return
        try:
            added = await asyncio.to_thread(self._album_parts().add, completion, completion.stream, reclaimed)
        except (RedisError, OSError) as exc:
            # Kept unacknowledged: read again (by this replica's successor or another one) once Redis is back.
            log.warning("album result %s not recorded (%s); retried later", completion.job_id, describe(exc))
            self._held.pop(key, None)
            return
        if added.state == ALONE:
            log.warning("result %s of album %s came after the album's answer: answered on its own",
                        completion.job_id, album.album_id)
            self._queue_album(AssembledAlbum(album.album_id, [(album.place, completion)]))
        elif added.state == COMPLETE:
            await self._take_album(album.album_id, added.parts or Parts({}))
        else:
            self._albums.hold(album, added.due)

    def _album_parts(self) -> AlbumParts:
        if self._parts is None:
            reader = self._reader or self.make_reader()
            self._parts = AlbumParts(reader.redis, reader.bot_id or 0, reader.consumer, check=self.album_check)
        return self._parts

    async def _albums_due(self) -> None:
        """The albums this replica holds parts of: checked in Redis when they stalled (:meth:`_check_album`);
        answered with what is there once due (an older bot's album after ALBUM_WAIT, any after ALBUM_GIVE_UP),
        by whichever replica holding a part gets there first."""
        for album_id in self._albums.due():
            try:
                parts = await asyncio.to_thread(self._album_parts().take, album_id)
            except (RedisError, OSError) as exc:
                log.warning("album %s not taken now (%s); trying again", album_id, describe(exc))
                continue
            self._albums.drop(album_id)
            if parts is not None:
                log.warning("album %s: %d photo(s) answered after waiting for the others", album_id,
                            len(parts.found))
                await self._take_album(album_id, parts)
        for album_id, jobs in self._albums.to_check():
            await self._check_album(album_id, jobs)

    async def _check_album(self, album_id: str, jobs: list[str]) -> None:
        """An album none of whose photos came for a while: Redis says which awaited photos are lost, which
        completed (their result is on its way, or went to another reader), the others are queued, held
        behind other chats, or running; an album that waits for nothing more goes out."""
        albums = self._album_parts()
        try:
            state, done = await asyncio.to_thread(albums.stalled, album_id)
            if state == ANSWERED:  # another replica answers it: the parts read here are its now
                self._albums.drop(album_id)
            if state != DUE:
                return
            awaited = [(place, job) for place, job in enumerate(jobs, 1) if place not in done]
            found = await asyncio.to_thread(store.statuses, albums.redis, [job for _, job in awaited])
            settled = await asyncio.to_thread(
                albums.settle, album_id, [place for (place, _), status in zip(awaited, found, strict=True)
                                          if status is None],
                [place for (place, _), status in zip(awaited, found, strict=True)
                 if status in (store.STATUS_OK, store.STATUS_ERROR)])
        except (RedisError, OSError) as exc:
            log.warning("album %s not checked: %s", album_id, describe(exc))
            return
        if settled.elsewhere:
            log.warning("album %s: %d photo(s) completed but their results reached no replica (another reader "
                        "has them); answered without them", album_id, settled.elsewhere)
        if settled.lost:
            log.warning("album %s: %d photo(s) lost in Redis; %d still awaited", album_id, settled.lost,
                        settled.awaited)
        elif settled.awaited:
            log.info("album %s: still waiting for %d photo(s), queued or running", album_id, settled.awaited)
        if settled.parts is not None:
            await self._take_album(album_id, settled.parts)

    async def _take_album(self, album_id: str, parts: Parts) -> None:
        """Claim every part of the album from whichever replica read it, and queue the album's answer (the
        photos Redis lost listed in it)."""
        self._albums.drop(album_id)
        by_event = {event: index for index, event in parts.found.items()}
        mine = {key: c for key, c in self._held.items() if key in by_event}
        others = [key for key in by_event if key not in mine]
        try:
            taken = await asyncio.to_thread((self._reader or self.make_reader()).take, others) if others else []
        except JobsError as exc:
            log.warning("album %s: the other photos' results not taken (%s); answering what is here", album_id,
                        describe(exc))
            taken = []
        for c in taken:
            self._held[(c.stream, c.event_id)] = c
            mine[(c.stream, c.event_id)] = c
        found = sorted(((by_event[key], c) for key, c in mine.items()), key=lambda part: part[0])
        if found:
            self._queue_album(AssembledAlbum(album_id, found, parts.lost))

    def _queue_album(self, album: AssembledAlbum) -> None:
        self._lanes.add(int(album.completions[0].routing["chat_id"]), _Unit(album.completions, album))

    async def _deliver(self, unit: _Unit) -> None:
        chat = unit.completions[0].routing.get("chat_id")
        if chat in self._gone:
            log.info("answer for %s in chat %s dropped: the chat blocked or removed the bot",
                     unit.completions[0].job_id, chat)
            await self._discard([unit])
        elif unit.album is not None:
            await self._deliver_album(unit.album)
        elif unit.completions[0].routing.get("video") and self.videos is not None:
            await self._deliver_video(unit.completions[0], self.videos)
        elif isinstance(chat, int):
            await self._deliver_single(unit.completions[0])
        else:
            await self._ack(unit.completions)

    # -- answers ----------------------------------------------------------------------------------------

    async def _deliver_single(self, c: Completion) -> None:
        target = self._target(c.routing)
        det = detection_of(c)
        try:
            if det is not None and c.annotated is not None:
                offer = self.buttons.offer([c], [det], [0]) if self.buttons is not None else None
                async with self._holding(offer):
                    await self._send_detection(target, self.wording.detection_lines(c, det), c.annotated, offer)
            else:
                await self._send_text(target, [self.wording.error_text(c)])
            log.info("answered chat=%s msg=%s job=%s %s", target.chat_id, target.reply, c.job_id,
                     "ok" if det else f"error={c.code}")
        except PermanentSendError as exc:
            await self._dropped(target, c.job_id, exc)
        self.metrics.answer("ok" if det else "error")
        await self._status_done(target, c.job_id)
        await self._ack([c])

    async def _deliver_video(self, c: Completion, videos: VideoAnswers) -> None:
        """A clip's answer (bot.video_answers): the annotated clip with its caption and JSON button, the rest of its
        tracks in text; or the sentence for its error (a span's failure answers the clip)."""
        target = self._target(c.routing)
        answer = videos.answer(c, self.wording.default_language)
        try:
            if answer.clip is not None:
                sent = await self._call(target, lambda t: videos.send(t.chat_id, t.thread, t.reply, answer), "video")
                await self._send_chunks(target, answer.caption_and_rest()[1])
                await videos.keep(answer, c.routing, sent)
            else:
                await self._send_text(target, answer.lines)
            log.info("answered video chat=%s msg=%s job=%s %s", target.chat_id, target.reply, answer.unit,
                     "ok" if answer.clip else f"error={c.code}")
        except PermanentSendError as exc:
            await self._dropped(target, answer.unit, exc)
        self.metrics.answer("ok" if answer.clip else "error")
        await self._status_done(target, answer.unit)
        await self._ack([c])

    async def _deliver_album(self, album: AssembledAlbum) -> None:
        answer = album_answer(album, self.wording)
        completions = album.completions
        target = self._target(completions[0].routing)
        offer = self._album_offer(album)
        try:
            async with self._holding(offer):
                photos = await self._send_album_photos(target, album.album_id, answer.photos)
                # The summary goes out whatever became of the photos: it alone lists every photo's boxes.
                summary = await self._send_text(target, answer.lines, offer.markup if offer else None)
                if offer is not None and summary and self.buttons is not None:
                    await self.buttons.keep(offer, summary[0].message_id, [m.message_id for m in photos],
                                            [m.message_id for m in summary[1:]])
            log.info("answered album chat=%s msg=%s photos=%d ok=%d", target.chat_id, target.reply,
                     len(completions), answer.ok)
        except PermanentSendError as exc:
            await self._dropped(target, album.album_id, exc)
        self.metrics.answer("ok", answer.ok)
        self.metrics.answer("error", answer.failed)
        await self._status_done(target, album.album_id)
        await self._ack(completions)

    def _holding(self, offer: Offer | None) -> AbstractAsyncContextManager[Any]:
        """While an answer with buttons goes out, a press on them waits (the keyboard shows before the
        answer's follow-up messages are out and its state is stored)."""
        if offer is None or self.buttons is None:
            return contextlib.nullcontext()
        return self.buttons.holding(offer)

    def _album_offer(self, album: AssembledAlbum) -> Offer | None:
        """The buttons of an album's summary: its photos with a result, in the order they are sent."""
        if self.buttons is None:
            return None
        good = [(index, c, det) for index, c in album.parts if (det := detection_of(c)) is not None]
        if not good:
            return None
        return self.buttons.offer([c for _, c, _ in good], [d for _, _, d in good], [i for i, _, _ in good])

    async def _send_album_photos(self, target: Target, album_id: str, photos: list[tuple[bytes, str]],
                                 ) -> list[Message]:
        """More than one photo as one media group (Telegram refuses a media group of one); a media group
        Telegram refuses goes out as single photos, and photos refused even so are left to the summary.

        Raises PermanentSendError only when the chat itself refused (blocked, gone): then nothing can arrive.
        """
        if len(photos) > 1:
            media = [InputMediaPhoto(image, caption=caption) for image, caption in photos]
            try:
                return list(await self._call(target, lambda t: self.bot.send_media_group(
                    t.chat_id, media, reply_parameters=reply_to(t.reply), message_thread_id=t.thread), "album"))
            except UncertainSendError as exc:
                # It may be in the chat already: not sent again, and the summary below follows it.
                self._uncertain(target, album_id, exc)
                return []
            except PermanentSendError as exc:
                if not isinstance(exc.__cause__, BadRequest):
                    raise
                log.warning("album %s refused as a media group in chat %s (%s); sending its photos one by one",
                            album_id, target.chat_id, exc)
        refused = 0
        sent = []
        for image, caption in photos:
            try:
                sent.append(await self._send_photo(target, image, caption))
            except PermanentSendError as exc:
                if not isinstance(exc.__cause__, BadRequest):
                    raise
                refused += 1
        if refused:
            log.warning("album %s: %d of %d photo(s) refused in chat %s; its summary lists their boxes",
                        album_id, refused, len(photos), target.chat_id)
            return []  # which photo is which is no longer certain: the buttons adjust the summary alone
        return sent

    async def _send_detection(self, target: Target, lines: list[str], photo: bytes, offer: Offer | None = None,
                              ) -> None:
        """The annotated photo with its caption (and the buttons of ``offer``), then the rest of the list."""
        caption, rest = split_caption(lines)
        sent: Message | None = None
        try:
            sent = await self._send_photo(target, photo, caption, offer.markup if offer else None)
        except PermanentSendError as exc:
            if not isinstance(exc.__cause__, BadRequest):
                raise
            # The photo itself was refused (e.g. its dimensions): the boxes as text are still an answer.
            log.warning("photo refused in chat %s (%s); sending the text alone", target.chat_id, exc)
            rest = pack_lines(lines, MESSAGE_LIMIT)
        texts = await self._send_chunks(target, rest)
        if offer is not None and sent is not None and self.buttons is not None:
            await self.buttons.keep(offer, sent.message_id, [sent.message_id], [m.message_id for m in texts])

    async def _send_photo(self, target: Target, photo: bytes, caption: str,
                          markup: InlineKeyboardMarkup | None = None) -> Message:
        return await self._call(target, lambda t: self.bot.send_photo(
            t.chat_id, photo, caption=caption, reply_parameters=reply_to(t.reply), message_thread_id=t.thread,
            reply_markup=markup,
        ), "photo")

    async def _send_text(self, target: Target, lines: list[str], markup: InlineKeyboardMarkup | None = None,
                         ) -> list[Message]:
        return await self._send_chunks(target, pack_lines(lines, MESSAGE_LIMIT), markup)

    async def _send_chunks(self, target: Target, chunks: list[str], markup: InlineKeyboardMarkup | None = None,
                           ) -> list[Message]:
        """Text messages in order; ``markup`` (a keyboard) goes on the first."""
        sent = []
        for i, chunk in enumerate(chunks):
            sent.append(await self._call(target, lambda t, text=chunk, keys=markup if i == 0 else None:  # type: ignore[misc]
                                         self.bot.send_message(t.chat_id, text, reply_parameters=reply_to(t.reply),
                                                               message_thread_id=t.thread, reply_markup=keys),
                                         "message"))
        return sent

    async def _call(self, target: Target, send: Callable[[Target], Awaitable[Any]], what: str) -> Any:
        while True:
            try:
                return await with_retry(lambda: send(target), f"sending {what} to chat {target.chat_id}",
                                        first_delay=self.retry_delay)
            except ChatMigrated as exc:
                await self._migrate(target.chat_id, int(exc.new_chat_id))
                target.chat_id, target.thread, target.reply = int(exc.new_chat_id), None, None
            except PermanentSendError as exc:
                if target.reply is None or not _reply_missing(exc):
                    raise
                # allow_sending_without_reply should prevent it; should Telegram still refuse, answer anyway.
                log.info("message %s in chat %s is gone; answering without replying to it", target.reply,
                         target.chat_id)
                target.reply = None

    def _target(self, routing: dict[str, Any]) -> Target:
        reply = album_reply_to(routing) or routing.get("message_id")
        chat = int(routing["chat_id"])
        if chat in self._moved:  # a group that became a supergroup: its old messages are not there
            return Target(self._moved[chat], None, None)
        return Target(chat, routing.get("thread_id"), reply)

    def moved(self, old: int, new: int) -> None:
        """A group became a supergroup: its answers, waiting or to come, go to the supergroup."""
        self._moved[old] = new
        while len(self._moved) > GONE_MEMORY:  # the oldest migrations' answers were delivered long ago
            del self._moved[next(iter(self._moved))]

    async def _migrate(self, old: int, new: int) -> None:
        """Telegram refused a send with ChatMigrated: follow the group, and tell the app (settings)."""
        if self._moved.get(old) == new:
            return
        log.info("chat %s moved to %s; answering there", old, new)
        self.moved(old, new)
        if self.migrated is not None:
            await self.migrated(old, new)

    async def _dropped(self, target: Target, job: str, exc: PermanentSendError) -> None:
        """One log line and a metric for an answer that will not arrive; a chat that is gone is forgotten."""
        if isinstance(exc, UncertainSendError):
            self._uncertain(target, job, exc)
            return
        if isinstance(exc, GaveUpError):
            log.warning("answer for %s in chat %s dropped: Telegram failed every attempt (%s)", job,
                        target.chat_id, exc)
            self.metrics.undelivered("gave_up")
            return
        cause = exc.__cause__
        kind = "forbidden" if isinstance(cause, Forbidden) else "bad_request" if isinstance(cause, BadRequest) else ""
        self.metrics.undelivered(kind or "refused")
        if isinstance(exc.__cause__, Forbidden):
            await self.chat_gone(target.chat_id, f"answer for {job} refused: {exc}")
        else:
            log.warning("answer for %s in chat %s dropped: Telegram refused it (%s)", job, target.chat_id, exc)

    def _uncertain(self, target: Target, unit: str, exc: PermanentSendError) -> None:
        log.warning("answer for %s in chat %s may have reached Telegram (%s); not sent again", unit,
                    target.chat_id, exc)
        self.metrics.undelivered("uncertain")

    async def _status_done(self, target: Target, unit: str) -> None:
        """The answer is out (or never will be): its status message goes, unless the chat itself is gone."""
        if target.chat_id in self._gone:
            await self.status.forget(unit)
        else:
            await self.status.clear(unit)

    # -- chats that blocked or removed the bot --------------------------------------------------------

    async def chat_gone(self, chat_id: int, why: str) -> None:
        """The bot was blocked, kicked or left: the chat's waiting answers are dropped at once (acknowledged
        unsent), its status messages forgotten, and answers that come later are dropped too, until
        :meth:`chat_back`."""
        self._gone[chat_id] = None
        while len(self._gone) > GONE_MEMORY:
            del self._gone[next(iter(self._gone))]
        units = self._lanes.take(chat_id)
        log.warning("chat %s is gone (%s): %d other waiting answer(s) dropped", chat_id, why,
                    sum(len(u.completions) for u in units))
        await self._discard(units)

    def chat_back(self, chat_id: int) -> None:
        """The chat talks to the bot again (a message, or the bot added back): answer it again."""
        self._gone.pop(chat_id, None)

    async def _discard(self, units: list[_Unit]) -> None:
        for unit in units:
            self.metrics.undelivered("chat_gone", len(unit.completions))
            await self.status.forget(unit.album.album_id if unit.album else unit.completions[0].job_id)
            await self._ack(unit.completions)

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
            self._held.pop((c.stream, c.event_id), None)
