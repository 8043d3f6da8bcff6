"""Albums across bot replicas: where an album's results meet, when it is answered, and by which replica.

Each photo of an album completes on its own, and with several replicas reading the completion stream its
results are spread over them. So the album's parts meet in Redis (:func:`jobs.keys.album`), not in one
process's memory: each replica records the part it read (one Lua script, atomic); the one whose part
completes the album takes it — it claims every other part's completion from the replicas that read them
(``DetectionClient.take``) and answers the album once.

There is no fixed wait for the rest of an album: the chat's lane (:mod:`jobs.fair`) may hold part of it
behind other chats' photos for as long as the queue is long. Every photo's routing names the album's job
ids (:func:`bot.albums.queued_album`), so an album none of whose photos came for ``ALBUM_CHECK`` is checked
in Redis by one of the replicas holding a part (:meth:`AlbumParts.stalled`, :meth:`AlbumParts.settle`):
photos queued, held or running are waited for; a photo whose job is gone is lost (the summary says so);
a photo that completed but whose result reached no replica in ``ELSEWHERE_CHECKS`` checks in a row went to
another reader (a bot of before the replicas) and the album goes out without it. Only an album of an older
bot (its routings name no job ids) waits ``ALBUM_WAIT``, and any album ``ALBUM_GIVE_UP`` at most; then a
replica holding a part takes it with what is there (:meth:`AlbumParts.take`).

A part read again after its replica died (claimed by idle time) finds its album as it was: still
collecting, or taken by a replica that died too — then this replica takes it over. A part that comes after
its album was answered is answered on its own, never as a second album.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from bot.albums import ROUTING_FIELD
from jobs import keys
from jobs.defaults import IMAGE_TTL, JOB_TIMEOUT, MAX_ATTEMPTS, RESULT_TTL
from jobs.store import Completion

# An album's record lives this long after its latest result: a part that comes later than its album's
# answer still finds the album "taken" and is answered on its own.
ALBUM_TTL = RESULT_TTL
# An album of an older bot (its routings name no job ids) waits this long after its first result, then is
# answered with what is there; a worker gives up on a job after MAX_ATTEMPTS timeouts.
ALBUM_WAIT = JOB_TIMEOUT * MAX_ATTEMPTS + 60
# An album none of whose photos came for this long is checked in Redis: are its other photos still queued,
# held or running? A check is a few HGETs; a lane's round through a long queue takes longer.
ALBUM_CHECK = 10.0
# A photo whose job completed but whose result reached no replica in this many checks in a row went to
# another reader: the album goes out without it. Longer than a dead replica's results take to be claimed
# by a live one (``jobs.client.CLAIM_IDLE_MS`` + the claim interval).
ELSEWHERE_CHECKS = 3
# The last resort: past this, what has not come will not (a held photo's image expires after IMAGE_TTL, and
# its job is then answered at once with image_expired).
ALBUM_GIVE_UP = IMAGE_TTL + 600.0

# What :meth:`AlbumParts.add` says of a part.
COLLECTING, COMPLETE, ALONE = "collecting", "complete", "alone"
# What :meth:`AlbumParts.stalled` says of an album.
DUE, NOT_DUE, ANSWERED = "due", "not due", "answered"

# The album's places as a flat list of field, value: ``p<place>`` "<stream> <event id>" (a result read),
# ``l<place>`` (its job is gone: lost), ``e<place>`` (completed, its result went elsewhere). A Lua function
# the scripts share; a place has one of the three at most.
_PARTS = """
local function parts()
  local out = {}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local kind = string.sub(all[i], 1, 1)
    if kind == 'p' or kind == 'l' or kind == 'e' then table.insert(out, all[i]); table.insert(out, all[i + 1]) end
  end
  return out
end
local function complete(found)
  return #found / 2 >= tonumber(redis.call('HGET', KEYS[1], 'n'))
end
"""

# KEYS[1]: the album; ARGV: place, "<stream> <event id>", count, now, ttl, consumer, reclaimed (0/1).
# Returns {state, first seen, fields...}: state 1 complete (the caller takes it), 0 still collecting,
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
redis.call('HDEL', KEYS[1], 'l' .. ARGV[1], 'e' .. ARGV[1])
redis.call('HSET', KEYS[1], field, ARGV[2], 's', ARGV[4])
redis.call('HSETNX', KEYS[1], 'n', ARGV[3])
redis.call('HSETNX', KEYS[1], 't', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local found = parts()
if complete(found) then
  redis.call('HSET', KEYS[1], 'taken', ARGV[6])
  return {1, redis.call('HGET', KEYS[1], 't'), unpack(found)}
end
return {0, redis.call('HGET', KEYS[1], 't')}
"""

# KEYS[1]: the album; ARGV: now, the check interval. When no part came and nobody checked within the
# interval: {1, fields...} (this caller checks now; noted). {0}: not due; {-1}: taken, or gone.
_STALLED = _PARTS + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'taken') == 1 then return {-1} end
local seen = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local checked = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
if tonumber(ARGV[1]) - math.max(seen, checked) < tonumber(ARGV[2]) then return {0} end
redis.call('HSET', KEYS[1], 'c', ARGV[1])
return {1, unpack(parts())}
"""

# KEYS[1]: the album; ARGV: consumer, ELSEWHERE_CHECKS, then 'l<place>' for each awaited photo whose job is
# gone and 'f<place>' for each that completed. Returns {state, lost now, elsewhere now, still awaited,
# fields...}: state 1 complete (taken by the caller), 0 still waiting, -1 taken already or gone.
_SETTLE = _PARTS + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'taken') == 1 then return {-1, 0, 0, 0} end
local late = {}
local lost = 0
for i = 3, #ARGV do
  local kind, place = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if redis.call('HEXISTS', KEYS[1], 'p' .. place) == 0 then
    if kind == 'l' then
      redis.call('HSET', KEYS[1], 'l' .. place, '1')
      lost = lost + 1
    else
      table.insert(late, place)
    end
  end
end
local elsewhere = 0
if #late > 0 then
  if redis.call('HINCRBY', KEYS[1], 'f', 1) >= tonumber(ARGV[2]) then
    for _, place in ipairs(late) do redis.call('HSET', KEYS[1], 'e' .. place, '1') end
    elsewhere = #late
  end
else
  redis.call('HSET', KEYS[1], 'f', '0')
end
local found = parts()
if complete(found) then
  redis.call('HSET', KEYS[1], 'taken', ARGV[1])
  return {1, lost, elsewhere, 0, unpack(found)}
end
return {0, lost, elsewhere, tonumber(redis.call('HGET', KEYS[1], 'n')) - #found / 2}
"""

# KEYS[1]: the album; ARGV[1]: consumer. Its fields if nobody took it yet (now this consumer has), else {}.
_TAKE = _PARTS + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'taken') == 1 then return {} end
redis.call('HSET', KEYS[1], 'taken', ARGV[1])
return parts()
"""


@dataclass(frozen=True)
class AlbumRef:
    """What a result's routing says of its album: its id, the photo's place (1-based), the album's size, and
    every photo's job id by place (empty for an older bot's album)."""

    album_id: str
    place: int
    size: int
    jobs: list[str]


def album_of(completion: Completion) -> AlbumRef | None:
    """The album of an album's result; None for a single photo."""
    album = completion.routing.get(ROUTING_FIELD)
    if not (isinstance(album, dict) and album.get("id")):
        return None
    jobs = album.get("jobs")
    return AlbumRef(str(album["id"]), int(album.get("index", 1)), int(album.get("count", 1)),
                    [str(j) for j in jobs] if isinstance(jobs, list) else [])


@dataclass(frozen=True)
class Parts:
    """An album to answer: ``found`` its results read (place -> (stream, event id)), ``lost`` the places whose
    job Redis no longer has."""

    found: dict[int, tuple[str, str]]
    lost: tuple[int, ...] = ()


@dataclass(frozen=True)
class Added:
    """What became of a part: ``state`` COLLECTING (held; answered with what is there at ``due`` at the
    latest), COMPLETE (take ``parts``), ALONE (answer it on its own)."""

    state: str
    due: float = 0.0
    parts: Parts | None = None


@dataclass(frozen=True)
class Settled:
    """What a check in Redis found: ``parts`` when the album waits for nothing more (taken by this replica);
    how many photos it found lost, how many it gave up as gone elsewhere, how many are still awaited."""

    parts: Parts | None
    lost: int = 0
    elsewhere: int = 0
    awaited: int = 0


def _parts(flat: Sequence[Any]) -> Parts:
    found: dict[int, tuple[str, str]] = {}
    lost = []
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        kind, place = _text(name)[0], int(_text(name)[1:])
        if kind == "p":
            stream, _, event_id = _text(value).partition(" ")
            found[place] = (stream, event_id)
        elif kind == "l":
            lost.append(place)
    return Parts(found, tuple(sorted(lost)))


def _places(flat: Sequence[Any]) -> set[int]:
    return {int(_text(name)[1:]) for name in flat[::2]}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AlbumParts:
    """One bot's albums being assembled in Redis (blocking calls: the delivery runs them in a thread).
    ``clock``: unix time (shared by every replica through Redis)."""

    def __init__(self, redis: Redis, bot_id: int, consumer: str, *, wait: float = ALBUM_WAIT,
                 check: float = ALBUM_CHECK, give_up: float = ALBUM_GIVE_UP,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.bot_id = bot_id
        self.consumer = consumer
        self.wait = wait
        self.check = check
        self.give_up = give_up
        self.clock = clock

    def _key(self, album_id: str) -> str:
        return keys.album(self.bot_id, album_id)

    def add(self, completion: Completion, stream: str, reclaimed: bool) -> Added:
        """Record a part this replica read (``reclaimed``: taken over from a replica that died)."""
        album = album_of(completion)
        if album is None:
            raise ValueError(f"{completion.job_id} is not part of an album")
        reply: Any = self.redis.eval(_ADD, 1, self._key(album.album_id), album.place,
                                     f"{stream} {completion.event_id}", album.size, repr(self.clock()), ALBUM_TTL,
                                     self.consumer, int(reclaimed))
        state, first_seen, *flat = reply
        if int(state) < 0:
            return Added(ALONE)
        due = float(_text(first_seen)) + (self.give_up if album.jobs else self.wait)
        if int(state) == 0:
            return Added(COLLECTING, due)
        return Added(COMPLETE, due, _parts(flat))

    def stalled(self, album_id: str) -> tuple[str, set[int]]:
        """DUE when none of the album's photos came for ``check`` and no replica checked it within that time,
        with the places it has settled (read, lost or gone elsewhere): the others are this caller's to ask
        Redis about (:meth:`settle`). NOT_DUE, or ANSWERED (taken by a replica, or gone), with no places."""
        reply: Any = self.redis.eval(_STALLED, 1, self._key(album_id), repr(self.clock()), self.check)
        state, *flat = reply
        if int(state) < 0:
            return ANSWERED, set()
        return (DUE, _places(flat)) if int(state) > 0 else (NOT_DUE, set())

    def settle(self, album_id: str, vanished: Sequence[int], finished: Sequence[int] = ()) -> Settled:
        """What Redis said of the album's awaited photos: those at the places in ``vanished`` have no job any
        more (lost); those in ``finished`` completed, and if their results still reached no replica after
        ELSEWHERE_CHECKS checks in a row, another reader has them; the others are queued, held or running."""
        marks = [f"l{place}" for place in vanished] + [f"f{place}" for place in finished]
        reply: Any = self.redis.eval(_SETTLE, 1, self._key(album_id), self.consumer, ELSEWHERE_CHECKS, *marks)
        state, lost, elsewhere, awaited, *flat = reply
        return Settled(_parts(flat) if int(state) > 0 else None, int(lost), int(elsewhere), int(awaited))

    def take(self, album_id: str) -> Parts | None:
        """An album waited for too long: its parts, if no other replica took it meanwhile (None then)."""
        reply: Any = self.redis.eval(_TAKE, 1, self._key(album_id), self.consumer)
        return _parts(list(reply)) if reply else None


@dataclass
class _Held:
    jobs: list[str]
    due: float
    look: float


class HeldAlbums:
    """The albums this replica holds parts of: when to answer each with what is there (``due``), and when to
    ask Redis whether it stalled. One entry per album with a part held here (bounded like the parts)."""

    def __init__(self, check: float = ALBUM_CHECK, clock: Callable[[], float] = time.time) -> None:
        self.check = check
        self.clock = clock
        self._albums: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._albums)

    def hold(self, album: AlbumRef, due: float) -> None:
        if album.album_id not in self._albums:
            self._albums[album.album_id] = _Held(album.jobs, due, self.clock() + self.check)

    def drop(self, album_id: str) -> None:
        self._albums.pop(album_id, None)

    def due(self) -> list[str]:
        """Albums to answer now with what is there (each stays until :meth:`drop`)."""
        now = self.clock()
        return [album_id for album_id, held in self._albums.items() if held.due <= now]

    def to_check(self) -> list[tuple[str, list[str]]]:
        """Albums naming their jobs that may have stalled (Redis decides, :meth:`AlbumParts.stalled`): their id
        and every photo's job id by place. Each is offered once per ``check``."""
        now = self.clock()
        out = []
        for album_id, held in self._albums.items():
            if held.jobs and held.look <= now:
                held.look = now + self.check
                out.append((album_id, held.jobs))
        return out
