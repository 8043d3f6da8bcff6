"""Handing the inbox's updates to the Application's handlers: each chat's in order, chats side by side.

A chat's updates run one after another in the order they came (``/language ru`` and the photo right after
it: the photo is answered in Russian), while other chats' run meanwhile, so a slow or flooding chat delays
no one else. Two exceptions keep what must run together together: the updates of one album run side by
side (its first photo's handler gathers the others), and so do button presses (they coalesce on their
answer, and re-drawing one must not hold the next press back); a message after presses still waits for them.

The Mini App's requests in the inbox (:mod:`bot.mini_app`) run the same way, as presses of their answer's
chat: PTB hands them to their own handler (a custom update type).

An entry leaves the inbox once its handler finished; an album's entries all together, once its last
handler is done (the first answers the whole album), so a stop half-way replays the album, never a part.
Updates the poller could not put into Redis (Redis away) run the same way, without an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from telegram import Update
from telegram.ext import Application

from bot.inbox import MAX_REPLAYS, Entry, Inbox
from bot.lease import REDIS_ERRORS
from bot.mini_app import MiniAppRequest
from bot.telegram_io import describe

log = logging.getLogger(__name__)

# How long one read of the inbox waits for a new update (it returns earlier with one): bounds a stop.
READ_BLOCK_MS = 1000
# After a failed read of the inbox (Redis away): wait, doubling up to the maximum.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
# A stop waits this long for handlers in flight; unfinished ones stay in the inbox for the next holder.
DRAIN_TIMEOUT = 10.0
# Updates being handled or waiting for their chat at once: reading the inbox pauses here (INBOX_LIMIT).
IN_FLIGHT_LIMIT = 5000

# What an update is, for the order within its chat (see the module's docstring).
MESSAGE, PRESS = "message", "press"


# What the handlers take: Telegram's updates and the Mini App's requests.
Work = Update | MiniAppRequest


def _chat_key(update: Work) -> int:
    if isinstance(update, MiniAppRequest):
        return update.chat_id
    chat = update.effective_chat
    return chat.id if chat is not None else 0


def _kind(update: Work) -> str:
    """``press``, ``album:<id>`` or ``message``: updates of one kind other than ``message`` may run side by side
    (a Mini App's request is a press on its answer)."""
    if isinstance(update, MiniAppRequest) or update.callback_query is not None:
        return PRESS
    message = update.message
    if message is not None and message.media_group_id:
        return f"album:{message.media_group_id}"
    return MESSAGE


def _name(update: Work) -> str:
    if isinstance(update, MiniAppRequest):
        return f"mini-app-{update.request_id}"
    return f"update-{update.update_id}"


@dataclass
class _Item:
    update: Work
    entry: Entry | None  # None: not in the inbox (Redis was away)
    kind: str


@dataclass
class _Chat:
    waiting: deque[_Item] = field(default_factory=deque)
    running: dict[str, int] = field(default_factory=dict)  # kind -> how many run now

    def may_start(self, kind: str) -> bool:
        return not self.running or (kind != MESSAGE and set(self.running) == {kind})


@dataclass
class _Album:
    """An album's entries leave the inbox together, when the last of its handlers is done."""

    running: int = 0
    done: list[str] = field(default_factory=list)


class Dispatcher:
    """Runs updates through ``application.process_update`` in per-chat order; removes them from the inbox."""

    def __init__(self, application: Application, inbox: Inbox) -> None:
        self.application = application
        self.inbox = inbox
        self._chats: dict[int, _Chat] = {}
        self._albums: dict[tuple[int, str], _Album] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()  # entry ids handled or waiting here
        self._count = 0
        self._room = asyncio.Event()
        self._failing = False

    def __len__(self) -> int:
        """Updates handled or waiting for their chat's turn."""
        return self._count

    async def run(self, stop: asyncio.Event) -> None:
        """Take over what earlier holders left, then hand out new updates until ``stop``; then give the
        handlers in flight a moment (what does not finish stays in the inbox)."""
        backoff = BACKOFF_FIRST
        replayed = False
        try:
            while not stop.is_set():
                try:
                    if not replayed:
                        await self._replay()
                        replayed = True
                    await self._wait_for_room(stop)
                    entries = await self.inbox.read(READ_BLOCK_MS)
                except REDIS_ERRORS as exc:
                    if not self._failing:
                        log.warning("cannot read the inbox (%s); trying again", describe(exc))
                        self._failing = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                if self._failing:
                    log.info("the inbox is readable again")
                    self._failing = False
                backoff = BACKOFF_FIRST
                for entry in entries:
                    self._submit_entry(entry)
        finally:
            await self.drain()

    async def _replay(self) -> None:
        """The unfinished updates of the replicas that held the lease before (or of this bot's last run)."""
        left = await self.inbox.take_over()
        left = [e for e in left if e.entry_id not in self._in_flight]
        if left:
            log.info("%d update(s) left from before the restart: handling them first", len(left))
        for entry in left:
            if entry.replays >= MAX_REPLAYS:
                log.error("update %s dropped: the bot stopped while handling it %d times", entry.update_id,
                          entry.replays)
                await self._remove([entry.entry_id])
                continue
            self._submit_entry(entry)

    def _submit_entry(self, entry: Entry) -> None:
        if entry.entry_id in self._in_flight:
            return
        try:
            update: Work = MiniAppRequest.from_dict(entry.raw) if entry.request else \
                Update.de_json(entry.raw, self.application.bot)
        except Exception as exc:  # a stored entry this version cannot read: never a crash loop
            log.error("update %s dropped: cannot read it back (%s)", entry.update_id, describe(exc))
            self.application.create_task(self._remove([entry.entry_id]))
            return
        self._in_flight.add(entry.entry_id)
        self.submit(update, entry)

    def submit(self, update: Work, entry: Entry | None = None) -> None:
        """Queue ``update`` behind its chat's earlier ones; it starts as soon as its chat allows."""
        chat = self._chats.setdefault(_chat_key(update), _Chat())
        chat.waiting.append(_Item(update, entry, _kind(update)))
        self._count += 1
        self._start_ready(_chat_key(update))

    def _start_ready(self, chat_id: int) -> None:
        chat = self._chats.get(chat_id)
        if chat is None:
            return
        while chat.waiting and chat.may_start(chat.waiting[0].kind):
            item = chat.waiting.popleft()
            chat.running[item.kind] = chat.running.get(item.kind, 0) + 1
            task = asyncio.create_task(self._handle(chat_id, item), name=_name(item.update))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not chat.waiting and not chat.running:
            del self._chats[chat_id]  # idle: a bot in many chats keeps nothing per chat

    async def _handle(self, chat_id: int, item: _Item) -> None:
        album = self._album_key(item)
        if album is not None:
            self._albums.setdefault(album, _Album()).running += 1
        finished = False
        try:
            # Handler errors go to the Application's error handler; nothing is raised here.
            await self.application.process_update(item.update)
            finished = True
        finally:
            chat = self._chats[chat_id]
            chat.running[item.kind] -= 1
            if not chat.running[item.kind]:
                del chat.running[item.kind]
            self._count -= 1
            self._room.set()
            self._start_ready(chat_id)
            if item.entry is not None and not finished:
                self._in_flight.discard(item.entry.entry_id)  # cut short by a stop: stays in the inbox
        if item.entry is not None:
            done = self._album_done(album, item.entry.entry_id) if album is not None else [item.entry.entry_id]
            if done:
                await self._remove(done)

    @staticmethod
    def _album_key(item: _Item) -> tuple[int, str] | None:
        if not item.kind.startswith("album:"):
            return None
        return _chat_key(item.update), item.kind

    def _album_done(self, album: tuple[int, str], entry_id: str) -> list[str]:
        state = self._albums[album]
        state.running -= 1
        state.done.append(entry_id)
        if state.running:
            return []
        del self._albums[album]
        return state.done

    async def _remove(self, entry_ids: list[str]) -> None:
        try:
            await self.inbox.done(entry_ids)
        except REDIS_ERRORS as exc:
            # Left in the inbox: handled again by the next holder, where the submit's marker stops a second job.
            log.warning("could not remove update(s) %s from the inbox: %s", entry_ids, describe(exc))
        finally:
            self._in_flight.difference_update(entry_ids)

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        while self._count >= IN_FLIGHT_LIMIT and not stop.is_set():
            self._room.clear()
            await self._room.wait()

    async def drain(self) -> None:
        """Give the handlers in flight DRAIN_TIMEOUT to finish; the rest are cancelled (their updates stay in
        the inbox), and updates still waiting for their chat are left to the next holder."""
        for chat in self._chats.values():
            self._count -= len(chat.waiting)
            for item in chat.waiting:
                if item.entry is not None:
                    self._in_flight.discard(item.entry.entry_id)
            chat.waiting.clear()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_TIMEOUT)
        if pending:
            log.warning("%d update(s) still being handled at the stop: handled again at the next start",
                        len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
