"""Albums across bot replicas: which replica answers an album whose photos' results several of them read.

Each photo of an album completes on its own, and with several replicas reading the completion stream its
results are spread over them. So the album's parts meet in Redis (:func:`jobs.keys.album`), not in one
process's memory: each replica records the part it read (one Lua script, atomic); the one whose part
completes the album takes it — it claims every other part's completion from the replicas that read them
(``DetectionClient.take``) and answers the album once. A replica holding parts of an album that is still
incomplete after ``ALBUM_WAIT`` takes it with what is there, as the single-process bot did.

A part read again after its replica died (claimed by idle time) finds its album as it was: still
collecting, or taken by a replica that died too — then this replica takes it over. A part that completes
after its album was answered (its job outlived ``ALBUM_WAIT``) is answered on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

from bot.albums import ALBUM_WAIT, ROUTING_FIELD
from jobs import keys
from jobs.defaults import RESULT_TTL
from jobs.store import Completion

# An album's record lives as long as its photos' results may wait for the bot: a part that comes later than
# its album's answer still finds the album "taken" and is answered on its own.
ALBUM_TTL = RESULT_TTL

# What :meth:`AlbumParts.add` says of a part.
COLLECTING, COMPLETE, ALONE = "collecting", "complete", "alone"

# The album's parts as a flat list: index, "<stream> <event id>", index, ... (a Lua function both scripts use).
_PARTS = """
local function parts()
  local out = {}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 1) == 'p' then table.insert(out, string.sub(all[i], 2)); table.insert(out, all[i + 1]) end
  end
  return out
end
"""

# KEYS[1]: the album; ARGV: index, "<stream> <event id>", count, now, ttl, consumer, reclaimed (0/1).
# Returns {state, first seen, parts...}: state 1 complete (the caller takes it), 0 still collecting,
# -1 answered already (the part goes alone).
_ADD = _PARTS + """
local field = 'p' .. ARGV[1]
local taken = redis.call('HGET', KEYS[1], 'taken')
if taken then
  if ARGV[7] == '1' and taken ~= ARGV[6] and redis.call('HGET', KEYS[1], field) == ARGV[2] then
    redis.call('HSET', KEYS[1], 'taken', ARGV[6])
    return {1, redis.call('HGET', KEYS[1], 't'), unpack(parts())}
  end
  return {-1, '0'}
end
redis.call('HSET', KEYS[1], field, ARGV[2])
redis.call('HSETNX', KEYS[1], 'n', ARGV[3])
redis.call('HSETNX', KEYS[1], 't', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local found = parts()
if #found / 2 >= tonumber(redis.call('HGET', KEYS[1], 'n')) then
  redis.call('HSET', KEYS[1], 'taken', ARGV[6])
  return {1, redis.call('HGET', KEYS[1], 't'), unpack(found)}
end
return {0, redis.call('HGET', KEYS[1], 't')}
"""

# KEYS[1]: the album; ARGV[1]: consumer. Its parts if nobody took it yet (now this consumer has), else {}.
_TAKE = _PARTS + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'taken') == 1 then return {} end
redis.call('HSET', KEYS[1], 'taken', ARGV[1])
return parts()
"""


def album_of(completion: Completion) -> tuple[str, int, int] | None:
    """``(album id, the photo's place, the album's size)`` of an album's result; None for a single photo."""
    album = completion.routing.get(ROUTING_FIELD)
    if not (isinstance(album, dict) and album.get("id")):
        return None
    return str(album["id"]), int(album.get("index", 1)), int(album.get("count", 1))


@dataclass(frozen=True)
class Added:
    """What became of a part: ``state`` COLLECTING (hold it until ``due``), COMPLETE (take ``parts``: index
    -> (stream, event id)), ALONE (answer it on its own)."""

    state: str
    due: float = 0.0
    parts: dict[int, tuple[str, str]] | None = None


def _parts(flat: list[Any]) -> dict[int, tuple[str, str]]:
    out = {}
    for index, value in zip(flat[::2], flat[1::2], strict=True):
        stream, _, event_id = _text(value).partition(" ")
        out[int(_text(index))] = (stream, event_id)
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AlbumParts:
    """One bot's albums being assembled in Redis (blocking calls: the delivery runs them in a thread)."""

    def __init__(self, redis: Redis, bot_id: int, consumer: str, wait: float = ALBUM_WAIT) -> None:
        self.redis = redis
        self.bot_id = bot_id
        self.consumer = consumer
        self.wait = wait

    def add(self, completion: Completion, stream: str, reclaimed: bool) -> Added:
        """Record a part this replica read (``reclaimed``: taken over from a replica that died)."""
        album = album_of(completion)
        if album is None:
            raise ValueError(f"{completion.job_id} is not part of an album")
        album_id, index, count = album
        reply: Any = self.redis.eval(_ADD, 1, keys.album(self.bot_id, album_id), index,
                                     f"{stream} {completion.event_id}", count, time.time(), ALBUM_TTL,
                                     self.consumer, int(reclaimed))
        state, first_seen, *flat = reply
        if int(state) < 0:
            return Added(ALONE)
        due = float(_text(first_seen)) + self.wait
        if int(state) == 0:
            return Added(COLLECTING, due)
        return Added(COMPLETE, due, _parts(flat))

    def take(self, album_id: str) -> dict[int, tuple[str, str]]:
        """An album waited for too long: its parts, if no other replica took it meanwhile ({} then)."""
        reply: Any = self.redis.eval(_TAKE, 1, keys.album(self.bot_id, album_id), self.consumer)
        return _parts(list(reply))
