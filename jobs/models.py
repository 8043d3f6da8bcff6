"""The models one deployment serves (``DETBOT_MODELS``), each on a queue of its own, and what the bot knows of
each: what its workers published at start (task, weights) and whether any of them is alive now.

``DETBOT_MODELS=detect=yolo11n.pt,segment=yolo11n-seg.pt,pose=yolo11n-pose.pt`` names the models; unset,
``DETBOT_MODEL`` alone is the one model, as before. One process = one model: a worker serves one entry
(``DETBOT_WORKER_MODEL``, the first by default) and listens on its queue. The first model keeps the queue
``DETBOT_QUEUE`` itself (jobs queued before a deployment listed several models are answered by it, and it is
the model of every chat that chose none); each other model's queue is ``<DETBOT_QUEUE>-<name>``.

Liveness per queue: every worker's heartbeat renews its own liveness key (``keys.alive``, which the reaper
reads) and its place in its queue's sorted set (``keys.queue_workers``: worker -> the Redis time its
liveness lapses), so one read tells the bot whether a model has a live worker, and whether one was alive
within the last minute (a restart, not an outage). Redis's own clock decides, never a machine's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from redis import Redis

from jobs import keys
from jobs.defaults import LIVENESS_TTL

# A model's name is a Telegram command too (``/segment``): 1-32 of a-z, 0-9 and _, starting with a letter.
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Commands the bot has already: a model may not take their name.
RESERVED_NAMES = frozenset({"start", "help", "threshold", "auto", "language", "classes", "model", "models"})
# The tasks an ultralytics model has that detbot answers: what `/detect`, `/segment` and `/pose` look for
# when no model carries that very name.
TASKS = ("detect", "segment", "pose")
# A queue whose last worker was alive less than this long ago is restarting (a crash, a rolling update, a
# model being reloaded), not unserved: its photos wait for it. Past it, a model other than the default one
# is refused at once with an honest reply instead of a wait nobody can promise an end to.
OUTAGE_GRACE = 60

# KEYS[1]: a queue's workers (sorted set); ARGV: worker name, liveness TTL, grace. The worker's liveness
# lapses at Redis's now + TTL; entries lapsed longer than the grace go; the set goes once all of them would.
_BEAT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
return 1
"""
# KEYS[1]: a queue's workers; ARGV: worker name. A worker stopping: its liveness lapses now (it stays "recent"
# for the grace, so a rolling restart is not an outage).
_LEAVE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], 'XX', now - 1, ARGV[1])
return 1
"""
# KEYS[1]: a queue's workers; ARGV: grace. {live now, alive within the grace}.
_COUNT = """
local now = tonumber(redis.call('TIME')[1])
return {redis.call('ZCOUNT', KEYS[1], now, '+inf'), redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')}
"""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the deployment: its name (a command; "" for the lone ``DETBOT_MODEL``), its weights (as
    the workers load them) and its queue."""

    name: str
    weights: str
    queue: str


def parse_models(text: str) -> list[tuple[str, str]]:
    """``name=weights,name=weights`` as pairs, in order; ValueError saying what is wrong and how to write it."""
    pairs: list[tuple[str, str]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, weights = entry.partition("=")
        name, weights = name.strip().lower(), weights.strip()
        if not sep or not weights:
            raise ValueError(f"{entry!r} is not name=weights (e.g. detect=yolo26n.pt,segment=yolo26n-seg.pt)")
        if not MODEL_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a model name: 1-32 of a-z, 0-9 and _, starting with a letter "
                             "(it becomes a command, /name)")
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is one of the bot's own commands; call the model something else")
        if name in dict(pairs):
            raise ValueError(f"the model {name!r} is listed twice")
        pairs.append((name, weights))
    if not pairs:
        raise ValueError("no model listed (e.g. detect=yolo26n.pt,segment=yolo26n-seg.pt)")
    return pairs


def model_queue(base_queue: str, name: str, first: bool) -> str:
    """The queue of a model: the first keeps ``base_queue``, the others get ``<base_queue>-<name>``."""
    return base_queue if first else f"{base_queue}-{name}"


def deployment(models: str | None, model: str, base_queue: str) -> tuple[ModelSpec, ...]:
    """Every model of the deployment, the default (first) one first: ``DETBOT_MODELS`` when set, else the one
    ``DETBOT_MODEL`` (named "", on ``base_queue``)."""
    if not models or not models.strip():
        return (ModelSpec("", model, base_queue),)
    return tuple(ModelSpec(name, weights, model_queue(base_queue, name, i == 0))
                 for i, (name, weights) in enumerate(parse_models(models)))


# -- what a queue's workers published ----------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    """What the workers of a queue run, as each wrote it at start: the model's task and weights' file name."""

    task: str
    weights: str


def publish_info(redis: Redis, queue_name: str, task: str, weights: str) -> None:
    """Worker side, at start (beside the class names): the task and the weights' file name."""
    redis.set(keys.model_info(queue_name), json.dumps({"task": task, "weights": weights}))


def read_info(redis: Redis, queue_name: str) -> ModelInfo | None:
    """What the queue's workers published, or None before any worker of it started."""
    raw = redis.get(keys.model_info(queue_name))
    if not raw:
        return None
    data: Any = json.loads(raw)
    return ModelInfo(str(data.get("task") or "detect"), str(data.get("weights") or ""))


# -- liveness per queue --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Liveness:
    """A queue's workers: how many are alive now, and how many were within ``OUTAGE_GRACE``."""

    live: int
    recent: int

    @property
    def served(self) -> bool:
        """A worker is alive, or was a moment ago (restarting): a photo queued now will be answered."""
        return self.recent > 0


def beat(redis: Redis, queue_name: str, worker_name: str) -> None:
    """A worker's heartbeat, as its queue sees it (beside its own liveness key)."""
    redis.eval(_BEAT, 1, keys.queue_workers(queue_name), worker_name, LIVENESS_TTL, OUTAGE_GRACE)


def leave(redis: Redis, queue_name: str, worker_name: str) -> None:
    """A worker stopping: no longer alive for its queue, still "recent" for the grace (a restart is coming,
    or the grace runs out and the model counts as unserved)."""
    redis.eval(_LEAVE, 1, keys.queue_workers(queue_name), worker_name)


def liveness(redis: Redis, queue_name: str) -> Liveness:
    raw: Any = redis.eval(_COUNT, 1, keys.queue_workers(queue_name), OUTAGE_GRACE)
    return Liveness(int(raw[0]), int(raw[1]))
