"""Soak benchmark (issue 11, rule 6): thousands of photos across hundreds of chats through the real bot, real
workers and a real Redis, with the Bot API stand-in; reports Redis keys, Redis memory and the processes' RSS
at checkpoints. State must stay flat: what grows with traffic is only what expires (jobs.keys.LIFETIMES).

    python -m tests.bench_soak [--photos 2000] [--chats 400] [--workers 2]

Not collected by pytest (a benchmark, not a test: figures, no pass/fail on timings). Every chat sends
photos (some with a caption, some a damaged file answered with an error) and a few set a threshold; the
bot's per-person limits are off so the figures measure state, not refusals.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from redis import Redis

from jobs import keys
from jobs.defaults import QUEUE_NAME
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import STATUS_PREFIX, BotProcess, TelegramStub, encode
from tests.workers import WorkerProcess, running_workers

TOKEN = "987654321:AAH-soak-SECRET-token_xyz"
# Photos waiting for an answer at once: well under the queue's MAX_QUEUED_JOBS, so none is refused "busy".
IN_FLIGHT = 60
# One photo in this many is a damaged file: the error path's state is part of the soak.
DAMAGED_EVERY = 10
# A photo not answered within this long means the soak is stuck, not slow.
ANSWER_TIMEOUT = 120.0
# Distinct images sent (the same bytes may go to many chats).
DISTINCT_IMAGES = 16
# Methods that answer a photo (a status message is also a sendMessage: its text tells it apart).
ANSWER_METHODS = ("sendPhoto", "sendMessage", "sendMediaGroup", "sendDocument")


@dataclass(frozen=True)
class Snapshot:
    photos: int
    keys: int
    keys_no_ttl: int
    used_memory: int
    bot_rss: int
    worker_rss: int  # the largest worker's

    def row(self) -> str:
        mb = 1024 * 1024
        return (f"| {self.photos:>6} | {self.keys:>6} | {self.keys_no_ttl:>5} | {self.used_memory / mb:8.1f} | "
                f"{self.bot_rss / mb:7.1f} | {self.worker_rss / mb:8.1f} |")


HEADER = ("| photos | keys | no TTL | Redis MB | bot MB | worker MB |\n"
          "|---:|---:|---:|---:|---:|---:|")


def snapshot(redis: Redis, photos: int, bot: BotProcess, workers: list[WorkerProcess]) -> Snapshot:
    names = [k.decode() for k in redis.scan_iter(count=1000)]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.ttl(name)
    no_ttl = sum(1 for ttl in pipe.execute() if ttl == -1)
    used = int(redis.info("memory")["used_memory"])
    worker_rss = max(int(psutil.Process(w.pid).memory_info().rss) for w in workers)
    return Snapshot(photos, len(names), no_ttl, used, bot.rss_bytes(), worker_rss)


def key_kinds(redis: Redis) -> dict[str, tuple[int, int]]:
    """Per row of jobs.keys.LIFETIMES (its pattern): how many keys, and the bytes they take (MEMORY USAGE)."""
    out: dict[str, tuple[int, int]] = {}
    for raw in redis.scan_iter(count=1000):
        pattern = getattr(keys.lifetime(raw.decode()), "pattern", "?")
        count, size = out.get(pattern, (0, 0))
        out[pattern] = (count + 1, size + int(redis.memory_usage(raw) or 0))
    return out


class Soak:
    """Sends photos across chats, IN_FLIGHT at a time, and waits for each one's answer."""

    def __init__(self, stub: TelegramStub, chats: int) -> None:
        self.stub = stub
        self.users = [50_000_000 + n for n in range(chats)]
        self.images = [encode(img) for img, _ in make_images(4000, DISTINCT_IMAGES)]
        self.waiting: set[tuple[int, int]] = set()
        self.seen = 0  # calls of the stub already read
        self.sent = 0

    def send_one(self) -> None:
        n = self.sent
        user = self.users[n % len(self.users)]
        chat = self.stub.private_chat(user)
        data = self.images[n % len(self.images)]
        if n % DAMAGED_EVERY == DAMAGED_EVERY - 1:
            msg = self.stub.document(chat, user, data[: len(data) // 3], "image/jpeg", "cut.jpg")
        else:
            msg = self.stub.photo(chat, user, data, caption="0.3" if n % 3 == 0 else None)
        self.waiting.add((user, msg["message_id"]))
        self.sent += 1

    def _collect_answers(self) -> None:
        calls = self.stub.calls[self.seen:]
        self.seen += len(calls)
        for call in calls:
            if call.ok and call.method in ANSWER_METHODS and not call.text.startswith(STATUS_PREFIX):
                self.waiting.discard((call.chat_id or 0, call.reply_to or 0))

    def run(self, photos: int) -> None:
        """Send ``photos`` more and return once every one of them is answered."""
        target = self.sent + photos
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while self.sent < target or self.waiting:
            while self.sent < target and len(self.waiting) < IN_FLIGHT:
                self.send_one()
                deadline = time.monotonic() + ANSWER_TIMEOUT
            self.stub.wait_for(self._answered_some(len(self.waiting)), max(1.0, deadline - time.monotonic()),
                               f"one of {len(self.waiting)} answers")

    def _answered_some(self, before: int) -> Callable[[], bool]:
        def check() -> bool:
            self._collect_answers()
            return len(self.waiting) < before
        return check


def set_thresholds(stub: TelegramStub, users: list[int]) -> None:
    """A chat setting for some chats: their hashes are part of the bounded state."""
    for user in users:
        stub.text(stub.private_chat(user), user, "/threshold 0.4")


def settle(redis: Redis, timeout: float = 60.0) -> None:
    """Wait until every completion is acknowledged (the events stream empty)."""
    deadline = time.monotonic() + timeout
    while redis.xlen(keys.events(QUEUE_NAME, int(TOKEN.split(":")[0]))) and time.monotonic() < deadline:
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--chats", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, default=4, help="snapshots after the warm-up")
    parser.add_argument("--bot-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the bot process (diagnostics, e.g. MALLOC_ARENA_MAX=2)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="detbot-soak-"))
    server = RedisServer(tmp / "redis")
    server.start()
    stub = TelegramStub(TOKEN, username="detbot_soak_bot").start()
    redis = Redis.from_url(server.url)
    started = time.monotonic()
    try:
        with running_workers(server.url, count=args.workers, log_dir=tmp) as workers:
            extra = dict(item.split("=", 1) for item in args.bot_env)
            bot = BotProcess(stub, server.url, tmp / "bot.log", DETBOT_RATE_LIMIT_USER="0",
                             DETBOT_RATE_LIMIT_CHAT="0", **extra).start()
            try:
                soak = Soak(stub, args.chats)
                set_thresholds(stub, soak.users[: args.chats // 10])
                warmup = max(args.photos // 10, args.chats // 2)
                soak.run(warmup)
                settle(redis)
                rows = [snapshot(redis, soak.sent, bot, workers)]
                step = max(1, (args.photos - warmup) // args.checkpoints)
                for _ in itertools.repeat(None, args.checkpoints):
                    soak.run(step)
                    settle(redis)
                    rows.append(snapshot(redis, soak.sent, bot, workers))
                report(args, rows, key_kinds(redis), time.monotonic() - started)
            finally:
                bot.stop()
    finally:
        redis.close()
        stub.stop()
        server.stop()


def report(args: Any, rows: list[Snapshot], kinds: dict[str, tuple[int, int]], seconds: float) -> None:
    first, last = rows[0], rows[-1]
    photos = last.photos - first.photos
    print(f"soak: {last.photos} photos across {args.chats} chats, {args.workers} workers, {seconds:.0f} s")
    print(HEADER)
    for row in rows:
        print(row.row())
    print(f"keys without a TTL: {first.keys_no_ttl} -> {last.keys_no_ttl}; keys with one: "
          f"+{(last.keys - last.keys_no_ttl) - (first.keys - first.keys_no_ttl)} over {photos} photos "
          f"(they expire: jobs.keys.LIFETIMES)")
    print(f"Redis: +{(last.used_memory - first.used_memory) / max(photos, 1):.0f} bytes per photo, until expiry; "
          f"bot RSS {(last.bot_rss - first.bot_rss) / 2**20:+.1f} MB, worker RSS "
          f"{(last.worker_rss - first.worker_rss) / 2**20:+.1f} MB")
    print("keys by kind at the end: | pattern | keys | KB | bytes per key |")
    for pattern, (count, size) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
        print(f"| `{pattern}` | {count} | {size / 1024:.0f} | {size // count} |")


if __name__ == "__main__":
    main()
