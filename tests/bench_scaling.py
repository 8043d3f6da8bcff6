"""Capacity benchmark (issue 18, docs/scaling.md): what one photo costs each component, measured on real
processes — the bot (CPU to take a photo in, CPU to deliver its answer), a worker (CPU per photo), Redis
(bytes per waiting photo, per answer waiting for the bot, per answered photo) and the network (bytes in and
out of the bot) — plus what a bot replica costs standing by and what a webhook request costs.

    python -m tests.bench_scaling [--photos 200] [--workers 2] [--model PATH] [--images DIR]

By default the official YOLO11n and COCO photos from ../shared when they are there (else the test model and
synthetic shapes). Not collected by pytest: figures, no pass/fail. The phases keep each cost apart: photos
are queued with no worker running (the bot's intake alone), the bot is stopped and the workers answer them
all (the workers alone; the answers wait in Redis), then the bot is started again and delivers (delivery
alone). The machine's load is printed beside the figures: the development machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from redis import Redis

from jobs import keys
from jobs.client import DetectionClient
from jobs.defaults import QUEUE_NAME
from tests.bench_soak import key_kinds
from tests.conftest import RedisServer, free_port
from tests.shapes import MODEL_PATH
from tests.telegram_stub import BotProcess, TelegramStub, delivered
from tests.workers import running_workers

TOKEN = "864209753:BENCH-scaling-token"
SHARED = Path(__file__).resolve().parents[2] / "shared"
COCO_MODEL = SHARED / "models" / "yolo11n.pt"
COCO_IMAGES = SHARED / "data" / "coco128" / "images" / "train2017"
# A phase not done within this long is stuck, not slow.
PHASE_TIMEOUT = 900.0
# How long the idle replicas are watched for their standing cost.
IDLE_SECONDS = 20.0
# Webhook requests timed one after another.
WEBHOOK_POSTS = 300
SECRET = "bench-webhook-secret-0123456789"
# What the bot sends a person (counted as bytes out).
ANSWERS = ("sendPhoto", "sendMessage", "sendMediaGroup", "sendDocument")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def used_memory(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


def load_images(folder: Path | None, count: int) -> list[bytes]:
    if folder is not None and folder.is_dir():
        files = sorted(folder.glob("*.jpg"))[:count]
        return [f.read_bytes() for f in files]
    from ops.shapes import make_images
    from tests.telegram_stub import encode

    return [encode(img) for img, _ in make_images(4400, min(count, 32))]


def wait(condition, what: str, timeout: float = PHASE_TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", type=Path, default=COCO_MODEL if COCO_MODEL.exists() else MODEL_PATH)
    parser.add_argument("--images", type=Path, default=COCO_IMAGES if COCO_IMAGES.exists() else None)
    args = parser.parse_args(argv)
    images = load_images(args.images, args.photos)
    n = args.photos
    tmp = Path(tempfile.mkdtemp(prefix="detbot-bench-scaling-"))
    server = RedisServer(tmp / "redis")
    server.start()
    redis = Redis.from_url(server.url)
    stub = TelegramStub(TOKEN).start()
    # No limits, and no "queued" messages: photos wait for workers on purpose here, not for a person.
    env = {"DETBOT_MAX_QUEUED_JOBS": str(n + 10), "DETBOT_RATE_LIMIT_USER": "0", "DETBOT_RATE_LIMIT_CHAT": "0",
           "DETBOT_TEST_STATUS_DELAY_MS": str(10 * 60 * 1000)}
    worker_env = {"DETBOT_MODEL": str(args.model)}
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; model {args.model.name}; "
          f"{n} photos, mean {statistics.mean(len(i) for i in images) / 1024:.0f} KB; {args.workers} workers")
    try:
        # 1. Intake: the bot takes every photo in (download, header check, submit); no worker runs.
        bot = BotProcess(stub, server.url, tmp / "bot-1.log", **env).start()
        base_memory = used_memory(redis)
        cpu0 = cpu_seconds(bot.proc.pid)
        users = [70_000_000 + i for i in range(n)]
        sent = [stub.photo(stub.private_chat(u), u, images[i % len(images)]) for i, u in enumerate(users)]
        client = DetectionClient(redis)
        wait(lambda: client.queued() == n, "every photo queued")
        wait(lambda: redis.xlen(keys.inbox(stub.bot_id)) == 0, "every update handled")
        intake_cpu = cpu_seconds(bot.proc.pid) - cpu0
        waiting_memory = used_memory(redis) - base_memory
        photo_bytes = sum(len(images[i % len(images)]) for i in range(n))
        bot.kill()  # a graceful stop would wait for the (here long) status-message timers first

        # 2. Detection: the workers answer them all while no bot runs; the answers wait in Redis.
        with running_workers(server.url, count=args.workers, env=worker_env, log_dir=tmp) as workers:
            before = {w.pid: cpu_seconds(w.pid) for w in workers}
            started = time.monotonic()
            stream = keys.events(QUEUE_NAME, stub.bot_id)
            wait(lambda: redis.exists(stream) and redis.xlen(stream) >= n, "every photo detected")
            detect_wall = time.monotonic() - started
            worker_cpu = sum(cpu_seconds(w.pid) - before[w.pid] for w in workers)
            answers_memory = used_memory(redis) - base_memory
            wrss = max(psutil.Process(w.pid).memory_info().rss for w in workers)

        # 3. Delivery: the bot sends every answer (and stores its buttons' state).
        bot = BotProcess(stub, server.url, tmp / "bot-2.log", **env).start()
        cpu0 = cpu_seconds(bot.proc.pid)
        wait(lambda: delivered(redis, stub.bot_id), "every answer delivered")
        delivery_cpu = cpu_seconds(bot.proc.pid) - cpu0
        answered_memory = used_memory(redis) - base_memory
        kinds = key_kinds(redis)
        bot_rss = bot.rss_bytes()
        uploads = sum(sum(len(f) for f in c.files.values()) + len(json.dumps(c.params)) for c in stub.sent()
                      if c.method in ANSWERS)
        downloads = sum(len(stub.files[str(c.params["file_id"])]) for c in stub.sent("download"))
        answered = sum(1 for u, m in zip(users, sent, strict=True)
                       if any(c.reply_to == m["message_id"] for c in stub.sent("sendPhoto", u)))

        # 4. Standing by: a second replica, both idle.
        standby = BotProcess(stub, server.url, tmp / "bot-3.log", **env).start(ready="standing by")
        idle = {b.proc.pid: cpu_seconds(b.proc.pid) for b in (bot, standby)}
        time.sleep(IDLE_SECONDS)
        idle_ms = {pid: (cpu_seconds(pid) - c) * 1000 / IDLE_SECONDS for pid, c in idle.items()}
        standby.stop()
        bot.stop()

        # 5. A webhook request: the secret checked, the update in the inbox, the 200.
        port = free_port()
        hook = BotProcess(stub, server.url, tmp / "bot-4.log", DETBOT_WEBHOOK_URL=f"http://127.0.0.1:{port}/tg",
                          DETBOT_WEBHOOK_SECRET=SECRET, DETBOT_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
                          **env).start(ready="webhook set")
        latencies = []
        cpu0 = cpu_seconds(hook.proc.pid)
        for i in range(WEBHOOK_POSTS):
            update = {"update_id": 90_000_000 + i, "message": {
                "message_id": i + 1, "date": 0, "chat": stub.private_chat(80_000_000 + i),
                "from": stub.user(80_000_000 + i), "text": "hello"}}
            request = urllib.request.Request(f"http://127.0.0.1:{port}/tg", data=json.dumps(update).encode(),
                                             headers={"Content-Type": "application/json",
                                                      "X-Telegram-Bot-Api-Secret-Token": SECRET})
            t0 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
            latencies.append((time.perf_counter() - t0) * 1000)
        wait(lambda: redis.xlen(keys.inbox(stub.bot_id)) == 0, "the webhook's updates handled")
        hook_cpu = cpu_seconds(hook.proc.pid) - cpu0
        hook.stop()
    finally:
        stub.stop()
        server.stop()

    kb = 1024
    print(f"\nanswered {answered}/{n} photos with their annotated image")
    print("| what | per photo |\n|---|---:|")
    print(f"| bot CPU, intake (getFile, download, header check, submit) | {intake_cpu * 1000 / n:.1f} ms |")
    print(f"| bot CPU, delivery (read result, sendPhoto, store buttons) | {delivery_cpu * 1000 / n:.1f} ms |")
    print(f"| worker CPU (decode, inference, drawing, JPEG) | {worker_cpu * 1000 / n:.0f} ms |")
    print(f"| worker wall, {args.workers} workers side by side | {detect_wall * 1000 / n:.0f} ms "
          f"({n / detect_wall:.1f} photos/s) |")
    print(f"| Redis, a photo waiting for a worker | {waiting_memory / n / kb:.0f} KB "
          f"(the photo itself {photo_bytes / n / kb:.0f} KB) |")
    print(f"| Redis, an answer waiting for the bot | {answers_memory / n / kb:.0f} KB |")
    print(f"| Redis, an answered photo (records 10 min, marker and buttons 24 h) | {answered_memory / n / kb:.1f} KB |")
    print(f"| bytes into the bot (photo downloads) | {downloads / n / kb:.0f} KB |")
    print(f"| bytes out of the bot (annotated photo + request) | {uploads / n / kb:.0f} KB |")
    print(f"| webhook request → 200 (inbox written), p50 / p95 | {statistics.median(latencies):.1f} / "
          f"{sorted(latencies)[int(len(latencies) * 0.95)]:.1f} ms |")
    print(f"| bot CPU per webhook update (request + handling a text) | {hook_cpu * 1000 / WEBHOOK_POSTS:.1f} ms |")
    print(f"| replica standing by / holding the lease, idle | {sorted(idle_ms.values())[0]:.1f} / "
          f"{sorted(idle_ms.values())[-1]:.1f} ms CPU per s |")
    print(f"| bot RSS / largest worker RSS | {bot_rss / kb / kb:.0f} MB / {wrss / kb / kb:.0f} MB |")
    print("\nRedis after delivery, by key (jobs.keys.LIFETIMES row): keys, bytes per answered photo")
    for pattern, (count, size) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
        lifetime = getattr(keys.lifetime(pattern.replace("*", "x")), "bound", "")
        print(f"| `{pattern}` | {count} | {size / n:.0f} B | {lifetime[:60]} |")
    print(f"load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
