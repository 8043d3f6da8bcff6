"""The bot process itself: no torch, clear start-up errors, and it keeps running while Redis is down."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ops.shapes import make_images
from tests.conftest import DETBOT, ROOT, RedisServer, detbot_env, free_port
from tests.telegram_stub import STATUS_PREFIX, BotProcess, TelegramStub, encode, wait_answer

TOKEN = "555666777:PROCESS-secret-token"
HEAVY = ("torch", "torchvision", "ultralytics", "detector.model", "jobs.tasks", "jobs.worker")


def test_bot_modules_never_import_torch() -> None:
    code = (
        "import importlib, pkgutil, sys, bot\n"
        "for m in pkgutil.iter_modules(bot.__path__): importlib.import_module(f'bot.{m.name}')\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_token_is_one_clear_line() -> None:
    out = subprocess.run([*DETBOT, "bot"], cwd=ROOT, env=detbot_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "TELEGRAM_BOT_TOKEN: not set" in out.stderr and "Traceback" not in out.stderr


def test_token_refused_by_telegram_exits_2_without_leaking_it() -> None:
    stub = TelegramStub(TOKEN).start()
    wrong = "999:WRONG-token-value"
    try:
        env = detbot_env(TELEGRAM_BOT_TOKEN=wrong, TELEGRAM_API_BASE_URL=stub.url, REDIS_URL="redis://127.0.0.1:9/0")
        out = subprocess.run([*DETBOT, "bot"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        stub.stop()
    assert out.returncode == 2
    assert "Telegram refused the token" in out.stderr
    assert "WRONG-token-value" not in out.stderr + out.stdout and "Traceback" not in out.stderr


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_redis_down_allow_list_and_health(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")  # not started yet: the bot starts without Redis
    stub = TelegramStub(TOKEN).start()
    metrics_port = free_port()
    bot = BotProcess(stub, redis.url, tmp_path / "bot.log", DETBOT_ALLOWED_CHATS="601, 602",
                     DETBOT_BOT_METRICS_PORT=str(metrics_port))
    img = encode(make_images(3000, 1)[0][0])
    try:
        bot.start()
        allowed, stranger = stub.private_chat(601), stub.private_chat(699)
        photo = stub.photo(allowed, 601, img)
        assert "temporarily unavailable" in wait_answer(stub, 601, photo["message_id"], 30).text
        setting = stub.text(allowed, 601, "/threshold 0.5")
        assert "temporarily unavailable" in wait_answer(stub, 601, setting["message_id"], 30).text
        helped = stub.text(allowed, 601, "/help")
        assert "/threshold" in wait_answer(stub, 601, helped["message_id"], 30).text
        other = stub.photo(stranger, 699, img)
        assert "private bot" in wait_answer(stub, 699, other["message_id"], 30).text
        assert not stub.sent("getFile", ok=None) and bot.proc.poll() is None

        status, body = _get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert status == 503 and json.loads(body) == {"ok": False, "redis": False, "updates": False}
        status, body = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert b'detbot_bot_photos_refused_total{reason="redis_unreachable"} 1.0' in body

        # Redis comes back: the same bot queues photos again (no worker here, so it reports the queue).
        redis.start()
        again = stub.photo(stub.private_chat(602), 602, img)
        status_msg = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", 602)
                                             if c.reply_to == again["message_id"]], 60, "a status message")[0]
        assert status_msg.text == f"{STATUS_PREFIX} Queued, position 1…"
        assert stub.wait_for(lambda: _get(f"http://127.0.0.1:{metrics_port}/healthz")[0] == 200, 30, "healthy")
        log = bot.log()
        assert "Traceback" not in log and TOKEN not in log
    finally:
        bot.kill()
        stub.stop()
        redis.stop()
