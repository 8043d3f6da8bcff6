"""Webhook mode (issue 18): DETBOT_WEBHOOK_URL switches from long polling to a webhook every replica takes;
the secret header is checked (none: 401, another: 403, nothing done); an update is in the Redis inbox before
the 200, so a bot killed right after loses nothing; setWebhook at the start, deleteWebhook back in polling;
/healthz goes unhealthy when updates stop arriving (a failing webhook, a 409 loop).

The Bot API stand-in POSTs the updates to the webhook as Telegram does (one at a time, with the secret,
again until it gets a 2xx). One worker and one Redis for the module; each test starts the bots it needs.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from redis import Redis

from bot.app import ALLOWED_UPDATES
from bot.settings import DEFAULT_WEBHOOK_CONNECTIONS, BotSettings, listen_address
from jobs import keys
from ops.shapes import make_images
from tests.conftest import DETBOT, ROOT, RedisServer, detbot_env, free_port
from tests.telegram_stub import (
    BotProcess,
    TelegramStub,
    answers_to,
    delivered,
    encode,
    inbox_updates,
    wait_answer,
)
from tests.workers import running_workers

TOKEN = "135792468:WEBHOOK-secret-token"
SECRET = "webhook-Secret_0123456789abcdef"
PATH = "/telegram"
# A webhook bot logs this once its server is up (every replica), and this when it holds the lease.
LISTENING = "taking webhook requests"
WEBHOOK_SET = "webhook set"
_ids = itertools.count(1)


def new_user() -> int:
    return 80_000 + next(_ids)


@dataclass
class World:
    redis_url: str
    redis: Redis
    stub: TelegramStub
    image: bytes
    logs: Path

    def bot(self, name: str, port: int | None = None, **env: str) -> tuple[BotProcess, int]:
        """A replica in webhook mode listening on ``port`` (a free one by default)."""
        port = port or free_port()
        settings = {"DETBOT_WEBHOOK_URL": f"http://127.0.0.1:{port}{PATH}", "DETBOT_WEBHOOK_SECRET": SECRET,
                    "DETBOT_WEBHOOK_LISTEN": f"127.0.0.1:{port}", "DETBOT_TEST_WEBHOOK_CHECK_MS": "300", **env}
        return BotProcess(self.stub, self.redis_url, self.logs / f"{name}.log", **settings), port


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    with running_workers(redis_server.url, count=1):
        try:
            yield World(redis_server.url, redis, stub, encode(make_images(4200, 1)[0][0]),
                        tmp_path_factory.mktemp("webhook"))
        finally:
            stub.stop()
            redis.close()


def update_of(stub: TelegramStub, user: int, text: str = "/help") -> dict[str, Any]:
    """An update with a new message that the stand-in does not deliver itself (for posting by hand)."""
    message = {"message_id": 50_000 + next(_ids), "date": 0, "chat": stub.private_chat(user),
               "from": stub.user(user), "text": text,
               "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]}
    stub.messages[(user, message["message_id"])] = message
    return {"update_id": 10_000_000 + next(_ids), "message": message}


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_webhook_bot_sets_its_webhook_answers_and_checks_the_secret(world: World) -> None:
    stub = world.stub
    bot, port = world.bot("secret")
    bot.start(ready=WEBHOOK_SET)
    try:
        url = f"http://127.0.0.1:{port}{PATH}"
        assert stub.webhook == {"url": url, "secret_token": SECRET, "allowed_updates": list(ALLOWED_UPDATES),
                                "max_connections": DEFAULT_WEBHOOK_CONNECTIONS}
        user = new_user()
        message = stub.photo(stub.private_chat(user), user, world.image)
        assert wait_answer(stub, user, message["message_id"], 120).method == "sendPhoto"
        assert stub.webhook_deliveries >= 1 and stub.polls() == 0  # never a getUpdates in webhook mode

        before = world.redis.xlen(keys.inbox(stub.bot_id))
        refused = {}
        for name, secret in (("none", None), ("wrong", "not-" + SECRET), ("prefix", SECRET[:-1])):
            unasked = update_of(stub, new_user())
            refused[name] = (unasked, stub.post_webhook(unasked, secret, url)[0])
        assert {name: status for name, (_u, status) in refused.items()} == {"none": 401, "wrong": 403, "prefix": 403}
        assert world.redis.xlen(keys.inbox(stub.bot_id)) == before  # nothing went in
        good = update_of(stub, new_user())
        assert stub.post_webhook(good, SECRET, url)[0] == 200
        chat = good["message"]["chat"]["id"]
        assert "/threshold" in wait_answer(stub, chat, good["message"]["message_id"], 30).text
        for unasked, _status in refused.values():
            assert not answers_to(stub, unasked["message"]["chat"]["id"], unasked["message"]["message_id"])
        assert "webhook request from 127.0.0.1 refused: no secret" in bot.log()
        assert bot.stop() == 0
        log = bot.log()
        assert SECRET not in log and TOKEN not in log and "Traceback" not in log
    finally:
        bot.kill()


def test_an_update_is_in_redis_before_the_200_and_survives_a_kill(world: World) -> None:
    """A replica that does not hold the lease still takes webhook requests: the 200 comes only once the update
    is in the inbox. Killed right after, another replica handles it, once."""
    stub = world.stub
    lease = keys.lease(stub.bot_id)
    world.redis.set(lease, "another-replica:1:x", px=120_000)  # someone else handles the inbox for now
    taker, port = world.bot("taker")
    taker.start(ready=LISTENING)
    other, _ = world.bot("other")
    try:
        update = update_of(stub, new_user())
        status, _sent, _answered = stub.post_webhook(update, SECRET, f"http://127.0.0.1:{port}{PATH}")
        assert status == 200
        assert update["update_id"] in inbox_updates(world.redis, stub)  # already there when the 200 came
        again = stub.post_webhook(update, SECRET, f"http://127.0.0.1:{port}{PATH}")[0]
        assert again == 200 and inbox_updates(world.redis, stub).count(update["update_id"]) == 1  # sent twice: in once
        taker.kill()
        other.start(ready=LISTENING)
        world.redis.delete(lease)  # the inbox's holder is gone: the new replica takes over
        chat, mid = update["message"]["chat"]["id"], update["message"]["message_id"]
        assert "/threshold" in wait_answer(stub, chat, mid, 30).text
        stub.wait_for(lambda: not inbox_updates(world.redis, stub), 30, "the inbox emptied")
        assert len(answers_to(stub, chat, mid)) == 1
        assert other.stop() == 0
    finally:
        world.redis.delete(lease)
        taker.kill()
        other.kill()


def test_every_replica_takes_webhooks_and_health_follows_the_webhook(world: World) -> None:
    """Two replicas, each with its own port behind the (here absent) proxy: a request to either is handled.
    Telegram failing to deliver makes /healthz unhealthy on both; it recovers when deliveries do."""
    stub = world.stub
    metrics = [free_port(), free_port()]
    first, first_port = world.bot("first", DETBOT_BOT_METRICS_PORT=str(metrics[0]))
    first.start(ready=WEBHOOK_SET)
    second, second_port = world.bot("second", DETBOT_BOT_METRICS_PORT=str(metrics[1]),
                                    DETBOT_WEBHOOK_URL=f"http://127.0.0.1:{first_port}{PATH}")
    second.start(ready=LISTENING)
    try:
        sent = []
        for port in (first_port, second_port):
            update = update_of(stub, new_user())
            assert stub.post_webhook(update, SECRET, f"http://127.0.0.1:{port}{PATH}")[0] == 200
            sent.append(update["message"])
        for message in sent:
            assert "/threshold" in wait_answer(stub, message["chat"]["id"], message["message_id"], 30).text
        assert stub.wait_for(lambda: all(health(p)[0] == 200 for p in metrics), 30, "both healthy")

        stub.break_webhook("SSL error: certificate verify failed")
        user = new_user()
        stub.text(stub.private_chat(user), user, "/help")  # waits at "Telegram", undelivered
        for port in metrics:
            stub.wait_for(lambda p=port: health(p) == (503, {"ok": False, "redis": True, "updates": False}), 30,
                          "unhealthy while Telegram cannot deliver")
        stub.mend_webhook()
        stub.wait_for(lambda: stub.answers(user), 30, "the update delivered once the webhook works")
        stub.wait_for(lambda: all(health(p)[0] == 200 for p in metrics), 30, "healthy again")
        assert first.stop() == 0 and second.stop() == 0
    finally:
        stub.mend_webhook()
        first.kill()
        second.kill()


def test_back_to_polling_deletes_the_webhook_and_a_409_loop_is_unhealthy(world: World) -> None:
    stub = world.stub
    metrics = free_port()
    bot = BotProcess(stub, world.redis_url, world.logs / "polling.log", DETBOT_BOT_METRICS_PORT=str(metrics))
    assert stub.webhook  # left by the webhook bots before
    bot.start()
    try:
        assert not stub.webhook and stub.sent("deleteWebhook")
        assert "deleted: back to long polling" in bot.log()
        user = new_user()
        message = stub.photo(stub.private_chat(user), user, world.image)
        wait_answer(stub, user, message["message_id"], 120)
        stub.wait_for(lambda: health(metrics)[0] == 200, 30, "healthy")
        # Another process polls with the same token (or a webhook was set behind the bot's back): 409s.
        stub.fail("getUpdates", 409, "Conflict: terminated by other getUpdates request")
        stub.wait_for(lambda: health(metrics) == (503, {"ok": False, "redis": True, "updates": False}), 60,
                      "unhealthy in a 409 loop")
        stub.clear_failures()
        stub.wait_for(lambda: health(metrics)[0] == 200, 60, "healthy once updates flow again")
        stub.wait_for(lambda: delivered(world.redis, stub.bot_id), 60, "every answer acknowledged")
        assert bot.stop() == 0
    finally:
        stub.clear_failures()
        bot.kill()


def test_webhook_settings_are_checked_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook URL needs a secret Telegram accepts; a token must carry the bot's id; each mistake is named
    in one line, without the values."""
    for key in list(os.environ):
        if key.startswith(("DETBOT_", "TELEGRAM_", "REDIS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    assert BotSettings().bot_id == 135792468  # type: ignore[call-arg]
    monkeypatch.setenv("DETBOT_WEBHOOK_URL", "https://bot.example.com/telegram")
    with pytest.raises(ValidationError, match="DETBOT_WEBHOOK_SECRET must be set"):
        BotSettings()  # type: ignore[call-arg]
    for bad in ("short-secret", "has spaces in it but long enough", "x" * 257):
        monkeypatch.setenv("DETBOT_WEBHOOK_SECRET", bad)
        with pytest.raises(ValidationError, match="16 to 256 characters"):
            BotSettings()  # type: ignore[call-arg]
    monkeypatch.setenv("DETBOT_WEBHOOK_SECRET", SECRET)
    settings = BotSettings()  # type: ignore[call-arg]
    assert settings.webhook_path == "/telegram" and listen_address(settings.webhook_listen) == ("0.0.0.0", 8443)
    assert listen_address("[::]:8443") == ("::", 8443)
    monkeypatch.setenv("DETBOT_WEBHOOK_URL", "ftp://bot.example.com/x")
    with pytest.raises(ValidationError, match="public https:// URL"):
        BotSettings()  # type: ignore[call-arg]
    monkeypatch.delenv("DETBOT_WEBHOOK_URL")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "no-id-in-this-secret-token")
    with pytest.raises(ValidationError, match="not a bot token") as refused:
        BotSettings()  # type: ignore[call-arg]
    assert "no-id-in-this" not in str(refused.value)
    out = subprocess.run([*DETBOT, "bot"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=detbot_env(TELEGRAM_BOT_TOKEN=TOKEN, DETBOT_WEBHOOK_URL="https://bot.example.com/x"))
    assert out.returncode == 2 and "DETBOT_WEBHOOK_SECRET must be set" in out.stderr
    assert "Traceback" not in out.stderr and TOKEN not in out.stderr
