"""One replica of a bot at a time polls Telegram and handles the inbox: a lease in Redis.

The lease is one key (:func:`jobs.keys.lease`) holding the name of the replica that has it, with a short TTL
that replica renews. A standby asks every ``RETRY_INTERVAL``; when the holder dies its lease runs out and a
standby takes over within ``LEASE_TTL_MS`` + ``RETRY_INTERVAL`` (well under 10 s). A holder that stops
gracefully deletes it, so a rolling restart hands over at once; one killed on the same machine (``detbot
run`` restarting it, a restarted container) is recognised as dead by its process id and replaced at once too.

Only the holder polls, so Telegram never sees two getUpdates at once (its 409 "terminated by other
getUpdates request"); a holder that cannot renew stops polling before its lease can have run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# A holder that stopped renewing (killed, cut off from Redis) is replaced after this long.
LEASE_TTL_MS = 6000
# The holder renews this often: two renewals may fail (a Redis blip) before the lease is at risk.
RENEW_INTERVAL = 1.5
# A standby asks for the lease this often.
RETRY_INTERVAL = 1.0
# What a lost Redis connection raises through redis.asyncio.
REDIS_ERRORS = (RedisError, OSError)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _dead_here(holder: str, me: str) -> bool:
    """Whether ``holder`` (``host:pid:random``, see ``jobs.client.consumer_name``) was a process on this
    machine that is gone: an earlier run with this process id, or a process id that no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text, _, _tail = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or holder == me:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # this process id, another random tail: a previous run in this container
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Lease:
    """The lease of one bot: ``holder`` is this replica's name."""

    def __init__(self, redis: Redis, key: str, holder: str, ttl_ms: int = LEASE_TTL_MS) -> None:
        self.redis = redis
        self.key = key
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renewed = 0.0  # when the lease was last taken or renewed (monotonic)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or its holder died on this machine); True when this replica
        holds it now. Raises a Redis error when Redis is unreachable."""
        if await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms):
            self._renewed = time.monotonic()
            return True
        current = await self.redis.get(self.key)
        text = current.decode() if isinstance(current, bytes) else str(current or "")
        if text == self.holder:
            return await self.renew()
        if text and _dead_here(text, self.holder):
            log.info("the replica that held the lease (%s) is gone: taking over at once", text)
            await self.redis.eval(_RELEASE, 1, self.key, text)
            if await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms):
                self._renewed = time.monotonic()
                return True
        return False

    async def renew(self) -> bool:
        """Extend the lease; False when another replica holds it now. Raises a Redis error when Redis is
        unreachable."""
        renewed = bool(await self.redis.eval(_RENEW, 1, self.key, self.holder, self.ttl_ms))
        if renewed:
            self._renewed = time.monotonic()
        return renewed

    def safe(self) -> bool:
        """Whether the lease certainly has not run out yet (a renewal less than a TTL ago, with a margin)."""
        return time.monotonic() - self._renewed < self.ttl_ms / 1000 - RENEW_INTERVAL

    async def release(self) -> None:
        """A graceful stop: the lease goes now, so a standby takes over without waiting for the TTL."""
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.eval(_RELEASE, 1, self.key, self.holder)

    async def keep(self, lost: asyncio.Event, degraded: bool = False) -> None:
        """Renew every RENEW_INTERVAL until cancelled; set ``lost`` once another replica holds the lease.

        While Redis is unreachable (``degraded``, or renewals failing until the lease may have run out) no
        replica can take the lease, so this one polls on without Redis (the handlers say "unavailable"
        where they need it); once Redis answers it takes the lease again, or gives way to a replica that
        got there first.
        """
        while True:
            try:
                held = await (self.acquire() if degraded else self.renew())
            except REDIS_ERRORS as exc:
                if not degraded and not self.safe():
                    log.warning("cannot renew the lease (%s): polling on without Redis until it answers", exc)
                    degraded = True
            else:
                if not held:
                    log.warning("another replica holds the lease now: this one stops polling")
                    lost.set()
                    return
                if degraded:
                    log.info("Redis answers again: this replica holds the lease")
                degraded = False
            await asyncio.sleep(RENEW_INTERVAL)
