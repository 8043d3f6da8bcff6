"""detbot's own long polling: an update is in Redis before Telegram is told that it arrived.

PTB's Updater confirms an update (the next getUpdates offset) while its handler may still be downloading
and queueing the photo, so a bot killed in that window lost the photo. Here each fetched batch is written
to the bot's inbox in Redis (:mod:`bot.inbox`, with the next offset, in one script) and only then is the
offset sent to Telegram; the dispatcher (:mod:`bot.dispatch`) hands the updates to the handlers and removes
each once handled. A handler run twice (killed after the submit, before the removal) queues nothing twice:
the submit's "once" marker (``submit_many(once=)``).

Only the replica holding the lease polls (:mod:`bot.lease`); the inbox refuses a batch from a poller that
lost it meanwhile. With Redis away the updates are handled without the inbox (they reply "unavailable" to
what needs Redis, as they would have anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError

from bot.dispatch import IN_FLIGHT_LIMIT, Dispatcher
from bot.flow import Flow
from bot.inbox import Inbox
from bot.lease import REDIS_ERRORS
from bot.telegram_io import describe

log = logging.getLogger(__name__)

# Telegram holds a long-polling getUpdates open this long when there is nothing new.
POLL_TIMEOUT = 10
# Updates asked for per getUpdates: Telegram's maximum.
POLL_LIMIT = 100
# After a failed getUpdates (network, Telegram 5xx, 409 another poller): wait, doubling up to the maximum.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# While the inbox is full the poller looks again this often (the dispatcher empties it).
FULL_PAUSE = 1.0
MODE = "polling"


class LeaseLost(Exception):
    """The inbox refused a batch: another replica holds the lease now."""


class Poller:
    """Fetches updates into the inbox (or, with Redis away, straight to the dispatcher)."""

    def __init__(self, bot: Bot, inbox: Inbox, dispatcher: Dispatcher, flow: Flow, allowed_updates: Sequence[str],
                 holder: str, poll_timeout: int = POLL_TIMEOUT) -> None:
        self.bot = bot
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.flow = flow
        self.allowed_updates = list(allowed_updates)
        self.holder = holder
        self.poll_timeout = poll_timeout
        self._offset: int | None = None
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; returns early (raising LeaseLost) if another replica took the lease."""
        with contextlib.suppress(*REDIS_ERRORS):
            self._offset = await self.inbox.offset()
        backoff = BACKOFF_FIRST
        while not stop.is_set():
            if await self._full():
                await _pause(stop, FULL_PAUSE)
                continue
            updates = await self._fetch(stop)
            if updates is None:
                await _pause(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            await self._record(MODE)
            if updates:
                await self._accept(updates)

    async def _full(self) -> bool:
        if len(self.dispatcher) >= IN_FLIGHT_LIMIT:
            return True
        try:
            return await self.inbox.full()
        except REDIS_ERRORS:
            return False

    async def _fetch(self, stop: asyncio.Event) -> tuple[Update, ...] | None:
        """One getUpdates, abandoned if the bot is stopped meanwhile; None after a failure worth a pause."""
        call = asyncio.ensure_future(self.bot.get_updates(
            offset=self._offset, limit=POLL_LIMIT, timeout=self.poll_timeout, allowed_updates=self.allowed_updates,
        ))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({call, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, TelegramError):
                    await call
        if call.cancelled():
            return ()
        try:
            return call.result()
        except InvalidToken:
            raise  # a setting to fix: the caller stops the bot
        except RetryAfter as exc:
            log.warning("Telegram asks to wait %s before polling again", exc.retry_after)
            await _pause(stop, float(exc.retry_after if isinstance(exc.retry_after, int | float)
                                     else exc.retry_after.total_seconds()))
            return ()
        except Conflict as exc:
            log.warning("getUpdates refused: another process polls with this token, or a webhook is set (%s)",
                        describe(exc))
            await self._record(MODE, f"getUpdates refused: {describe(exc)}")
            return None
        except TelegramError as exc:
            log.warning("getUpdates failed: %s", describe(exc))
            await self._record(MODE, f"getUpdates failed: {describe(exc)}")
            return None

    async def _record(self, mode: str, error: str = "") -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await (self.flow.failed(mode, error) if error else self.flow.ok(mode))

    async def _accept(self, updates: tuple[Update, ...]) -> None:
        """Into the inbox, then the offset moves on; with Redis away, to the dispatcher without the inbox."""
        offset = updates[-1].update_id + 1
        batch = [(u.update_id, json.dumps(u.to_dict())) for u in updates]
        try:
            added = await self.inbox.add(batch, offset, fence=self.holder)
        except REDIS_ERRORS as exc:
            if not self._failing:
                log.warning("cannot keep updates in Redis (%s): handling them without a crash guard", describe(exc))
                self._failing = True
            for update in updates:
                self.dispatcher.submit(update)
        else:
            if added < 0:
                raise LeaseLost("another replica holds the lease: this batch is theirs to fetch again")
            if self._failing:
                log.info("updates are kept in Redis again")
                self._failing = False
        self._offset = offset


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
