"""Per-chat settings (default threshold, auto mode) and the bot's own bookkeeping keys, in Redis.

Sync redis-py: callers on the event loop run these through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from detector.params import DetectParams
from jobs.defaults import KEY_PREFIX, RESULT_TTL
from jobs.exceptions import QueueUnavailableError

# A message id is remembered as handled this long: covers Telegram re-sending updates after a bot crash.
HANDLED_TTL = 24 * 60 * 60
# A status message can only be waiting as long as its result can.
STATUS_TTL = RESULT_TTL

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def chat_key(chat_id: int) -> str:
    return f"{KEY_PREFIX}:chat:{chat_id}"


def handled_key(chat_id: int, message_id: int) -> str:
    return f"{KEY_PREFIX}:bot:handled:{chat_id}:{message_id}"


def album_key(album_id: str) -> str:
    return f"{KEY_PREFIX}:bot:album:{album_id}"


def status_key(unit: str) -> str:
    return f"{KEY_PREFIX}:bot:status:{unit}"


@dataclass(frozen=True)
class ChatSettings:
    """What a chat chose; None means 'not set here'."""

    threshold: float | None = None
    auto: bool | None = None

    @property
    def params(self) -> DetectParams:
        """The chat's layer of the detection parameters (see DetectParams.layered)."""
        return DetectParams(self.threshold)


class ChatStore:
    """Chat settings and bookkeeping; every Redis failure surfaces as QueueUnavailableError."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def get(self, chat_id: int) -> ChatSettings:
        try:
            data: dict[bytes, bytes] = self.redis.hgetall(chat_key(chat_id))  # type: ignore[assignment]
        except REDIS_ERRORS as exc:
            raise QueueUnavailableError("Redis is unreachable") from exc
        threshold = data.get(b"threshold")
        auto = data.get(b"auto")
        return ChatSettings(
            threshold=float(threshold) if threshold else None,
            auto=auto == b"1" if auto is not None else None,
        )

    def _set(self, chat_id: int, field: str, value: str | None) -> None:
        try:
            if value is None:
                self.redis.hdel(chat_key(chat_id), field)
            else:
                self.redis.hset(chat_key(chat_id), field, value)
        except REDIS_ERRORS as exc:
            raise QueueUnavailableError("Redis is unreachable") from exc

    def set_threshold(self, chat_id: int, value: float | None) -> None:
        self._set(chat_id, "threshold", None if value is None else repr(value))

    def set_auto(self, chat_id: int, on: bool) -> None:
        self._set(chat_id, "auto", "1" if on else "0")

    def was_handled(self, chat_id: int, message_id: int) -> bool:
        """True if this message was answered or queued before (the update is a redelivery)."""
        try:
            return bool(self.redis.exists(handled_key(chat_id, message_id)))
        except REDIS_ERRORS:
            return False

    def mark_handled(self, chat_id: int, message_ids: list[int]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for message_id in message_ids:
                pipe.set(handled_key(chat_id, message_id), 1, ex=HANDLED_TTL)
            pipe.execute()
        except REDIS_ERRORS:
            pass  # Redis is down: nothing was queued either, and a redelivery gets the same reply.

    def save_status(self, unit: str, chat_id: int, message_id: int) -> None:
        self.redis.set(status_key(unit), f"{chat_id}:{message_id}", ex=STATUS_TTL)

    def pop_status(self, unit: str) -> tuple[int, int] | None:
        raw = self.redis.getdel(status_key(unit))
        if not raw:
            return None
        chat, _, message = bytes(raw).decode().partition(":")  # type: ignore[arg-type]
        return int(chat), int(message)

    def save_album_count(self, album_id: str, count: int) -> None:
        """An album of which only ``count`` photos were queued (the queue filled up midway)."""
        # If Redis is away, the delivery side answers the album once its wait runs out.
        with contextlib.suppress(*REDIS_ERRORS):
            self.redis.set(album_key(album_id), count, ex=STATUS_TTL)

    def album_count(self, album_id: str) -> int | None:
        raw = self.redis.get(album_key(album_id))
        return int(raw) if raw else None
