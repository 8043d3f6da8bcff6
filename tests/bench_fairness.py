"""Fairness and Telegram's budget, measured (issue 11, rules 2 and 5): ``python -m tests.bench_fairness``.

Everything real but Telegram: a redis-server, ``detbot worker`` processes on the shapes test model, the bot
(``detbot bot``), and the Bot API stand-in with Telegram's flood limits enforced (~30 requests/s overall,
~1/s per private chat, 20/min per group: 429 with ``retry_after`` beyond them). Figures, not pass/fail:

- ``flood``: a private photo's answer latency while idle, then while a group floods 40 photos; the group's
  answers after 60 and 120 s against what Telegram allows it.
- ``burst``: a few hundred photos from a hundred people at once: answers per second, the answers' share of
  every request the bot made, requests by method.
- ``deliver``: the same burst as finished results written into Redis (no inference): the answers per second
  the bot reaches within Telegram's limits when the workers are not the bound.

Lives in ``tests/`` because it drives the stand-in (product code never imports ``tests``); not collected by
pytest (not ``test_*``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import STATUS_PREFIX, BotProcess, TelegramStub, answers_to, encode
from tests.workers import running_workers

TOKEN = "111222333:BENCH-fairness-token"
# A private photo's answer is awaited at most this long (a bound for a broken run, not a target).
ANSWER_TIMEOUT = 300.0
# Between latency samples while the group floods: spread over the flood, and within a person's limits.
SAMPLE_GAP = 4.0
# The flooding group: 40 photos asked for at once; Telegram allows a group 20 messages a minute.
FLOOD_PHOTOS = 40
GROUP_PER_MINUTE = 20
ANSWER_METHODS = ("sendPhoto", "sendMediaGroup", "sendDocument")
# How often the bench looks for answers: the stand-in runs in this process, so looking costs it CPU.
POLL = 0.1


def _answered(stub: TelegramStub, chat_id: int, message_id: int) -> float | None:
    """When the first answer (not a status message) to ``message_id`` reached the stand-in."""
    found = answers_to(stub, chat_id, message_id)
    return found[0].at if found else None


def _answer_times(stub: TelegramStub) -> dict[tuple[int | None, int | None], float]:
    """(chat, replied message) -> when its first answer reached the stand-in, in one pass over the calls."""
    found: dict[tuple[int | None, int | None], float] = {}
    for c in stub.sent():
        if c.method in ANSWER_METHODS or (c.method == "sendMessage" and not c.text.startswith(STATUS_PREFIX)):
            found.setdefault((c.chat_id, c.reply_to), c.at)
    return found


def _all_answered(stub: TelegramStub, sent: list[tuple[int, int]]) -> dict[tuple[int, int], float] | None:
    """When each of ``sent`` was answered, once all were (checked every POLL seconds: the times are the
    stand-in's own, so how often this looks does not change them)."""
    times = _answer_times(stub)
    if not all(key in times for key in sent):
        return None
    return {key: times[key] for key in sent}


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(POLL)
    return value


def _latency(stub: TelegramStub, user: int, photo: bytes) -> float:
    sent_at = time.monotonic()
    msg = stub.photo(stub.private_chat(user), user, photo)
    at = _wait(lambda: _answered(stub, user, msg["message_id"]), ANSWER_TIMEOUT, f"an answer to {user}")
    return float(at - sent_at)


def _answers(stub: TelegramStub, chats: set[int]) -> int:
    """Photos answered in ``chats`` (answer photos and albums; texts only as answers, not status messages)."""
    return sum(1 for c in stub.sent() if c.chat_id in chats and (
        c.method in ANSWER_METHODS or (c.method == "sendMessage" and c.reply_to is not None
                                       and not c.text.startswith(STATUS_PREFIX) and not c.text.startswith("Slow"))))


def flood(stub: TelegramStub, photos: list[bytes], samples: int) -> dict[str, Any]:
    idle = [_latency(stub, 900_000 + n, photos[n % len(photos)]) for n in range(samples)]
    group = stub.group_chat(-1_009_000_000_001)
    started = time.monotonic()
    for n in range(FLOOD_PHOTOS):
        stub.photo(group, 800_000 + n, photos[n % len(photos)], caption="/detect")
    busy = []
    for n in range(samples):
        busy.append(_latency(stub, 910_000 + n, photos[n % len(photos)]))
        time.sleep(max(0.0, started + (n + 1) * SAMPLE_GAP - time.monotonic()))
    counts = {}
    for mark in (60.0, 120.0):
        time.sleep(max(0.0, started + mark - time.monotonic()))
        counts[f"group_answered_after_{mark:.0f}s"] = _answers(stub, {group["id"]})
    idle_p50, busy_p50 = statistics.median(idle), statistics.median(busy)
    return {
        "private_idle_p50_s": round(idle_p50, 3), "private_idle_s": [round(x, 3) for x in idle],
        "private_during_flood_p50_s": round(busy_p50, 3), "private_during_flood_s": [round(x, 3) for x in busy],
        "ratio": round(busy_p50 / idle_p50, 2),
        "group_photos": FLOOD_PHOTOS, **counts,
        "group_allowed_by_telegram_after_120s": min(FLOOD_PHOTOS, GROUP_PER_MINUTE + 2 * GROUP_PER_MINUTE),
    }


def burst(stub: TelegramStub, photos: list[bytes], people: int, each: int) -> dict[str, Any]:
    before = stub.requests_by_method()
    refused_before = stub.refused_by_limits()
    users = [700_000 + n for n in range(people)]
    started = time.monotonic()
    sent = [(u, stub.photo(stub.private_chat(u), u, photos[(n * each + k) % len(photos)])["message_id"])
            for k in range(each) for n, u in enumerate(users)]
    times = _wait(lambda: _all_answered(stub, sent), ANSWER_TIMEOUT, "every answer")
    last = max(times.values())
    latencies = sorted(at - started for at in times.values())
    after = stub.requests_by_method()
    by_method = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}
    limited = sum(v for k, v in by_method.items() if k.startswith(("send", "edit", "delete")))
    answers = _answers(stub, set(users))
    return {
        "photos": len(sent), "people": people, "seconds": round(last - started, 2),
        "answers_per_s": round(len(sent) / (last - started), 1),
        "p50_s": round(latencies[len(latencies) // 2], 2), "p95_s": round(latencies[int(len(latencies) * 0.95)], 2),
        "answers": answers, "telegram_requests": limited,
        "answers_share": round(answers / limited, 3) if limited else None,
        "refused_429": stub.refused_by_limits() - refused_before, "refused_429_by": dict(stub.limit_refusals_by),
        "requests_by_method": by_method,
    }


def deliver(stub: TelegramStub, redis_url: str, photos: list[bytes], people: int, each: int) -> dict[str, Any]:
    """The bot's side alone: ``people`` × ``each`` results written into Redis as workers write them (no
    inference), answered against the limits. What the bot and Telegram's budget allow, whatever the CPUs."""
    from redis import Redis

    from jobs import store

    redis = Redis.from_url(redis_url)
    refused_before = stub.refused_by_limits()
    users = [600_000 + n for n in range(people)]
    detection = {"boxes": [{"class_id": 0, "class_name": "circle", "confidence": 0.9, "x1": 1, "y1": 2, "x2": 30,
                            "y2": 40}], "width": 640, "height": 640, "confidence": 0.25}
    sent = [(u, 5000 + k) for k in range(each) for u in users]
    started = time.monotonic()
    for n, (user, message) in enumerate(sent):
        job_id = f"bench{n}"
        store.save_job(redis, job_id, b"", {}, {"chat_id": user, "message_id": message})
        store.complete(redis, job_id, ok=True, detection=detection, annotated=photos[n % len(photos)])
    times = _wait(lambda: _all_answered(stub, sent), ANSWER_TIMEOUT, "every answer")
    last = max(times.values())
    redis.close()
    return {"photos": len(sent), "people": people, "seconds": round(last - started, 2),
            "answers_per_s": round(len(sent) / (last - started), 1),
            "refused_429": stub.refused_by_limits() - refused_before}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--each", type=int, default=3, help="photos per person in the burst")
    parser.add_argument("--samples", type=int, default=5, help="private-photo latency samples per phase")
    parser.add_argument("--only", choices=("flood", "burst", "deliver"))
    parser.add_argument("--log-level", default="INFO", help="the bot's DETBOT_LOG_LEVEL (its log is kept)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="detbot-bench-fairness-"))
    redis = RedisServer(work / "redis")
    redis.start()
    stub = TelegramStub(TOKEN).start()
    stub.enforce_limits()
    photos = [encode(img) for img, _ in make_images(5000, 8)]
    results: dict[str, Any] = {"workers": args.workers}
    try:
        with running_workers(redis.url, count=args.workers):
            # No per-person or per-chat photo limit: the bench measures Telegram's budget and the queue.
            bot = BotProcess(stub, redis.url, work / "bot.log", DETBOT_RATE_LIMIT_USER="0",
                             DETBOT_RATE_LIMIT_CHAT="0", DETBOT_MAX_QUEUED_JOBS="1000",
                             DETBOT_LOG_LEVEL=args.log_level).start()
            try:
                if args.only in (None, "flood"):
                    results["flood"] = flood(stub, photos, args.samples)
                    print(json.dumps({"flood": results["flood"]}), flush=True)
                if args.only in (None, "burst"):
                    results["burst"] = burst(stub, photos, args.people, args.each)
                    print(json.dumps({"burst": results["burst"]}), flush=True)
                if args.only in (None, "deliver"):
                    results["deliver"] = deliver(stub, redis.url, photos, args.people, args.each)
                    print(json.dumps({"deliver": results["deliver"]}), flush=True)
            finally:
                bot.stop()
    finally:
        stub.stop()
        redis.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
