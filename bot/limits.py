"""Requests-per-minute limits per user and per chat, kept in the bot's memory.

In memory on purpose: one bot process polls Telegram, and a limit that needs Redis would stop working
exactly when Redis is down. A restart forgets the counts, which only ever lets a person in earlier.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The limits are "per minute", as people read them.
WINDOW_SECONDS = 60.0
# Chats whose last "slow down" is remembered; an old one forgotten only lets a chat get a second notice.
NOTICE_MEMORY = 10_000


@dataclass(frozen=True)
class Refusal:
    """Which limit refused a request, its value, and when the next photo will be accepted."""

    scope: str
    limit: int
    retry_in: float


class RateLimiter:
    """A sliding-window log: at most ``limit`` hits per key within ``window`` seconds; 0 means no limit."""

    def __init__(self, limit: int, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._hits: dict[int, deque[float]] = {}
        self._swept_at = clock()

    def _prune(self, key: int) -> deque[float]:
        hits = self._hits.get(key, deque())
        cutoff = self.clock() - self.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if not hits:
            self._hits.pop(key, None)
        return hits

    def room(self, key: int) -> int:
        """How many more hits ``key`` may make now."""
        return self.limit - len(self._prune(key))

    def retry_in(self, key: int) -> float:
        hits = self._prune(key)
        return max(0.0, hits[0] + self.window - self.clock()) if hits else 0.0

    def hit(self, key: int, count: int = 1) -> None:
        now = self.clock()
        self._sweep(now)
        self._hits.setdefault(key, deque()).extend([now] * count)

    def _sweep(self, now: float) -> None:
        """Once a window, forget every key whose last hit is a window old: people who never come back would
        otherwise stay in the map for ever (issue 11). Amortised, it costs one pass per window."""
        if now - self._swept_at < self.window:
            return
        self._swept_at = now
        cutoff = now - self.window
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= cutoff]:
            del self._hits[key]

    def __len__(self) -> int:
        """Keys remembered now (bounded: those with a hit within the last two windows)."""
        return len(self._hits)


class Notices:
    """At most one notice per key per window: a flood of refused photos gets one "slow down", not one each."""

    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic,
                 memory: int = NOTICE_MEMORY) -> None:
        self.window = window
        self.clock = clock
        self.memory = memory
        self._said: dict[int, float] = {}

    def due(self, key: int) -> bool:
        """True (and remembered) when ``key`` got no notice within the window; False otherwise."""
        now = self.clock()
        last = self._said.get(key)
        if last is not None and now - last < self.window:
            return False
        self._said.pop(key, None)
        self._said[key] = now  # re-inserted: the dict stays ordered oldest first
        while len(self._said) > self.memory:
            del self._said[next(iter(self._said))]
        return True


class Limits:
    """The per-user and per-chat limiters together; photos count against both only if both allow them."""

    def __init__(self, per_user: int, per_chat: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.user = RateLimiter(per_user, clock=clock)
        self.chat = RateLimiter(per_chat, clock=clock)
        # One "slow down" per chat per window; the refused photos are still logged and counted.
        self.notices = Notices(clock=clock)
        # One "this chat has many photos waiting" per chat per window, the same way.
        self.full = Notices(clock=clock)

    def take(self, user_id: int, chat_id: int, count: int = 1) -> Refusal | None:
        """Count ``count`` photos (an album counts each), or refuse them all without counting any."""
        refused = take_all([(self.user, user_id), (self.chat, chat_id)], count)
        if refused is None:
            return None
        limiter, key = refused
        return Refusal("user" if limiter is self.user else "chat", limiter.limit, limiter.retry_in(key))


def take_all(checks: Sequence[tuple[RateLimiter, int]], count: int = 1) -> tuple[RateLimiter, int] | None:
    """Count ``count`` hits of each (limiter, key), or none of them: the first that has no room is returned."""
    for limiter, key in checks:
        if limiter.limit > 0 and limiter.room(key) < count:
            return limiter, key
    for limiter, key in checks:
        if limiter.limit > 0:
            limiter.hit(key, count)
    return None
