"""A bot SIGKILLed at the worst instants loses no photo and queues none twice (issue 11, rule 4).

The instants: after Telegram handed out the update (and was told so by the next getUpdates offset) but
before the job is in Redis; and after the submit but before the update left the bot's inbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis import Redis

from bot.inbox import GROUP, MAX_REPLAYS
from detector.params import DetectParams
from jobs import keys
from jobs.client import DetectionClient
from jobs.exceptions import AlreadyQueuedError
from ops.run import APPENDFSYNC
from ops.shapes import make_images
from tests.conftest import ROOT, RedisServer
from tests.telegram_stub import (
    STATUS_PREFIX,
    BotProcess,
    TelegramStub,
    answers_to,
    bot_id,
    delivered,
    encode,
    inbox_updates,
    wait_answer,
)
from tests.workers import running_workers

TOKEN = "111222444:CRASH-secret-token"


def _settled(redis: Redis) -> bool:
    return delivered(redis, bot_id(TOKEN))


def _jobs(redis: Redis) -> int:
    return sum(1 for _ in redis.scan_iter(keys.job("*")))


def test_submit_once_marker_stops_a_second_submit(redis: Redis) -> None:
    client = DetectionClient(redis)
    image = encode(make_images(2300, 1)[0][0])
    once = keys.handled(1, 601, 1000)
    (job_id,) = client.submit_many([image], DetectParams(), [{"chat_id": 601}], once=once)
    with pytest.raises(AlreadyQueuedError):
        client.submit_many([image], DetectParams(), [{"chat_id": 601}], once=once)
    assert client.queued() == 1 and _jobs(redis) == 1
    assert redis.get(once) == job_id.encode() and redis.ttl(once) > 0
    # Without a marker (or another message's), photos are queued as before.
    client.submit(image, DetectParams(), routing={"chat_id": 601}, once=keys.handled(1, 601, 1001))
    assert client.queued() == 2


def test_killed_between_get_updates_and_submit(redis_server: RedisServer, shapes_model: Path,
                                               tmp_path: Path) -> None:
    """The download hangs, the bot is killed: Telegram already dropped the update (the next getUpdates
    confirmed it), the job never reached Redis; the restarted bot answers it from its inbox, once."""
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log")
    image = encode(make_images(2310, 1)[0][0])
    user = 701
    try:
        bot.start()
        stub.hang("getFile")
        photo = stub.photo(stub.private_chat(user), user, image)
        stub.wait_for(lambda: stub.sent("getFile"), 30, "the bot fetching the photo")
        update_id = stub.update_id_of(photo)
        # Telegram was told the update arrived (the poll after it carried a later offset)...
        stub.wait_for(lambda: update_id not in stub.unconfirmed(), 30, "the update confirmed to Telegram")
        bot.kill()
        # ...and no job exists: only the inbox holds the photo now.
        assert DetectionClient(redis).queued() == 0 and _jobs(redis) == 0
        assert inbox_updates(redis, stub) == [update_id]
        stub.release()

        bot.start()
        with running_workers(redis_server.url, count=1):
            assert wait_answer(stub, user, photo["message_id"], 120).method == "sendPhoto"
            stub.wait_for(lambda: _settled(redis), 60, "the answer acknowledged")
        assert len(answers_to(stub, user, photo["message_id"])) == 1
        assert _jobs(redis) == 1
        stub.wait_for(lambda: redis.xlen(keys.inbox(stub.bot_id)) == 0, 30, "the inbox emptied")
        assert bot.stop() == 0
        log = bot.log()
        assert "1 update(s) left from before the restart" in log
        assert TOKEN not in log and "Traceback" not in log
    finally:
        stub.release()
        bot.kill()
        stub.stop()
        redis.close()


def test_killed_after_submit_before_the_inbox_let_go(redis_server: RedisServer, shapes_model: Path,
                                                      tmp_path: Path) -> None:
    """Killed between the submit and the inbox's removal: the restarted bot handles the updates again and
    queues nothing (the handled marker, written with the jobs); each photo is answered once.

    That instant lasts microseconds (no Telegram call between the two Redis writes to hold the bot in), so
    the first bot runs as a Redis user that may not XDEL: every handler really runs to its end, and its
    update stays in the inbox exactly as if the bot had died before removing it. Then the kill.
    """
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    user_name, password = "detbot-no-xdel", "crash-test"
    redis.acl_setuser(user_name, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                      commands=["+@all", "-xdel"])
    stub = TelegramStub(TOKEN).start()
    no_xdel_url = redis_server.url.replace("redis://", f"redis://{user_name}:{password}@")
    first = BotProcess(stub, no_xdel_url, tmp_path / "bot-1.log")
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot-2.log")
    images = [encode(img) for img, _ in make_images(2320, 2)]
    user = 702
    chat = stub.private_chat(user)
    try:
        first.start()
        photo = stub.photo(chat, user, images[0])
        album = [stub.photo(chat, user, image, media_group_id="crash-1") for image in images]
        client = DetectionClient(redis)
        stub.wait_for(lambda: client.queued() == 3, 60, "the photo and the album queued")
        stub.wait_for(lambda: first.log().count("could not remove update") == 2, 30, "both handlers finished")
        first.kill()
        assert set(inbox_updates(redis, stub)) == {stub.update_id_of(m) for m in [photo, *album]}

        bot.start()
        with running_workers(redis_server.url, count=1):
            assert wait_answer(stub, user, photo["message_id"], 120).method == "sendPhoto"
            stub.wait_for(lambda: stub.sent("sendMediaGroup", user), 120, "the album's answer")
            stub.wait_for(lambda: _settled(redis), 60, "the answers acknowledged")
        stub.wait_for(lambda: redis.xlen(keys.inbox(stub.bot_id)) == 0, 30, "the inbox emptied")
        assert len(answers_to(stub, user, photo["message_id"])) == 1
        assert len(stub.sent("sendMediaGroup", user)) == 1
        assert _jobs(redis) == 3 and client.queued() == 0
        log = bot.log()
        assert "3 update(s) left from before the restart" in log
        # Handled again, queued nothing: the photo and the album (its first photo answers for it).
        assert log.count(f"skipped chat={user} ") == 2 and "already handled" in log
        assert TOKEN not in log and "Traceback" not in log + first.log()
        assert password not in first.log()
    finally:
        first.kill()
        bot.kill()
        stub.stop()
        redis.acl_deluser(user_name)
        redis.close()


def test_polling_survives_telegram_faults_and_a_slow_chat(redis_server: RedisServer, tmp_path: Path) -> None:
    """409 Conflict (another poller) and 502 on getUpdates are waited out; a chat whose replies go out slowly
    holds its own slots only: another chat is answered meanwhile."""
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log")
    slow, other = 703, 704
    try:
        bot.start()
        stub.fail("getUpdates", 409, "Conflict: terminated by other getUpdates request", times=2)
        stub.fail("getUpdates", 502, "Bad Gateway", times=1)
        stub.wait_for(lambda: len(stub.sent("getUpdates", ok=False)) == 3, 60, "three refused polls")
        first = stub.text(stub.private_chat(other), other, "/help")
        assert "/threshold" in wait_answer(stub, other, first["message_id"], 60).text

        # A slow chat: Telegram takes ~1 message/s in a private chat, so its 20 replies go out over ~20 s.
        flood = [stub.text(stub.private_chat(slow), slow, "/help") for _ in range(20)]
        stub.wait_for(lambda: stub.sent("sendMessage", slow), 30, "the slow chat's first reply")
        asked = stub.text(stub.private_chat(other), other, "/help")
        assert "/threshold" in wait_answer(stub, other, asked["message_id"], 30).text
        # Answered while most of the slow chat's updates are still being handled (still in the inbox).
        waiting = set(inbox_updates(redis, stub))
        assert len({stub.update_id_of(m) for m in flood} & waiting) >= 10
        stub.wait_for(lambda: redis.xlen(keys.inbox(stub.bot_id)) == 0, 60, "the inbox emptied")
        assert bot.stop() == 0
        log = bot.log()
        assert "another process polls with this token" in log and "getUpdates failed" in log
        assert "Traceback" not in log
    finally:
        stub.release()
        bot.kill()
        stub.stop()
        redis.close()


def test_redis_sigkilled_after_the_submit_loses_no_photo(shapes_model: Path, tmp_path: Path) -> None:
    """Redis as ``detbot run`` and compose run it (append-only, fsync before every reply) is SIGKILLed once
    the photo is queued; restarted on the same folder, the job is there and the person is answered once,
    and the "queued" message goes."""
    assert f"--appendfsync {APPENDFSYNC}" in (ROOT / "docker-compose.yml").read_text()
    assert APPENDFSYNC == "always"
    server = RedisServer(tmp_path / "redis", appendonly=True, config=("--appendfsync", APPENDFSYNC))
    server.start()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, server.url, tmp_path / "bot.log")
    user = 705
    try:
        bot.start()
        photo = stub.photo(stub.private_chat(user), user, encode(make_images(2330, 1)[0][0]))
        status = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user)
                                        if c.text.startswith(STATUS_PREFIX)], 30, "the status message")[0]
        assert server.proc is not None
        server.proc.kill()  # SIGKILL: no shutdown, no final write
        server.proc.wait(10)
        server.start()
        redis = Redis.from_url(server.url)
        assert DetectionClient(redis).queued() == 1
        with running_workers(server.url, count=1):
            assert wait_answer(stub, user, photo["message_id"], 120).method == "sendPhoto"
            stub.wait_for(lambda: _settled(redis), 60, "the answer acknowledged")
        assert len(answers_to(stub, user, photo["message_id"])) == 1
        stub.wait_for(lambda: (user, status.result["message_id"]) in stub.deleted, 30, "the status message removed")
        redis.close()
        assert bot.stop() == 0
        assert "Traceback" not in bot.log()
    finally:
        bot.kill()
        stub.stop()
        server.stop()


def test_a_leftover_that_keeps_crashing_the_bot_is_dropped(redis: Redis, redis_server: RedisServer,
                                                            tmp_path: Path) -> None:
    """Each take-over counts a leftover's replays; one whose handling was cut short MAX_REPLAYS times already
    is dropped with a log line instead of crashing the bot for ever. A fresh leftover is handled."""
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log")
    chat = stub.private_chat(706)
    poison, fresh = stub.text(chat, 706, "/help"), stub.text(chat, 706, "/help")
    inbox = keys.inbox(stub.bot_id)
    for update_id, message in ((900, poison), (901, fresh)):
        redis.xadd(inbox, {"id": update_id, "update": json.dumps({"update_id": update_id, "message": message})})
    redis.set(keys.inbox_offset(stub.bot_id), 902)  # the stand-in's own copies count as confirmed
    redis.xgroup_create(inbox, GROUP, id="0")
    poison_entry, fresh_entry = (entry for entry, _ in redis.xrange(inbox))
    redis.xreadgroup(GROUP, "dead-0", {inbox: ">"})
    for n in range(1, MAX_REPLAYS + 1):  # as MAX_REPLAYS lease holders that each died while handling it
        redis.xclaim(inbox, GROUP, f"dead-{n}", 0, [poison_entry])
    try:
        bot.start()
        assert "/threshold" in wait_answer(stub, 706, fresh["message_id"], 30).text
        stub.wait_for(lambda: redis.xlen(inbox) == 0, 30, "the inbox emptied")
        assert f"update 900 dropped: the bot stopped while handling it {MAX_REPLAYS + 1} times" in bot.log()
        assert not answers_to(stub, 706, poison["message_id"])
        assert len(answers_to(stub, 706, fresh["message_id"])) == 1
        assert fresh_entry not in {e for e, _ in redis.xrange(inbox)}
    finally:
        bot.kill()
        stub.stop()


def test_bench_compares_both_fsync_policies(tmp_path: Path) -> None:
    """`detbot bench queue --fsync-only`'s measurement: real submits against append-only Redis under each
    policy."""
    from ops.bench_queue import FSYNC_MODES, fsync_bench

    images = [encode(img) for img, _ in make_images(2340, 2)]
    runs = fsync_bench(images, tmp_path, rounds=1, submits=5)
    assert [r.mode for r in runs] == list(FSYNC_MODES) == ["everysec", "always"]
    for run in runs:
        assert run.submit.count == 5 and run.submit.p50_ms > 0 and run.submits_per_s > 0
