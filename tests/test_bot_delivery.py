"""Delivery under load and Telegram's faults (issue 11): the real bot (``detbot bot``) against the Bot API
stand-in and a real Redis, with no worker: results are written straight into Redis as a worker writes them
(``jobs.store.complete``), so each test decides exactly which answers wait, and when.

Assertions are on what the stand-in received and in which order, never on durations.
"""

from __future__ import annotations

import io
import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from redis import Redis

from bot.albums import queued_album
from bot.chat_settings import ChatStore
from bot.telegram_io import SEND_ATTEMPTS
from jobs import keys, store
from jobs.client import DetectionClient
from tests.conftest import RedisServer
from tests.telegram_stub import BotProcess, TelegramStub, answers_to, bot_id, delivered

TOKEN = "555666777:DELIVERY-secret-token"
# Groups the module's bot is told to serve (DETBOT_ALLOWED_CHATS): one that becomes a supergroup, one that
# removes the bot. Results are delivered to any chat; the allow-list filters updates only.
OLD_GROUP = -4_000_001
KICKING_GROUP = -1_003_000_000_002
# The bot's first pause between attempts of a failing send: the bound on attempts is reached at once.
RETRY_DELAY_MS = 10
_ids = itertools.count(1)


def settled(redis: Redis) -> bool:
    """Every completion delivered and acknowledged (acknowledged events are deleted from the stream)."""
    return delivered(redis, bot_id(TOKEN))


def new_user() -> int:
    return 20_000 + next(_ids)


def new_group() -> int:
    return -1_002_000_000_000 - next(_ids)


def complete(redis: Redis, chat_id: int, message_id: int, *, code: str = "timeout",
             routing: dict[str, Any] | None = None, photo: bytes | None = None) -> str:
    """A finished job as a worker leaves it: an error answer (text), or with ``photo`` a detection."""
    job_id = uuid.uuid4().hex
    store.save_job(redis, job_id, b"", {}, {"chat_id": chat_id, "message_id": message_id, **(routing or {})})
    if photo is None:
        store.complete(redis, job_id, ok=False, code=code)
    else:
        detection = {"boxes": [{"class_id": 0, "class_name": "circle", "confidence": 0.9, "x1": 1, "y1": 2,
                                "x2": 30, "y2": 40}], "width": 64, "height": 48, "confidence": 0.25}
        store.complete(redis, job_id, ok=True, detection=detection, annotated=photo)
    return job_id


def jpeg(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def complete_album(redis: Redis, chat_id: int, first_message: int, count: int) -> list[str]:
    """An album of ``count`` photos, every one detected, its answer replying to ``first_message``."""
    routings = [{"chat_id": chat_id, "message_id": first_message + n} for n in range(count)]
    _album_id, routings = queued_album(routings, first_message)
    return [complete(redis, chat_id, first_message + n, routing=r, photo=jpeg()) for n, r in enumerate(routings)]


def read_as_the_bot(redis: Redis) -> int:
    """Hand every new completion to the bot's consumer without acknowledging it: what a bot killed while
    Telegram failed leaves behind (pending entries)."""
    client, total = DetectionClient(redis), 0
    while batch := client.wait(block_ms=10, count=500):
        total += len(batch)
    return total


@dataclass
class Setup:
    stub: TelegramStub
    redis: Redis
    url: str
    log: Path

    def bot(self, **env: str) -> BotProcess:
        return BotProcess(self.stub, self.url, self.log, **env)


@pytest.fixture
def setup(redis_server: RedisServer, tmp_path: Path) -> Iterator[Setup]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    try:
        yield Setup(stub, redis, redis_server.url, tmp_path / "bot.log")
    finally:
        stub.stop()
        redis.close()


# -- a backlog of any size ------------------------------------------------------------------------------

def test_a_backlog_of_thousands_is_delivered_once_after_a_restart(setup: Setup) -> None:
    """1,200 answers left unacknowledged (pending) by a bot that died, 30 never read: each answered once.
    They are on the queue's stream of before bots had namespaces: what an upgrade finds."""
    stub, redis = setup.stub, setup.redis
    chats = [new_user() for _ in range(100)]
    backlog = [(chat, 100 + n) for n in range(12) for chat in chats]
    for chat, message in backlog:
        complete(redis, chat, message)
    assert read_as_the_bot(redis) == len(backlog)
    fresh = [(chat, 900) for chat in chats[:30]]
    for chat, message in fresh:
        complete(redis, chat, message)
    bot = setup.bot().start()
    try:
        stub.wait_for(lambda: settled(redis), 300, "every answer acknowledged")
        for chat, message in backlog + fresh:
            assert len(answers_to(stub, chat, message)) == 1, (chat, message)
        assert len(stub.sent("sendMessage")) == len(backlog) + len(fresh)
        # Left pending by a consumer that is gone: taken over by idle time (a replica that died), in pages.
        taken = re.findall(r"taking over (\d+) answer\(s\)", bot.log())
        assert sum(map(int, taken)) == len(backlog), taken
    finally:
        bot.kill()


# -- one bot for the rest of the module -----------------------------------------------------------------

@dataclass
class World:
    stub: TelegramStub
    redis: Redis
    bot: BotProcess


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Started after the backlog test above (which runs a bot of its own on the same Redis)."""
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, redis_server.url, tmp_path_factory.mktemp("bot") / "bot.log",
                     DETBOT_TEST_RETRY_DELAY_MS=str(RETRY_DELAY_MS),
                     DETBOT_ALLOWED_CHATS=f"{OLD_GROUP},{KICKING_GROUP}").start()
    try:
        yield World(stub, redis, bot)
    finally:
        bot.stop()
        stub.stop()
        redis.close()


def methods(stub: TelegramStub, chat_id: int) -> list[tuple[str, bool]]:
    """What the bot asked of Telegram in a chat, in order, and whether Telegram took it."""
    return [(c.method, c.ok) for c in stub.sent(chat_id=chat_id, ok=None)]


# -- albums ---------------------------------------------------------------------------------------------

def test_album_refused_as_a_media_group_goes_out_as_single_photos(world: World) -> None:
    stub, user = world.stub, new_user()
    stub.fail("sendMediaGroup", 400, 'Bad Request: failed to send message #2 with the error message '
              '"PHOTO_INVALID_DIMENSIONS"', chat_id=user)
    complete_album(world.redis, user, 500, 3)
    stub.wait_for(lambda: settled(world.redis), 60, "the album acknowledged")
    assert methods(stub, user) == [("sendMediaGroup", False)] + [("sendPhoto", True)] * 3 + [("sendMessage", True)]
    assert [c.text for c in stub.sent("sendPhoto", user)] == [f"Photo {n}: 1 object at confidence ≥ 0.25: circle ×1"
                                                               for n in (1, 2, 3)]
    summary = stub.sent("sendMessage", user)[0]
    assert summary.reply_to == 500 and "Photo 1:" in summary.text and "Photo 3:" in summary.text
    assert "refused as a media group in chat" in world.bot.log()


def test_album_whose_photos_are_all_refused_still_gets_its_text_list(world: World) -> None:
    stub, user = world.stub, new_user()
    stub.fail("sendMediaGroup", 400, "Bad Request: PHOTO_INVALID_DIMENSIONS", chat_id=user)
    stub.fail("sendPhoto", 400, "Bad Request: PHOTO_INVALID_DIMENSIONS", chat_id=user)
    complete_album(world.redis, user, 600, 2)
    stub.wait_for(lambda: settled(world.redis), 60, "the album acknowledged")
    assert methods(stub, user) == [("sendMediaGroup", False), ("sendPhoto", False), ("sendPhoto", False),
                                   ("sendMessage", True)]
    summary = stub.sent("sendMessage", user)[0].text
    assert "Photo 1: 1 object" in summary and "Photo 2: 1 object" in summary and "1. circle 0.90" in summary


# -- flood control --------------------------------------------------------------------------------------

# Telegram's "retry after" for the flooded chat; the other chat's answer goes out long before it ends.
FLOOD_SECONDS = 5


def test_one_chats_flood_control_delays_only_that_chat(world: World) -> None:
    """Another chat's photo is answered while the flooded chat waits, and so is a second one, written only
    after the first was seen answered: a limiter that held every chat would have released the flooded
    chat's retry together with the first and before the second."""
    stub, flooded, other = world.stub, new_user(), new_user()
    stub.fail("sendPhoto", 429, f"Too Many Requests: retry after {FLOOD_SECONDS}", times=1, chat_id=flooded,
              retry_after=FLOOD_SECONDS)
    complete(world.redis, flooded, 700, photo=jpeg())
    stub.wait_for(lambda: stub.sent("sendPhoto", flooded, ok=False), 30, "the flooded chat's 429")
    complete(world.redis, other, 701, photo=jpeg())
    stub.wait_for(lambda: answers_to(stub, other, 701), 30, "the other chat's first answer")
    complete(world.redis, other, 702, photo=jpeg())
    stub.wait_for(lambda: settled(world.redis), 60, "every answer acknowledged")
    log = [(c.method, c.chat_id, c.reply_to, c.ok) for c in stub.sent(ok=None) if c.chat_id in (flooded, other)]
    assert log == [("sendPhoto", flooded, 700, False), ("sendPhoto", other, 701, True),
                   ("sendPhoto", other, 702, True), ("sendPhoto", flooded, 700, True)]
    assert "Rate limit hit" not in world.bot.log()  # PTB's AIORateLimiter, which paused every chat, is gone


# -- network errors, timeouts, chats that are gone ------------------------------------------------------

def test_network_errors_are_retried_a_bounded_number_of_times_then_dropped(world: World) -> None:
    stub, user = world.stub, new_user()
    stub.fail("sendPhoto", 502, "Bad Gateway", chat_id=user)
    complete(world.redis, user, 800, photo=jpeg())
    stub.wait_for(lambda: settled(world.redis), 60, "the answer given up and acknowledged")
    assert methods(stub, user) == [("sendPhoto", False)] * SEND_ATTEMPTS
    assert stub.wait_for(lambda: "dropped: Telegram failed every attempt (NetworkError: Bad Gateway (7 attempts))"
                         in world.bot.log(), 10, "one log line")


def test_a_send_that_may_have_reached_telegram_is_not_sent_again(world: World) -> None:
    """Telegram takes the photo but its answer comes after the bot's read timeout: at most once."""
    stub, user = world.stub, new_user()
    stub.hang("sendPhoto", chat_id=user)
    try:
        complete(world.redis, user, 810, photo=jpeg())
        stub.wait_for(lambda: settled(world.redis), 60, "the uncertain answer acknowledged")
    finally:
        stub.release()
    assert methods(stub, user) == [("sendPhoto", True)]
    assert "may have reached Telegram (TimedOut" in world.bot.log()


def test_a_blocked_bot_drops_the_chats_waiting_answers_at_once(world: World) -> None:
    stub, redis, user = world.stub, world.redis, new_user()
    stub.fail("sendPhoto", 403, "Forbidden: bot was blocked by the user", chat_id=user)
    stub.fail("sendMessage", 403, "Forbidden: bot was blocked by the user", chat_id=user)
    chats = ChatStore(redis, stub.bot_id)
    pipe = redis.pipeline()  # five results at once: they wait in the chat's lane behind the first
    jobs = []
    for n in range(5):
        job = uuid.uuid4().hex
        store.queue_save_job(pipe, job, b"", {}, {"chat_id": user, "message_id": 820 + n})
        jobs.append(job)
    pipe.execute()
    for job in jobs:
        chats.save_status(job, user, 900)  # a "queued" message each, whose ids must not stay behind
        store.complete(redis, job, ok=False, code="timeout")
    stub.wait_for(lambda: settled(redis), 60, "every answer acknowledged")
    assert methods(stub, user) == [("sendMessage", False)]  # one try; the others are not even attempted
    assert not [job for job in jobs if redis.exists(keys.status(world.stub.bot_id, job))]
    log = world.bot.log()
    assert f"chat {user} is gone (answer for {jobs[0]} refused: Forbidden: bot was blocked" in log


def test_removed_from_a_group_its_answers_are_dropped_until_added_back(world: World) -> None:
    stub, redis = world.stub, world.redis
    group = stub.group_chat(KICKING_GROUP)
    stub.member_update(group, 1, "kicked")
    stub.wait_for(lambda: f"chat {KICKING_GROUP} is gone (bot kicked)" in world.bot.log(), 30, "the removal")
    complete(redis, KICKING_GROUP, 830)
    stub.wait_for(lambda: settled(redis), 30, "the answer dropped")
    assert methods(stub, KICKING_GROUP) == []
    stub.member_update(group, 1, "member", old_status="left")
    later = stub.text(group, 1, "/help")  # handled after the member update: the bot knows it is back
    stub.wait_for(lambda: answers_to(stub, KICKING_GROUP, later["message_id"]), 30, "the reply to /help")
    complete(redis, KICKING_GROUP, 831)
    stub.wait_for(lambda: answers_to(stub, KICKING_GROUP, 831), 30, "the answer in the group again")


def test_an_answer_to_a_deleted_photo_is_still_sent(world: World) -> None:
    """The photo's message is gone (never known to the stand-in): allow_sending_without_reply covers it,
    and should Telegram still answer "message to be replied not found", the answer goes without the reply."""
    stub, user, other = world.stub, new_user(), new_user()
    complete(world.redis, user, 840, photo=jpeg())
    stub.fail("sendPhoto", 400, "Bad Request: message to be replied not found", times=1, chat_id=other)
    complete(world.redis, other, 841, photo=jpeg())
    stub.wait_for(lambda: settled(world.redis), 60, "both answers acknowledged")
    assert methods(stub, user) == [("sendPhoto", True)]
    assert "reply_to_message" not in stub.sent("sendPhoto", user)[0].result
    assert methods(stub, other) == [("sendPhoto", False), ("sendPhoto", True)]
    assert "reply_parameters" not in stub.sent("sendPhoto", other)[0].params


def test_a_group_that_becomes_a_supergroup_keeps_settings_allow_list_and_answers(world: World) -> None:
    stub, redis = world.stub, world.redis
    new = new_group()
    ChatStore(redis, stub.bot_id).set_threshold(OLD_GROUP, 0.6)
    old_chat = {"id": OLD_GROUP, "type": "group", "title": "old"}
    stub.send(old_chat, 1, migrate_to_chat_id=new)
    stub.send(stub.group_chat(new), 1, migrate_from_chat_id=OLD_GROUP)
    asked = stub.text(stub.group_chat(new), 1, "/threshold")
    assert "0.60 (set for this chat" in stub.wait_for(lambda: answers_to(stub, new, asked["message_id"]), 30,
                                                      "the supergroup's threshold")[0].text
    complete(redis, OLD_GROUP, 850, photo=jpeg())  # a photo of the old group, detected after the move
    stub.wait_for(lambda: settled(redis), 60, "the answer acknowledged")
    assert methods(stub, OLD_GROUP) == [] and ("sendPhoto", True) in methods(stub, new)
    assert f"add {new} to DETBOT_ALLOWED_CHATS" in world.bot.log()
