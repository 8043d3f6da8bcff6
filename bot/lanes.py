"""Per-chat delivery lanes: the answers waiting for one chat go out in order, one at a time, in a task of
that chat's own, started when its first answer comes and ended when its queue is empty.

Chats never wait for each other: a chat sleeping on Telegram's "retry after" holds only its own lane. There
is no pool of delivery slots a waiting chat could occupy; the bound on requests to Telegram lives in
:mod:`bot.ratelimit` and is taken for each HTTP request alone. How many answers are read from Redis but not
yet delivered is bounded by the reader (:meth:`Lanes.room`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from bot.telegram_io import describe

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lanes(Generic[T]):
    """One queue and one task per chat with answers waiting; ``run`` delivers one item."""

    def __init__(self, run: Callable[[T], Awaitable[None]]) -> None:
        self._run = run
        self._queues: dict[int, deque[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._size = 0
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        """Items waiting or being delivered, over all chats."""
        return self._size

    def add(self, chat_id: int, item: T) -> bool:
        """Queue ``item`` in its chat's lane; False once closed (a stopping process sends nothing new: a send
        cut off by its own shutdown could reach Telegram unseen, and the next holder would send it again)."""
        if self._closed:
            return False
        self._size += 1
        queue = self._queues.get(chat_id)
        if queue is not None:
            queue.append(item)
            return True
        queue = self._queues[chat_id] = deque([item])
        task = asyncio.ensure_future(self._lane(chat_id, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _lane(self, chat_id: int, queue: deque[T]) -> None:
        try:
            while queue:
                item = queue.popleft()
                try:
                    await self._run(item)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Left unacknowledged: the next start tries it again; one line, no traceback.
                    log.error("delivering an answer in chat %s failed: %s", chat_id, describe(exc))
                finally:
                    self._size -= 1
                    self._changed.set()
        finally:
            if self._queues.get(chat_id) is queue:
                del self._queues[chat_id]

    def take(self, chat_id: int) -> list[T]:
        """The chat's items not started yet, removed from its lane (e.g. the chat blocked the bot)."""
        queue = self._queues.get(chat_id)
        if not queue:
            return []
        items = list(queue)
        queue.clear()
        self._size -= len(items)
        self._changed.set()
        return items

    async def room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` items are waiting or being delivered."""
        while self._size >= limit:
            self._changed.clear()
            await self._changed.wait()

    async def close(self, timeout: float) -> None:
        """Forget what has not started (unacknowledged, the next start sends it) and give the items being
        delivered ``timeout`` seconds to finish; nothing is added after it."""
        self._closed = True
        for queue in self._queues.values():
            self._size -= len(queue)
            queue.clear()
        self._changed.set()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
