"""Several models in one deployment (issue 19 item 2), end to end: one Redis, a worker of the detection model
(shapes.pt as ``detect``) and one of the segmentation model (shapes-seg.pt as ``segment``), none of the pose
model (shapes-pose.pt as ``pose``), the real bot against the Bot API stand-in. Which model answered is read
from the answer itself (its JSON names the weights) and from the workers' own logs."""

from __future__ import annotations

import io
import itertools
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from redis import Redis
from rq.job import Job

from detector.params import DetectParams
from jobs import keys, models
from jobs.client import DetectionClient, make_queue
from jobs.models import OUTAGE_GRACE
from ops.shapes import Shape, encode_clip, make_clip, make_images
from tests.conftest import RedisServer, free_port
from tests.shapes import MODEL_PATH, POSE_MODEL_PATH, SEG_MODEL_PATH
from tests.telegram_stub import VIDEO_METHODS, BotProcess, Call, TelegramStub, answers_to, encode, wait_answer
from tests.workers import WorkerProcess, running_workers

TOKEN = "555666777:AAH-test-models-token_abc"
BOT = "detbot_models_bot"
MODELS = f"detect={MODEL_PATH},segment={SEG_MODEL_PATH},pose={POSE_MODEL_PATH}"
SEG_QUEUE = "detbot-segment"
POSE_QUEUE = "detbot-pose"
_ids = itertools.count(1)


@dataclass
class World:
    stub: TelegramStub
    bot: BotProcess
    redis: Redis
    images: list[tuple[np.ndarray, list[Shape]]]
    detect: WorkerProcess
    segment: WorkerProcess
    seg_metrics: int


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN, username=BOT).start()
    log = tmp_path_factory.mktemp("bot") / "bot.log"
    port = free_port()
    common = {"DETBOT_MODELS": MODELS}
    envs = [{**common, "DETBOT_WORKER_MODEL": "detect"},
            {**common, "DETBOT_WORKER_MODEL": "segment", "DETBOT_METRICS_PORT": str(port)}]
    with running_workers(redis_server.url, envs=envs) as (detect, segment):
        bot = BotProcess(stub, redis_server.url, log, **common).start()
        try:
            yield World(stub, bot, redis, make_images(4000, 12), detect, segment, port)
        finally:
            bot.stop()
            stub.stop()
            redis.close()


def new_user() -> int:
    return 40_000 + next(_ids)


def replies_to(stub: TelegramStub, chat_id: int, message_id: int) -> list[Call]:
    return [c for c in stub.answers(chat_id) if c.reply_to == message_id]


def say(world: World, chat: dict[str, Any], user: int, text: str, **fields: Any) -> str:
    """Send a command; the bot's text reply to it."""
    msg = world.stub.text(chat, user, text, **fields)
    return wait_answer(world.stub, chat["id"], msg["message_id"], 30).text


def json_of(world: World, chat_id: int, user: int, answer: Call) -> dict[str, Any]:
    """Press the answer's JSON button; the document it sends (the answer's boxes and model)."""
    mid = answer.result["message_id"]
    stub = world.stub
    key = stub.wait_for(lambda: _answer_key(world, chat_id, mid), 30, "the answer's buttons stored")
    stub.wait_for(lambda: world.redis.exists(key), 30, "the answer's state")
    data = next(b["callback_data"] for row in stub.keyboard(chat_id, mid) for b in row
                if b["callback_data"].endswith(":js"))
    stub.press(chat_id, user, mid, data)
    doc = stub.wait_for(lambda: [c for c in stub.sent("sendDocument", chat_id) if c.reply_to == mid], 30,
                        "the JSON")[0]
    found: dict[str, Any] = json.loads(doc.files["document"])
    return found


def _answer_key(world: World, chat_id: int, message_id: int) -> str | None:
    rows = world.stub.keyboard(chat_id, message_id)
    if not rows:
        return None
    answer_id = rows[0][0]["callback_data"].split(":")[1]
    return keys.answer(world.stub.bot_id, answer_id)


def photo_answer(world: World, chat: dict[str, Any], user: int, image: int, caption: str | None = None,
                 **fields: Any) -> tuple[dict[str, Any], Call]:
    msg = world.stub.photo(chat, user, encode(world.images[image][0]), caption=caption, **fields)
    return msg, wait_answer(world.stub, chat["id"], msg["message_id"], 90)


# -- which model answers ---------------------------------------------------------------------------------

def test_a_photo_goes_to_the_default_model_and_segment_to_its_own(world: World) -> None:
    user = new_user()
    chat = world.stub.private_chat(user)
    _, plain = photo_answer(world, chat, user, 0)
    assert plain.method == "sendPhoto"
    assert json_of(world, user, user, plain)["model"] == MODEL_PATH.name

    _, seg = photo_answer(world, chat, user, 1, caption="/segment 0.3")
    assert seg.method == "sendPhoto" and "≥ 0.30" in seg.text
    assert json_of(world, user, user, seg)["model"] == SEG_MODEL_PATH.name
    # The segmentation worker ran it (RQ's job names the worker that took it), the detection worker did not.
    job = re.search(rf"queued photo chat={user} msg=\d+ job=(\w+) conf=0.30 classes=all model=segment",
                    world.bot.log())
    assert job is not None
    assert Job.fetch(job.group(1), connection=world.redis).worker_name == world.segment.name
    assert f"job {job.group(1)}" not in world.detect.output()


def test_a_photo_sent_again_is_answered_once_by_its_model(world: World) -> None:
    user = new_user()
    msg, answer = photo_answer(world, world.stub.private_chat(user), user, 5, caption="/segment")
    world.stub.resend(msg)  # Telegram delivers it again (a crash before the confirmation)
    again = world.stub.text(world.stub.private_chat(user), user, "/model")
    wait_answer(world.stub, user, again["message_id"], 30)  # handled after the resent update (one chat, in order)
    assert len(replies_to(world.stub, user, msg["message_id"])) == 1 and answer.method == "sendPhoto"


def test_model_per_chat_and_reset(world: World) -> None:
    user = new_user()
    chat = world.stub.private_chat(user)
    status = say(world, chat, user, "/model")
    assert "▸ detect" in status and "segment" in status
    pose_line = next(line for line in status.splitlines() if "pose" in line)
    assert "no worker running now" in pose_line
    assert "Done: photos in this chat now go to the segment model." in say(world, chat, user, "/model segment")
    assert "▸ segment" in say(world, chat, user, "/model")
    _, answer = photo_answer(world, chat, user, 2)
    assert json_of(world, user, user, answer)["model"] == SEG_MODEL_PATH.name
    # /detect still asks the detection model for one photo.
    _, once = photo_answer(world, chat, user, 3, caption="/detect")
    assert json_of(world, user, user, once)["model"] == MODEL_PATH.name
    assert "default model again (detect)" in say(world, chat, user, "/model reset")
    _, back = photo_answer(world, chat, user, 4)
    assert json_of(world, user, user, back)["model"] == MODEL_PATH.name
    assert "no model called “nope”" in say(world, chat, user, "/model nope")


def test_in_a_group_admins_choose_and_commands_choose_one_photo(world: World) -> None:
    stub = world.stub
    group = stub.group_chat(-100_000_000_000 - next(_ids))
    admin, member = new_user(), new_user()
    stub.admins[group["id"]] = {admin}
    assert "only this group's admins" in say(world, group, member, "/model segment")
    assert "segment model" in say(world, group, admin, "/model segment")
    # A photo sent as a reply to the bot's message: the group's model.
    anchor = stub.text(group, member, "/model")
    bot_reply = wait_answer(stub, group["id"], anchor["message_id"], 30)
    msg = stub.photo(group, member, encode(world.images[5][0]), reply_to=bot_reply.result)
    answer = wait_answer(stub, group["id"], msg["message_id"], 90)
    assert json_of(world, group["id"], member, answer)["model"] == SEG_MODEL_PATH.name
    # /detect as a reply to a photo: the detection model, whatever the group chose.
    plain = stub.photo(group, member, encode(world.images[6][0]))
    command = stub.text(group, member, "/detect", reply_to=plain)
    answer = wait_answer(stub, group["id"], plain["message_id"], 90)
    assert json_of(world, group["id"], member, answer)["model"] == MODEL_PATH.name
    assert command["message_id"]


def test_a_model_with_no_worker_gets_an_honest_reply_at_once(world: World) -> None:
    stub = world.stub
    user = new_user()
    msg = stub.photo(stub.private_chat(user), user, encode(world.images[7][0]), caption="/pose")
    reply = wait_answer(stub, user, msg["message_id"], 30)
    assert reply.method == "sendMessage"
    assert "The pose model is not running right now" in reply.text and "/detect" in reply.text
    assert make_queue(world.redis, POSE_QUEUE).count == 0  # nothing queued to wait for ever
    stub.resend(msg)  # delivered again: said once
    later = stub.text(stub.private_chat(user), user, "/model")
    wait_answer(stub, user, later["message_id"], 30)
    assert len(replies_to(stub, user, msg["message_id"])) == 1
    assert not world.redis.keys(f"{keys.lane_in_flight(POSE_QUEUE, user)}*")
    # In Russian for a Russian speaker, and for a chat whose model it is as well.
    ru = new_user()
    ru_chat = stub.private_chat(ru)
    settled = stub.text(ru_chat, ru, "/model pose", language_code="ru")
    text = wait_answer(stub, ru, settled["message_id"], 30).text
    assert "модель pose" in text.lower() and "сейчас не работает" in text
    msg = stub.photo(ru_chat, ru, encode(world.images[8][0]), language_code="ru")
    reply = wait_answer(stub, ru, msg["message_id"], 30)
    assert reply.method == "sendMessage" and "Модель pose сейчас не работает" in reply.text


def test_classes_per_model_and_thresholds_across_models(world: World) -> None:
    user = new_user()
    chat = world.stub.private_chat(user)
    listed = say(world, chat, user, "/classes segment")
    assert listed.splitlines()[0] == "Classes of the segment model:"
    assert {"• circle", "• square", "• triangle"} <= set(listed.splitlines())
    assert "no model called “hexagon”" in say(world, chat, user, "/classes hexagon")
    # A per-class threshold is checked against every model's classes and applies to each that has it.
    assert "circle" in say(world, chat, user, "/threshold circle 0.95")
    assert "did you mean “circle”" in say(world, chat, user, "/threshold circel 0.5")
    _, seg = photo_answer(world, chat, user, 9, caption="/segment")
    assert "circle ≥ 0.95" in seg.text


def test_an_album_goes_to_one_model(world: World) -> None:
    stub = world.stub
    user = new_user()
    chat = stub.private_chat(user)
    msgs = [stub.photo(chat, user, encode(world.images[i][0]), caption="/segment" if i == 10 else None,
                       media_group_id=f"models-album-{user}") for i in (10, 11)]
    group = stub.wait_for(lambda: [c for c in stub.sent("sendMediaGroup", user)], 90, "the album's answer")[0]
    assert len(group.params["media"]) == 2
    summary = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user) if c.reply_to == msgs[0]["message_id"]
                                     and c.text.startswith("Photo 1")], 60, "the album's summary")[0]
    data = json_of(world, user, user, summary)
    assert [d["model"] for d in data] == [SEG_MODEL_PATH.name] * 2


def test_buttons_of_another_models_answer_are_drawn_by_its_workers(world: World) -> None:
    user = new_user()
    chat = world.stub.private_chat(user)
    _, seg = photo_answer(world, chat, user, 2, caption="/segment 0.4")
    mid = seg.result["message_id"]
    before = _renders(world)
    json_of(world, user, user, seg)  # waits for the stored answer too
    lower = next(b["callback_data"] for row in world.stub.keyboard(user, mid) for b in row
                 if b["callback_data"].endswith(":lo"))
    world.stub.press(user, user, mid, lower)
    world.stub.wait_for(lambda: [c for c in world.stub.sent("editMessageMedia", user)
                                 if int(c.params["message_id"]) == mid], 30, "the re-drawn answer")
    # The worker counts a render right after handing it over: the counter may trail the edit by a moment.
    world.stub.wait_for(lambda: _renders(world) > before, 10, "the segmentation worker's render counted")


def _renders(world: World) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{world.seg_metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r"^detbot_renders_total(?:{[^}]*})? (\S+)$", text, re.M))


# -- liveness per queue, without the bot ---------------------------------------------------------------

def test_queue_liveness_follows_its_workers(world: World) -> None:
    redis = world.redis
    seg = DetectionClient(redis, queue_name=SEG_QUEUE)
    assert seg.liveness().live >= 1
    assert DetectionClient(redis, queue_name=POSE_QUEUE).liveness() == models.Liveness(0, 0)
    info = seg.model_info()
    assert info is not None and info.weights == SEG_MODEL_PATH.name
    assert info.task == "segment"  # what /segment finds a model by when none is named so
    # The status messages' positions come from the job's own queue, whichever model's client asks.
    pose = DetectionClient(redis, queue_name=POSE_QUEUE, events_queue="detbot")
    waiting = pose.submit(encode(world.images[0][0]), DetectParams(0.5), routing={"chat_id": 1})
    assert DetectionClient(redis).position(waiting) == 1
    redis.delete(f"rq:queue:{POSE_QUEUE}", keys.job(waiting), keys.image(waiting))
    # A worker that stopped is still "recent" for the grace (a restart), then gone.
    models.beat(redis, "q-test", "w1")
    models.leave(redis, "q-test", "w1")
    assert models.liveness(redis, "q-test") == models.Liveness(0, 1)
    now = int(redis.time()[0])
    redis.zadd(keys.queue_workers("q-test"), {"w1": now - OUTAGE_GRACE - 5})
    assert not models.liveness(redis, "q-test").served
    assert 0 < redis.ttl(keys.queue_workers("q-test")) <= 70


# -- cut-outs and stickers of a segmentation answer (issue 19 item 4) ---------------------------------------

def actions(world: World, chat_id: int, message_id: int) -> dict[str, str]:
    """The buttons of a message: action -> callback_data."""
    return {b["callback_data"].rsplit(":", 1)[1]: b["callback_data"]
            for row in world.stub.keyboard(chat_id, message_id) for b in row}


def labels(world: World, chat_id: int, message_id: int) -> dict[str, str]:
    return {b["callback_data"].rsplit(":", 1)[1]: b["text"] for row in world.stub.keyboard(chat_id, message_id)
            for b in row}


def press(world: World, chat_id: int, user: int, message_id: int, action: str) -> Call:
    """Press a button; the bot's answerCallbackQuery to it."""
    query = world.stub.press(chat_id, user, message_id, actions(world, chat_id, message_id)[action])
    return world.stub.wait_for(lambda: [c for c in world.stub.sent("answerCallbackQuery")
                                        if c.params.get("callback_query_id") == query], 60, f"the press of {action}")[0]


def seg_answer(world: World, chat: dict[str, Any], user: int, image: int, caption: str = "/segment 0.3",
               **fields: Any) -> Call:
    _, answer = photo_answer(world, chat, user, image, caption=caption, **fields)
    assert answer.method == "sendPhoto"
    key = world.stub.wait_for(lambda: _answer_key(world, chat["id"], answer.result["message_id"]), 30, "buttons")
    world.stub.wait_for(lambda: world.redis.exists(key), 30, "the answer's state")
    return answer


def crowded_answer(world: World, user: int) -> Call:
    """A segmentation answer of a photo with three shapes or more, in the person's private chat."""
    image = next(i for i, (_, shapes) in enumerate(world.images) if len(shapes) >= 3)
    return seg_answer(world, world.stub.private_chat(user), user, image, caption="/segment 0.2")


def rgba(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.format, img.mode, img.size, np.asarray(img.convert("RGBA"))


def model_runs(world: World) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{world.seg_metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(r"^detbot_model_runs (\S+)$", text, re.M)
    assert found, "the worker's model-run gauge"
    return float(found.group(1))


def test_a_segmentation_answer_offers_cutouts_and_a_sticker(world: World) -> None:
    user = new_user()
    chat = world.stub.private_chat(user)
    seg = seg_answer(world, chat, user, 0)
    assert {"co", "st", "js"} <= set(actions(world, user, seg.result["message_id"]))
    assert "cr" not in actions(world, user, seg.result["message_id"])  # boxes' crops: a detection answer's
    _, plain = photo_answer(world, chat, user, 0)
    assert {"cr", "js"} <= set(actions(world, user, plain.result["message_id"])) and \
        "co" not in actions(world, user, plain.result["message_id"])
    ru = new_user()
    ru_answer = seg_answer(world, world.stub.private_chat(ru), ru, 1, language_code="ru")
    shown = labels(world, ru, ru_answer.result["message_id"])
    assert (shown["co"], shown["st"]) == ("✂ по контуру", "стикер")


def test_cutouts_are_transparent_pngs_largest_first_and_no_inference(world: World) -> None:
    stub = world.stub
    user = new_user()
    seg = crowded_answer(world, user)
    mid = seg.result["message_id"]
    objects = len([line for line in seg.text.splitlines()[1:] if re.match(r"^\d+\. ", line)])
    runs = model_runs(world)
    assert press(world, user, user, mid, "co").params.get("text") is None
    sent = stub.wait_for(lambda: [c for c in stub.sent(chat_id=user) if c.method in ("sendMediaGroup", "sendDocument")
                                  and c.reply_to == mid], 60, "the cut-outs")[0]
    files = list(sent.files.values())
    assert len(files) == min(10, objects) >= 2
    areas = []
    for data in files:
        fmt, mode, _size, pixels = rgba(data)
        assert (fmt, mode) == ("PNG", "RGBA")
        alpha = pixels[..., 3]
        assert (alpha == 0).any() and (alpha == 255).any()  # cut along the mask: transparent around it
        areas.append(int((alpha > 127).sum()))
    assert areas == sorted(areas, reverse=True)  # the largest object first
    if sent.method == "sendMediaGroup":
        assert all(item["type"] == "document" for item in sent.params["media"])  # files, never recompressed
    assert model_runs(world) == runs  # cut by the worker from what it kept: no second inference


def test_a_sticker_is_a_512_px_webp_with_alpha_and_joins_the_persons_own_set(world: World) -> None:
    stub = world.stub
    user = new_user()
    seg = crowded_answer(world, user)
    mid = seg.result["message_id"]
    press(world, user, user, mid, "st")
    sticker = stub.wait_for(lambda: [c for c in stub.sent("sendSticker", user) if c.reply_to == mid], 60,
                            "the sticker")[0]
    fmt, mode, size, pixels = rgba(sticker.files["sticker"])
    assert (fmt, mode) == ("WEBP", "RGBA") and max(size) == 512 and min(size) <= 512
    assert (pixels[..., 3] == 0).any() and (pixels[..., 3] == 255).any()
    smid = sticker.result["message_id"]
    under = actions(world, user, smid)
    assert "sa" in under
    # The other objects shown, as buttons: a sticker of the one chosen.
    others = [a for a in under if a.startswith("o")]
    objects = len([line for line in seg.text.splitlines()[1:] if re.match(r"^\d+\. ", line)])
    assert len(others) == min(objects - 1, 4) >= 2
    press(world, user, user, smid, others[0])
    chosen = stub.wait_for(lambda: [c for c in stub.sent("sendSticker", user) if c.reply_to == mid][1:], 60,
                           "the chosen object's sticker")[0]
    assert chosen.files["sticker"] != sticker.files["sticker"]
    # The first: the set is made, named after the person and the bot, titled after the bot.
    first = press(world, user, user, smid, "sa")
    name = f"u{user}_by_{BOT}"
    assert "is made" in first.text and f"t.me/addstickers/{name}" in first.text
    made = stub.sticker_sets[name]
    assert made["user_id"] == user and made["title"] == "detbot stickers" and len(made["stickers"]) == 1
    assert [c for c in stub.sent("uploadStickerFile") if int(c.params["user_id"]) == user]
    link = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user) if "addstickers" in c.text], 30,
                         "the set's link in the private chat")[0]
    assert f"https://t.me/addstickers/{name}" in link.text
    # The same sticker again: in the set already, nothing added.
    assert "already" in press(world, user, user, smid, "sa").text
    assert len(stub.sticker_sets[name]["stickers"]) == 1
    # Another view's sticker joins the same set.
    press(world, user, user, mid, "lo")
    stub.wait_for(lambda: [c for c in stub.sent("editMessageMedia", user) if int(c.params["message_id"]) == mid],
                  30, "the re-drawn answer")
    before = len([c for c in stub.sent("sendSticker", user) if c.reply_to == mid])
    press(world, user, user, mid, "st")
    second = stub.wait_for(lambda: [c for c in stub.sent("sendSticker", user) if c.reply_to == mid][before:], 60,
                           "a sticker of the new view")[0]
    added = press(world, user, user, second.result["message_id"], "sa")
    assert "(2 of 120)" in added.text
    assert len(stub.sticker_sets[name]["stickers"]) == 2


def test_sticker_set_refusals_are_said_in_words(world: World) -> None:
    stub = world.stub
    group = stub.group_chat(-100_000_000_000 - next(_ids))
    asker, stranger, full, deleted = new_user(), new_user(), new_user(), new_user()
    seg = seg_answer(world, group, asker, 3)
    mid = seg.result["message_id"]
    # The sticker button is the asker's (as crops are); a stranger is refused and nothing is sent.
    assert "Only the person who asked" in press(world, group["id"], stranger, mid, "st").text
    press(world, group["id"], asker, mid, "st")
    sticker = stub.wait_for(lambda: [c for c in stub.sent("sendSticker", group["id"]) if c.reply_to == mid], 60,
                            "the sticker")[0]
    smid = sticker.result["message_id"]
    # Anyone may add it to their own set, but someone who never started the bot is told how.
    stub.never_started.add(stranger)
    refused = press(world, group["id"], stranger, smid, "sa")
    assert "press Start" in refused.text and refused.params.get("url") == f"https://t.me/{BOT}?start=stickers"
    assert f"u{stranger}_by_{BOT}" not in stub.sticker_sets
    stub.never_started.discard(stranger)
    started = say(world, stub.private_chat(stranger), stranger, "/start stickers")  # the link the button opened
    assert "press “➕ add to my sticker set” again" in started
    assert "is made" in press(world, group["id"], stranger, smid, "sa").text  # once started, the same press works
    # A full set.
    stub.sticker_sets[f"u{full}_by_{BOT}"] = {"user_id": full, "title": "detbot stickers",
                                             "stickers": ["file1"] * 120}
    assert "is full (120 stickers)" in press(world, group["id"], full, smid, "sa").text
    # A name taken (a set deleted since keeps it): the next name.
    stub.taken_set_names.add(f"u{deleted}_by_{BOT}")
    assert "is made" in press(world, group["id"], deleted, smid, "sa").text
    assert f"u{deleted}_2_by_{BOT}" in stub.sticker_sets


def test_sticker_buttons_are_bound_and_a_burst_sends_one(world: World) -> None:
    stub = world.stub
    user = new_user()
    chat = stub.private_chat(user)
    seg = seg_answer(world, chat, user, 4)
    mid = seg.result["message_id"]
    data = actions(world, user, mid)["st"]
    answer_id = data.split(":")[1]
    queries = [stub.press(user, user, mid, data) for _ in range(4)]
    stub.wait_for(lambda: len([c for c in stub.sent("answerCallbackQuery")
                               if c.params.get("callback_query_id") in queries]) == 4, 60, "every press answered")
    stub.wait_for(lambda: [c for c in stub.sent("sendSticker", user) if c.reply_to == mid], 60, "the sticker")
    assert len([c for c in stub.sent("sendSticker", user) if c.reply_to == mid]) == 1  # one per burst
    # "Add" pressed under the answer's photo instead of under a sticker: refused, nothing added.
    forged = stub.press(user, user, mid, f"a:{answer_id}:sa")
    reply = stub.wait_for(lambda: [c for c in stub.sent("answerCallbackQuery")
                                   if c.params.get("callback_query_id") == forged], 30, "the forged press")[0]
    assert "belong to another message" in reply.text
    assert f"u{user}_by_{BOT}" not in stub.sticker_sets


def test_a_clip_goes_to_the_model_its_caption_names(world: World) -> None:
    """``/segment`` on a clip: its spans run on the segmentation model's workers, like a photo's job."""
    user = new_user()
    msg = world.stub.video(world.stub.private_chat(user), user, encode_clip(make_clip()), caption="/segment",
                           duration=3)
    answer = world.stub.wait_for(lambda: [c for c in answers_to(world.stub, user, msg["message_id"])
                                          if c.method in VIDEO_METHODS], 120, "the clip's answer")[0]
    assert answer.method == "sendVideo"
    video = re.search(rf"queued video chat={user} msg={msg['message_id']} job=(\w+)", world.bot.log())
    assert video is not None
    world.stub.wait_for(lambda: f"span {video.group(1)}" in world.segment.output(), 30, "the segment worker's spans")
    assert f"span {video.group(1)}" not in world.detect.output()
