"""detbot's own long polling: an update is in Redis before Telegram is told that it arrived.

PTB's Updater confirms an update (the next getUpdates offset) while its handler may still be downloading
and queueing the photo, so a bot killed in that window lost the photo. Here each fetched batch is written
to the bot's inbox in Redis (:func:`jobs.keys.inbox`, with the next offset, in one transaction) and only
then is the offset sent to Telegram; an entry is removed once its handler finished (photo queued, answered
or refused). A restarted bot handles its inbox's leftovers first. A handler run twice (killed after the
submit, before the removal) queues nothing twice: the submit's "once" marker (``submit_many(once=)``).

The handlers themselves are the PTB Application's (``application.process_update``): only the fetching
of updates is detbot's. Updates run concurrently, at most :data:`CHAT_CONCURRENCY` per chat, so a slow or
flooding chat never holds the slots every other chat needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from telegram import Update
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application

from bot.telegram_io import describe
from jobs import keys

log = logging.getLogger(__name__)

# Whatever Redis answers instead of doing it (away, full under maxmemory, a command not allowed): the poller
# goes on without the inbox rather than stop the bot.
REDIS_ERRORS = (RedisError, OSError)

# Telegram holds a long-polling getUpdates open this long when there is nothing new.
POLL_TIMEOUT = 10
# Updates asked for per getUpdates: Telegram's maximum.
POLL_LIMIT = 100
# Updates being handled at once, hence the inbox's bound: polling pauses at this many (~1 KB each in Redis,
# a few KB in the bot's memory). Far above a healthy backlog: updates refused by the rate limits finish fast.
INBOX_LIMIT = 5000
# One chat's updates handled at once: a chat sending hundreds never holds every slot. Above an album's
# 10 photos, so an album's updates never wait for each other.
CHAT_CONCURRENCY = 16
# After a failed getUpdates (network, Telegram 5xx, 409 another poller): wait, doubling up to the maximum.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# A leftover handled at this many starts crashed the bot each time: dropped with a log line, not looped.
MAX_REPLAYS = 3
# A graceful stop waits this long for handlers in flight; unfinished ones stay in the inbox for next time.
DRAIN_TIMEOUT = 10.0


class Inbox:
    """The fetched, unfinished updates of one bot in Redis (a hash: update id -> JSON), and its offset."""

    def __init__(self, redis: Redis, bot_id: int) -> None:
        self.redis = redis
        self.key = keys.inbox(bot_id)
        self.offset_key = keys.inbox_offset(bot_id)

    def add(self, updates: Sequence[Update], offset: int) -> None:
        """Hold ``updates`` and the offset that confirms them, together."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping={str(u.update_id): json.dumps({"update": u.to_dict(), "replays": 0})
                                     for u in updates})
        pipe.set(self.offset_key, offset)
        pipe.execute()

    def remove(self, update_ids: Sequence[int]) -> None:
        self.redis.hdel(self.key, *(str(i) for i in update_ids))

    def offset(self) -> int | None:
        raw = self.redis.get(self.offset_key)
        return int(raw) if raw else None

    def leftovers(self) -> list[tuple[int, dict[str, Any], int]]:
        """What a previous run left unfinished, oldest first: (update id, raw update, earlier replays);
        each one's replay count goes up by one."""
        raw: dict[bytes, bytes] = self.redis.hgetall(self.key)  # type: ignore[assignment]
        out = []
        for field_name, value in sorted(raw.items(), key=lambda item: int(item[0])):
            entry = json.loads(value)
            out.append((int(field_name), entry["update"], int(entry.get("replays", 0))))
        if out:
            pipe = self.redis.pipeline(transaction=False)
            for update_id, update, replays in out:
                pipe.hset(self.key, str(update_id), json.dumps({"update": update, "replays": replays + 1}))
            pipe.execute()
        return out

    def size(self) -> int:
        return int(self.redis.hlen(self.key))


@dataclass
class _ChatSlots:
    """One chat's handler slots, and how many of its updates hold or wait for one."""

    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CHAT_CONCURRENCY))
    users: int = 0


@dataclass
class _Album:
    """An album's updates: their inbox entries go together, when the last of its handlers is done (the
    first photo's handler answers the whole album, the others return at once)."""

    running: int = 0
    done: list[int] = field(default_factory=list)


def _album_key(update: Update) -> tuple[int, str] | None:
    message = update.message
    if message is None or not message.media_group_id:
        return None
    return message.chat_id, str(message.media_group_id)


def _chat_key(update: Update) -> int:
    chat = update.effective_chat
    return chat.id if chat is not None else 0


class Poller:
    """Fetches updates into the inbox, hands them to the Application's handlers, removes them when done."""

    def __init__(self, application: Application, redis: Redis, allowed_updates: Sequence[str],
                 poll_timeout: int = POLL_TIMEOUT) -> None:
        self.application = application
        self.redis = redis
        self.allowed_updates = list(allowed_updates)
        self.poll_timeout = poll_timeout
        self._inbox: Inbox | None = None
        self._offset: int | None = None
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._chats: dict[int, _ChatSlots] = {}
        self._albums: dict[tuple[int, str], _Album] = {}
        self._failing = False

    @property
    def inbox(self) -> Inbox:
        if self._inbox is None:
            self._inbox = Inbox(self.redis, self.application.bot.id)
        return self._inbox

    def stop(self) -> None:
        """Stop fetching (a long poll in flight is abandoned: its updates were not confirmed)."""
        self._stopping.set()

    async def run(self) -> None:
        """Leftovers first, then poll until :meth:`stop`; then wait a moment for handlers in flight."""
        await self._replay()
        backoff = BACKOFF_FIRST
        try:
            while not self._stopping.is_set():
                await self._wait_for_room()
                updates = await self._fetch()
                if updates is None:
                    await self._pause(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_FIRST
                if updates:
                    await self._accept(updates)
        finally:
            await self._drain()

    # -- fetching -------------------------------------------------------------------------------------

    async def _fetch(self) -> tuple[Update, ...] | None:
        """One getUpdates, abandoned if the bot is stopped meanwhile; None after a failure worth a pause."""
        call = asyncio.ensure_future(self.application.bot.get_updates(
            offset=self._offset, limit=POLL_LIMIT, timeout=self.poll_timeout, allowed_updates=self.allowed_updates,
        ))
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({call, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, TelegramError):
                await call
            return ()
        try:
            return call.result()
        except InvalidToken:
            raise  # a setting to fix: the caller stops the bot
        except RetryAfter as exc:
            log.warning("Telegram asks to wait %s before polling again", exc.retry_after)
            await self._pause(float(exc.retry_after if isinstance(exc.retry_after, int | float)
                                    else exc.retry_after.total_seconds()))
            return ()
        except Conflict as exc:
            log.warning("getUpdates refused: another process polls with this token, or a webhook is set (%s)",
                        describe(exc))
            return None
        except TelegramError as exc:
            log.warning("getUpdates failed: %s", describe(exc))
            return None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_room(self) -> None:
        while len(self._tasks) >= INBOX_LIMIT and not self._stopping.is_set():
            self._room.clear()
            await self._room.wait()

    async def _accept(self, updates: tuple[Update, ...]) -> None:
        """Into the inbox, then the offset moves on; with Redis away, handled without it (they reply
        "unavailable" to what needs Redis, as they would have anyway)."""
        offset = updates[-1].update_id + 1
        try:
            await asyncio.to_thread(self.inbox.add, updates, offset)
            held = True
            if self._failing:
                log.info("updates are kept in Redis again")
                self._failing = False
        except REDIS_ERRORS as exc:
            held = False
            if not self._failing:
                log.warning("cannot keep updates in Redis (%s): handling them without a crash guard", describe(exc))
                self._failing = True
        self._offset = offset
        for update in updates:
            self._start(update, held)

    # -- handling -------------------------------------------------------------------------------------

    async def _replay(self) -> None:
        """Start the previous run's unfinished updates again (before any new one), and pick up its offset."""
        try:
            left = await asyncio.to_thread(self.inbox.leftovers)
            self._offset = await asyncio.to_thread(self.inbox.offset)
        except REDIS_ERRORS as exc:
            log.warning("cannot read the updates left from before the restart: %s", describe(exc))
            return
        if left:
            log.info("%d update(s) left from before the restart: handling them first", len(left))
        for update_id, raw, replays in left:
            if replays >= MAX_REPLAYS:
                log.error("update %s dropped: the bot stopped while handling it %d times", update_id, replays)
                await self._remove([update_id])
                continue
            try:
                update = Update.de_json(raw, self.application.bot)
            except Exception as exc:  # a stored entry this version cannot read: never a crash loop
                log.error("update %s dropped: cannot read it back (%s)", update_id, describe(exc))
                await self._remove([update_id])
                continue
            self._start(update, True)

    def _start(self, update: Update, held: bool) -> None:
        task = asyncio.create_task(self._handle(update, held), name=f"update-{update.update_id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._room.set()

    async def _handle(self, update: Update, held: bool) -> None:
        chat = _chat_key(update)
        album = _album_key(update)
        if album is not None:
            self._albums.setdefault(album, _Album()).running += 1
        slots = self._chats.setdefault(chat, _ChatSlots())
        slots.users += 1
        try:
            async with slots.semaphore:
                # Handler errors go to the Application's error handler; nothing is raised here.
                await self.application.process_update(update)
        finally:
            slots.users -= 1
            if not slots.users:
                del self._chats[chat]  # idle: a bot in many chats keeps no semaphore per chat
        done = self._album_done(album, update.update_id) if album is not None else [update.update_id]
        if held and done:
            await self._remove(done)

    def _album_done(self, album: tuple[int, str], update_id: int) -> list[int]:
        state = self._albums[album]
        state.running -= 1
        state.done.append(update_id)
        if state.running:
            return []
        del self._albums[album]
        return state.done

    async def _remove(self, update_ids: list[int]) -> None:
        try:
            await asyncio.to_thread(self.inbox.remove, update_ids)
        except REDIS_ERRORS as exc:
            # Left in the inbox: handled again after a restart, where the submit's marker stops a second job.
            log.warning("could not remove update(s) %s from the inbox: %s", update_ids, describe(exc))

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_TIMEOUT)
        if pending:
            log.warning("%d update(s) still being handled at the stop: handled again at the next start",
                        len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
