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
from dataclasses import dataclass

from telegram import Bot
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, TelegramError

from bot import replies
from bot.chat_settings import REDIS_ERRORS, ChatStore
from bot.i18n import Catalog
from bot.telegram_io import describe, reply_to
from jobs import keys
from jobs.client import DetectionClient
from jobs.exceptions import JobsError

log = logging.getLogger(__name__)

# Most answers arrive within this; a status message only for those that take longer (issue 4: ~2 s).
STATUS_DELAY = 2.0
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


class StatusBoard:
    """Chat actions and status messages for the answers in flight ("units": a job or an album)."""

    def __init__(self, bot: Bot, client: DetectionClient, chats: ChatStore, delay: float = STATUS_DELAY,
                 check_interval: float = RETRY_INTERVAL) -> None:
        self.bot = bot
        self.client = client
        self.chats = chats
        self.delay = delay
        self.check_interval = check_interval
        self._answered: OrderedDict[str, None] = OrderedDict()
        # Status messages up now, checked against Redis losing their jobs (bounded like _answered).
        self._shown: OrderedDict[str, _Shown] = OrderedDict()

    async def typing(self, chat_id: int, thread: int | None) -> None:
        """The ``upload_photo`` action: a hint that an answer is coming; failure is harmless."""
        try:
            await self.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO, message_thread_id=thread)
        except TelegramError as exc:
            log.info("chat action in chat %s failed: %s", chat_id, describe(exc))

    def answered(self, unit: str) -> bool:
        return unit in self._answered

    async def show_later(self, unit: str, job_id: str, chat_id: int, thread: int | None, reply: int,
                         tr: Catalog) -> None:
        """After STATUS_DELAY, if no answer went out yet: one status message with the queue position."""
        await asyncio.sleep(self.delay)
        if self.answered(unit):
            return
        try:
            position = await asyncio.to_thread(self.client.position, job_id)
        except JobsError:
            position = None
        try:
            sent = await self.bot.send_message(
                chat_id, replies.queued(tr, position), reply_parameters=reply_to(reply), message_thread_id=thread,
                disable_notification=True,
            )
        except TelegramError as exc:
            log.info("status message in chat %s failed: %s", chat_id, describe(exc))
            return
        try:
            await asyncio.to_thread(self.chats.save_status, unit, chat_id, sent.message_id)
        except REDIS_ERRORS as exc:
            log.info("could not remember status message in chat %s: %s", chat_id, describe(exc))
        self._shown[unit] = _Shown(chat_id, sent.message_id, job_id, tr)
        while len(self._shown) > ANSWERED_MEMORY:
            self._shown.popitem(last=False)
        if self.answered(unit):
            # The answer went out while the status message was on its way: remove it now.
            await self.clear(unit, fallback=(chat_id, sent.message_id))

    def _remember(self, unit: str) -> None:
        self._shown.pop(unit, None)
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
        self._remember(unit)
        try:
            found = await asyncio.to_thread(self.chats.pop_status, unit)
        except REDIS_ERRORS as exc:
            log.info("could not look up status message of %s: %s", unit, describe(exc))
            found = None
        target = found or fallback
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
        def save() -> None:
            pipe = self.chats.redis.pipeline(transaction=True)
            pipe.zadd(keys.status_retry(), {f"{chat_id}:{message_id}:{attempts}": time.time() + self.check_interval})
            pipe.zremrangebyrank(keys.status_retry(), 0, -RETRY_LIMIT - 1)  # oldest due first: bounded
            pipe.execute()

        try:
            await asyncio.to_thread(save)
        except REDIS_ERRORS as exc:
            log.warning("status message %s in chat %s may stay: cannot keep it for a retry (%s)", message_id,
                        chat_id, describe(exc))

    async def retry_deletions(self, due_only: bool = True) -> int:
        """One pass over the deletions to try again (all of them at a start: ``due_only=False``)."""
        def take() -> list[str]:
            upto = time.time() if due_only else "+inf"
            found = self.chats.redis.zrangebyscore(keys.status_retry(), "-inf", upto, start=0, num=RETRY_BATCH)
            if found:
                self.chats.redis.zrem(keys.status_retry(), *found)
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
