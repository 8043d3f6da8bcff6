"""Issue 11, rule 6: bounded state. Every Redis key has a TTL or a documented bound, the bot's in-memory
maps are pruned, metric labels come from fixed sets, and a full Redis is "busy", never "something went wrong".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dtm
import itertools
import json
import os
import subprocess
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import OutOfMemoryError, RedisError
from rq.job import Job
from telegram import Bot
from telegram.error import RetryAfter

from bot import replies
from bot.assembly import ALBUM_WAIT, AlbumRef, HeldAlbums
from bot.chat_settings import ChatStore
from bot.delivery import GONE_MEMORY, Delivery
from bot.i18n import ENGLISH, catalog
from bot.limits import WINDOW_SECONDS, Limits
from bot.metrics import LABEL_VALUES as BOT_LABELS
from bot.metrics import BotMetrics
from bot.ratelimit import IDLE_FORGET, ChatRateLimiter
from bot.status import ANSWERED_MEMORY, StatusBoard
from detector.params import DetectParams
from jobs import client as client_module
from jobs import keys
from jobs.client import PHOTO_MEMORY_SHARE, DetectionClient
from jobs.defaults import RESULT_TTL
from jobs.exceptions import QueueFullError, QueueUnavailableError
from jobs.metrics import LABEL_VALUES as WORKER_LABELS
from jobs.recovery import running_jobs
from ops.run import Plan, make_plan
from ops.settings import RunSettings
from ops.shapes import CLASSES, make_images
from tests.conftest import ROOT, RedisServer, free_port
from tests.images import tiff_many_strips
from tests.telegram_stub import BotProcess, TelegramStub, answers_to, bot_id, delivered, encode, wait_answer
from tests.test_compose import compose_config, example_with
from tests.workers import running_workers, start_worker, wait_for

TOKEN = "987654321:AAH-test-SECRET-token_xyz"
BOT = "detbot_test_bot"
# A job that never ends on its own: the victim worker is killed while it holds one.
FOREVER_MS = "600000"
# Worker death to the reaper's answer: liveness TTL + reap interval + a loaded machine's slack.
REAP_DEADLINE = 90.0
_ids = itertools.count(1)


def new_user() -> int:
    return 70_000 + next(_ids)


def new_group_id() -> int:
    return -1_007_000_000_000 - next(_ids)


# -- Redis: every key has a TTL or a documented bound -------------------------------------------------------

def test_docs_show_the_lifetimes_table() -> None:
    """docs/state.md carries jobs.keys.LIFETIMES as it is: the two cannot drift."""
    assert keys.lifetimes_table() in (ROOT / "docs" / "state.md").read_text()


def test_every_row_is_reachable() -> None:
    """No row hides behind an earlier, wider one (first match wins)."""
    for row in keys.LIFETIMES:
        sample = row.pattern.replace("*", "x1")
        assert keys.lifetime(sample) == row, row.pattern


def unbounded_keys(redis: Redis) -> list[str]:
    """Keys that match no row of the table, or should expire and carry no TTL."""
    bad = []
    for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        row = keys.lifetime(key)
        if row is None:
            bad.append(f"{key}: in no row of jobs.keys.LIFETIMES")
        elif row.expires and redis.ttl(key) < 0:
            bad.append(f"{key}: no TTL ({row.bound})")
    return bad


@dataclass
class Run:
    redis: Redis
    stub: TelegramStub
    bot: BotProcess


@pytest.fixture
def run(redis: Redis, redis_server: RedisServer, shapes_model: Path, tmp_path: Path) -> Iterator[Run]:
    stub = TelegramStub(TOKEN, username=BOT).start()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log").start()
    try:
        yield Run(redis, stub, bot)
    finally:
        bot.stop()
        stub.stop()


def settled(redis: Redis, queue: str = "detbot") -> bool:
    """Nothing waiting, running or undelivered."""
    return (delivered(redis, bot_id(TOKEN)) and redis.llen(f"rq:queue:{queue}") == 0
            and not running_jobs(redis, queue))


def test_every_key_has_a_ttl_or_a_documented_bound_after_a_realistic_run(run: Run, redis_server: RedisServer,
                                                                           tmp_path: Path) -> None:
    """Photos answered and failed, an album, a job whose worker died (ended by the reaper), chat settings,
    a group that became a supergroup and one that removed the bot: afterwards every key in Redis expires
    or is in a documented bounded set (jobs.keys.LIFETIMES)."""
    stub, redis = run.stub, run.redis
    images = [encode(img) for img, _ in make_images(1200, 6)]
    # One attempt: the job the victim holds is ended by the reaper (failed_after_retries) at its death.
    victim = start_worker(redis_server.url, env={"DETBOT_TEST_JOB_DELAY_MS": FOREVER_MS, "DETBOT_MAX_ATTEMPTS": "1"},
                          log_dir=tmp_path)
    user = new_user()
    chat = stub.private_chat(user)
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.closing(victim))
        # The victim, alone, takes the first photo and never finishes it.
        first = stub.photo(chat, user, images[0])
        lost = victim.wait_busy()
        stack.enter_context(running_workers(redis_server.url, env={"DETBOT_MAX_ATTEMPTS": "1"}, log_dir=tmp_path))
        sent = [stub.photo(chat, user, img, caption="0.3") for img in images[1:3]]
        cut = stub.document(chat, user, images[3][: len(images[3]) // 3], "image/jpeg", "cut.jpg")
        for img in images[3:6]:
            stub.photo(chat, user, img, media_group_id="album-b")
        for msg in [*sent, cut]:
            wait_answer(stub, user, msg["message_id"])
        stub.wait_for(lambda: stub.sent("sendMediaGroup", user), 90, "the album")
        victim.kill()
        wait_for(lambda: answers_to(stub, user, first["message_id"]), REAP_DEADLINE, "the reaped photo's answer")
        assert redis.exists(Job.key_for(lost))

        # Chat settings: one group keeps them, one becomes a supergroup, one removes the bot.
        admin = new_user()
        kept, moved, kicked, supergroup = (new_group_id() for _ in range(4))
        for gid in (kept, moved, kicked):
            stub.admins[gid] = {admin}
            m = stub.text(stub.group_chat(gid), admin, "/threshold 0.5")
            wait_answer(stub, gid, m["message_id"], 30)
        stub.send({"id": moved, "type": "group", "title": "old"}, admin, migrate_to_chat_id=supergroup)
        stub.send(stub.group_chat(supergroup), admin, migrate_from_chat_id=moved)
        stub.member_update(stub.group_chat(kicked), admin, "kicked")
        gone = [keys.chat(stub.bot_id, kicked), keys.chat(stub.bot_id, moved)]
        wait_for(lambda: not redis.exists(*gone), 30, "the settings of the gone groups dropped")
        assert redis.hget(keys.chat(stub.bot_id, supergroup), "threshold") == b"0.5"
        assert redis.hget(keys.chat(stub.bot_id, kept), "threshold") == b"0.5"

        wait_for(lambda: settled(redis), 60, "every answer delivered")
        # The reaped job's RQ hash ends: it had no TTL before issue 11 and stayed for ever.
        assert 0 < redis.ttl(Job.key_for(lost)) <= RESULT_TTL
        assert redis.hget(keys.job(lost), "code") == b"failed_after_retries"
        assert unbounded_keys(redis) == []
    assert unbounded_keys(redis) == []  # the workers' clean stop leaves nothing unbounded either


# -- a full Redis is "busy" -----------------------------------------------------------------------------------

# A maxmemory a few photos fill: Redis itself takes ~1 MB.
TINY_MAXMEMORY = 3 * 1024 * 1024


@pytest.fixture
def tiny_redis(tmp_path: Path) -> Iterator[Redis]:
    """A real redis-server with a maxmemory of a few MB and the policy detbot runs with."""
    server = RedisServer(tmp_path / "tiny")
    server.start()
    client = Redis.from_url(server.url)
    client.config_set("maxmemory", TINY_MAXMEMORY)
    client.config_set("maxmemory-policy", "noeviction")
    try:
        yield client
    finally:
        client.close()
        server.stop()


def photo_bytes(size: int) -> bytes:
    """Bytes of a given size: the queue stores them as they are (the header check is the bot's)."""
    return bytes(range(256)) * (size // 256)


def test_photos_past_the_memory_share_are_refused_as_full_and_nothing_half_queued(tiny_redis: Redis) -> None:
    client = DetectionClient(tiny_redis, max_queued=1000)
    queued = []
    with pytest.raises(QueueFullError, match="maxmemory"):
        for _ in range(20):
            queued.append(client.submit(photo_bytes(300_000), DetectParams(0.25)))
    assert queued  # the first photos fitted
    info = tiny_redis.info("memory")
    assert info["used_memory"] <= TINY_MAXMEMORY * PHOTO_MEMORY_SHARE
    # What was refused left nothing behind: one record, one image and one RQ job per queued photo.
    assert len(tiny_redis.keys("detbot:image:*")) == len(queued) == client.queued()
    # Room for the results stays: a worker's completion still writes.
    assert tiny_redis.set("detbot:probe", photo_bytes(100_000))


def test_an_out_of_memory_redis_is_queue_full(tiny_redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past maxmemory itself (the share check not in the way), Redis's OOM error is "queue full" too, and the
    transaction left nothing: all of an album or none."""
    monkeypatch.setattr(client_module, "PHOTO_MEMORY_SHARE", 100.0)
    client = DetectionClient(tiny_redis, max_queued=1000)
    with pytest.raises(QueueFullError, match="out of memory"):
        for _ in range(40):
            client.submit_many([photo_bytes(100_000)] * 3, DetectParams(0.25), [{}, {}, {}])
    assert len(tiny_redis.keys("detbot:image:*")) % 3 == 0
    assert len(tiny_redis.keys("detbot:job:*")) == client.queued() == len(tiny_redis.keys("detbot:image:*"))


def test_a_result_redis_has_no_room_for_waits_for_room_instead_of_being_lost(tiny_redis: Redis) -> None:
    """Past maxmemory a worker's completion is refused; the worker frees the job's photo (no longer needed)
    and writes the result then, instead of leaving the person without an answer."""
    from jobs import store
    from jobs.tasks import complete_in_room

    client = DetectionClient(tiny_redis, max_queued=1000)
    job_id = client.submit(photo_bytes(500_000), DetectParams(0.25), routing={"chat_id": 1, "message_id": 1})
    fill(tiny_redis, int(TINY_MAXMEMORY * 0.9))
    tiny_redis.config_set("maxmemory", int(tiny_redis.info("memory")["used_memory"]) - 10_000)  # full now
    result = {"ok": True, "code": "", "detection": {"boxes": []}, "annotated": photo_bytes(200_000)}
    with pytest.raises(RedisError, match="OOM"):
        store.complete(tiny_redis, job_id, **result)  # what a worker met before: the result was lost
    assert complete_in_room(tiny_redis, job_id, **result)
    done = store.read_completion(tiny_redis, job_id)
    assert done is not None and done.ok and done.annotated == result["annotated"]
    assert not tiny_redis.exists(keys.image(job_id))


def fill(redis: Redis, used_memory: int) -> None:
    """Write filler keys in small steps until Redis uses ``used_memory`` bytes (a big write in one piece would
    count its own query buffer and hit maxmemory first)."""
    for n in itertools.count():
        left = used_memory - int(redis.info("memory")["used_memory"])
        if left <= 0:
            return
        redis.set(f"filler:{n}", b"f" * min(left, 16_384))


def test_a_full_redis_gets_the_busy_reply_in_the_chat(tiny_redis: Redis, tmp_path: Path) -> None:
    """Through the real bot: a photo Redis has no room for is answered "busy", never "something went wrong"."""
    stub = TelegramStub(TOKEN, username=BOT).start()
    url = f"redis://127.0.0.1:{tiny_redis.connection_pool.connection_kwargs['port']}/0"
    bot = BotProcess(stub, url, tmp_path / "bot.log").start()
    try:
        # Fill Redis up to a few KB short of the photos' share: no photo fits any more.
        fill(tiny_redis, int(TINY_MAXMEMORY * PHOTO_MEMORY_SHARE) - 20_000)
        user = new_user()
        img, _ = make_images(1300, 1)[0]
        msg = stub.photo(stub.private_chat(user), user, encode(img, ".png"))
        answer = wait_answer(stub, user, msg["message_id"], 60)
        en = catalog(ENGLISH)
        assert answer.text == en.gettext(replies.BUSY)
        assert en.gettext(replies.SOMETHING_WRONG) not in bot.log()
        assert not tiny_redis.keys("detbot:image:*")
        assert "refused photo" in bot.log() and "queue_full" in bot.log()
    finally:
        bot.stop()
        stub.stop()


# -- the bot's in-memory maps are pruned ------------------------------------------------------------------

class FakeClock:
    """A clock the test moves by hand: time passes without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limits_forget_people_who_do_not_come_back() -> None:
    clock = FakeClock()
    limits = Limits(per_user=10, per_chat=30, clock=clock)
    for n in range(10_000):
        assert limits.take(user_id=n, chat_id=-n) is None
        clock.now += 0.001
    assert len(limits.user) == len(limits.chat) == 10_000
    clock.now += WINDOW_SECONDS + 1
    assert limits.take(user_id=1, chat_id=-1) is None
    assert len(limits.user) == len(limits.chat) == 1
    # A person still inside the window keeps their count: the sweep never forgets a live limit.
    for _ in range(9):
        assert limits.take(user_id=1, chat_id=-1) is None
    clock.now += WINDOW_SECONDS / 2
    assert limits.take(user_id=1, chat_id=-1) is not None


def test_the_flood_limiter_forgets_idle_chats_but_not_a_flood_in_force() -> None:
    clock = FakeClock()
    limiter = ChatRateLimiter(clock=clock)

    async def sent() -> bool:
        return True

    def flooded(seconds: int) -> Callable[[], Coroutine[Any, Any, bool]]:
        async def refused() -> bool:
            raise RetryAfter(dtm.timedelta(seconds=seconds))
        return refused

    async def request(chat: int, call: Callable[[], Coroutine[Any, Any, bool]] = sent) -> None:
        with contextlib.suppress(RetryAfter):
            await limiter.process_request(call, (), {}, "sendMessage", {"chat_id": chat}, None)

    async def scenario() -> None:
        for n in range(1, 61):  # private chats and groups, a few of them under flood control that ends at once
            await request(n if n % 2 else -n, flooded(0) if n % 10 == 0 else sent)
        assert limiter.tracked() == 60
        await request(-99_999, flooded(3600))  # Telegram holds this group back for an hour
        clock.now += IDLE_FORGET + 1
        await request(12_345)
        assert limiter.tracked() == 2  # the new chat, and the group still under flood control
        assert limiter.flooded(-99_999)

    asyncio.run(scenario())


def test_albums_waiting_for_their_other_photos_leave_after_the_wait() -> None:
    """What a replica remembers of the albums it holds parts of (their parts wait in Redis): each is handed out
    once due, and gone once dropped (the delivery drops it as it takes the album or sees it taken)."""
    clock = FakeClock()
    albums = HeldAlbums(clock=clock)
    for n in range(500):  # albums of 3 whose other photos never come (their bot restarted, say)
        albums.hold(AlbumRef(f"a{n}", 1, 3, []), clock.now + ALBUM_WAIT)
    assert albums.due() == [] and len(albums) == 500
    clock.now += ALBUM_WAIT + 1
    for album_id in albums.due():
        albums.drop(album_id)
    assert len(albums) == 0


# -- metric labels come from fixed sets -------------------------------------------------------------------

def scrape(port: int) -> list[tuple[str, Sample]]:
    """Every sample of an endpoint with its metric's (family's) name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    # A counter's ``_created`` series comes as a family of its own: it carries the counter's labels.
    return [(family.name.removesuffix("_created"), s) for family in text_string_to_metric_families(text)
            for s in family.samples]


def label_faults(samples: list[tuple[str, Sample]], declared: dict[str, dict[str, frozenset[str]]]) -> list[str]:
    """Label values outside their declared sets. Besides the declared metrics: histogram buckets (``le``),
    inference threads (1 .. the machine's cores) and class names (the model's)."""
    cores = {str(n) for n in range(1, (os.cpu_count() or 1) + 1)}
    fixed = {"le": None, "threads": frozenset(cores), "class_name": frozenset(CLASSES)}
    faults = []
    for family, sample in samples:
        for name, value in sample.labels.items():
            allowed = declared.get(family, {}).get(name, fixed.get(name, frozenset()))
            if allowed is not None and value not in allowed:
                faults.append(f"{sample.name}{{{name}={value!r}}}")
    return faults


def test_metric_labels_come_from_their_fixed_sets_on_every_error_path(
    redis: Redis, redis_server: RedisServer, shapes_model: Path, tmp_path: Path
) -> None:
    """Refusals of every kind, worker errors, a chat that blocked the bot: every label value of every metric,
    bot and worker, is in its declared set — no sizes, dimensions or error texts."""
    stub = TelegramStub(TOKEN, username=BOT).start()
    bot_port, worker_port = free_port(), free_port()
    bot = BotProcess(stub, redis_server.url, tmp_path / "bot.log", DETBOT_BOT_METRICS_PORT=str(bot_port),
                     DETBOT_RATE_LIMIT_USER="3")
    try:
        with running_workers(redis_server.url, env={"DETBOT_METRICS_PORT": str(worker_port)}, log_dir=tmp_path):
            bot.start()
            jpeg = encode(make_images(1400, 1)[0][0])
            user, blocked, flooder = new_user(), new_user(), new_user()
            chat = stub.private_chat(user)
            sticker = {"file_id": "s1", "file_unique_id": "us1", "type": "regular", "width": 512, "height": 512,
                       "is_animated": False, "is_video": False}
            asked = [
                stub.send(chat, user, sticker=sticker),
                stub.document(chat, user, b"%PDF-1.4 hello", "application/pdf", "a.pdf"),
                stub.document(chat, user, jpeg, "image/jpeg", "big.jpg", file_size=25 * 1024 * 1024),
                stub.document(chat, user, jpeg[: len(jpeg) // 3], "image/jpeg", "cut.jpg"),
                stub.document(chat, user, tiff_many_strips(), "image/tiff", "strips.tif"),
                stub.photo(chat, user, jpeg, caption="/detect 1.5"),
            ]
            for msg in asked:
                wait_answer(stub, user, msg["message_id"], 60)
            floods = [stub.photo(stub.private_chat(flooder), flooder, jpeg) for _ in range(4)]
            for msg in floods:
                wait_answer(stub, flooder, msg["message_id"], 60)
            stub.fail("sendPhoto", 403, "Forbidden: bot was blocked by the user", chat_id=blocked)
            stub.photo(stub.private_chat(blocked), blocked, jpeg)
            stub.wait_for(lambda: stub.sent("sendPhoto", blocked, ok=False), 60, "the refused answer")
            wait_for(lambda: settled(redis), 60, "every answer delivered or dropped")

            bot_samples, worker_samples = scrape(bot_port), scrape(worker_port)
            assert label_faults(bot_samples, BOT_LABELS) == []
            assert label_faults(worker_samples, WORKER_LABELS) == []
            reasons = {s.labels["reason"] for f, s in bot_samples if f == "detbot_bot_photos_refused"}
            assert {"too_big", "not_an_image", "rate_limit_user", "usage", "too_complex_image"} <= reasons
            failed = {s.labels["reason"] for f, s in bot_samples if f == "detbot_bot_delivery_failed"}
            assert "forbidden" in failed
            assert "OTHER" not in bot.log() and "not in its fixed set" not in bot.log()
    finally:
        bot.stop()
        stub.stop()


def test_a_label_value_outside_its_set_is_counted_as_other() -> None:
    metrics = BotMetrics()
    metrics.refuse("too big (26214400 bytes)")
    metrics.undelivered("Forbidden: bot was blocked by the user")
    samples = [s for family in metrics.registry.collect() for s in family.samples]
    values = {s.labels.get("reason") for s in samples if s.name.endswith("_total") and s.value}
    assert values == {"other"}


def test_answered_units_gone_chats_and_migrations_are_remembered_up_to_their_bounds(redis: Redis) -> None:
    """More chats than the bound block the bot, migrate and get answers: each map keeps the latest ones only."""
    extra = 500

    async def scenario() -> None:
        status = StatusBoard(Bot(TOKEN), DetectionClient(redis), ChatStore(redis, 1))
        delivery = Delivery(Bot(TOKEN), lambda: DetectionClient(redis), BotMetrics(), status)
        for n in range(GONE_MEMORY + extra):
            await delivery.chat_gone(n, "bot kicked")
            delivery.moved(-n, -n - 1)
        for n in range(ANSWERED_MEMORY + extra):
            await status.forget(f"unit{n}")
        assert len(delivery._gone) == len(delivery._moved) == GONE_MEMORY
        assert len(status._answered) == ANSWERED_MEMORY
        assert not status.answered("unit0") and status.answered(f"unit{ANSWERED_MEMORY + extra - 1}")

    asyncio.run(scenario())


# -- Redis runs with a maxmemory ------------------------------------------------------------------------------

def answers_ping(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisError:
        return False


def test_detbot_run_starts_its_redis_with_the_maxmemory_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded Redis's real command line, started: its maxmemory is the setting, policy noeviction."""
    for name in list(os.environ):
        if name.startswith(("DETBOT_", "REDIS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DETBOT_REDIS_MAXMEMORY", "64mb")
    plan = make_plan(RunSettings(), None, argparse.Namespace(no_bot=True, workers=0, data_dir=tmp_path,
                                                              redis_port=0, no_web=True))
    assert isinstance(plan, Plan) and plan.embedded_redis and plan.data_dir
    plan.data_dir.mkdir(parents=True)
    proc = subprocess.Popen(plan.embedded_redis, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = Redis.from_url(plan.redis_url)
    try:
        wait_for(lambda: answers_ping(client), 20, "the embedded Redis")
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("value", ["0", "lots", "-1gb", "1tb"])
def test_a_maxmemory_that_is_no_limit_or_no_size_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETBOT_REDIS_MAXMEMORY", value)
    with pytest.raises(ValidationError, match="redis_maxmemory"):
        RunSettings()


def test_compose_runs_redis_with_the_maxmemory_setting(tmp_path: Path) -> None:
    default = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN="1:x", REDIS_PASSWORD="p"))
    assert default.returncode == 0, default.stderr
    assert '--maxmemory "1gb"' in " ".join(json.loads(default.stdout)["services"]["redis"]["command"])
    (tmp_path / "set").mkdir()
    chosen = compose_config(tmp_path / "set", example_with(TELEGRAM_BOT_TOKEN="1:x", REDIS_PASSWORD="p",
                                                            DETBOT_REDIS_MAXMEMORY="512mb"))
    assert chosen.returncode == 0, chosen.stderr
    command = " ".join(json.loads(chosen.stdout)["services"]["redis"]["command"])
    assert '--maxmemory "512mb"' in command and "--maxmemory-policy noeviction" in command


def test_the_bots_bookkeeping_in_a_redis_past_its_maxmemory_never_raises(tiny_redis: Redis) -> None:
    """Past maxmemory (noeviction refuses every write): the "handled" marks are skipped, a setting is
    "unavailable" — never an exception that would cost a queued photo a second, "went wrong" answer."""
    fill(tiny_redis, TINY_MAXMEMORY // 2)
    tiny_redis.config_set("maxmemory", TINY_MAXMEMORY // 4)  # now well past it, as after a burst
    with pytest.raises(OutOfMemoryError):
        tiny_redis.set("probe", 1)
    chats = ChatStore(tiny_redis, 1)
    chats.mark_handled(1, [10, 11])
    assert not chats.was_handled(1, 10)
    with pytest.raises(QueueUnavailableError):
        chats.set_threshold(1, 0.5)
