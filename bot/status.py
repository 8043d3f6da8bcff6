"""The "queued, position N" message shown while a person waits, and its removal once the answer is out.

The status message's id lives in Redis (``jobs.keys.status``) so a restarted bot still removes it. A
deletion Telegram did not carry out (network, 5xx, flood control) is kept in Redis too
(``jobs.keys.status_retry``) and tried again every minute and at the next start; a message Telegram no
longer lets the bot delete (older than 48 h) is edited instead, so a "queued" message never stays for ever.
The one gap: a bot killed between sending a status message and writing its id leaves that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from telegram import Bot, Message
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, TelegramError

from bot import replies
from bot.chat_settings import REDIS_ERRORS, ChatStore
from bot.i18n import Catalog
from bot.limits import Notices
from bot.settings import STATUS_DELAY_MS
from bot.telegram_io import describe, reply_to
from jobs import keys
from jobs.client import DetectionClient
from jobs.exceptions import JobsError

log = logging.getLogger(__name__)

# A status message only for a photo still waiting after this (the reason is with bot.settings.STATUS_DELAY_MS).
STATUS_DELAY = STATUS_DELAY_MS / 1000
# Answered units remembered to tell a late status task not to post; far more than are ever in flight.
ANSWERED_MEMORY = 10_000
# A status message Telegram did not delete is tried again this often (seconds)...
RETRY_INTERVAL = 60.0
# ...this many times (about an hour: longer than Telegram's outages seen), then edited to DONE_MARK instead.
DELETE_ATTEMPTS = 60
# Status messages waiting for a retried deletion at most (a bound on the Redis set); past it, those due
# soonest are given up: only a Telegram outage of hours in a very busy bot gets there.
RETRY_LIMIT = 10_000
# Deletions retried per pass: a long outage's backlog drains over several passes, not in one burst.
RETRY_BATCH = 100
# What a status message that can no longer be deleted is edited to: no words, so no language to pick.
DONE_MARK = "✅"


@dataclass(frozen=True)
class _Shown:
    """A status message this process posted, and the job whose answer it waits for."""

    chat_id: int
    message_id: int
    job_id: str
    tr: Catalog


# Telegram shows a chat action for up to 5 s (or until the bot's next message): one per chat per this long,
# never one per photo.
CHAT_ACTION_SECONDS = 5.0
# Chats whose last chat action is remembered; beyond this the oldest are forgotten (only costs an action).
ACTION_MEMORY = 10_000


def _never_near(chat_id: int) -> bool:
    return False


class StatusBoard:
    """Chat actions and status messages for the answers in flight ("units": a job or an album)."""

    def __init__(self, bot: Bot, client: DetectionClient, chats: ChatStore, delay: float = STATUS_DELAY,
                 near_limit: Callable[[int], bool] = _never_near, check_interval: float = RETRY_INTERVAL) -> None:
        """``near_limit(chat_id)``: the chat (or the bot) has little of Telegram's budget left; decoration
        (chat actions, status messages) is skipped then, so what is left goes to answers."""
        self.bot = bot
        self.client = client
        self.chats = chats
        self.delay = delay
        self.check_interval = check_interval
        self.near_limit = near_limit
        self._answered: OrderedDict[str, None] = OrderedDict()
        # Chats given a chat action within CHAT_ACTION_SECONDS: one per chat at a time.
        self._actions = Notices(CHAT_ACTION_SECONDS, memory=ACTION_MEMORY)
        # Chats showing a status message, and the unit it is for (both ways): one per chat at a time.
        self._showing: dict[int, str] = {}
        self._showing_units: dict[str, int] = {}
        # Status messages up now, checked against Redis losing their jobs (bounded like _answered).
        self._shown: OrderedDict[str, _Shown] = OrderedDict()
        # Set when the bot stops: the status messages still to come are not sent (see close).
        self._closing = asyncio.Event()

    def close(self) -> None:
        """The bot is stopping: status messages not yet due are dropped, so the stop does not wait for them
        (the Application awaits every task it started); the answers come after the next start."""
        self._closing.set()

    async def typing(self, chat_id: int, thread: int | None) -> None:
        """The ``upload_photo`` action: a hint that an answer is coming, at most one per chat at a time, and
        none for a chat near its limit; failure is harmless."""
        if self.near_limit(chat_id) or not self._actions.due(chat_id):
            return
        try:
            await self.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO, message_thread_id=thread)
        except TelegramError as exc:
            log.info("chat action in chat %s failed: %s", chat_id, describe(exc))

    def answered(self, unit: str) -> bool:
        return unit in self._answered

    async def show_later(self, unit: str, job_id: str, chat_id: int, thread: int | None, reply: int,
                         tr: Catalog) -> None:
        """After STATUS_DELAY, if no answer went out yet and the photo really waits for a worker (not being
        detected already): one status message with its position. None for a chat near its limit, and none
        when the position cannot be read (Redis away): a status message is decoration."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.delay)
        if self.answered(unit) or self._closing.is_set():
            return
        if self.near_limit(chat_id) or chat_id in self._showing:
            log.debug("no status message for %s in chat %s: %s", unit, chat_id,
                      "another one is shown" if chat_id in self._showing else "near the limit")
            return
        # One status message per chat at a time: a group's backlog of forty photos gets one, not forty.
        self._showing[chat_id] = unit
        self._showing_units[unit] = chat_id
        sent = await self._post_status(unit, job_id, chat_id, thread, reply, tr)
        if sent is None:
            self._unshow(unit)
            return
        try:
            await asyncio.to_thread(self.chats.save_status, unit, chat_id, sent.message_id)
        except REDIS_ERRORS as exc:
            log.info("could not remember status message in chat %s: %s", chat_id, describe(exc))
        self._shown[unit] = _Shown(chat_id, sent.message_id, job_id, tr)
        while len(self._shown) > ANSWERED_MEMORY:
            self._shown.popitem(last=False)
        if self.answered(unit) or await self._finished(job_id):
            # The answer went out while the status message was on its way (from this replica, or from
            # another one, which found no status message to remove): remove it now.
            await self.clear(unit, fallback=(chat_id, sent.message_id))

    async def _finished(self, job_id: str) -> bool:
        try:
            return await asyncio.to_thread(self.client.finished, job_id)
        except JobsError:
            return False

    async def _post_status(self, unit: str, job_id: str, chat_id: int, thread: int | None, reply: int,
                           tr: Catalog) -> Message | None:
        """The status message, if the photo still waits for a worker; None when none was sent."""
        try:
            position = await asyncio.to_thread(self.client.position, job_id)
        except JobsError:
            return None
        if position is None or self.answered(unit):
            log.debug("no status message for %s in chat %s: a worker has it", unit, chat_id)
            return None  # a worker has it: the answer is moments away
        try:
            return await self.bot.send_message(
                chat_id, replies.queued(tr, position), reply_parameters=reply_to(reply), message_thread_id=thread,
                disable_notification=True,
            )
        except TelegramError as exc:
            log.info("status message in chat %s failed: %s", chat_id, describe(exc))
            return None

    def _unshow(self, unit: str) -> None:
        """The unit shows no status message (any more): its chat may get one for another unit."""
        chat_id = self._showing_units.pop(unit, None)
        if chat_id is not None and self._showing.get(chat_id) == unit:
            del self._showing[chat_id]

    def _remember(self, unit: str) -> None:
        self._shown.pop(unit, None)
        self._unshow(unit)
        self._answered[unit] = None
        while len(self._answered) > ANSWERED_MEMORY:
            self._answered.popitem(last=False)

    async def forget(self, unit: str) -> None:
        """The chat blocked or removed the bot: drop the unit's status message id; nothing can be deleted."""
        self._remember(unit)
        try:
            await asyncio.to_thread(self.chats.pop_status, unit)
        except REDIS_ERRORS as exc:
            log.info("could not forget status message of %s: %s", unit, describe(exc))

    async def clear(self, unit: str, fallback: tuple[int, int] | None = None) -> None:
        """The answer is out: remember that, and delete the unit's status message if there is one."""
        # This process's own memory of it too: Redis may have missed the id (down, or killed between the
        # status message and its write) while this bot still knows the message it posted.
        shown = self._shown.get(unit)
        self._remember(unit)
        try:
            found = await asyncio.to_thread(self.chats.pop_status, unit)
        except REDIS_ERRORS as exc:
            log.info("could not look up status message of %s: %s", unit, describe(exc))
            found = None
        mine = (shown.chat_id, shown.message_id) if shown is not None else None
        target = found or fallback or mine
        if target is not None:
            await self._delete(target[0], target[1], 0)

    async def _delete(self, chat_id: int, message_id: int, attempts: int) -> None:
        """Delete a status message; what Telegram did not carry out is tried again later (kept in Redis)."""
        try:
            await self.bot.delete_message(chat_id, message_id)
            return
        except Forbidden as exc:
            log.info("status message in chat %s left: the chat is gone (%s)", chat_id, describe(exc))
            return
        except BadRequest as exc:
            if "not found" in str(exc).lower():
                return  # deleted already (by a person, or an earlier try that did arrive)
            log.info("cannot delete status message in chat %s (%s); editing it", chat_id, describe(exc))
        except TelegramError as exc:
            if attempts + 1 < DELETE_ATTEMPTS:
                log.info("could not delete status message in chat %s (%s); trying again later", chat_id,
                         describe(exc))
                await self._retry_later(chat_id, message_id, attempts + 1)
                return
            log.warning("could not delete status message in chat %s after %d tries (%s); editing it", chat_id,
                        DELETE_ATTEMPTS, describe(exc))
        await self._mark_done(chat_id, message_id)

    async def _mark_done(self, chat_id: int, message_id: int) -> None:
        try:
            await self.bot.edit_message_text(DONE_MARK, chat_id=chat_id, message_id=message_id)
        except TelegramError as exc:
            log.warning("status message %s in chat %s left as it is: %s", message_id, chat_id, describe(exc))

    async def _retry_later(self, chat_id: int, message_id: int, attempts: int) -> None:
        retry = keys.status_retry(self.chats.bot_id)

        def save() -> None:
            pipe = self.chats.redis.pipeline(transaction=True)
            pipe.zadd(retry, {f"{chat_id}:{message_id}:{attempts}": time.time() + self.check_interval})
            pipe.zremrangebyrank(retry, 0, -RETRY_LIMIT - 1)  # oldest due first: bounded
            pipe.execute()

        try:
            await asyncio.to_thread(save)
        except REDIS_ERRORS as exc:
            log.warning("status message %s in chat %s may stay: cannot keep it for a retry (%s)", message_id,
                        chat_id, describe(exc))

    async def retry_deletions(self, due_only: bool = True) -> int:
        """One pass over the deletions to try again (all of them at a start: ``due_only=False``)."""
        retry = keys.status_retry(self.chats.bot_id)

        def take() -> list[str]:
            upto = time.time() if due_only else "+inf"
            found = self.chats.redis.zrangebyscore(retry, "-inf", upto, start=0, num=RETRY_BATCH)
            if found:
                self.chats.redis.zrem(retry, *found)
            return [m.decode() if isinstance(m, bytes) else str(m) for m in found]

        try:
            entries = await asyncio.to_thread(take)
        except REDIS_ERRORS as exc:
            log.info("status deletions not retried now: %s", describe(exc))
            return 0
        for entry in entries:
            chat_id, message_id, attempts = (int(part) for part in entry.split(":"))
            await self._delete(chat_id, message_id, attempts)
        return len(entries)

    async def check_lost(self) -> int:
        """Status messages whose job Redis no longer has (it lost its data: no answer will ever come) say so
        and ask for the photo again. Returns how many."""
        shown = list(self._shown.items())
        try:
            gone = set(await asyncio.to_thread(self.client.missing, [s.job_id for _, s in shown]))
        except JobsError as exc:
            log.info("queued photos not checked now: %s", describe(exc))
            return 0
        lost = [(unit, s) for unit, s in shown if s.job_id in gone and unit in self._shown]
        for unit, s in lost:
            self._remember(unit)
            log.warning("job %s of chat %s is gone from Redis (it lost its data?): asking for the photo again",
                        s.job_id, s.chat_id)
            with contextlib.suppress(*REDIS_ERRORS):  # gone with the rest of Redis' data, most likely
                await asyncio.to_thread(self.chats.pop_status, unit)
            try:
                await self.bot.edit_message_text(s.tr.gettext(replies.LOST), chat_id=s.chat_id,
                                                 message_id=s.message_id)
            except TelegramError as exc:
                log.warning("could not tell chat %s its photo was lost: %s", s.chat_id, describe(exc))
        return len(lost)

    async def keep_retrying(self) -> None:
        """Until cancelled, every ``check_interval``: status deletions to retry (at once, all that the last
        run left) and status messages whose job Redis lost."""
        due_only = False
        while True:
            try:
                await self.retry_deletions(due_only)
                await self.check_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad pass never ends the loop
                log.error("checking status messages failed: %s", describe(exc))
            due_only = True
            await asyncio.sleep(self.check_interval)
