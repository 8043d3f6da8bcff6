"""Exactly one answer per photo across bot crashes: queued while no worker runs, the bot killed mid-job,
an answer Telegram would not take until after a restart, updates Telegram sends twice; an album the full
queue took only part of."""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from bot.status import DONE_MARK
from jobs import keys
from jobs.client import DetectionClient
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import (
    STATUS_PREFIX,
    BotProcess,
    Call,
    TelegramStub,
    answers_to,
    bot_id,
    delivered,
    encode,
    wait_answer,
)
from tests.workers import running_workers

TOKEN = "111222333:RESTART-secret-token"
# Three jobs may wait; the fourth photo is refused as "busy".
MAX_QUEUED = 3
# Long enough to catch the worker mid-job and restart the bot meanwhile; short enough for a quick test.
JOB_DELAY_MS = 1500


def _settled(redis: Redis) -> bool:
    return delivered(redis, bot_id(TOKEN))


def test_every_photo_answered_once_across_restarts(redis_server: RedisServer, shapes_model: Path,
                                                   tmp_path: Path) -> None:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log", DETBOT_MAX_QUEUED_JOBS=str(MAX_QUEUED))
    images = [encode(img) for img, _ in make_images(2000, 5)]
    users = [501, 502, 503, 504, 505]
    chats = [stub.private_chat(u) for u in users]
    try:
        bot.start()
        setting = stub.text(chats[0], users[0], "/threshold 0.6")
        assert "0.60" in wait_answer(stub, users[0], setting["message_id"], 30).text

        # No worker yet: three photos wait in the queue, each person gets one status message.
        photos = [stub.photo(chats[i], users[i], images[i]) for i in range(3)]

        def status_messages() -> list[Call]:
            return [c for c in stub.sent("sendMessage") if c.text.startswith(STATUS_PREFIX)]

        stub.wait_for(lambda: len(status_messages()) == 3, 30, "three status messages")
        statuses = status_messages()
        assert sorted(c.text for c in statuses) == [f"{STATUS_PREFIX} Queued, position {n}…" for n in (1, 2, 3)]
        asked = {(u, p["message_id"]) for u, p in zip(users[:3], photos, strict=True)}
        assert {(c.chat_id, c.reply_to) for c in statuses} == asked
        busy = stub.photo(chats[3], users[3], images[3])
        assert "busy" in wait_answer(stub, users[3], busy["message_id"], 30).text

        bot.kill()  # a crash: nothing confirmed, nothing cleaned up
        with running_workers(redis_server.url, count=1, env={"DETBOT_TEST_JOB_DELAY_MS": str(JOB_DELAY_MS)}) as (w,):
            w.wait_busy()  # a job runs while no bot is up...
            bot.start()  # ...and the bot comes back mid-job
            for user, photo in zip(users[:3], photos, strict=True):
                answer = wait_answer(stub, user, photo["message_id"], 120)
                assert answer.method == "sendPhoto"
            assert "≥ 0.60" in answers_to(stub, users[0], photos[0]["message_id"])[0].text.splitlines()[0]
            # Telegram sends unconfirmed updates again after a crash: they must not be queued twice.
            stub.resend(photos[0])
            stub.resend(busy)
            kept = stub.text(chats[0], users[0], "/threshold")
            assert "0.60 (set for this chat" in wait_answer(stub, users[0], kept["message_id"], 30).text
            stub.wait_for(lambda: _settled(redis), 60, "all answers acknowledged")
            for user, photo in zip(users[:3], photos, strict=True):
                assert len(answers_to(stub, user, photo["message_id"])) == 1
            assert len(answers_to(stub, users[3], busy["message_id"])) == 1
            # The status messages (posted by the first bot) were removed by the second one.
            assert {(c.chat_id, c.result["message_id"]) for c in statuses} <= stub.deleted

            # An answer Telegram does not take (network errors) survives another crash.
            stub.fail("sendPhoto", 502, "Bad Gateway", chat_id=users[4])
            late = stub.photo(chats[4], users[4], images[4])
            stub.wait_for(lambda: len(stub.sent("sendPhoto", users[4], ok=False)) >= 2, 120, "two failed sends")
            bot.kill()
            stub.clear_failures()
            bot.start()
            answer = wait_answer(stub, users[4], late["message_id"], 60)
            assert answer.method == "sendPhoto"
            stub.wait_for(lambda: _settled(redis), 60, "all answers acknowledged")
            assert len(answers_to(stub, users[4], late["message_id"])) == 1
        assert bot.stop() == 0  # SIGTERM: a clean stop
        log = bot.log()
        assert "left from before the restart" in log
        assert TOKEN not in log and "Traceback" not in log
    finally:
        bot.kill()
        stub.stop()
        redis.close()


def test_album_partly_queued_is_answered_as_a_smaller_album(redis_server: RedisServer, shapes_model: Path,
                                                             tmp_path: Path) -> None:
    """The queue fills up midway through an album: the photos it took are answered as an album of that
    size, the others get one "busy" reply; the album's size comes from its photos' routings (the record
    where the replicas assemble its results says 2, as they do)."""
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log", DETBOT_MAX_QUEUED_JOBS=str(MAX_QUEUED))
    images = [encode(img) for img, _ in make_images(2100, 5)]
    user, other = 601, 602
    try:
        bot.start()
        # No worker yet: someone else's photo waits, so the queue has room for two of the album's four.
        waiting = stub.photo(stub.private_chat(other), other, images[0])
        stub.wait_for(lambda: DetectionClient(redis).queued() == 1, 30, "the first photo queued")
        chat = stub.private_chat(user)
        album = [stub.photo(chat, user, image, media_group_id="full-1") for image in images[1:]]
        busy = wait_answer(stub, user, album[2]["message_id"], 30)
        assert busy.method == "sendMessage" and "busy" in busy.text
        first = album[0]["message_id"]
        with running_workers(redis_server.url, count=1):
            group = stub.wait_for(lambda: stub.sent("sendMediaGroup", user), 120, "the smaller album")[0]
            assert group.reply_to == first and len(group.params["media"]) == 2
            summary = stub.wait_for(lambda: [c for c in answers_to(stub, user, first) if c.method == "sendMessage"],
                                    30, "the album's summary")
            text = "\n".join(c.text for c in summary)
            assert "Photo 1: " in text and "Photo 2: " in text and "Photo 3" not in text
            assert wait_answer(stub, other, waiting["message_id"], 60).method == "sendPhoto"
            stub.wait_for(lambda: _settled(redis), 60, "all answers acknowledged")
        assert [c.text for c in stub.sent("sendMessage", user) if "busy" in c.text] == [busy.text]  # one reply
        assert not answers_to(stub, user, album[3]["message_id"])
        assert len(stub.sent("sendMediaGroup", user)) == 1 and not stub.sent("sendPhoto", user)
        assert "album in chat 601: room for 2 of 4 photos; the others refused before download" in bot.log()
        records = [redis.hgetall(k) for k in redis.scan_iter(match=keys.album(stub.bot_id, "*"))]
        assert len(records) == 1 and records[0][b"n"] == b"2" and sum(f.startswith(b"p") for f in records[0]) == 2
    finally:
        bot.kill()
        stub.stop()
        redis.close()


def test_status_message_never_stays(redis_server: RedisServer, shapes_model: Path, tmp_path: Path) -> None:
    """A "queued" message Telegram would not delete (5xx) is deleted by the restarted bot (its id kept in
    Redis); one Telegram no longer lets the bot delete (too old) is edited instead."""
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log")
    images = [encode(img) for img, _ in make_images(2200, 2)]
    failing, old = 511, 512
    try:
        bot.start()
        photos = {user: stub.photo(stub.private_chat(user), user, image)
                  for user, image in zip((failing, old), images, strict=True)}

        def status_of(user: int) -> Call:
            return stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user)
                                          if c.text.startswith(STATUS_PREFIX)], 30, "a status message")[0]

        statuses = {user: status_of(user) for user in photos}
        stub.fail("deleteMessage", 502, "Bad Gateway", chat_id=failing)
        stub.fail("deleteMessage", 400, "Bad Request: message can't be deleted for everyone", chat_id=old)
        with running_workers(redis_server.url, count=1):
            for user, photo in photos.items():
                assert wait_answer(stub, user, photo["message_id"], 120).method == "sendPhoto"
            stub.wait_for(lambda: _settled(redis), 60, "all answers acknowledged")
        retry = keys.status_retry(stub.bot_id)
        stub.wait_for(lambda: redis.zcard(retry) == 1, 30, "the failed deletion kept for a retry")
        old_key = (old, statuses[old].result["message_id"])
        stub.wait_for(lambda: stub.messages[old_key].get("text") == DONE_MARK, 30, "the old status message edited")
        bot.kill()
        stub.clear_failures()
        bot.start()
        failed_key = (failing, statuses[failing].result["message_id"])
        stub.wait_for(lambda: failed_key in stub.deleted, 30, "the status message deleted after the restart")
        assert redis.zcard(retry) == 0
        assert bot.stop() == 0
        assert "Traceback" not in bot.log()
    finally:
        bot.kill()
        stub.stop()
        redis.close()


def test_photo_lost_with_redis_data_is_told_not_left_queued(shapes_model: Path, tmp_path: Path) -> None:
    """A Redis without persistence is killed and comes back empty: the queued photos' jobs are gone, no
    answer will come; their "queued" messages say so, in each person's language, and ask for the photo."""
    server = RedisServer(tmp_path / "redis")  # no append-only file: what a restart loses, it loses
    server.start()
    stub = TelegramStub(TOKEN).start()
    bot = BotProcess(stub, server.url, tmp_path / "bot.log", DETBOT_TEST_STATUS_CHECK_MS="300")
    images = [encode(img) for img, _ in make_images(2250, 2)]
    english, russian = 521, 522
    try:
        bot.start()
        photos = {user: stub.photo(stub.private_chat(user), user, image, language_code=language)
                  for (user, language), image in zip(((english, "en"), (russian, "ru")), images, strict=True)}
        statuses = {user: stub.wait_for(lambda u=user: [c for c in stub.sent("sendMessage", u)
                                                        if c.text.startswith(STATUS_PREFIX)], 30, "a status")[0]
                    for user in photos}
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(10)
        server.start()  # empty: the jobs are gone

        def text_of(user: int) -> str:
            return str(stub.messages[(user, statuses[user].result["message_id"])].get("text", ""))

        stub.wait_for(lambda: "send it again" in text_of(english), 60, "the English status message edited")
        stub.wait_for(lambda: "Пришлите его ещё раз" in text_of(russian), 30, "the Russian one edited")
        assert "is gone from Redis" in bot.log()
        # Still serving: a new photo is queued in the Redis that came back.
        again = stub.photo(stub.private_chat(english), english, images[0])
        stub.wait_for(lambda: [c for c in stub.sent("sendMessage", english) if c.reply_to == again["message_id"]
                               and c.text.startswith(STATUS_PREFIX)], 60, "the new photo queued")
        assert bot.stop() == 0
        assert "Traceback" not in bot.log()
    finally:
        bot.kill()
        stub.stop()
        server.stop()
