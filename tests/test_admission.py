"""Fair admission and its small holes (issue 18, items 5 and 7): real workers on the shapes model, the real
bot against the Bot API stand-in, a real Redis.

- The job timeout is the worker's, raised or lowered, whatever the producer wrote into the job.
- A chat has at most ``jobs.fair.chat_limit`` photos waiting: past it, one friendly reply, and the photos
  are refused before anything is downloaded; another chat still gets in. A full queue refuses before any
  download too (a 19 MB file is never fetched to be told "busy").
- An album of 10 meets the 3-per-chat lane behind another chat's backlog: its tail is held and released
  photo by photo, and it is still answered as ONE album.
- An unexpected error keeps its traceback in the bot's log; the token never appears there.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from detector.params import DetectParams
from jobs import fair, keys, store
from jobs.client import DetectionClient
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import BotProcess, TelegramStub, answers_to, encode, wait_answer
from tests.workers import WorkerProcess, running_workers, start_worker, wait_for

TOKEN = "515151515:ADMISSION-secret-token"
# The queue's limit in this module's bot: a chat may then have fair.chat_limit(20) = 13 photos waiting
# (a whole album beside its in-flight ones), so two chats can fill the queue and a third is told "busy".
MAX_QUEUED = 20
CHAT_LIMIT = fair.chat_limit(MAX_QUEUED)
# How long an album none of whose photos completed waits before the bot asks Redis about the rest (the real
# one is 10 s): shorter than the gaps between the album's photos behind another chat's backlog.
ALBUM_CHECK_MS = 500
# Each job of the module's worker takes this long more: a backlog lasts long enough to hold part of an album.
JOB_DELAY_MS = 300
_ids = itertools.count(1)


# -- the job timeout: the worker's, both ways ---------------------------------------------------------------

def test_the_workers_job_timeout_decides_raised_or_lowered(redis_server: RedisServer, shapes_model: Path,
                                                           tmp_path: Path) -> None:
    """A worker's DETBOT_JOB_TIMEOUT of 30 s runs a job of 2.5 s that its producer wrote with 1 s (the bot's
    own 60 s used to cap every worker's); one of 1 s times out a job its producer wrote with 60 s."""
    redis = Redis.from_url(redis_server.url)
    delay = {"DETBOT_TEST_JOB_DELAY_MS": "2500"}
    high = start_worker(redis_server.url, queue="timeout-high", env={**delay, "DETBOT_JOB_TIMEOUT": "30"},
                        log_dir=tmp_path, wait=False)
    low = start_worker(redis_server.url, queue="timeout-low", env={**delay, "DETBOT_JOB_TIMEOUT": "1"},
                       log_dir=tmp_path, wait=False)
    workers: list[WorkerProcess] = [high, low]
    try:
        for worker in workers:
            worker.wait_ready()
        photo = encode(make_images(7000, 1)[0][0])
        raised = DetectionClient(redis, queue_name="timeout-high", job_timeout=1).submit(photo, DetectParams())
        lowered = DetectionClient(redis, queue_name="timeout-low", job_timeout=60).submit(photo, DetectParams())
        done = {job: wait_for(lambda j=job: store.read_completion(redis, j), 60, "the job's completion")  # type: ignore[misc]
                for job in (raised, lowered)}
        assert (done[raised].ok, done[raised].code) == (True, "")
        assert (done[lowered].ok, done[lowered].code) == (False, store.CODE_TIMEOUT)
    finally:
        for worker in workers:
            worker.close()
        redis.close()


# -- the real bot --------------------------------------------------------------------------------------------

@dataclass
class World:
    stub: TelegramStub
    bot: BotProcess
    redis: Redis
    redis_url: str
    photos: list[bytes]


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The bot with no worker: photos stay queued until a test starts one (:func:`worker`)."""
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN).start()
    log = tmp_path_factory.mktemp("bot") / "bot.log"
    bot = BotProcess(stub, redis_server.url, log, DETBOT_MAX_QUEUED_JOBS=str(MAX_QUEUED), DETBOT_RATE_LIMIT_CHAT="0",
                     DETBOT_RATE_LIMIT_USER="0",
                     DETBOT_TEST_ALBUM_CHECK_MS=str(ALBUM_CHECK_MS)).start()
    try:
        yield World(stub, bot, redis, redis_server.url, [encode(img) for img, _ in make_images(7100, 4)])
    finally:
        bot.stop()
        stub.stop()
        redis.close()


@contextlib.contextmanager
def worker(world: World) -> Iterator[WorkerProcess]:
    """A worker, each job JOB_DELAY_MS longer: what was queued meanwhile is answered now."""
    with running_workers(world.redis_url, env={"DETBOT_TEST_JOB_DELAY_MS": str(JOB_DELAY_MS)}) as (started,):
        yield started


def new_user() -> int:
    return 60_000 + next(_ids)


def chat_jobs(world: World, chat_id: int) -> int:
    """Jobs queued for ``chat_id`` (their records in Redis)."""
    return sum(1 for key in world.redis.scan_iter(keys.job("*"))
               if json.loads(world.redis.hget(key, "routing") or b"{}").get("chat_id") == chat_id)  # type: ignore[arg-type]


def fetched(stub: TelegramStub) -> set[str]:
    """Every file the bot asked Telegram for (getFile) or downloaded."""
    return {str(c.params.get("file_id")) for c in stub.sent(ok=None) if c.method in ("getFile", "download")}


def file_of(message: dict[str, object]) -> str:
    photo = message.get("photo")
    if isinstance(photo, list):
        return str(photo[-1]["file_id"])
    return str(message["document"]["file_id"])  # type: ignore[index]


def test_a_chat_over_its_cap_and_a_full_queue_refuse_before_any_download(world: World) -> None:
    """One chat (a script in a private chat here: the same cap as a group with /auto on, at a private chat's
    faster answering pace) sends photos past its limit; another chat still gets in; then the queue is full."""
    stub, redis = world.stub, world.redis
    flooder = new_user()
    group = stub.private_chat(flooder)
    flood = [stub.photo(group, flooder, world.photos[n % 4]) for n in range(CHAT_LIMIT)]
    stub.wait_for(lambda: fair.chat_waiting(redis, "detbot", group["id"]) == CHAT_LIMIT, 60,
                  "the chat's photos queued up to its limit")
    over = [stub.photo(group, flooder, world.photos[n % 4]) for n in range(3)]
    told = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", group["id"])
                                  if "many photos waiting" in c.text], 60, "the chat told it has many waiting")
    stub.wait_for(lambda: world.bot.log().count("chat_queue_full") == 3, 60, "every photo over the cap logged")
    assert len(told) == 1 and told[0].reply_to in {m["message_id"] for m in over}
    assert fetched(stub).isdisjoint(file_of(m) for m in over)  # refused before getFile, never downloaded

    # Another chat still gets in, while the first stays at its limit.
    person = new_user()
    single = stub.photo(stub.private_chat(person), person, world.photos[0])
    stub.wait_for(lambda: chat_jobs(world, person) == 1, 60, "the other chat's photo queued")
    # A third fills the queue; a fourth is told "busy", its 19 MB file never fetched.
    third = new_user()
    more = [stub.photo(stub.private_chat(third), third, world.photos[n % 4])
            for n in range(MAX_QUEUED - CHAT_LIMIT - 1)]
    stub.wait_for(lambda: DetectionClient(redis).queued() == MAX_QUEUED, 60, "the queue full")
    fourth = new_user()
    large = stub.document(stub.private_chat(fourth), fourth, world.photos[1], "image/jpeg", "large.jpg",
                          file_size=19 * 1024 * 1024)
    busy = wait_answer(stub, fourth, large["message_id"])
    assert "busy" in busy.text and file_of(large) not in fetched(stub)

    with worker(world):  # now everything queued is answered, and nothing else
        for chat, message in [*((group["id"], m) for m in flood), (person, single), *((third, m) for m in more)]:
            assert wait_answer(stub, chat, message["message_id"], 120).method == "sendPhoto"
    assert all(len(answers_to(stub, group["id"], m["message_id"])) <= 1 for m in over)
    assert "Traceback" not in world.bot.log()


def test_presses_waiting_for_a_worker_hold_no_thread_the_intake_needs(world: World) -> None:
    """No worker draws: twelve presses on twelve answers each wait RENDER_WAIT for a render. They wait on
    Redis without a thread, so a photo sent meanwhile is queued before any of them gives up (on asyncio's
    shared pool of 6 threads, six blocked renders made every intake wait 4 s)."""
    import asyncio

    from redis.asyncio import Redis as AsyncRedis

    from bot.answers import Answer, AnswerBook, Photo, new_id
    from detector.result import Detection

    stub = world.stub
    people = [new_user() for _ in range(12)]
    base = {k: v for k, v in Detection((), 400, 300, 0.4).to_dict().items() if k != "boxes"}
    answers = []
    for person in people:
        under = stub.text(stub.private_chat(person), person, "hello")  # the message the keyboard is under
        photo = Photo(stub.add_file(world.photos[0]), under["message_id"], base, [])
        answers.append((person, under["message_id"], new_id(), Answer(
            person, None, under["message_id"], person, True, "en", 0.05, DetectParams(0.4).to_dict(), [],
            [photo], keyboard_message=under["message_id"])))

    async def keep() -> None:
        client = AsyncRedis.from_url(world.redis_url)
        try:
            for _person, _mid, answer_id, answer in answers:
                await AnswerBook(client, 3600, stub.bot_id).save(answer_id, answer)
        finally:
            await client.aclose()

    asyncio.run(keep())
    queries = [stub.press(person, person, mid, f"a:{answer_id}:lo") for person, mid, answer_id, _ in answers]
    sender = new_user()
    stub.photo(stub.private_chat(sender), sender, world.photos[1])
    stub.wait_for(lambda: chat_jobs(world, sender) == 1, 60, "the photo queued")

    def replies() -> list[str]:
        return [c.params.get("text", "") for c in stub.sent("answerCallbackQuery")
                if c.params.get("callback_query_id") in queries]

    assert replies() == []  # every press still waiting for a worker when the photo was queued
    stub.wait_for(lambda: len(replies()) == len(queries), 60, "every press answered")
    assert all("Could not adjust" in text for text in replies())


def test_an_album_of_ten_behind_other_chats_backlogs_is_one_album(world: World) -> None:
    """3 of the album's photos go into the queue, 7 are held and released one by one behind two other
    chats' backlogs (chats take turns), with gaps longer than the bot's album check: it asks Redis, hears
    the rest is held, waits, and answers one album of 10 with one summary and one keyboard."""
    stub = world.stub
    others = [new_user() for _ in range(2)]
    backlog = [(u, stub.photo(stub.private_chat(u), u, world.photos[n % 4])) for u in others for n in range(4)]
    stub.wait_for(lambda: all(chat_jobs(world, u) == 4 for u in others), 60, "the other chats' backlogs queued")
    user = new_user()
    chat = stub.private_chat(user)
    album = [stub.photo(chat, user, world.photos[n % 4], media_group_id=f"ten-{user}") for n in range(10)]
    stub.wait_for(lambda: chat_jobs(world, user) == 10, 60, "the album queued")
    assert world.redis.llen(keys.lane_held("detbot", user)) == 10 - fair.MAX_IN_FLIGHT_PER_CHAT
    first = album[0]["message_id"]
    with worker(world):
        group = stub.wait_for(lambda: stub.sent("sendMediaGroup", user), 120, "the album")
        summary = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user) if c.reply_to == first
                                         and stub.keyboard(user, c.result["message_id"])], 60, "its summary")
        for other, m in backlog:
            wait_answer(stub, other, m["message_id"], 120)
    assert len(group) == 1 and len(group[0].params["media"]) == 10
    assert len(summary) == 1 and all(f"Photo {n}: " in summary[0].text for n in range(1, 11))
    keyboards = [c for c in stub.sent(chat_id=user) if c.params.get("reply_markup")]
    assert keyboards == summary  # one keyboard: no second album
    assert "still waiting for" in world.bot.log()  # the album outlasted the check and was waited for


def test_an_unexpected_error_keeps_its_traceback_and_the_token_stays_out(world: World) -> None:
    """Telegram answers getChatMember with something PTB cannot read: the bug's traceback is in the log,
    the person gets "something went wrong"; an expected error whose text holds the token is one line,
    redacted."""
    stub = world.stub
    group = stub.group_chat(-1_007_000_000_000 - next(_ids))
    member = new_user()
    stub.fail("getChatMember", 200, f"not JSON the bot expects, from /bot{TOKEN}/getChatMember", times=1)
    asked = stub.text(group, member, "/threshold 0.3")
    sorry = wait_answer(stub, group["id"], asked["message_id"])
    assert "something went wrong" in sorry.text and "Traceback" not in sorry.text
    stub.fail("getChatMember", 500, f"Internal Server Error at /bot{TOKEN}/getChatMember", times=1)
    again = stub.text(group, member, "/threshold 0.3")
    wait_answer(stub, group["id"], again["message_id"])
    log = world.bot.log()
    assert "Traceback (most recent call last):" in log and "KeyError: 'result'" in log
    assert "in _is_admin" in log  # the frames of the bot's own code, where it went wrong
    assert "Internal Server Error at /bot<redacted>/getChatMember" in log
    assert TOKEN not in log
