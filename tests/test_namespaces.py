"""Two bots (two tokens) on one Redis and the default queue never see each other's updates, completions,
answers or settings (issue 18): every bot key carries the bot's id, and each job names the stream its
completion goes to, so the shared workers answer each bot on its own. And an upgrade from the one-bot
layout keeps what the previous version left: chat settings, and updates and answers still in flight.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from bot.legacy import adopt_legacy_keys
from detector.params import DetectParams
from jobs import keys, store
from jobs.client import DetectionClient
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import BotProcess, TelegramStub, answers_to, delivered, encode, wait_answer
from tests.workers import running_workers

TOKENS = ("111111111:NAMESPACE-A-token", "222222222:NAMESPACE-B-token")
# The same person writes to both bots: one chat id, and (each stand-in counting from the same start) the
# same message ids in both — what made two bots on one Redis answer each other's photos.
USER = 90_001
# A third bot: the one upgraded from the one-bot layout.
UPGRADED = "333333333:UPGRADED-bot-token"


def test_an_upgrade_keeps_the_one_bot_layouts_settings_updates_and_answers(redis: Redis, redis_server: RedisServer,
                                                                           tmp_path: Path) -> None:
    """What a bot of the previous version left in Redis: a chat's settings (the first bot to start takes
    them, a second bot does not), an update in the old inbox (a hash), and a completion on the queue's old
    stream. The upgraded bot keeps the settings, handles the update and delivers the answer, each once.
    (First in the module: the two bots below share this Redis.)"""
    legacy_chat = f"{keys.KEY_PREFIX}:chat:{USER}"
    redis.hset(legacy_chat, mapping={"threshold": "0.5", "language": "ru"})
    stub = TelegramStub(UPGRADED).start()
    help_message = stub.text(stub.private_chat(USER), USER, "/help")
    update_id = 777
    redis.hset(keys.legacy_inbox(stub.bot_id), str(update_id),
               json.dumps({"update": {"update_id": update_id, "message": help_message}, "replays": 0}))
    redis.set(keys.legacy_offset(stub.bot_id), 10_000)  # the stand-in's own copy counts as confirmed
    job = DetectionClient(redis).submit(b"x", DetectParams(), routing={"chat_id": USER, "message_id": 4242,
                                                                       "language": "ru"})
    store.complete(redis, job, ok=False, code="timeout")  # on the queue's stream, as before namespaces
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log")
    try:
        bot.start()
        assert "/threshold" in wait_answer(stub, USER, help_message["message_id"], 30).text
        assert wait_answer(stub, USER, 4242, 60).method == "sendMessage"
        stub.wait_for(lambda: delivered(redis, stub.bot_id), 60, "the old answer acknowledged")
        assert len(answers_to(stub, USER, help_message["message_id"])) == 1
        assert len(answers_to(stub, USER, 4242)) == 1
        assert redis.hgetall(keys.chat(stub.bot_id, USER)) == {b"threshold": b"0.5", b"language": b"ru"}
        assert not redis.exists(legacy_chat, keys.legacy_inbox(stub.bot_id))
        # A second bot on the same Redis later finds nothing of the old layout left to take.
        assert adopt_legacy_keys(redis, 222222222) == 0
        assert bot.stop() == 0
        assert "moved into the inbox" in bot.log()
    finally:
        bot.kill()
        stub.stop()


@dataclass
class Pair:
    redis: Redis
    stubs: tuple[TelegramStub, TelegramStub]
    bots: tuple[BotProcess, BotProcess]
    images: list[bytes]


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    logs = tmp_path_factory.mktemp("namespaces")
    stubs = (TelegramStub(TOKENS[0]).start(), TelegramStub(TOKENS[1]).start())
    bots = (BotProcess(stubs[0], redis_server.url, logs / "a.log"),
            BotProcess(stubs[1], redis_server.url, logs / "b.log"))
    with running_workers(redis_server.url, count=1):
        try:
            for bot in bots:
                bot.start()
            yield Pair(redis, stubs, bots, [encode(img) for img, _ in make_images(4300, 3)])
        finally:
            for bot in bots:
                bot.kill()
            for stub in stubs:
                stub.stop()
            redis.close()


def test_two_bots_on_one_redis_keep_their_settings_answers_and_completions_apart(pair: Pair) -> None:
    (a, b), (bot_a, bot_b) = pair.stubs, pair.bots
    chat_a, chat_b = a.private_chat(USER), b.private_chat(USER)
    setting_a = a.text(chat_a, USER, "/threshold 0.9")
    setting_b = b.text(chat_b, USER, "/language ru")
    assert setting_a["message_id"] == setting_b["message_id"]
    wait_answer(a, USER, setting_a["message_id"], 30)
    wait_answer(b, USER, setting_b["message_id"], 30)
    photo_a = a.photo(chat_a, USER, pair.images[0])
    photo_b = b.photo(chat_b, USER, pair.images[1])
    assert photo_a["message_id"] == photo_b["message_id"]  # the same "handled" marker without namespaces
    answer_a = wait_answer(a, USER, photo_a["message_id"], 120)
    answer_b = wait_answer(b, USER, photo_b["message_id"], 120)
    for stub in (a, b):
        stub.wait_for(lambda s=stub: delivered(pair.redis, s.bot_id), 60, "every answer acknowledged")
    # Each bot answered its own photo, once, with its own chat's settings.
    assert len(answers_to(a, USER, photo_a["message_id"])) == 1 and len(answers_to(b, USER, photo_b["message_id"])) == 1
    assert "0.90" in answer_a.text and "objects" in answer_a.text, answer_a.text  # A's chat: 0.9, English
    assert "0.25" in answer_b.text and "объект" in answer_b.text, answer_b.text  # B's chat: Russian, default
    assert pair.redis.hgetall(keys.chat(a.bot_id, USER)) == {b"threshold": b"0.9"}
    assert pair.redis.hgetall(keys.chat(b.bot_id, USER)) == {b"language": b"ru"}
    # Completions went to each bot's own stream (the shared worker read the stream from each job).
    assert keys.events("detbot", a.bot_id) != keys.events("detbot", b.bot_id)
    for bot in (bot_a, bot_b):
        log = bot.log()
        assert "is gone" not in log and "Forbidden" not in log and "Traceback" not in log

    # A press in bot B carrying an answer id of bot A (copied callback data) finds nothing: B's answers only.
    mid_a = int(answer_a.result["message_id"])
    data = a.wait_for(lambda: [btn["callback_data"] for row in a.keyboard(USER, mid_a) for btn in row], 30,
                      "bot A's keyboard")[0]
    answer_id = data.split(":")[1]
    assert pair.redis.exists(keys.answer(a.bot_id, answer_id))
    assert not pair.redis.exists(keys.answer(b.bot_id, answer_id))
    mid_b = int(answer_b.result["message_id"])
    query = b.press(USER, USER, mid_b, data)
    reply = b.wait_for(lambda: [c for c in b.sent("answerCallbackQuery") if c.params.get("callback_query_id") == query],
                       30, "bot B's answer to the press")[0]
    assert "can no longer be adjusted" in str(reply.params.get("text")), reply.params
    assert not a.sent("editMessageMedia") and not b.sent("editMessageMedia")


