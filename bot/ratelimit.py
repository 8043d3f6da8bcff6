"""Telegram's flood limits, kept per chat: one chat's "retry after" never pauses the others.

PTB's ``AIORateLimiter`` stops every request of the bot while any one chat waits out a 429 (issue 11: a
photo in another chat was answered 20 s late). This limiter paces requests overall and per chat, and on a
429 holds back only that chat: the RetryAfter goes to the caller (who decides whether to wait), and later
requests to the same chat wait until the time Telegram named, since sending earlier only earns another 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

# Telegram's broadcast limit: about 30 messages per second over all chats.
OVERALL_RATE = (30, 1.0)
# Edits a person is watching (a button press re-drawing their answer): a share of the overall budget and
# request slots of their own, so a press never waits behind a backlog of answers to other chats (issue 12:
# with ~1,000 answers waiting, an edit took over 60 s). Answers keep the rest of the budget.
INTERACTIVE = frozenset({"editMessageMedia", "editMessageCaption", "editMessageText", "editMessageReplyMarkup"})
INTERACTIVE_RATE = (2, 1.0)
INTERACTIVE_IN_FLIGHT = 4
# Private chats: about one message per second; a burst of 3 lets a photo and its follow-up texts out at once.
PRIVATE_RATE = (3, 3.0)
# Groups and channels: 20 messages per minute.
GROUP_RATE = (20, 60.0)
# Requests to Telegram in flight at once (uploads included); taken only for the HTTP request itself, never
# while a chat waits for its pace or its flood control, so a waiting chat holds no one else's slot.
MAX_IN_FLIGHT = 16
# Per-chat limiters kept; beyond this, idle ones are forgotten (a bot in thousands of chats).
MAX_CHAT_LIMITERS = 1024
# Chats' limiters and flood marks idle this long are forgotten: a limiter is full again after its period
# (GROUP_RATE's minute at most), so forgetting it changes nothing; without this, every chat ever answered
# would keep one (issue 11: the maps were pruned only when their chat came back).
IDLE_FORGET = 2 * GROUP_RATE[1]
# Decoration (chat actions): never waits for a chat's pace; sent only when the chat and the bot have room
# to spare, and counted like a message, since Telegram counts it against the chat's budget too.
DECORATION = frozenset({"sendChatAction"})
# A chat (or the bot overall) is "near its limit" when less than this share of its budget is left: what is
# left goes to answers, not to chat actions and status messages (issue 11: a busy group's actions used up
# its 20 messages a minute).
NEAR_LIMIT_SHARE = 0.25

Callback = Callable[..., Coroutine[Any, Any, Any]]


def _chat_key(chat_id: object) -> int | str:
    with contextlib.suppress(TypeError, ValueError):
        return int(chat_id)  # type: ignore[call-overload]
    return str(chat_id)  # a channel's @username


def _is_group(key: int | str) -> bool:
    return isinstance(key, str) or key < 0


def _has_room(limiter: AsyncLimiter) -> bool:
    """More than NEAR_LIMIT_SHARE of the limiter's budget left, and nothing waiting for it."""
    return limiter.has_capacity(max(1.0, limiter.max_rate * NEAR_LIMIT_SHARE))


def _weight(endpoint: str, data: dict[str, Any]) -> int:
    """Messages a call posts: a media group counts each of its items, as Telegram does."""
    media = data.get("media") if endpoint == "sendMediaGroup" else None
    return max(1, len(media)) if isinstance(media, list) else 1


class ChatRateLimiter(BaseRateLimiter[int]):
    """Overall and per-chat pacing; a 429 holds back only its own chat and is raised to the caller."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        # The overall budget, split: answers and the rest pace on one part, presses' edits on the other.
        self._overall = AsyncLimiter(OVERALL_RATE[0] - INTERACTIVE_RATE[0], OVERALL_RATE[1])
        self._interactive = AsyncLimiter(*INTERACTIVE_RATE)
        self._interactive_slots = asyncio.Semaphore(INTERACTIVE_IN_FLIGHT)
        self._chats: dict[int | str, AsyncLimiter] = {}
        self._flood_until: dict[int | str, float] = {}
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        # The event loop's clock unless a test gives its own; only the forgetting of idle chats reads it.
        self._clock = clock
        self._last_used: dict[int | str, float] = {}
        self._swept_at = float("-inf")

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _forget_idle(self) -> None:
        """Once per IDLE_FORGET, drop the limiters and ended flood marks of chats idle for IDLE_FORGET."""
        now = self._now()
        if now - self._swept_at < IDLE_FORGET:
            return
        self._swept_at = now
        loop_now = asyncio.get_running_loop().time()
        for key in [k for k, used in self._last_used.items() if now - used >= IDLE_FORGET]:
            if self._flood_until.get(key, 0.0) > loop_now:
                continue  # Telegram's flood control outlasts the idleness: still honoured when the chat returns
            del self._last_used[key]
            self._chats.pop(key, None)
            self._flood_until.pop(key, None)

    def tracked(self) -> int:
        """Chats this limiter holds any state for (bounded: those active within IDLE_FORGET, twice)."""
        return len(self._chats.keys() | self._flood_until.keys() | self._last_used.keys())

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    def _limiter(self, key: int | str) -> AsyncLimiter:
        if key not in self._chats and len(self._chats) >= MAX_CHAT_LIMITERS:
            for idle in [k for k, lim in self._chats.items() if lim.has_capacity(lim.max_rate)]:
                del self._chats[idle]
        if key not in self._chats:
            self._chats[key] = AsyncLimiter(*(GROUP_RATE if _is_group(key) else PRIVATE_RATE))
        return self._chats[key]

    async def _flood_over(self, key: int | str) -> None:
        """Wait until Telegram's flood control of this chat (if any) has ended."""
        loop = asyncio.get_running_loop()
        while (left := self._flood_until.get(key, 0.0) - loop.time()) > 0:
            await asyncio.sleep(left)
        self._flood_until.pop(key, None)

    def flooded(self, chat_id: int | str) -> bool:
        """True while a chat waits out Telegram's flood control."""
        return self._flood_until.get(_chat_key(chat_id), 0.0) > asyncio.get_running_loop().time()

    def near_limit(self, chat_id: int | str) -> bool:
        """True when a message to ``chat_id`` now would eat into what its answers need: the chat waits out a
        429, has sends waiting for its pace, or less than NEAR_LIMIT_SHARE of its budget (or of the bot's
        overall budget) is left. Decoration is skipped then."""
        key = _chat_key(chat_id)
        if self.flooded(chat_id) or self._overall._waiters or not _has_room(self._overall):
            return True
        limiter = self._chats.get(key)
        return limiter is not None and (bool(limiter._waiters) or not _has_room(limiter))

    async def process_request(self, callback: Callback, args: Any, kwargs: dict[str, Any], endpoint: str,
                              data: dict[str, Any], rate_limit_args: int | None) -> Any:
        chat_id = data.get("chat_id")
        if chat_id is None:
            return await callback(*args, **kwargs)  # getMe, getFile, ...: no chat, no flood limit
        key = _chat_key(chat_id)
        self._forget_idle()
        self._last_used[key] = self._now()
        if endpoint in DECORATION and (self.near_limit(chat_id) or self._in_flight.locked()):
            log.debug("%s in chat %s skipped: near its limit, or every request slot busy", endpoint, key)
            return True  # what Telegram answers to a chat action; nobody waits for it
        # Decoration that got here has room everywhere and nothing below suspends before it holds its
        # slot and its place in the pace: it never waits, and never queues ahead of an answer.
        await self._flood_over(key)
        if endpoint in INTERACTIVE:
            async with self._interactive_slots:
                await self._interactive_pace().acquire()
                return await self._call(key, callback, args, kwargs)
        if endpoint.startswith("send"):
            limiter = self._limiter(key)
            await limiter.acquire(min(_weight(endpoint, data), limiter.max_rate))
        async with self._in_flight:
            # Paced overall once it has a slot, right before it goes: paced earlier, requests that queued for
            # a slot behind slow uploads would reach Telegram in a burst above its limit (measured: 429s).
            await self._overall.acquire()
            return await self._call(key, callback, args, kwargs)

    def _interactive_pace(self) -> AsyncLimiter:
        """The reserve, or the answers' part while it is idle (an album's ten edits go out at once)."""
        if self._interactive.has_capacity() or self._overall._waiters or not self._overall.has_capacity():
            return self._interactive
        return self._overall

    async def _call(self, key: int | str, callback: Callback, args: Any, kwargs: dict[str, Any]) -> Any:
        """The request itself; a 429 holds back its chat until the time Telegram named."""
        try:
            return await callback(*args, **kwargs)
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, dtm.timedelta) else float(wait)
            self._flood_until[key] = asyncio.get_running_loop().time() + seconds
            log.debug("flood control in chat %s for %.0f s", key, seconds)
            raise
