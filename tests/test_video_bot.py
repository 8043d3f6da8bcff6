"""Clips through the real bot (``detbot bot``), the Bot API stand-in, a real Redis and real workers on
shapes.pt: a video, a GIF and a round video note answered in kind with their unique objects, the JSON
button, the progress message and its cancel button, limits before the download, damaged files, groups,
Russian, a video sent as a file, clips counted by length against the minute, progress edits at most every 3 s,
and a worker SIGKILLed mid-clip. One bot and one worker serve the module; each test has its chats.
"""

from __future__ import annotations

import itertools
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from bot.video import PROGRESS_EVERY
from detector.video import probe
from ops.shapes import encode_clip, make_clip
from tests.conftest import RedisServer
from tests.telegram_stub import VIDEO_METHODS, BotProcess, Call, TelegramStub, answers_to, delivered, wait_answer
from tests.workers import WorkerProcess, running_workers, start_worker, wait_for

TOKEN = "987654322:AAH-video-SECRET-token_xyz"
BOT = "detbot_video_bot"
SECONDS = 3
# The test clip's truth: unique objects per class (ops.shapes.default_movers).
COUNTS = {"circle": 2, "square": 1, "triangle": 1}
SUMMARY = "4 objects over 3.0 s at confidence ≥ 0.25: circle ×2, square ×1, triangle ×1"
_ids = itertools.count(1)


@dataclass
class World:
    stub: TelegramStub
    bot: BotProcess
    redis: Redis
    workers: list[WorkerProcess]
    url: str


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN, username=BOT).start()
    log = tmp_path_factory.mktemp("bot") / "bot.log"
    with running_workers(redis_server.url, count=1) as workers:
        bot = BotProcess(stub, redis_server.url, log, DETBOT_MAX_VIDEO_SECONDS="20").start()
        try:
            yield World(stub, bot, redis, workers, redis_server.url)
        finally:
            bot.stop()
            stub.stop()
            redis.close()


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    """The test clip as phones and Telegram send it: MP4, GIF, and a square MP4 (a round video note)."""
    return {"mp4": encode_clip(make_clip()), "gif": encode_clip(make_clip(), "gif"),
            "note": encode_clip(make_clip(width=240, height=240))}


def new_user() -> int:
    return 70_000 + next(_ids)


def clip_answer(stub: TelegramStub, chat_id: int, message_id: int, timeout: float = 120.0) -> Call:
    return stub.wait_for(lambda: [c for c in answers_to(stub, chat_id, message_id) if c.method in VIDEO_METHODS],
                         timeout, f"the clip answering message {message_id}")[0]


def progress_messages(stub: TelegramStub, chat_id: int, message_id: int) -> list[Call]:
    return [c for c in stub.sent("sendMessage", chat_id) if c.reply_to == message_id and c.text.startswith("🎞")]


def test_a_private_video_is_answered_with_a_tracked_clip_and_json(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user = new_user()
    chat = stub.private_chat(user)
    msg = stub.video(chat, user, clips["mp4"], duration=SECONDS)
    answer = clip_answer(stub, user, msg["message_id"])
    assert answer.method == "sendVideo"
    lines = answer.text.splitlines()
    assert lines[0] == SUMMARY
    assert lines[1].startswith("Most at once: 3 at ")
    assert sum(1 for line in lines if line.startswith("#")) == 4  # one line per track
    clip = answer.files["video"]
    info = probe(clip)
    assert (info.codec, info.width, info.height) == ("h264", 320, 240)
    assert abs(info.duration - SECONDS) < 0.3
    # The progress message came first, with a cancel button, and is gone now.
    progress = progress_messages(stub, user, msg["message_id"])
    assert progress and progress[0].at <= answer.at
    assert progress[0].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].endswith(":x")
    stub.wait_for(lambda: (user, progress[0].result["message_id"]) in stub.deleted, 30, "the progress message gone")
    # JSON: the tracks and the unique counts, as `detbot detect CLIP --json` writes them.
    keyboard = stub.keyboard(user, answer.result["message_id"])
    stub.press(user, user, answer.result["message_id"], keyboard[0][0]["callback_data"])
    doc = stub.wait_for(lambda: stub.sent("sendDocument", user), 30, "the JSON")[0]
    data = json.loads(doc.files["document"])
    assert data["counts"] == COUNTS
    assert {t["class_name"] for t in data["tracks"]} == set(COUNTS)
    assert all({"id", "class_name", "first_seen_s", "last_seen_s", "confidence"} <= t.keys() for t in data["tracks"])


def test_a_gif_is_answered_as_an_animation(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user = new_user()
    msg = stub.video(stub.private_chat(user), user, clips["gif"], "animation", duration=SECONDS)
    answer = clip_answer(stub, user, msg["message_id"])
    assert answer.method == "sendAnimation"
    assert answer.text.splitlines()[0] == SUMMARY
    assert probe(answer.files["animation"]).codec == "h264"


def test_a_round_video_note_is_answered_with_a_note_and_the_text(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user = new_user()
    msg = stub.video(stub.private_chat(user), user, clips["note"], "video_note", duration=SECONDS, size=(240, 240))
    answer = clip_answer(stub, user, msg["message_id"])
    assert answer.method == "sendVideoNote"
    info = probe(answer.files["video_note"])
    assert info.width == info.height == 240
    text = stub.wait_for(lambda: [c for c in answers_to(stub, user, msg["message_id"]) if c.method == "sendMessage"],
                         30, "the note's text")[0]
    assert text.text.splitlines()[0] == SUMMARY


def test_russian_summary(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user = new_user()
    msg = stub.video(stub.private_chat(user), user, clips["mp4"], duration=SECONDS, language_code="ru")
    answer = clip_answer(stub, user, msg["message_id"])
    assert answer.text.splitlines()[0].startswith("За 3.0 с найдено 4 объекта с уверенностью ≥ 0.25")


def test_a_video_sent_as_a_file_is_answered_as_a_video(world: World, clips: dict[str, bytes]) -> None:
    """A clip sent as a document (no duration from Telegram): limited by its header, answered as a video."""
    stub = world.stub
    user = new_user()
    msg = stub.document(stub.private_chat(user), user, clips["mp4"], "video/mp4", "clip.mp4")
    answer = clip_answer(stub, user, msg["message_id"])
    assert answer.method == "sendVideo"
    assert answer.text.splitlines()[0] == SUMMARY


def test_a_clip_counts_against_the_minute_by_its_length(world: World, clips: dict[str, bytes]) -> None:
    """Five 20 s clips count two photos each (one per 10 s begun): the person's minute (10) is spent, so the
    next clip hears "slow down" — before the size check that refused the five (nothing is downloaded)."""
    stub = world.stub
    user = new_user()
    chat = stub.private_chat(user)
    for _ in range(5):
        big = stub.video(chat, user, clips["mp4"], duration=20, file_size=25 * 1024 * 1024)
        assert "too big" in wait_answer(stub, user, big["message_id"], 30).text
    last = stub.video(chat, user, clips["mp4"], duration=SECONDS, file_size=25 * 1024 * 1024)
    refused = wait_answer(stub, user, last["message_id"], 30)
    assert "Slow down a little: 10 photos per minute per person." in refused.text
    assert all(c.params.get("file_id") != last["video"]["file_id"] for c in stub.sent("getFile", ok=None))


def test_limits_before_the_download_and_damaged_files(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user = new_user()
    chat = stub.private_chat(user)
    long = stub.video(chat, user, clips["mp4"], duration=45)  # the bot takes 20 s here
    big = stub.video(chat, user, clips["mp4"], duration=SECONDS, file_size=25 * 1024 * 1024)
    assert "too long" in wait_answer(stub, user, long["message_id"], 30).text
    assert "too big" in wait_answer(stub, user, big["message_id"], 30).text
    fetched = {c.params.get("file_id") for c in stub.sent("getFile")}
    assert long["video"]["file_id"] not in fetched and big["video"]["file_id"] not in fetched
    junk = stub.video(chat, user, b"\x00\x01not a video at all" * 50, duration=SECONDS)
    assert "can't read that video" in wait_answer(stub, user, junk["message_id"], 30).text
    doc = stub.document(chat, user, clips["mp4"][: len(clips["mp4"]) // 3], "video/mp4", "cut.mp4")
    cut = wait_answer(stub, user, doc["message_id"], 120)
    # A cut-off clip: what decodes is answered (its last frame held), or, if nothing does, a clear reply.
    assert cut.method == "sendVideo" or "damaged or cut off" in cut.text


def test_groups_follow_the_photo_rules(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user = new_user()
    group = stub.group_chat(-1_000_000_500_000 - next(_ids))
    quiet = stub.video(group, user, clips["mp4"], duration=SECONDS)
    asked = stub.video(group, user, clips["mp4"], duration=SECONDS, caption="/detect circle")
    answer = clip_answer(stub, group["id"], asked["message_id"])
    assert answer.text.splitlines()[0] == "2 objects over 3.0 s at confidence ≥ 0.25: circle ×2"
    assert not answers_to(stub, group["id"], quiet["message_id"])
    # /detect in reply to the quiet clip: that clip is answered (in reply to it, as a photo would be).
    stub.text(group, user, "/detect square", reply_to=quiet)
    replied = clip_answer(stub, group["id"], quiet["message_id"])
    assert replied.text.splitlines()[0] == "1 object over 3.0 s at confidence ≥ 0.25: square ×1"


def pause(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.proc.send_signal(signal.SIGSTOP)


def resume(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.proc.send_signal(signal.SIGCONT)


def test_cancel_by_the_sender_only(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user, stranger = new_user(), new_user()
    group = stub.group_chat(-1_000_000_600_000 - next(_ids))
    pause(world.workers)
    try:
        msg = stub.video(group, user, clips["mp4"], duration=SECONDS, caption="/detect")
        progress = stub.wait_for(lambda: progress_messages(stub, group["id"], msg["message_id"]), 30, "progress")[0]
        data = progress.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        stub.press(group["id"], stranger, progress.result["message_id"], data)
        refused = stub.wait_for(lambda: [c for c in stub.sent("answerCallbackQuery") if c.params.get("show_alert")],
                                30, "the stranger's refusal")
        assert "Only the person who sent the video" in refused[0].params["text"]
        stub.press(group["id"], user, progress.result["message_id"], data)
        stub.wait_for(lambda: [c for c in stub.sent("answerCallbackQuery")
                               if "Stopping" in str(c.params.get("text"))], 30, "the cancel's answer")
    finally:
        resume(world.workers)
    answer = wait_answer(stub, group["id"], msg["message_id"], 120)
    assert answer.text == "The video was cancelled."
    assert not [c for c in answers_to(stub, group["id"], msg["message_id"]) if c.method in VIDEO_METHODS]


def test_a_worker_killed_mid_clip_answer_comes_once(world: World, clips: dict[str, bytes]) -> None:
    stub = world.stub
    user = new_user()
    slow = start_worker(world.url, env={"DETBOT_TEST_JOB_DELAY_MS": "700"})
    pause(world.workers)
    try:
        msg = stub.video(stub.private_chat(user), user, clips["mp4"], duration=SECONDS)
        wait_for(lambda: [c for c in stub.sent("editMessageText", user) if "%" in c.text], 90, "some progress")
        slow.wait_busy()
        slow.kill()
    finally:
        resume(world.workers)
        slow.close()
    answer = clip_answer(stub, user, msg["message_id"], 180)
    assert answer.text.splitlines()[0] == SUMMARY
    wait_for(lambda: delivered(world.redis, stub.bot_id), 60, "every answer acknowledged")
    # One progress message, edited with a growing percent, never more often than every PROGRESS_EVERY s
    # (each edit waits that long after the previous one came back), its cancel button kept.
    progress = progress_messages(stub, user, msg["message_id"])
    assert len(progress) == 1
    edits = [c for c in stub.sent("editMessageText", user, ok=None)
             if str(c.params.get("message_id")) == str(progress[0].result["message_id"])]
    percents = [int(c.text.split("%")[0].split()[-1]) for c in edits if "%" in c.text]
    assert percents and percents == sorted(percents) and all(0 < p < 100 for p in percents)
    assert all(later.at - earlier.at >= PROGRESS_EVERY for earlier, later in itertools.pairwise(edits))
    assert all(c.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].endswith(":x") for c in edits)
    assert len([c for c in answers_to(stub, user, msg["message_id"]) if c.method in VIDEO_METHODS]) == 1


def test_the_bot_log_has_no_traceback_and_no_token(world: World) -> None:
    log = world.bot.log()
    assert TOKEN.split(":")[1] not in log
    assert "Traceback" not in log
