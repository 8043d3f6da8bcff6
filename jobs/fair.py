"""Fairness between chats in the queue: at most a few jobs of one chat in RQ's queue, the rest held.

RQ's queue is one FIFO list: a group that posts forty photos would make another chat's single photo wait
for all forty. So each chat has at most :data:`MAX_IN_FLIGHT_PER_CHAT` jobs in RQ's list (waiting or
running); its other photos are held in a Redis list of the chat's own, in order. When one of a chat's jobs
completes, the chat's next held job goes to the *back* of RQ's list, behind what other chats queued
meanwhile: chats take turns (round-robin) however long one chat's backlog is.

Crash-safe by construction: held photos live in Redis (their image, record and RQ job hash are written in
the same transaction as any other job, only their id is not yet in RQ's list), and the release runs inside
the worker's completion script (:func:`jobs.store.complete`), so it happens exactly once per completed job
whether or not the bot is up. A job that vanished without completing (its record expired) is swept out of
its chat's in-flight set the next time the chat submits (:func:`sweep`).

A chat's waiting photos (in RQ's list and held) are capped as well (:func:`chat_limit`, a share of the
queue's limit): one chat — a group with ``/auto on``, within its rate limit — can never fill the queue and
make every other chat "busy". The submit checks the cap in the same transaction as the lane
(:func:`check_chat_room`), and the bot asks :func:`chat_waiting` before it downloads anything.

The keys (``jobs.keys``): per chat a set of in-flight job ids and a list of held job ids; per queue a set
of every held job id (how many photos wait beyond RQ's list). All are bounded by the jobs that wait.
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis import Redis
from redis.client import Pipeline

from jobs import keys
from jobs.exceptions import ChatQueueFullError

# Jobs of one chat in RQ's queue at once (waiting or running). Enough to keep every worker busy for a chat
# alone on the bot; few enough that another chat's photo waits behind at most this many of each chat's.
MAX_IN_FLIGHT_PER_CHAT = 3

# The share of the queue's limit (DETBOT_MAX_QUEUED_JOBS) one chat's waiting photos may take: a few chats
# flooding at once still leave room for everybody else's single photos.
CHAT_SHARE = 0.25
# ... but never less than a whole album (Telegram's 10 photos) beside the chat's in-flight photos, so an
# album is always queued whole when the queue itself has room.
CHAT_MIN_ROOM = MAX_IN_FLIGHT_PER_CHAT + 10

# Job hash fields naming the chat's lane keys: the completion script releases the next held job through
# them (a job without them, e.g. a bench's, releases nothing).
FIELD_IN_FLIGHT = "lane_in_flight"
FIELD_HELD = "lane_held"
FIELD_ALL_HELD = "held"
FIELD_RQ_QUEUE = "rq_queue"

# Lua: ``lane``, the chat's lane of the job whose hash is KEYS[1] (its in-flight set, held list, every held
# job, RQ's list), and the test that the job has one.
LANE_OF_JOB = """
local lane = redis.call('HMGET', KEYS[1], 'lane_in_flight', 'lane_held', 'held', 'rq_queue')
"""
HAS_LANE = "lane[1] and lane[2] and lane[3] and lane[4]"


def lane_release(job_id_arg: str) -> str:
    """Lua, where ``lane`` is known (:data:`LANE_OF_JOB`): the job (its id in ``job_id_arg``) leaves its chat's
    in-flight set, and the chat's next held job (if any) takes its place at the back of RQ's list."""
    return f"""  redis.call('SREM', lane[1], {job_id_arg})
  local next_id = redis.call('LPOP', lane[2])
  if next_id then
    redis.call('SADD', lane[1], next_id)
    redis.call('SREM', lane[3], next_id)
    redis.call('RPUSH', lane[4], next_id)
  end
"""


# Appended to the completion script (KEYS[1] is the job's hash, ARGV[8] its id).
RELEASE_ON_COMPLETE = LANE_OF_JOB + f"if {HAS_LANE} then\n" + lane_release("ARGV[8]") + "end\n"

# KEYS: in-flight set, held list, every held job, RQ's list; ARGV: job hash key prefix, the per-chat cap.
_SWEEP = """
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local status = redis.call('HGET', ARGV[1] .. id, 'status')
  if (not status) or status == 'ok' or status == 'error' then redis.call('SREM', KEYS[1], id) end
end
local released = 0
while redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  redis.call('SADD', KEYS[1], id)
  redis.call('SREM', KEYS[3], id)
  redis.call('RPUSH', KEYS[4], id)
  released = released + 1
end
return released
"""


def lane_of(routings: list[dict[str, Any]]) -> int | None:
    """The chat whose lane the jobs go through: their common ``chat_id``; None (no lane) otherwise."""
    chats = {r.get("chat_id") for r in routings}
    if len(chats) != 1:
        return None
    chat = chats.pop()
    return chat if isinstance(chat, int) and not isinstance(chat, bool) else None


def job_fields(queue_name: str, rq_queue_key: str, chat_id: int) -> dict[Any, str]:
    """What a job of ``chat_id`` records so its completion releases the chat's next held job."""
    return {
        FIELD_IN_FLIGHT: keys.lane_in_flight(queue_name, chat_id),
        FIELD_HELD: keys.lane_held(queue_name, chat_id),
        FIELD_ALL_HELD: keys.held(queue_name),
        FIELD_RQ_QUEUE: rq_queue_key,
    }


def free_slots(pipe: Pipeline, queue_name: str, chat_id: int, cap: int = MAX_IN_FLIGHT_PER_CHAT) -> int:
    """How many more jobs of the chat may go straight into RQ's list; 0 while any of its photos is held
    (they go first). ``pipe`` is WATCHing :func:`watched` keys (immediate mode)."""
    if int(pipe.llen(keys.lane_held(queue_name, chat_id))):
        return 0
    return max(0, cap - int(pipe.scard(keys.lane_in_flight(queue_name, chat_id))))


def chat_limit(max_queued: int) -> int:
    """How many photos one chat may have waiting (in RQ's list and held) under a queue limit of ``max_queued``."""
    return max(CHAT_MIN_ROOM, int(max_queued * CHAT_SHARE))


def chat_waiting(redis: Redis | Pipeline, queue_name: str, chat_id: int) -> int:
    """The chat's photos waiting or running: in its in-flight set and its held list."""
    return int(redis.scard(keys.lane_in_flight(queue_name, chat_id))) + \
        int(redis.llen(keys.lane_held(queue_name, chat_id)))


def check_chat_room(pipe: Pipeline, queue_name: str, chat_id: int, count: int, limit: int) -> None:
    """Raise ChatQueueFullError when ``count`` more photos would take the chat past ``limit`` waiting photos.
    ``pipe`` is WATCHing :func:`watched` keys (immediate mode), so the answer holds until the submit."""
    waiting = chat_waiting(pipe, queue_name, chat_id)
    if waiting + count > limit:
        raise ChatQueueFullError(f"chat {chat_id} has {waiting} photos waiting; {count} more would pass its "
                                 f"limit of {limit}", waiting=waiting)


def watched(queue_name: str, chat_id: int) -> tuple[str, str]:
    """The keys a submit WATCHes: a completion changing them meanwhile makes it decide again."""
    return keys.lane_in_flight(queue_name, chat_id), keys.lane_held(queue_name, chat_id)


def queue_in_flight(pipe: Pipeline, queue_name: str, chat_id: int, job_id: str) -> None:
    pipe.sadd(keys.lane_in_flight(queue_name, chat_id), job_id)


def queue_hold(pipe: Pipeline, queue_name: str, chat_id: int, job_id: str) -> None:
    pipe.rpush(keys.lane_held(queue_name, chat_id), job_id)
    pipe.sadd(keys.held(queue_name), job_id)


def sweep(redis: Redis, queue_name: str, rq_queue_key: str, chat_id: int, cap: int = MAX_IN_FLIGHT_PER_CHAT) -> int:
    """Drop jobs that completed or vanished from the chat's in-flight set and release held ones into the
    room; returns how many were released (0 unless a job vanished without completing)."""
    script_keys = [keys.lane_in_flight(queue_name, chat_id), keys.lane_held(queue_name, chat_id),
                   keys.held(queue_name), rq_queue_key]
    return int(redis.eval(_SWEEP, len(script_keys), *script_keys, keys.job(""), cap))


def sweep_held(redis: Redis, queue_name: str, rq_queue_key: str, cap: int = MAX_IN_FLIGHT_PER_CHAT) -> int:
    """:func:`sweep` every chat that has photos held: a chat whose in-flight job vanished (its record
    expired unanswered, Redis lost it) would otherwise wait for its own next photo, which may never come.
    Run by the workers' reaper; returns how many photos it released."""
    held: list[bytes] = redis.smembers(keys.held(queue_name))  # type: ignore[assignment]
    if not held:
        return 0
    pipe = redis.pipeline(transaction=False)
    for job_id in held:
        pipe.hget(keys.job(job_id.decode()), FIELD_HELD)
    chats = {_chat_of(lane) for lane in pipe.execute() if lane}
    return sum(sweep(redis, queue_name, rq_queue_key, chat, cap) for chat in chats if chat is not None)


def _chat_of(lane_key: bytes) -> int | None:
    """The chat id inside a :func:`jobs.keys.lane_held` key."""
    with contextlib.suppress(ValueError, IndexError):
        return int(lane_key.decode().rsplit(":", 2)[-2])
    return None


def held_count(redis: Redis | Pipeline, queue_name: str) -> Any:
    """Photos held beyond RQ's list, over all chats (on a pipeline: queued, read from its result)."""
    return redis.scard(keys.held(queue_name))


def held_position(redis: Redis, job_id: str) -> int | None:
    """0-based place of a held job in its chat's held list; None when it is not held."""
    lane = redis.hget(keys.job(job_id), FIELD_HELD)
    if not lane:
        return None
    pos = redis.lpos(lane.decode() if isinstance(lane, bytes) else str(lane), job_id)
    return None if pos is None else int(pos)  # type: ignore[arg-type]
