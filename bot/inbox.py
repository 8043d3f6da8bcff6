"""A bot's inbox: every update it received, in Redis before Telegram is told it arrived, until handled.

One Redis stream per bot (:func:`jobs.keys.inbox`). The poller adds what getUpdates returned together with
the offset that confirms it (one script), and only then sends that offset; a webhook request is answered
200 only once its update is in. Either way a bot killed right after has the update in Redis. The replica
holding the lease reads the stream (consumer group ``GROUP``) and deletes an entry once its handler
finished; when it dies, the next holder takes over its unfinished entries (XAUTOCLAIM) before any new one:
the inbox's replay belongs to one replica at a time.

An update id is let in once (a sorted set of the latest ``SEEN_LIMIT`` ids): Telegram sends an update
again when it did not see the webhook's 200, and two pollers racing at a handover would add it twice.

Beside Telegram's updates the inbox takes the Mini App's requests (:mod:`bot.mini_app`), which the web face
adds (:meth:`Inbox.add_request`): a request to change an answer is handled like a press on its buttons, with
the same promises — in Redis before the web answers, one replica at a time, taken over when it dies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from jobs import keys

log = logging.getLogger(__name__)

# The consumer group the lease holder reads the inbox in (its consumer name is the replica's).
GROUP = "dispatch"
# Updates in the inbox at most: the poller pauses and webhook requests get "try later" (503) beyond it, so
# a bot whose handlers fell behind leaves the rest with Telegram. ~1 KB each in Redis; far above a healthy
# backlog (updates refused by the rate limits finish in milliseconds).
INBOX_LIMIT = 5000
# Update ids remembered to let each in once; Telegram re-sends an update within minutes, far fewer than this.
SEEN_LIMIT = 10_000
# An update whose handling was cut short by this many stops of the replica handling it is dropped with a
# log line, not replayed for ever (it may be what kills the bot).
MAX_REPLAYS = 3
# Entries read or taken over per call.
BATCH = 100

# KEYS: inbox, seen, offset, lease; ARGV: the lease holder that may add ('' for anyone: a webhook), the new
# offset ('' none), then pairs of update id and update JSON. Returns how many were new, -1 when the lease is
# someone else's (a poller that lost it must not add what it fetched, nor move the offset).
_ADD = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[1] then return -1 end
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[i], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'update', ARGV[i + 1])
    added = added + 1
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - SEEN_LIMIT)
if ARGV[2] ~= '' and tonumber(ARGV[2]) > tonumber(redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], ARGV[2])
end
return added
""".replace("SEEN_LIMIT", str(SEEN_LIMIT))


# KEYS: inbox; ARGV: the limit, the request's JSON. Adds a Mini App request unless the inbox is full (0).
_ADD_REQUEST = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'request', ARGV[2])
return 1
"""


class InboxFull(Exception):
    """The inbox holds INBOX_LIMIT entries: the bot's handlers fell behind; try again later."""


@dataclass(frozen=True)
class Entry:
    """An entry of the inbox: its stream entry id, the raw update (or, for a Mini App request, the request:
    ``update_id`` 0), and how often a replica took it."""

    entry_id: str
    update_id: int
    raw: dict[str, Any]
    deliveries: int = 1
    request: bool = False

    @property
    def replays(self) -> int:
        """How often a replica stopped while handling it (each take-over counts one)."""
        return max(0, self.deliveries - 1)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: dict[Any, Any], deliveries: int = 1) -> Entry | None:
    try:
        if b"request" in fields:
            return Entry(_text(entry_id), 0, json.loads(fields[b"request"]), deliveries, request=True)
        raw = json.loads(fields[b"update"])
        return Entry(_text(entry_id), int(fields[b"id"]), raw, deliveries)
    except (KeyError, ValueError, TypeError):
        log.error("inbox entry %s is unreadable: dropped", _text(entry_id))
        return None


class Inbox:
    """One bot's inbox (redis.asyncio: the webhook's 200 never waits for a thread)."""

    def __init__(self, redis: Redis, bot_id: int, consumer: str) -> None:
        self.redis = redis
        self.bot_id = bot_id
        self.consumer = consumer
        self.key = keys.inbox(bot_id)
        self._group_ready = False

    async def add(self, updates: Sequence[tuple[int, str]], offset: int | None = None,
                  fence: str | None = None) -> int:
        """Put ``(update id, JSON)`` pairs in, and move the stored offset to ``offset``; ``fence``: only while
        this replica holds the lease. Returns how many were new, -1 when fenced out."""
        args: list[Any] = [fence or "", "" if offset is None else offset]
        for update_id, raw in updates:
            args += [update_id, raw]
        script_keys = [self.key, keys.inbox_seen(self.bot_id), keys.inbox_offset(self.bot_id),
                       keys.lease(self.bot_id)]
        return int(await self.redis.eval(_ADD, len(script_keys), *script_keys, *args))

    async def add_request(self, request: dict[str, Any]) -> None:
        """A Mini App's request, for whichever replica holds the lease; raises InboxFull."""
        if not int(await self.redis.eval(_ADD_REQUEST, 1, self.key, INBOX_LIMIT, json.dumps(request))):
            raise InboxFull(f"the inbox holds {INBOX_LIMIT} entries")

    async def offset(self) -> int | None:
        raw = await self.redis.get(keys.inbox_offset(self.bot_id))
        return int(raw) if raw else None

    async def size(self) -> int:
        return int(await self.redis.xlen(self.key))

    async def full(self) -> bool:
        return await self.size() >= INBOX_LIMIT

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _regroup(self, exc: ResponseError) -> None:
        """Redis lost the group (it restarted without its data): make it again; anything else is raised."""
        if "NOGROUP" not in str(exc):
            raise exc
        log.warning("the inbox's consumer group is gone (Redis lost its data?): creating it again")
        self._group_ready = False
        await self._ensure_group()

    async def read(self, block_ms: int, count: int = BATCH) -> list[Entry]:
        """Updates no replica has read yet, waiting up to ``block_ms`` for the first."""
        await self._ensure_group()
        try:
            reply: Any = await self.redis.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count, block_ms)
        except ResponseError as exc:
            await self._regroup(exc)
            return []
        return [e for _stream, entries in reply or [] for entry_id, fields in entries
                if (e := _entry(entry_id, fields)) is not None]

    async def take_over(self) -> list[Entry]:
        """Every update a replica read and did not finish (it held the lease before this one), oldest
        first, now this replica's; each counts one more delivery. Call only while holding the lease."""
        await self._ensure_group()
        out: list[Entry] = []
        start = "0-0"
        while True:
            try:
                reply: Any = await self.redis.xautoclaim(self.key, GROUP, self.consumer, 0, start, count=BATCH)
            except ResponseError as exc:
                await self._regroup(exc)
                return out
            start = _text(reply[0])
            claimed = [(entry_id, fields) for entry_id, fields in reply[1] if entry_id is not None]
            counts = await self._deliveries([_text(entry_id) for entry_id, _ in claimed])
            for entry_id, fields in claimed:
                entry = _entry(entry_id, fields or {}, counts.get(_text(entry_id), 1))
                if entry is None:
                    await self.done([_text(entry_id)])
                else:
                    out.append(entry)
            if start == "0-0" or not reply[1]:
                break
        # Ours from before (this replica held the lease, lost it and got it back) are among them too.
        return sorted(out, key=lambda e: tuple(int(p) for p in e.entry_id.split("-")))

    async def _deliveries(self, entry_ids: list[str]) -> dict[str, int]:
        if not entry_ids:
            return {}
        found: Any = await self.redis.xpending_range(self.key, GROUP, min=entry_ids[0], max=entry_ids[-1],
                                                     count=len(entry_ids) * 2 + BATCH)
        return {_text(p["message_id"]): int(p["times_delivered"]) for p in found}

    async def done(self, entry_ids: Sequence[str]) -> None:
        """Handled: gone from the inbox."""
        if not entry_ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.key, GROUP, *entry_ids)
        pipe.xdel(self.key, *entry_ids)
        await pipe.execute()

    async def adopt_legacy(self) -> int:
        """The inbox of before (a hash of update id -> JSON, and its offset key) moved into the stream once:
        what a bot of the previous version left unfinished is handled after the upgrade."""
        old = keys.legacy_inbox(self.bot_id)
        raw: dict[Any, Any] = await self.redis.hgetall(old)
        old_offset = await self.redis.get(keys.legacy_offset(self.bot_id))
        if not raw and old_offset is None:
            return 0
        updates = []
        for field_name, value in sorted(raw.items(), key=lambda item: int(item[0])):
            try:
                updates.append((int(field_name), json.dumps(json.loads(value)["update"])))
            except (ValueError, KeyError, TypeError):
                log.error("update %s of the old inbox is unreadable: dropped", _text(field_name))
        added = await self.add(updates, int(old_offset) if old_offset else None) if updates or old_offset else 0
        await self.redis.delete(old, keys.legacy_offset(self.bot_id))
        if added:
            log.info("%d update(s) left by the previous version moved into the inbox", added)
        return added

