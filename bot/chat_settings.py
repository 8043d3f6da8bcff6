"""Per-chat settings (default threshold, auto mode, language, model) and the bot's own bookkeeping, in Redis.

The keys are named in :mod:`jobs.keys`, with every other key detbot writes. Sync redis-py: callers on the
event loop run these through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from detector.params import DetectParams
from jobs import keys
from jobs.defaults import RESULT_TTL
from jobs.exceptions import QueueUnavailableError

# A message id is remembered as handled this long: covers Telegram re-sending updates after a bot crash.
HANDLED_TTL = 24 * 60 * 60
# A status message can only be waiting as long as its result can.
STATUS_TTL = RESULT_TTL

# Per-class thresholds live in the chat's hash as fields "class:<name>", beside the chat's other settings.
CLASS_FIELD = "class:"

# What a Redis that went away raises through redis-py, and one at its maxmemory (noeviction refuses writes):
# either way the bot's bookkeeping is skipped or the person told, never a crash after the photo was queued.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, OutOfMemoryError)


@dataclass(frozen=True)
class ChatSettings:
    """What a chat chose; None means 'not set here'."""

    threshold: float | None = None
    auto: bool | None = None
    # "en"/"ru" chosen with /language; None: each person's Telegram language (bot.i18n.language_for).
    language: str | None = None
    # (model's class name, threshold) set with /threshold <class> <value>, sorted by name.
    class_thresholds: tuple[tuple[str, float], ...] = ()
    # The model chosen with /model (a name of DETBOT_MODELS); None: the deployment's default.
    model: str | None = None

    @property
    def params(self) -> DetectParams:
        """The chat's layer of the detection parameters (see DetectParams.layered)."""
        return DetectParams(self.threshold, class_confidence=self.class_thresholds)


class ChatStore:
    """One bot's chat settings and bookkeeping; every Redis failure surfaces as QueueUnavailableError."""

    def __init__(self, redis: Redis, bot_id: int) -> None:
        """``bot_id`` names the keys: two bots on one Redis keep apart settings for the same chat."""
        self.redis = redis
        self.bot_id = bot_id

    def handled_key(self, chat_id: int, message_id: int) -> str:
        """The marker of a message already queued or answered (the submit's "once" key)."""
        return keys.handled(self.bot_id, chat_id, message_id)

    def get(self, chat_id: int) -> ChatSettings:
        try:
            data: dict[bytes, bytes] = self.redis.hgetall(keys.chat(self.bot_id, chat_id))  # type: ignore[assignment]
        except REDIS_ERRORS as exc:
            raise QueueUnavailableError("Redis is unreachable") from exc
        threshold = data.get(b"threshold")
        auto = data.get(b"auto")
        language = data.get(b"language")
        model = data.get(b"model")
        per_class = sorted((k.decode()[len(CLASS_FIELD):], float(v)) for k, v in data.items()
                           if k.startswith(CLASS_FIELD.encode()))
        return ChatSettings(
            threshold=float(threshold) if threshold else None,
            auto=auto == b"1" if auto is not None else None,
            language=language.decode() if language else None,
            class_thresholds=tuple(per_class),
            model=model.decode() if model else None,
        )

    def _set(self, chat_id: int, field: str, value: str | None) -> None:
        try:
            if value is None:
                self.redis.hdel(keys.chat(self.bot_id, chat_id), field)
            else:
                self.redis.hset(keys.chat(self.bot_id, chat_id), field, value)
        except REDIS_ERRORS as exc:
            raise QueueUnavailableError("Redis is unreachable") from exc

    def set_threshold(self, chat_id: int, value: float | None) -> None:
        self._set(chat_id, "threshold", None if value is None else repr(value))

    def set_class_threshold(self, chat_id: int, name: str, value: float) -> None:
        self._set(chat_id, CLASS_FIELD + name, repr(value))

    def reset_thresholds(self, chat_id: int) -> None:
        """The chat's default and every per-class threshold, in one command."""
        try:
            names: list[bytes] = self.redis.hkeys(keys.chat(self.bot_id, chat_id))  # type: ignore[assignment]
            fields = [k for k in names if k.startswith(CLASS_FIELD.encode())]
            self.redis.hdel(keys.chat(self.bot_id, chat_id), "threshold", *fields)
        except REDIS_ERRORS as exc:
            raise QueueUnavailableError("Redis is unreachable") from exc

    def set_auto(self, chat_id: int, on: bool) -> None:
        self._set(chat_id, "auto", "1" if on else "0")

    def set_language(self, chat_id: int, language: str | None) -> None:
        """None: back to each person's own language."""
        self._set(chat_id, "language", language)

    def set_model(self, chat_id: int, name: str | None) -> None:
        """None: back to the deployment's default model."""
        self._set(chat_id, "model", name)

    def was_handled(self, chat_id: int, message_id: int) -> bool:
        """True if this message was answered or queued before (the update is a redelivery)."""
        try:
            return bool(self.redis.exists(keys.handled(self.bot_id, chat_id, message_id)))
        except REDIS_ERRORS:
            return False

    def mark_handled(self, chat_id: int, message_ids: list[int]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for message_id in message_ids:
                pipe.set(keys.handled(self.bot_id, chat_id, message_id), 1, ex=HANDLED_TTL)
            pipe.execute()
        except REDIS_ERRORS:
            pass  # Redis is down: nothing was queued either, and a redelivery gets the same reply.

    def save_status(self, unit: str, chat_id: int, message_id: int) -> None:
        self.redis.set(keys.status(self.bot_id, unit), f"{chat_id}:{message_id}", ex=STATUS_TTL)

    def pop_status(self, unit: str) -> tuple[int, int] | None:
        raw = self.redis.getdel(keys.status(self.bot_id, unit))
        if not raw:
            return None
        chat, _, message = bytes(raw).decode().partition(":")  # type: ignore[arg-type]
        return int(chat), int(message)

    def migrate(self, old: int, new: int) -> None:
        """A group became the supergroup ``new``: it keeps its settings (those the supergroup has not set
        itself), and remembers where it came from (the allow-list accepts it when ``old`` was allowed)."""
        try:
            data: dict[bytes, bytes] = self.redis.hgetall(keys.chat(self.bot_id, old))  # type: ignore[assignment]
            pipe = self.redis.pipeline(transaction=True)
            for field, value in data.items():
                pipe.hsetnx(keys.chat(self.bot_id, new), field, value)
            pipe.set(keys.migrated(self.bot_id, new), old)
            pipe.delete(keys.chat(self.bot_id, old))  # the group is gone for good: its hash would stay for ever
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise QueueUnavailableError("Redis is unreachable") from exc

    def forget(self, chat_id: int) -> None:
        """The bot left, was removed from or blocked in the chat: its settings go (their documented bound,
        jobs.keys.LIFETIMES); a chat that takes the bot back starts from the defaults."""
        try:
            self.redis.delete(keys.chat(self.bot_id, chat_id), keys.migrated(self.bot_id, chat_id))
        except REDIS_ERRORS as exc:
            raise QueueUnavailableError("Redis is unreachable") from exc

    def migrated_from(self, chat_id: int) -> int | None:
        """The group a supergroup was before its migration, None if it never was one (or Redis is away)."""
        try:
            raw = self.redis.get(keys.migrated(self.bot_id, chat_id))
        except REDIS_ERRORS:
            return None
        return int(raw) if raw else None
