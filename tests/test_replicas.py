"""Several ``detbot bot`` processes on one Redis serve one token (issue 18): every photo answered once, every
press applied once, whichever replica is SIGKILLed when; one polls at a time and a standby takes over within
10 s without a 409 storm; a rolling restart loses nothing; a chat's updates are handled in order.

Real processes throughout: the bots against the Bot API stand-in, real workers, one real Redis. The workers
start once for the module; each test starts the bot replicas it needs.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from jobs import keys
from jobs.defaults import EVENTS_GROUP
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import (
    BotProcess,
    Call,
    TelegramStub,
    answers_to,
    delivered,
    encode,
    inbox_updates,
    wait_answer,
)
from tests.workers import running_workers

TOKEN = "246813579:REPLICAS-secret-token"
# A standby logs this once it found the lease taken.
STANDBY = "standing by"
# The lease holder logs this when its turn starts.
LEADS = "polls Telegram and handles updates"
# How long a standby may take to poll after the holder's death (issue 18: within 10 s).
TAKEOVER_LIMIT = 10.0
# A completion a killed replica held is taken over after jobs.client.CLAIM_IDLE_MS (20 s) of silence; with a
# loaded machine's slack.
CLAIM_DEADLINE = 90.0
# Sends that fail are tried again after this long, so a replica holding an answer can be caught holding it.
RETRY_DELAY_MS = "3000"
# How long Telegram takes to accept the reply to a command in the order test (under the bot's read timeout).
SLOW_REPLY = 3.5
_ids = itertools.count(1)


def new_user() -> int:
    return 60_000 + next(_ids)


@dataclass
class World:
    redis_url: str
    redis: Redis
    stub: TelegramStub
    images: list[bytes]
    logs: Path

    def bot(self, name: str, **env: str) -> BotProcess:
        return BotProcess(self.stub, self.redis_url, self.logs / f"{name}.log",
                          DETBOT_TEST_RETRY_DELAY_MS=RETRY_DELAY_MS, **env)


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    images = [encode(img) for img, _ in make_images(4100, 12)]
    with running_workers(redis_server.url, count=2):
        try:
            yield World(redis_server.url, redis, stub, images, tmp_path_factory.mktemp("replicas"))
        finally:
            stub.stop()
            redis.close()


def consumer_of(bot: BotProcess) -> str:
    """The prefix of a replica's name (its consumer name and lease value): host and process id."""
    return f"{socket.gethostname()}:{bot.proc.pid}:"


def holders(world: World) -> dict[str, int]:
    """Completions read and not yet acknowledged, by the replica holding them."""
    stream = world.stub.events
    if not world.redis.exists(stream):
        return {}
    out: dict[str, int] = {}
    for entry in world.redis.xpending_range(stream, EVENTS_GROUP, "-", "+", 100):
        name = entry["consumer"].decode()
        out[name] = out.get(name, 0) + 1
    return out


def photo(world: World, user: int, n: int = 0, **fields: Any) -> dict[str, Any]:
    return world.stub.photo(world.stub.private_chat(user), user, world.images[n % len(world.images)], **fields)


def answered_once(world: World, messages: list[tuple[int, dict[str, Any]]], timeout: float = 120.0) -> None:
    """Each (chat, message) gets its answer, and exactly one, once everything is delivered."""
    for chat, message in messages:
        wait_answer(world.stub, chat, message["message_id"], timeout)
    world.stub.wait_for(lambda: delivered(world.redis, world.stub.bot_id), 60, "every answer acknowledged")
    for chat, message in messages:
        assert len(answers_to(world.stub, chat, message["message_id"])) == 1, (chat, message["message_id"])


def downloads(stub: TelegramStub, message: dict[str, Any]) -> list[Call]:
    """The bot's getFile calls for the photo of ``message``."""
    file_id = message["photo"][-1]["file_id"]
    return [c for c in stub.sent("getFile", ok=None) if c.params.get("file_id") == file_id]


def refused_polls(*bots: BotProcess) -> int:
    """How often a replica's getUpdates was refused (409: two pollers at once)."""
    return sum(bot.log().count("getUpdates refused") for bot in bots)


def test_replicas_share_the_answers_and_a_sigkilled_one_loses_none(world: World) -> None:
    """Two replicas: one polls, both deliver (an album too, as one album). The replica holding an answer
    Telegram keeps refusing is SIGKILLed; the other takes the answer over and sends it, once."""
    stub = world.stub
    a = world.bot("share-a").start()
    b = world.bot("share-b").start(ready=STANDBY)
    try:
        users = [new_user() for _ in range(8)]
        sent = [(u, photo(world, u, n)) for n, u in enumerate(users)]
        album_user = new_user()
        album = [photo(world, album_user, n, media_group_id="replica-album") for n in range(3)]
        answered_once(world, sent)

        def summaries() -> list[Call]:
            return [c for c in stub.answers(album_user) if c.method == "sendMessage"
                    and c.reply_to == album[0]["message_id"]]

        # The album's photos, then its summary with the keyboard (sent after them: waited for, not raced).
        stub.wait_for(lambda: stub.sent("sendMediaGroup", album_user) and summaries(), 120, "the album's answer")
        stub.wait_for(lambda: delivered(world.redis, world.stub.bot_id), 60, "every answer acknowledged")
        # Both replicas delivered answers: the completions are shared, not read twice.
        assert "answered chat=" in a.log() and "answered chat=" in b.log()
        assert len(stub.sent("sendMediaGroup", album_user)) == 1
        assert len(summaries()) == 1  # one summary

        victim_chat = new_user()
        stub.fail("sendPhoto", 502, "Bad Gateway", chat_id=victim_chat)
        held = photo(world, victim_chat, 3)
        stub.wait_for(lambda: stub.sent("sendPhoto", victim_chat, ok=False), 90, "the answer's first failed try")
        holder = next(iter(holders(world)))
        victim, survivor = (a, b) if holder.startswith(consumer_of(a)) else (b, a)
        assert holder.startswith(consumer_of(victim))
        victim.kill()
        stub.clear_failures()
        answered_once(world, [(victim_chat, held)], CLAIM_DEADLINE)
        assert "taking over 1 answer(s)" in survivor.log()
        assert survivor.stop() == 0
        for bot in (a, b):
            assert "Traceback" not in bot.log() and TOKEN not in bot.log()
    finally:
        stub.clear_failures()
        a.kill()
        b.kill()


def test_the_poller_killed_mid_update_is_replaced_within_seconds(world: World) -> None:
    """The replica holding the lease is SIGKILLed while a photo's download hangs (the update confirmed to
    Telegram, no job queued): the standby polls within 10 s, without 409s, takes the unfinished update over
    and the photo is answered once."""
    stub = world.stub
    a = world.bot("lease-a").start()
    b = world.bot("lease-b").start(ready=STANDBY)
    user = new_user()
    try:
        stub.hang("getFile")
        message = photo(world, user, 5)
        stub.wait_for(lambda: downloads(stub, message), 60, "the download started")
        update_id = stub.update_id_of(message)
        stub.wait_for(lambda: update_id not in stub.unconfirmed(), 30, "the update confirmed to Telegram")
        assert inbox_updates(world.redis, stub) == [update_id]
        polls = stub.polls()
        killed = time.monotonic()
        a.kill()
        stub.release()
        stub.wait_for(lambda: stub.polls() > polls, 30, "the standby polling")
        assert time.monotonic() - killed < TAKEOVER_LIMIT
        answered_once(world, [(user, message)])
        assert "1 update(s) left from before the restart" in b.log() and LEADS in b.log()
        assert refused_polls(a, b) == 0  # no 409: never two pollers at once
        stub.wait_for(lambda: world.redis.xlen(keys.inbox(stub.bot_id)) == 0, 30, "the inbox emptied")
        assert b.stop() == 0
    finally:
        stub.release()
        a.kill()
        b.kill()


def test_a_press_is_applied_once_when_its_replica_is_killed_mid_way(world: World) -> None:
    """The lease holder is SIGKILLed while re-drawing an answer after "−" (its view already changed in
    Redis, the edit sent, Telegram's reply not yet in): the standby handles the press again and the answer
    shows one step down, not two."""
    stub = world.stub
    a = world.bot("press-a").start()
    b = world.bot("press-b").start(ready=STANDBY)
    user = new_user()
    try:
        message = photo(world, user, 6, caption="0.4")
        answer = wait_answer(stub, user, message["message_id"])
        mid = int(answer.result["message_id"])
        data = stub.wait_for(lambda: [btn["callback_data"] for row in stub.keyboard(user, mid) for btn in row
                                      if btn["callback_data"].endswith(":lo")], 30, "the keyboard")[0]
        stub.wait_for(lambda: world.redis.exists(keys.answer(stub.bot_id, data.split(":")[1])), 30, "its state")
        stub.hang("editMessageMedia", user)
        stub.press(user, user, mid, data)
        stub.wait_for(lambda: stub.sent("editMessageMedia", user), 60, "the re-drawn answer sent")
        a.kill()
        stub.release()
        stub.wait_for(lambda: "applied before" in b.log(), 60, "the press handled again by the standby")
        edits = stub.wait_for(lambda: [c for c in stub.sent("editMessageMedia", user)
                                       if int(c.params["message_id"]) == mid], 30, "the edit")
        captions = {str(c.params["media"].get("caption") or "").split("\n")[0] for c in edits}
        assert captions == {next(iter(captions))} and "≥ 0.25" in next(iter(captions)), captions  # 0.40 -> 0.25
        assert b.stop() == 0
    finally:
        stub.release()
        a.kill()
        b.kill()


def test_a_rolling_restart_loses_nothing(world: World) -> None:
    """Two replicas are replaced one after the other (SIGTERM, a new one started) while photos keep coming:
    each is answered once, the lease moves at once on each graceful stop, and nobody ever got a 409."""
    stub = world.stub
    first = world.bot("roll-1").start()
    second = world.bot("roll-2").start(ready=STANDBY)
    bots = [first, second]
    sent: list[tuple[int, dict[str, Any]]] = []

    def some(n: int) -> None:
        for _ in range(n):
            user = new_user()
            sent.append((user, photo(world, user, len(sent))))

    try:
        some(3)
        polls = stub.polls()
        stopped = time.monotonic()
        assert first.stop() == 0  # the holder: hands the lease over as it goes
        stub.wait_for(lambda: stub.polls() > polls, 30, "the other replica polling")
        assert time.monotonic() - stopped < TAKEOVER_LIMIT
        some(3)
        third = world.bot("roll-3").start(ready=STANDBY)
        bots.append(third)
        assert second.stop() == 0
        # The lease passes to the standby started before, not to a replica started after the stop.
        stub.wait_for(lambda: LEADS in third.log(), TAKEOVER_LIMIT, "the third replica taking the lease")
        some(3)
        fourth = world.bot("roll-4").start(ready=STANDBY)
        bots.append(fourth)
        some(2)
        answered_once(world, sent)
        assert refused_polls(*bots) == 0
        for bot in bots:
            assert "Traceback" not in bot.log()
    finally:
        for bot in bots:
            bot.kill()


def test_a_chats_updates_are_handled_in_order_while_chats_run_side_by_side(world: World) -> None:
    """``/language ru`` and a photo right after it: the photo waits until the command is done (Telegram takes
    seconds to accept its reply) and is answered in Russian; another chat is answered in the meantime."""
    stub = world.stub
    bot = world.bot("order").start()
    user, other = new_user(), new_user()
    try:
        stub.slow("sendMessage", SLOW_REPLY, chat_id=user)
        command = stub.text(stub.private_chat(user), user, "/language ru", language_code="en")
        message = photo(world, user, 7, language_code="en")
        reply = wait_answer(stub, user, command["message_id"], 30)  # recorded as it arrives, answered later
        meanwhile = stub.text(stub.private_chat(other), other, "/help")
        helped = wait_answer(stub, other, meanwhile["message_id"], 30)
        answer = wait_answer(stub, user, message["message_id"], 120)
        download = downloads(stub, message)[0]
        # The photo was looked at only once the command was done; the other chat did not wait for either.
        assert download.at >= reply.at + SLOW_REPLY * 0.9, (download.at - reply.at)
        assert helped.at < download.at
        assert re.search("[а-я]", answer.text) and "found" not in answer.text.lower(), answer.text
        assert bot.stop() == 0
    finally:
        bot.kill()
