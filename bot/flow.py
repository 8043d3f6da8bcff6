"""Whether updates reach the bot: written by the replica holding the lease, read by every replica's /healthz.

Redis answering is not enough for a healthy bot: a getUpdates that keeps failing (another process polling
with the token: 409, a revoked token, Telegram unreachable) or a webhook Telegram cannot deliver to (the
proxy's certificate, a wrong secret) leaves a bot that looks alive and answers nobody. The holder records
each good poll, and in webhook mode what getWebhookInfo says, in one small hash (:func:`jobs.keys.flow`);
updates count as flowing while the last good sign is younger than ``FLOW_STALE``.
"""

from __future__ import annotations

import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from jobs import keys

# The hash lives this long after its last write: a bot stopped for good leaves nothing behind.
FLOW_TTL = 600
# Updates flow while the last good poll or webhook check is younger than this. A long poll returns at least
# every POLL_TIMEOUT (10 s) and the webhook is checked every WEBHOOK_CHECK (30 s): several misses in a row.
FLOW_STALE = 75.0
# Writes of a good poll at most this often (under load a poll returns every few milliseconds).
WRITE_EVERY = 2.0


class Flow:
    """The holder's record of how updates arrive (redis.asyncio: written from the polling loop)."""

    def __init__(self, redis: AsyncRedis, bot_id: int) -> None:
        self.redis = redis
        self.key = keys.flow(bot_id)
        self._written = 0.0
        self._failing = False

    async def ok(self, mode: str) -> None:
        """Updates arrived (or could have: an empty long poll, a webhook Telegram reports no error for)."""
        now = time.time()
        if now - self._written < WRITE_EVERY and not self._failing:
            return
        await self._write({"mode": mode, "ok_at": now, "error": ""})
        self._failing = False

    async def failed(self, mode: str, error: str) -> None:
        """Updates could not be fetched, or Telegram could not deliver them: why, for the operator."""
        await self._write({"mode": mode, "failed_at": time.time(), "error": error[:300]})
        self._failing = True

    async def _write(self, fields: dict[str, str | float]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(self.key, FLOW_TTL)
        await pipe.execute()
        self._written = time.time()


def flowing(redis: Redis, bot_id: int, now: float | None = None) -> tuple[bool, str]:
    """Whether updates reach the bot — a good sign younger than FLOW_STALE and no failure since — and the
    last error the holder saw ("" if none); for /healthz."""
    data: dict[bytes, bytes] = redis.hgetall(keys.flow(bot_id))  # type: ignore[assignment]
    ok_at = float(data.get(b"ok_at") or 0)
    failed_at = float(data.get(b"failed_at") or 0)
    error = (data.get(b"error") or b"").decode()
    return (now or time.time()) - ok_at < FLOW_STALE and failed_at <= ok_at, error
