"""Benchmark of the answers' buttons: press -> edited message at the Bot API stand-in, p50 and p95, with the
workers idle and with a backlog of photos queued; and the Redis memory one adjustable answer costs.

Run: ``python -m tests.bench_buttons [--workers 2] [--presses 40] [--backlog 50] [--job-ms 300]
[--file-mp 24]`` (not collected by pytest).
It starts everything for real: redis-server, ``detbot worker`` processes on the shipped shapes model, the
``detbot bot`` process against the stand-in. A press is timed from the moment the stand-in hands out the
callback_query update to the moment it records the bot's editMessageMedia of that message. A last round
presses answers to images sent as large files (``--file-mp`` megapixels, JPEG with grain: ~10 MB) and
reports, beside the time, the bytes each press made Redis receive (``INFO stats`` total_net_input_bytes):
what a render request carries.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs import keys
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import BotProcess, TelegramStub, encode, wait_answer
from tests.workers import running_workers

TOKEN = "987654321:AAH-bench-buttons"
# Answers pressed in turn: the first press of each fetches the clean photo from Telegram again.
ANSWERS = 5
# Answers a day the memory figure is scaled to (issue 12).
ANSWERS_PER_DAY = 10_000
SECONDS_PER_DAY = 24 * 3600
_users = itertools.count(50_000)
# Workers take this long more per photo (a sleep, no CPU): the shapes model alone answers ~20 photos/s on two
# workers, which drains a backlog in seconds and, fed at that rate, makes the bot's answers alone exceed
# Telegram's 30 messages/s; at 300 ms a photo (a YOLO11n on a small CPU) two workers answer ~6.7 photos/s,
# so the backlog of 50 stays for the whole measurement and the bot's sends stay under the flood limit.
JOB_MS = 300
# The RQ list of the default queue: its length is the backlog.
QUEUE_KEY = "rq:queue:detbot"
# The feeder tops the backlog up to this many photos above the asked depth (intake takes a moment).
FEED_MARGIN = 10
# How often the feeder looks at the backlog (seconds): a bench's pacing, not a test's synchronisation.
FEED_POLL = 0.02


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, stub: TelegramStub, redis_url: str) -> None:
        self.stub = stub
        from redis import Redis

        self.redis = Redis.from_url(redis_url)

    def answer(self, image: bytes, caption: str) -> tuple[int, int]:
        """A private chat's answered photo with its buttons stored: (chat id, answer message id)."""
        user = next(_users)
        msg = self.stub.photo(self.stub.private_chat(user), user, image, caption=caption)
        answer = wait_answer(self.stub, user, msg["message_id"], timeout=300)
        mid = int(answer.result["message_id"])
        self.stub.wait_for(lambda: self.stub.keyboard(user, mid), 30, "the keyboard")
        key = keys.answer(self.stub.bot_id, self.answer_id(user, mid))
        self.stub.wait_for(lambda: self.redis.exists(key), 30, "the state")
        return user, mid

    def file_answer(self, image: bytes) -> tuple[int, int]:
        """:meth:`answer` for an image sent as a file (a document)."""
        user = next(_users)
        msg = self.stub.document(self.stub.private_chat(user), user, image, "image/jpeg", "large.jpg", caption="0.4")
        answer = wait_answer(self.stub, user, msg["message_id"], timeout=300)
        mid = int(answer.result["message_id"])
        key = keys.answer(self.stub.bot_id, self.answer_id(user, mid))
        self.stub.wait_for(lambda: self.redis.exists(key), 30, "the state")
        return user, mid

    def redis_in(self) -> int:
        """Bytes Redis has received from all its clients so far."""
        return int(self.redis.info("stats")["total_net_input_bytes"])

    def answer_id(self, chat: int, mid: int) -> str:
        return str(self.stub.keyboard(chat, mid)[0][0]["callback_data"]).split(":")[1]

    def press(self, chat: int, mid: int, action: str) -> float:
        """Seconds from the press to the edited message."""
        edits_before = self._edits(chat, mid)
        data = next(b["callback_data"] for row in self.stub.keyboard(chat, mid) for b in row
                    if b["callback_data"].endswith(f":{action}"))
        started = time.monotonic()
        self.stub.press(chat, chat, mid, data)
        edit = self.stub.wait_for(lambda: self._edits(chat, mid)[len(edits_before):], 60, "the edit")[0]
        return edit.at - started

    def _edits(self, chat: int, mid: int) -> list[Any]:
        return [c for c in self.stub.sent("editMessageMedia", chat) if int(c.params["message_id"]) == mid]

    def round(self, answers: list[tuple[int, int]], presses: int) -> list[float]:
        """``presses`` presses, one at a time, lower/higher in turn over the answers."""
        times = []
        for i in range(presses):
            chat, mid = answers[i % len(answers)]
            times.append(self.press(chat, mid, "lo" if (i // len(answers)) % 2 == 0 else "hi"))
        return times


class Feeder(threading.Thread):
    """Keeps at least ``depth`` photos waiting in the queue: people keep sending while others press."""

    def __init__(self, stub: TelegramStub, redis: Any, photos: list[bytes], depth: int) -> None:
        super().__init__(daemon=True)
        self.stub, self.redis, self.photos, self.depth = stub, redis, photos, depth
        self.sent = 0
        self.users: set[int] = set()
        self._halt = threading.Event()

    def queued(self) -> int:
        return int(self.redis.llen(QUEUE_KEY))

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def in_flight(self) -> int:
        """Photos fed and not answered yet: waiting in the queue, or still in the bot's intake."""
        answered = sum(1 for c in self.stub.sent("sendPhoto") if c.chat_id in self.users)
        return self.sent - answered

    def run(self) -> None:
        while not self._halt.is_set():
            # Fed at the pace they are answered: no pile-up in the bot beyond the backlog asked for.
            if self.queued() < self.depth + FEED_MARGIN and self.in_flight() < self.depth + 2 * FEED_MARGIN:
                user = next(_users)
                self.users.add(user)
                self.stub.photo(self.stub.private_chat(user), user, self.photos[self.sent % len(self.photos)],
                                caption="0.4")
                self.sent += 1
            else:
                self._halt.wait(FEED_POLL)


def report(name: str, times: list[float]) -> None:
    ms = [t * 1e3 for t in times]
    print(f"{name}: {len(ms)} presses, p50 {percentile(ms, 0.5):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms, "
          f"max {max(ms):.0f} ms, mean {statistics.fmean(ms):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--backlog", type=int, default=50)
    parser.add_argument("--file-mp", type=float, default=24.0, help="megapixels of the large-file answers")
    parser.add_argument("--job-ms", type=int, default=JOB_MS,
                        help="extra time per photo in the workers (DETBOT_TEST_JOB_DELAY_MS), see JOB_MS")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="detbot-bench-buttons-"))
    server = RedisServer(work / "redis")
    server.start()
    stub = TelegramStub(TOKEN).start()
    images = make_images(4000, ANSWERS + args.backlog + 16)
    try:
        with running_workers(server.url, count=args.workers, env={"DETBOT_TEST_JOB_DELAY_MS": str(args.job_ms)}):
            bot = BotProcess(stub, server.url, work / "bot.log", DETBOT_RATE_LIMIT_USER="0",
                             DETBOT_RATE_LIMIT_CHAT="0", DETBOT_MAX_QUEUED_JOBS="1000").start()
            try:
                bench = Bench(stub, server.url)
                answers = [bench.answer(encode(img), "0.4") for img, _ in images[:ANSWERS]]
                report("idle workers", bench.round(answers, args.presses))
                feeder = Feeder(stub, bench.redis, [encode(img) for img, _ in images[ANSWERS:ANSWERS + 20]],
                                args.backlog)
                feeder.start()
                stub.wait_for(lambda: feeder.queued() >= args.backlog, 120, "the backlog to build up")
                depths: list[int] = []
                times: list[float] = []
                for i in range(args.presses):
                    depths.append(feeder.queued())
                    times.append(bench.press(*answers[i % len(answers)], "lo" if i % 2 == 0 else "hi"))
                feeder.stop()
                report(f"backlog of about {args.backlog} photos (queued at each press: min {min(depths)}, "
                       f"max {max(depths)}; {feeder.sent} photos fed)", times)
                memory(bench, stub, images)
                large_files(bench, images, args.file_mp, args.presses // 2)
            finally:
                bot.stop()
    finally:
        stub.stop()
        server.stop()


def memory(bench: Bench, stub: TelegramStub, images: list[tuple[np.ndarray, list[Any]]]) -> None:
    """MEMORY USAGE of the answers' hashes: a typical answer, and one with many boxes (a mosaic at 0.05)."""
    keys_now = [k for k in bench.redis.scan_iter(match=keys.answer(bench.stub.bot_id, "*"))]
    sizes = [int(bench.redis.memory_usage(k) or 0) for k in keys_now]
    tiles = [img[:224, :224] for img, _ in images[-16:]]
    mosaic = np.vstack([np.hstack(tiles[r * 4:(r + 1) * 4]) for r in range(4)])
    chat, mid = bench.answer(encode(mosaic), "0.05")
    big = int(bench.redis.memory_usage(keys.answer(bench.stub.bot_id, bench.answer_id(chat, mid))) or 0)
    typical = statistics.median(sizes)
    print(f"answer state: median {typical:.0f} B over {len(sizes)} answers (max {max(sizes)} B); "
          f"a 16-tile mosaic with every box down to 0.05: {big} B")
    print(f"at {ANSWERS_PER_DAY} answers/day with a 24 h TTL: {typical * ANSWERS_PER_DAY / 1e6:.1f} MB typical, "
          f"{big * ANSWERS_PER_DAY / 1e6:.1f} MB if every answer were the mosaic")


def large_files(bench: Bench, images: list[tuple[np.ndarray, list[Any]]], megapixels: float, presses: int) -> None:
    """Presses on answers to large image files: time, and bytes Redis received per press (the first press of
    each answer and the later ones apart: the first may fetch and down-scale the clean image)."""
    import cv2

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    grain = np.random.default_rng(5).integers(-16, 16, (height, width, 3))
    files = []
    for img, _ in images[:2]:
        large = np.clip(cv2.resize(img, (width, height)).astype(np.int16) + grain, 0, 255).astype(np.uint8)
        files.append(encode(large))
    answers = [bench.file_answer(data) for data in files]
    first: list[tuple[float, int]] = []
    later: list[tuple[float, int]] = []
    for i in range(max(presses, 2 * len(answers))):
        before = bench.redis_in()
        took = bench.press(*answers[i % len(answers)], "lo" if (i // len(answers)) % 2 == 0 else "hi")
        (first if i < len(answers) else later).append((took, bench.redis_in() - before))
    size = statistics.fmean(len(d) for d in files) / 1e6
    for name, rows in (("first press of each", first), ("later presses", later)):
        report(f"large files ({width}x{height}, {size:.1f} MB): {name}", [t for t, _ in rows])
        print(f"  Redis received per press: median {statistics.median(b for _, b in rows) / 1e6:.2f} MB, "
              f"max {max(b for _, b in rows) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
