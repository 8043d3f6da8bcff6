"""Fairness between chats and Telegram's budget going to answers (issue 11, rules 2 and 5).

The queue's per-chat lanes (``jobs.fair``) against a real Redis, the way the bot submits and a worker
completes; then the real bot (``detbot bot``) against the Bot API stand-in, a real Redis and real workers
on the shapes model, whose jobs take a set time (``DETBOT_TEST_JOB_DELAY_MS``) so that "waiting" and
"being detected" are states a test can see. Assertions are on what Redis and the stand-in hold and on
their order, never on durations.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job

from bot.limits import WINDOW_SECONDS, Limits, Notices
from detector.params import DetectParams
from jobs import fair, keys, store
from jobs.client import DetectionClient
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import (
    STATUS_PREFIX,
    BotProcess,
    Call,
    TelegramStub,
    answers_to,
    delivered,
    encode,
    wait_answer,
)
from tests.workers import running_workers

TOKEN = "424242424:FAIR-secret-token"
# Photos one person may send per minute in this module's bot: the flood test passes it, others stay under.
USER_LIMIT = 5
# The status delay of this module's bot (DETBOT_TEST_STATUS_DELAY_MS; the real one is 5 s), so jobs can
# outlast it and the tests stay short.
STATUS_DELAY_MS = 1500
# Every job takes this long in the module's workers: longer than the bot's status delay, so a photo being
# detected when the delay ends is visible as such, and a backlog lasts long enough to be seen.
JOB_DELAY_MS = 2500
WORKERS = 2
_ids = itertools.count(1)


# -- the queue: per-chat lanes against a real Redis ----------------------------------------------------

def _names(client: DetectionClient, ids: dict[str, str]) -> list[str]:
    """RQ's list as the test's names for the jobs in it."""
    raw: list[bytes] = client.redis.lrange(client.queue.key, 0, -1)  # type: ignore[assignment]
    return [ids[j.decode()] for j in raw]


def _submit(client: DetectionClient, chat: int, name: str, ids: dict[str, str]) -> str:
    job_id = client.submit(b"photo", DetectParams(), routing={"chat_id": chat, "message_id": len(ids) + 1})
    ids[job_id] = name
    return job_id


def test_a_chats_backlog_is_held_and_released_behind_other_chats(redis: Redis) -> None:
    """Chat A queues 6 photos, chat B one: RQ's list holds 3 of A's then B's; each of A's completions puts
    A's next photo at the back, behind B's, and every held photo is counted as waiting."""
    client = DetectionClient(redis)
    ids: dict[str, str] = {}
    a = [_submit(client, 1, f"A{n}", ids) for n in range(6)]
    _submit(client, 2, "B", ids)
    assert _names(client, ids) == ["A0", "A1", "A2", "B"]
    assert client.queued() == 7  # held photos wait too: the "busy" limit counts them
    assert client.position(a[5]) == 4 + 2 + 1  # behind the whole list and A's two earlier held photos
    # A held photo is a complete RQ job already, only not in the list: nothing more is written to release it.
    assert Job.fetch(a[3], connection=redis).get_status() == "queued"
    assert store.complete(redis, a[0], ok=False, code="timeout")
    assert _names(client, ids) == ["A0", "A1", "A2", "B", "A3"]
    # The completion script runs once per job: completing A0 again releases nothing more.
    assert not store.complete(redis, a[0], ok=False, code="timeout")
    assert _names(client, ids) == ["A0", "A1", "A2", "B", "A3"]
    for job_id in a[1:]:
        store.complete(redis, job_id, ok=False, code="timeout")
    assert _names(client, ids) == ["A0", "A1", "A2", "B", "A3", "A4", "A5"]
    assert client.queued() == 7 and not redis.exists(keys.held(client.queue.name))
    assert not redis.exists(keys.lane_held(client.queue.name, 1))
    assert not redis.exists(keys.lane_in_flight(client.queue.name, 1))  # every A job completed


def test_an_album_beyond_the_cap_is_queued_all_or_nothing_with_its_rest_held(redis: Redis) -> None:
    client = DetectionClient(redis)
    routings = [{"chat_id": 5, "message_id": n} for n in range(5)]
    job_ids = client.submit_many([b"p"] * 5, DetectParams(), routings)
    queued: list[bytes] = redis.lrange(client.queue.key, 0, -1)  # type: ignore[assignment]
    assert [j.decode() for j in queued] == job_ids[:fair.MAX_IN_FLIGHT_PER_CHAT]
    held: list[bytes] = redis.lrange(keys.lane_held(client.queue.name, 5), 0, -1)  # type: ignore[assignment]
    assert [j.decode() for j in held] == job_ids[fair.MAX_IN_FLIGHT_PER_CHAT:]
    assert client.queued() == 5


def test_a_job_that_vanished_is_swept_so_its_chat_is_not_stuck(redis: Redis) -> None:
    """A job whose record expired without completing would hold its chat's slot for ever: the chat's next
    submit sweeps it out and releases a held photo into the room."""
    client = DetectionClient(redis)
    ids: dict[str, str] = {}
    a = [_submit(client, 9, f"A{n}", ids) for n in range(4)]
    redis.delete(keys.job(a[0]))  # expired, never completed
    redis.lrem(client.queue.key, 0, a[0])
    a4 = _submit(client, 9, "A4", ids)
    assert _names(client, ids) == ["A1", "A2", "A3"]  # A3 took the vanished job's slot
    held: list[bytes] = redis.lrange(keys.lane_held(client.queue.name, 9), 0, -1)  # type: ignore[assignment]
    assert [j.decode() for j in held] == [a4]


def test_the_reaper_releases_held_photos_of_a_chat_that_never_sends_again(redis: Redis) -> None:
    """The same vanished job, but the chat sends nothing more: the workers' reaper sweeps every chat with
    held photos, so its held photo still reaches a worker (and is answered) instead of waiting for ever."""
    from jobs.recovery import reap

    client = DetectionClient(redis, queue_name="fair-reap")
    ids: dict[str, str] = {}
    a = [_submit(client, -100777, f"A{n}", ids) for n in range(4)]
    _submit(client, 5, "B", ids)
    redis.delete(keys.job(a[0]))  # expired, never completed
    redis.lrem(client.queue.key, 0, a[0])
    assert _names(client, ids) == ["A1", "A2", "B"]  # A3 held behind a job that will never complete
    reap(redis, client.queue, max_attempts=3)
    assert _names(client, ids) == ["A1", "A2", "B", "A3"]
    assert not redis.exists(keys.lane_held(client.queue.name, -100777)) and not redis.scard(keys.held("fair-reap"))
    reap(redis, client.queue, max_attempts=3)  # nothing vanished now: nothing moves
    assert _names(client, ids) == ["A1", "A2", "B", "A3"]


def test_one_slow_down_per_chat_per_minute() -> None:
    """The limiter's own clock, advanced by hand: a flood gets one notice a minute, other chats their own."""
    now = [1000.0]
    notices = Notices(clock=lambda: now[0])
    assert notices.due(1) and not notices.due(1) and notices.due(2)
    now[0] += WINDOW_SECONDS - 1
    assert not notices.due(1)
    now[0] += 1
    assert notices.due(1) and not notices.due(1)
    limits = Limits(per_user=2, per_chat=0, clock=lambda: now[0])
    assert limits.take(7, 7) is None and limits.take(7, 7) is None
    refusal = limits.take(7, 7)
    assert refusal is not None and refusal.scope == "user"
    assert limits.notices.due(7) and not limits.notices.due(7)


# -- the real bot, real workers ----------------------------------------------------------------------------

@dataclass
class World:
    stub: TelegramStub
    bot: BotProcess
    redis: Redis
    photos: list[bytes]


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    log = tmp_path_factory.mktemp("bot") / "bot.log"
    with running_workers(redis_server.url, count=WORKERS, env={"DETBOT_TEST_JOB_DELAY_MS": str(JOB_DELAY_MS)}):
        bot = BotProcess(stub, redis_server.url, log, DETBOT_RATE_LIMIT_USER=str(USER_LIMIT),
                         DETBOT_RATE_LIMIT_CHAT="0", DETBOT_TEST_STATUS_DELAY_MS=str(STATUS_DELAY_MS)).start()
        try:
            yield World(stub, bot, redis, [encode(img) for img, _ in make_images(4000, 4)])
        finally:
            bot.stop()
            stub.stop()
            redis.close()


def new_user() -> int:
    return 30_000 + next(_ids)


def settled(world: World) -> bool:
    """No photo waiting or running, every completion delivered and acknowledged."""
    redis = world.redis
    return DetectionClient(redis).queued() == 0 and not redis.hlen(keys.running("detbot")) \
        and delivered(redis, world.stub.bot_id)


def wait_settled(world: World) -> None:
    world.stub.wait_for(lambda: settled(world), 120, "every photo answered")


def job_of(redis: Redis, chat_id: int, message_id: int) -> Job:
    """The RQ job of the photo ``message_id`` in ``chat_id`` (found through detbot's job records)."""
    for key in redis.scan_iter(keys.job("*")):
        routing = json.loads(redis.hget(key, "routing") or b"{}")  # type: ignore[arg-type]
        if routing.get("chat_id") == chat_id and routing.get("message_id") == message_id:
            return Job.fetch(key.decode().rsplit(":", 1)[-1], connection=redis)
    raise AssertionError(f"no job for message {message_id} in chat {chat_id}")


def started(job: Job) -> datetime:
    assert job.started_at is not None, job.id
    return job.started_at


def statuses(stub: TelegramStub, chats: list[int]) -> list[Call]:
    return [c for c in stub.sent("sendMessage") if c.chat_id in chats and c.text.startswith(STATUS_PREFIX)]


def test_a_burst_gets_one_chat_action_and_every_photo_one_answer(world: World) -> None:
    stub = world.stub
    wait_settled(world)
    user = new_user()
    chat = stub.private_chat(user)
    msgs = [stub.photo(chat, user, world.photos[n % 4]) for n in range(USER_LIMIT)]
    for m in msgs:
        assert wait_answer(stub, user, m["message_id"], 120).method == "sendPhoto"
    wait_settled(world)
    actions = stub.sent("sendChatAction", user, ok=None)
    assert len(actions) == 1 and actions[0].params["action"] == "upload_photo"
    assert all(len(answers_to(stub, user, m["message_id"])) == 1 for m in msgs)


def test_status_messages_only_for_photos_really_waiting(world: World) -> None:
    """Three people at once, two workers, each job longer than the status delay: the two photos being
    detected get no status message; the one waiting for a worker gets one, removed with its answer."""
    stub, redis = world.stub, world.redis
    wait_settled(world)
    users = [new_user() for _ in range(3)]
    msgs = [stub.photo(stub.private_chat(u), u, world.photos[n]) for n, u in enumerate(users)]
    for u, m in zip(users, msgs, strict=True):
        wait_answer(stub, u, m["message_id"], 120)
    wait_settled(world)
    shown = statuses(stub, users)
    jobs = sorted(((started(job_of(redis, u, m["message_id"])), u, m) for u, m in zip(users, msgs, strict=True)),
                  key=lambda t: t[0])
    _, last_user, last_msg = jobs[-1]
    assert [(c.chat_id, c.reply_to) for c in shown] == [(last_user, last_msg["message_id"])]
    assert shown[0].text == f"{STATUS_PREFIX} Queued, position 1…"
    assert (last_user, shown[0].result["message_id"]) in stub.deleted
    assert all(len(answers_to(stub, u, m["message_id"])) == 1 for u, m in zip(users, msgs, strict=True))


def test_a_flood_gets_one_slow_down_and_the_refused_photos_are_logged(world: World) -> None:
    stub = world.stub
    wait_settled(world)
    user = new_user()
    chat = stub.private_chat(user)
    flood = USER_LIMIT + 4
    msgs = [stub.photo(chat, user, world.photos[n % 4]) for n in range(flood)]
    refused_lines = f"refused photo chat={user} "

    def all_refusals_logged() -> bool:
        return world.bot.log().count(refused_lines) == flood - USER_LIMIT

    stub.wait_for(all_refusals_logged, 60, "every refused photo logged")
    stub.wait_for(lambda: len(stub.sent("sendPhoto", user)) == USER_LIMIT, 120, "the accepted photos answered")
    wait_settled(world)
    slow = [c for c in stub.sent("sendMessage", user) if c.text.startswith("Slow down")]
    assert len(slow) == 1
    assert world.bot.log().count("already told within the minute") == flood - USER_LIMIT - 1
    answered = [m for m in msgs if answers_to(stub, user, m["message_id"])]
    assert len(answered) == USER_LIMIT + 1  # the accepted photos, and the one the "slow down" replies to


def test_a_chats_backlog_does_not_make_another_chats_photo_wait_for_all_of_it(world: World) -> None:
    """A group queues 20 photos (20 people, so no personal limit), then a person sends one: the person's
    photo starts before most of the group's, and every photo is answered exactly once."""
    stub, redis = world.stub, world.redis
    wait_settled(world)
    group = stub.group_chat(-1_005_000_000_000 - next(_ids))
    senders = [new_user() for _ in range(20)]
    backlog = [stub.photo(group, u, world.photos[n % 4], caption="/detect") for n, u in enumerate(senders)]

    def group_queued() -> bool:
        return sum(1 for key in redis.scan_iter(keys.job("*"))
                   if json.loads(redis.hget(key, "routing") or b"{}").get("chat_id") == group["id"]) == 20  # type: ignore[arg-type]

    stub.wait_for(group_queued, 60, "the group's 20 photos queued")
    user = new_user()
    single = stub.photo(stub.private_chat(user), user, world.photos[0])
    assert wait_answer(stub, user, single["message_id"], 120).method == "sendPhoto"
    for m in backlog:
        wait_answer(stub, group["id"], m["message_id"], 180)
    wait_settled(world)
    mine = job_of(redis, user, single["message_id"])
    assert mine.enqueued_at is not None
    waiting = [started(job_of(redis, group["id"], m["message_id"])) for m in backlog]
    waiting = [at for at in waiting if at > mine.enqueued_at]  # not yet running when the person's came
    assert len(waiting) >= 10, "the group's backlog had drained before the person's photo came"
    ahead = [at for at in waiting if at < started(mine)]
    # Without the lanes all of them would run first; with them, at most the few the group had in RQ's list.
    assert len(ahead) <= fair.MAX_IN_FLIGHT_PER_CHAT, (len(ahead), len(waiting))
    assert all(len(answers_to(stub, group["id"], m["message_id"])) == 1 for m in backlog)
    assert len(answers_to(stub, user, single["message_id"])) == 1
    assert not redis.exists(keys.held("detbot"))


def test_a_download_that_fails_for_a_moment_is_tried_again(world: World) -> None:
    """Telegram's file server busy for a moment (a burst of uploads): the photo is answered, not refused."""
    stub = world.stub
    wait_settled(world)
    user = new_user()
    stub.fail("getFile", 502, "Bad Gateway", times=2)
    msg = stub.photo(stub.private_chat(user), user, world.photos[1])
    assert wait_answer(stub, user, msg["message_id"], 120).method == "sendPhoto"
    assert len([c for c in stub.sent("getFile", ok=None) if not c.ok]) >= 2
    assert "trying again" in world.bot.log()


# -- decoration near a chat's limit ------------------------------------------------------------------------

def test_decoration_is_skipped_near_a_chats_limit_and_never_waits() -> None:
    """The limiter's own buckets: a group with less than a quarter of its 20 a minute left, or one waiting out
    a 429, is "near its limit"; a chat action to it is answered True at once without reaching Telegram,
    while a message still goes out."""
    from telegram.error import RetryAfter

    from bot.ratelimit import ChatRateLimiter

    sent: list[str] = []

    async def call(endpoint: str) -> bool:
        sent.append(endpoint)
        return True

    async def scenario() -> None:
        limiter = ChatRateLimiter()
        group, person, other = -100_777, 777, 778

        async def request(endpoint: str, chat: int) -> object:
            return await limiter.process_request(call, (endpoint,), {}, endpoint, {"chat_id": chat}, None)

        assert not limiter.near_limit(group)
        for _ in range(15):
            await request("sendPhoto", group)
        assert not limiter.near_limit(group)  # 5 of 20 left: a quarter
        await request("sendPhoto", group)
        assert limiter.near_limit(group) and not limiter.near_limit(person)
        assert await request("sendChatAction", group) is True
        assert sent.count("sendChatAction") == 0 and sent.count("sendPhoto") == 16
        await request("sendChatAction", person)
        assert sent.count("sendChatAction") == 1

        async def flood_control(endpoint: str) -> bool:
            raise RetryAfter(30)

        with pytest.raises(RetryAfter):
            await limiter.process_request(flood_control, ("sendPhoto",), {}, "sendPhoto", {"chat_id": other}, None)
        assert limiter.near_limit(other)
        assert await request("sendChatAction", other) is True
        assert sent.count("sendChatAction") == 1

    asyncio.run(scenario())
