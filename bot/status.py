"""The "queued, position N" message shown while a person waits, and its removal once the answer is out.

The status message's id lives in Redis (``jobs.keys.status``) so a restarted bot still removes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from telegram import Bot, Message
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot import replies
from bot.chat_settings import REDIS_ERRORS, ChatStore
from bot.i18n import Catalog
from bot.settings import STATUS_DELAY_MS
from bot.telegram_io import describe, reply_to
from jobs.client import DetectionClient
from jobs.exceptions import JobsError

log = logging.getLogger(__name__)

# A status message only for a photo still waiting after this (the reason is with bot.settings.STATUS_DELAY_MS).
STATUS_DELAY = STATUS_DELAY_MS / 1000
# Answered units remembered to tell a late status task not to post; far more than are ever in flight.
ANSWERED_MEMORY = 10_000
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
                 near_limit: Callable[[int], bool] = _never_near) -> None:
        """``near_limit(chat_id)``: the chat (or the bot) has little of Telegram's budget left; decoration
        (chat actions, status messages) is skipped then, so what is left goes to answers."""
        self.bot = bot
        self.client = client
        self.chats = chats
        self.delay = delay
        self.near_limit = near_limit
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._acted: OrderedDict[int, float] = OrderedDict()
        # Chats showing a status message, and the unit it is for (both ways): one per chat at a time.
        self._showing: dict[int, str] = {}
        self._showing_units: dict[str, int] = {}

    def _action_due(self, chat_id: int) -> bool:
        """True (and remembered) when the chat got no chat action within CHAT_ACTION_SECONDS."""
        now = time.monotonic()
        last = self._acted.get(chat_id)
        if last is not None and now - last < CHAT_ACTION_SECONDS:
            return False
        self._acted.pop(chat_id, None)
        self._acted[chat_id] = now
        while len(self._acted) > ACTION_MEMORY:
            self._acted.popitem(last=False)
        return True

    async def typing(self, chat_id: int, thread: int | None) -> None:
        """The ``upload_photo`` action: a hint that an answer is coming, at most one per chat at a time, and
        none for a chat near its limit; failure is harmless."""
        if self.near_limit(chat_id) or not self._action_due(chat_id):
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
        await asyncio.sleep(self.delay)
        if self.answered(unit):
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
        if self.answered(unit):
            # The answer went out while the status message was on its way: remove it now.
            await self.clear(unit, fallback=(chat_id, sent.message_id))

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
        self._remember(unit)
        try:
            found = await asyncio.to_thread(self.chats.pop_status, unit)
        except REDIS_ERRORS as exc:
            log.info("could not look up status message of %s: %s", unit, describe(exc))
            found = None
        target = found or fallback
        if target is None:
            return
        try:
            await self.bot.delete_message(target[0], target[1])
        except TelegramError as exc:
            log.info("could not delete status message in chat %s: %s", target[0], describe(exc))
