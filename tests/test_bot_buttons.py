"""The buttons under every answer (issue 12, items 1-4), end to end: the real bot process against the Bot API
stand-in, a real worker (its render thread and its metrics), real Redis. No second inference: the worker's
own counters say so."""

from __future__ import annotations

import itertools
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis import Redis

from jobs import keys
from ops.shapes import Shape, make_images
from tests.conftest import RedisServer, free_port
from tests.telegram_stub import BotProcess, Call, TelegramStub, box_lines, encode, image_size, wait_answer
from tests.workers import running_workers

TOKEN = "987654321:AAH-test-buttons-token_xyz"
BOT = "detbot_test_bot"
_ids = itertools.count(1)


@dataclass
class World:
    stub: TelegramStub
    bot: BotProcess
    redis: Redis
    images: list[tuple[np.ndarray, list[Shape]]]
    metrics_port: int
    redis_url: str
    log: Path

    def restart_bot(self, **env: str) -> None:
        self.bot.stop()
        self.bot = BotProcess(self.stub, self.redis_url, self.log, **env).start()


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    stub = TelegramStub(TOKEN, username=BOT).start()
    log = tmp_path_factory.mktemp("bot") / "bot.log"
    port = free_port()
    with running_workers(redis_server.url, count=1, env={"DETBOT_METRICS_PORT": str(port)}):
        bot = BotProcess(stub, redis_server.url, log).start()
        w = World(stub, bot, redis, make_images(3000, 30), port, redis_server.url, log)
        try:
            yield w
        finally:
            w.bot.stop()
            stub.stop()
            redis.close()


def new_user() -> int:
    return 20_000 + next(_ids)


def metric(world: World, name: str) -> float:
    """The sum of a worker counter over its labels, read from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{world.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def buttons(stub: TelegramStub, chat_id: int, message_id: int) -> dict[str, tuple[str, str]]:
    """The keyboard of a message: action -> (text, callback_data)."""
    out = {}
    for row in stub.keyboard(chat_id, message_id):
        for b in row:
            out[b["callback_data"].rsplit(":", 1)[1]] = (b["text"], b["callback_data"])
    return out


def press(world: World, chat_id: int, user: int, message_id: int, action: str) -> Call:
    """Press a button of a message; returns the bot's answerCallbackQuery to it."""
    data = buttons(world.stub, chat_id, message_id)[action][1]
    query = world.stub.press(chat_id, user, message_id, data)
    return world.stub.wait_for(
        lambda: [c for c in world.stub.sent("answerCallbackQuery") if c.params.get("callback_query_id") == query],
        30, f"the answer to the press of {action}")[0]


def edits(stub: TelegramStub, chat_id: int, message_id: int, method: str = "editMessageMedia") -> list[Call]:
    return [c for c in stub.sent(method, chat_id) if int(c.params["message_id"]) == message_id]


def caption_of(call: Call) -> str:
    media = call.params["media"]
    return str(media.get("caption") or "")


def edited_image(call: Call) -> bytes:
    return call.files[str(call.params["media"]["media"]).removeprefix("attach://")]


def wait_caption(world: World, chat_id: int, message_id: int, text: str) -> Call:
    """The edit of ``message_id`` whose caption contains ``text``."""
    return world.stub.wait_for(
        lambda: [c for c in edits(world.stub, chat_id, message_id) if text in caption_of(c)], 30,
        f"an edit showing {text!r}")[-1]


def ask(world: World, image: int, caption: str | None = "0.4") -> tuple[int, dict[str, Any], Call]:
    stub = world.stub
    user = new_user()
    msg = stub.photo(stub.private_chat(user), user, encode(world.images[image][0]), caption=caption)
    answer = wait_answer(stub, user, msg["message_id"])
    stored(world, user, answer.result["message_id"])
    return user, msg, answer


def stored(world: World, chat_id: int, message_id: int) -> None:
    """Wait until the answer's buttons are stored (right after the answer and its follow-ups went out)."""
    key = keys.answer(world.stub.bot_id, answer_id(world, chat_id, message_id))
    world.stub.wait_for(lambda: world.redis.exists(key), 30, "the answer's state to be stored")


def answer_id(world: World, chat_id: int, message_id: int) -> str:
    return next(iter(buttons(world.stub, chat_id, message_id).values()))[1].split(":")[1]


# -- confidence -----------------------------------------------------------------------------------------

def test_confidence_buttons_redraw_without_a_second_inference(world: World) -> None:
    stub = world.stub
    user, _msg, answer = ask(world, 0)
    mid = answer.result["message_id"]
    keys_now = buttons(stub, user, mid)
    assert keys_now["lo"][0] == "− 0.25" and keys_now["nv"][0] == "≥ 0.40" and keys_now["hi"][0] == "+ 0.60"
    assert {"cr", "js", "c0"} <= set(keys_now) and "rs" not in keys_now
    assert all(len(data.encode()) <= 64 for _, data in keys_now.values())
    inferences, renders = metric(world, "detbot_inferences_total"), metric(world, "detbot_renders_total")
    assert inferences >= 1

    assert press(world, user, user, mid, "lo").ok
    lower = wait_caption(world, user, mid, "≥ 0.25")
    first = box_lines(answer.text)
    low = box_lines(caption_of(lower))
    assert all(conf >= 0.25 for _, _, conf, _ in low) and len(low) >= len(first)
    assert image_size(edited_image(lower)) == image_size(answer.files["photo"])
    assert buttons(stub, user, mid)["rs"][0] == "↺ back to 0.40"

    press(world, user, user, mid, "rs")
    back = wait_caption(world, user, mid, "≥ 0.40")
    # Back at the start: the very same boxes, and the very same image as the first answer (one renderer).
    assert box_lines(caption_of(back)) == first
    assert edited_image(back) == answer.files["photo"]
    assert "rs" not in buttons(stub, user, mid)

    press(world, user, user, mid, "hi")
    high = wait_caption(world, user, mid, "≥ 0.60")
    assert all(conf >= 0.6 for _, _, conf, _ in box_lines(caption_of(high)))
    # Three re-drawings, no inference: the worker's counters.
    assert metric(world, "detbot_inferences_total") == inferences
    assert metric(world, "detbot_renders_total") == renders + 3
    # The state lives in Redis with its TTL.
    assert 0 < world.redis.ttl(keys.answer(world.stub.bot_id, answer_id(world, user, mid))) <= 24 * 3600


def test_current_value_button_only_tells(world: World) -> None:
    user, _msg, answer = ask(world, 1)
    mid = answer.result["message_id"]
    reply = press(world, user, user, mid, "nv")
    assert "≥ 0.40" in reply.params["text"]
    assert not edits(world.stub, user, mid)


def test_rapid_presses_coalesce_and_the_last_state_wins(world: World) -> None:
    stub = world.stub
    user, _msg, answer = ask(world, 2)
    mid = answer.result["message_id"]
    data = buttons(stub, user, mid)["lo"][1]
    # Five presses at once (as fast as a person taps): 0.40 -> 0.25 -> 0.15 -> 0.10 -> 0.05 -> (floor).
    queries = [stub.press(user, user, mid, data) for _ in range(5)]
    stub.wait_for(lambda: {c.params.get("callback_query_id") for c in stub.sent("answerCallbackQuery")}
                  >= set(queries), 30, "every press answered")
    last = wait_caption(world, user, mid, "≥ 0.05")
    assert all(conf >= 0.05 for _, _, conf, _ in box_lines(caption_of(last)))
    # Fewer re-drawings than presses, the last one shows the last state, and nothing is drawn after it.
    assert len(edits(stub, user, mid)) < len(queries)
    assert "≥ 0.05" in caption_of(edits(stub, user, mid)[-1])
    assert "lo" not in buttons(stub, user, mid)  # at the floor: nothing lower to offer


def test_a_redraw_that_cannot_be_made_says_so(world: World) -> None:
    stub = world.stub
    user, msg, answer = ask(world, 7)
    mid = answer.result["message_id"]
    with stub._cond:  # Telegram no longer hands out the person's photo (e.g. they deleted it)
        del stub.files[msg["photo"][-1]["file_id"]]
    reply = press(world, user, user, mid, "lo")
    assert "Could not adjust the answer" in reply.params["text"]
    assert not edits(stub, user, mid)
    assert "not re-drawn" in world.bot.log() and "Traceback" not in world.bot.log()


def mosaic(world: World) -> np.ndarray:
    """16 shape tiles in one photo: a list longer than a caption, down to 0.05."""
    tiles = [img[:224, :224] for img, _ in world.images[12:28]]
    return np.vstack([np.hstack(tiles[r * 4:(r + 1) * 4]) for r in range(4)])


def test_a_long_list_follows_the_edits(world: World) -> None:
    """The follow-up messages of a long list are deleted when the list shrinks into the caption, and sent
    again (then edited) when it grows back: the text a person reads always matches the image."""
    stub = world.stub
    user = new_user()
    msg = stub.photo(stub.private_chat(user), user, encode(mosaic(world)), caption="0.05")
    answer = wait_answer(stub, user, msg["message_id"])
    mid = answer.result["message_id"]
    stored(world, user, mid)
    first = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user) if c.reply_to == msg["message_id"]],
                          30, "the list's follow-up messages")
    full = "\n".join([answer.text, *(c.text for c in first)])
    assert len(box_lines(full)) > 10

    for _ in range(7):  # 0.05 -> 0.90: a short list, all in the caption
        press(world, user, user, mid, "hi")
    top = wait_caption(world, user, mid, "≥ 0.90")
    follow_ups = [c.result["message_id"] for c in first]
    stub.wait_for(lambda: all((user, m) in stub.deleted for m in follow_ups), 30, "the follow-ups deleted")
    assert len(box_lines(caption_of(top))) < len(box_lines(full))

    press(world, user, user, mid, "rs")
    back = wait_caption(world, user, mid, "≥ 0.05")
    again = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user) if c.reply_to == msg["message_id"]
                                   and c not in first], 30, "the follow-ups sent again")
    assert "\n".join([caption_of(back), *(c.text for c in again)]) == full


def test_a_press_while_the_answer_is_still_going_out_waits_for_it(world: World) -> None:
    """A long list's follow-ups go out at the chat's pace after the photo and its keyboard: a press in
    between is held until the answer is out, then adjusts it (never "expired", no duplicate follow-ups)."""
    stub = world.stub
    user = new_user()
    msg = stub.photo(stub.private_chat(user), user, encode(mosaic(world)), caption="0.05")
    answer = wait_answer(stub, user, msg["message_id"])
    mid = answer.result["message_id"]
    reply = press(world, user, user, mid, "hi")  # at once: the follow-ups are not all out yet
    assert "text" not in reply.params, reply.params
    wait_caption(world, user, mid, "≥ 0.10")
    assert stub.keyboard(user, mid)
    follow_ups = [c for c in stub.sent("sendMessage", user) if c.reply_to == msg["message_id"]]
    live = [c for c in follow_ups if (user, c.result["message_id"]) not in stub.deleted]
    shown = "\n".join([caption_of(edits(stub, user, mid)[-1]), *(stub.messages[(user, c.result["message_id"])]
                                                                   ["text"] for c in live)])
    assert shown.startswith(f"{len(box_lines(shown))} objects at confidence ≥ 0.10")


# -- classes, crops, JSON -------------------------------------------------------------------------------

def _two_classes(world: World) -> int:
    return next(i for i, (_, shapes) in enumerate(world.images) if len({s.name for s in shapes}) >= 2 and i > 5)


def test_only_one_class_then_all_classes(world: World) -> None:
    stub = world.stub
    user, _msg, answer = ask(world, _two_classes(world), "0.3")
    mid = answer.result["message_id"]
    text, _ = buttons(stub, user, mid)["c0"]
    name = text.removeprefix("only ")
    press(world, user, user, mid, "c0")
    only = wait_caption(world, user, mid, f"(only {name})")
    assert {n for _, n, _, _ in box_lines(caption_of(only))} == {name}
    assert "al" in buttons(stub, user, mid)
    press(world, user, user, mid, "al")
    every = stub.wait_for(lambda: [c for c in edits(stub, user, mid) if "(only" not in caption_of(c)], 30,
                          "all classes again")[-1]
    assert box_lines(caption_of(every)) == box_lines(answer.text)


def test_crops_and_json(world: World) -> None:
    stub = world.stub
    user, _msg, answer = ask(world, 3, "0.3")
    mid = answer.result["message_id"]
    boxes = box_lines(answer.text)
    assert boxes
    press(world, user, user, mid, "cr")
    sent = stub.wait_for(lambda: [c for c in stub.sent(chat_id=user) if c.method in ("sendMediaGroup", "sendPhoto")
                                  and c.reply_to == mid], 30, "the crops")[0]
    crops = list(sent.files.values())
    assert len(crops) == min(10, len(boxes))
    width, height = image_size(answer.files["photo"])
    areas = [image_size(c)[0] * image_size(c)[1] for c in crops]
    assert all(a < width * height for a in areas)
    assert areas == sorted(areas, reverse=True)  # largest first

    press(world, user, user, mid, "js")
    doc = stub.wait_for(lambda: [c for c in stub.sent("sendDocument", user) if c.reply_to == mid], 30, "the JSON")[0]
    data = json.loads(doc.files["document"])
    assert {"image", "boxes", "width", "height", "confidence", "classes", "model", "timings"} <= set(data)
    assert data["confidence"] == 0.3
    listed = [(b["class_name"], round(b["confidence"], 2)) for b in data["boxes"]]
    assert listed == [(name, conf) for _, name, conf, _ in boxes]
    assert not edits(stub, user, mid)  # neither changed the answer


# -- state, expiry, who may press -----------------------------------------------------------------------

def test_buttons_work_after_a_bot_restart(world: World) -> None:
    user, _msg, answer = ask(world, 4)
    mid = answer.result["message_id"]
    world.restart_bot()
    press(world, user, user, mid, "lo")
    wait_caption(world, user, mid, "≥ 0.25")


def test_a_press_after_expiry_gets_a_notice_and_the_keyboard_goes(world: World) -> None:
    stub = world.stub
    world.restart_bot(DETBOT_ANSWER_TTL="2")
    try:
        user, _msg, answer = ask(world, 5)
        mid = answer.result["message_id"]
        key = keys.answer(world.stub.bot_id, answer_id(world, user, mid))
        stub.wait_for(lambda: not world.redis.exists(key), 30, "the answer's state to expire")
        reply = press(world, user, user, mid, "lo")
        assert "no longer be adjusted" in reply.params["text"]
        stub.wait_for(lambda: edits(stub, user, mid, "editMessageReplyMarkup"), 30, "the keyboard removed")
        assert stub.keyboard(user, mid) == []
        assert not edits(stub, user, mid)
    finally:
        world.restart_bot()


def group_answer(world: World, image: int) -> tuple[dict[str, Any], int, int, int, int]:
    """A group's answered photo: (group, asker, a stranger, an admin, the answer's message id)."""
    stub = world.stub
    group = stub.group_chat(-1_000_000_500_000 - next(_ids))
    asker, stranger, admin = new_user(), new_user(), new_user()
    stub.admins[group["id"]] = {admin}
    msg = stub.photo(group, asker, encode(world.images[image][0]), caption="/detect 0.4")
    mid = wait_answer(stub, group["id"], msg["message_id"]).result["message_id"]
    stored(world, group["id"], mid)
    return group, asker, stranger, admin, mid


def test_in_a_group_only_the_asker_and_admins_may_press(world: World) -> None:
    stub = world.stub
    group, asker, stranger, admin, mid = group_answer(world, 6)

    refused = press(world, group["id"], stranger, mid, "lo")
    assert refused.params.get("show_alert") is True
    assert "Only the person who asked" in refused.params["text"]
    assert not edits(stub, group["id"], mid)

    press(world, group["id"], admin, mid, "lo")
    wait_caption(world, group["id"], mid, "≥ 0.25")
    press(world, group["id"], asker, mid, "hi")
    wait_caption(world, group["id"], mid, "≥ 0.40")


# -- albums ---------------------------------------------------------------------------------------------

def test_album_summary_buttons_adjust_every_photo(world: World) -> None:
    stub = world.stub
    user = new_user()
    chat = stub.private_chat(user)
    msgs = [stub.photo(chat, user, encode(world.images[i][0]), caption="0.4" if i == 10 else None,
                       media_group_id=f"album-b{user}") for i in (10, 11)]
    group = stub.wait_for(lambda: stub.sent("sendMediaGroup", user), 90, "the album")[0]
    photo_ids = [m["message_id"] for m in group.result]
    summary = stub.wait_for(lambda: [c for c in stub.sent("sendMessage", user)
                                     if c.reply_to == msgs[0]["message_id"] and buttons(stub, user,
                                                                                       c.result["message_id"])],
                            30, "the album's summary with buttons")[0]
    sid = summary.result["message_id"]
    stored(world, user, sid)
    press(world, user, user, sid, "lo")
    text = stub.wait_for(lambda: [c for c in edits(stub, user, sid, "editMessageText")
                                  if c.params["text"].count("≥ 0.25") == 2], 30, "the summary re-written")[-1]
    assert "Photo 1: " in text.params["text"] and "Photo 2: " in text.params["text"]
    for pid in photo_ids:
        edit = stub.wait_for(lambda p=pid: edits(stub, user, p), 30, "each photo re-drawn")[-1]  # type: ignore[misc]
        assert "≥ 0.25" in caption_of(edit)


# -- presses cannot starve anything (issue 18, items 4 and 6) ------------------------------------------------

def answered(stub: TelegramStub, queries: list[str]) -> list[Call]:
    """The bot's answerCallbackQuery to each of ``queries``, once all are answered (every press is)."""
    def all_of() -> list[Call] | None:
        by_id = {c.params.get("callback_query_id"): c for c in stub.sent("answerCallbackQuery")}
        return [by_id[q] for q in queries] if all(q in by_id for q in queries) else None

    return stub.wait_for(all_of, 60, "every press answered")


def sets_sent(stub: TelegramStub, chat_id: int, message_id: int) -> list[Call]:
    """Crops (a media group, or one photo) and JSON documents sent under an answer."""
    return [c for c in stub.sent(chat_id=chat_id) if c.method in ("sendMediaGroup", "sendPhoto", "sendDocument")
            and c.reply_to == message_id]


def test_a_forged_callback_acts_only_under_its_own_answer(world: World) -> None:
    """A person copies another chat's answer id into a button of their own answer's message: nothing is
    re-drawn there, no crops or JSON go to either chat; the press is told the buttons are not its own."""
    stub = world.stub
    victim, _msg, theirs = ask(world, 8, "0.3")
    attacker, _msg2, mine = ask(world, 9, "0.3")
    victim_mid, attacker_mid = theirs.result["message_id"], mine.result["message_id"]
    victim_id = answer_id(world, victim, victim_mid)
    replies_before = len(stub.sent(chat_id=victim)) + len(stub.sent(chat_id=attacker))
    queries = [stub.press(attacker, attacker, attacker_mid, f"a:{victim_id}:{action}") for action in ("lo", "cr", "js")]
    for reply in answered(stub, queries):
        assert reply.params.get("show_alert") is True and "belong to another message" in reply.params["text"]
    # The attacker's own answer still works: the press binding is what refused them, not a broken bot.
    press(world, attacker, attacker, attacker_mid, "lo")
    wait_caption(world, attacker, attacker_mid, "≥ 0.25")
    assert not edits(stub, victim, victim_mid) and not sets_sent(stub, victim, victim_mid)
    assert not sets_sent(stub, attacker, attacker_mid)
    assert len(stub.sent(chat_id=victim)) + len(stub.sent(chat_id=attacker)) == replies_before + 1  # that edit
    assert world.bot.log().count(f"button of answer {victim_id} refused: pressed under message") == 3
    assert world.redis.hget(keys.answer(stub.bot_id, victim_id), "view") == b"{}"  # the victim's view never changed


def test_a_press_flood_from_one_person_is_limited_on_the_button_itself(world: World) -> None:
    """Forty presses at once: the first PRESS_LIMIT are served, the others get a short notice on the button
    (no message in the chat), one log line; another person's press meanwhile is served as usual."""
    from bot.press_gate import PRESS_LIMIT

    stub = world.stub
    user, _msg, answer = ask(world, 10)
    other, _msg2, other_answer = ask(world, 11)
    mid = answer.result["message_id"]
    messages_before = len(stub.sent("sendMessage", user))
    data = buttons(stub, user, mid)["nv"][1]
    flood = [stub.press(user, user, mid, data) for _ in range(2 * PRESS_LIMIT)]
    calm = press(world, other, other, other_answer.result["message_id"], "nv")
    texts = [c.params.get("text", "") for c in answered(stub, flood)]
    assert sum("Showing objects at confidence ≥ 0.40" in t for t in texts) == PRESS_LIMIT
    assert sum("a lot of presses" in t for t in texts) == PRESS_LIMIT
    assert "Showing objects at confidence ≥ 0.40" in calm.params["text"]
    assert len(stub.sent("sendMessage", user)) == messages_before  # nothing posted in the chat
    assert world.bot.log().count(f"presses of user {user} refused: over the limit") == 1


def test_a_burst_of_crops_presses_sends_one_set(world: World) -> None:
    stub = world.stub
    user, _msg, answer = ask(world, 12, "0.3")
    mid = answer.result["message_id"]
    data = buttons(stub, user, mid)["cr"][1]
    burst = answered(stub, [stub.press(user, user, mid, data) for _ in range(4)])
    assert sum("Already sent" in c.params.get("text", "") for c in burst) == 3
    first = stub.wait_for(lambda: sets_sent(stub, user, mid), 30, "the crops")
    # Another view is another set; JSON is a send of its own.
    press(world, user, user, mid, "hi")
    wait_caption(world, user, mid, "≥ 0.40")
    press(world, user, user, mid, "cr")
    press(world, user, user, mid, "js")
    stub.wait_for(lambda: len(sets_sent(stub, user, mid)) == len(first) + 2, 30, "the second set and the JSON")
    assert len(sets_sent(stub, user, mid)) == len(first) + 2 and len(first) == 1


def test_a_groups_admin_check_is_asked_once_and_believed_a_while(world: World) -> None:
    stub = world.stub
    group, asker, stranger, admin, mid = group_answer(world, 13)
    for _ in range(3):
        assert "Only the person who asked" in press(world, group["id"], stranger, mid, "nv").params["text"]
        assert "Showing objects" in press(world, group["id"], admin, mid, "nv").params["text"]
    press(world, group["id"], asker, mid, "nv")
    asked = [(int(c.params["chat_id"]), int(c.params["user_id"])) for c in stub.sent("getChatMember")
             if int(c.params["chat_id"]) == group["id"]]
    assert sorted(asked) == sorted([(group["id"], stranger), (group["id"], admin)])  # once each; never the asker


def worker_renders(world: World, kind: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{world.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(rf'^detbot_renders_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_large_file_is_down_scaled_once_and_renders_carry_the_small_copy(world: World) -> None:
    """An image sent as a file of a few MB: its first press has a worker down-scale it (the one time it crosses
    Redis), every re-drawing starts from that copy (at most CLEAN_MAX_BYTES), and the adjusted image keeps
    the first answer's size."""
    from jobs.render import CLEAN_MAX_BYTES, CLEAN_MAX_SIDE

    stub = world.stub
    import cv2

    grain = np.random.default_rng(3).integers(-12, 12, (2700, 3600, 3))
    large = np.clip(cv2.resize(world.images[14][0], (3600, 2700)).astype(np.int16) + grain, 0, 255).astype(np.uint8)
    data = encode(large)
    assert CLEAN_MAX_BYTES < len(data) < 20 * 1024 * 1024 and max(large.shape) > CLEAN_MAX_SIDE
    user = new_user()
    msg = stub.document(stub.private_chat(user), user, data, "image/jpeg", "large.jpg", caption="0.4")
    answer = wait_answer(stub, user, msg["message_id"], 120)
    mid = answer.result["message_id"]
    stored(world, user, mid)
    cleans = worker_renders(world, "clean")
    press(world, user, user, mid, "lo")
    lower = wait_caption(world, user, mid, "≥ 0.25")
    assert image_size(edited_image(lower)) == image_size(answer.files["photo"])
    assert max(image_size(edited_image(lower))) == CLEAN_MAX_SIDE
    press(world, user, user, mid, "hi")
    wait_caption(world, user, mid, "≥ 0.40")
    assert worker_renders(world, "clean") == cleans + 1  # once, then from the bot's cache
    line = re.search(r"down-scaled by a worker for the buttons: (\d+) -> (\d+) bytes", world.bot.log())
    assert line is not None and int(line.group(1)) == len(data) and int(line.group(2)) <= CLEAN_MAX_BYTES


def test_press_limits_and_the_admin_cache_on_their_own_clocks() -> None:
    """The gate's pieces with a clock moved by hand: the limits refuse without counting and free up after
    their window; the admin cache asks once per ADMIN_TTL and never keeps a failed check."""
    import asyncio
    from types import SimpleNamespace

    from telegram.error import NetworkError

    from bot.press_gate import ADMIN_TTL, PRESS_LIMIT, PRESS_WINDOW, SEND_LIMIT, AdminCache, PressLimits

    now = [100.0]
    limits = PressLimits(clock=lambda: now[0])
    assert all(limits.allow_press(7) for _ in range(PRESS_LIMIT))
    assert not limits.allow_press(7) and limits.allow_press(8)  # per person
    now[0] += PRESS_WINDOW
    assert limits.allow_press(7)
    assert all(limits.allow_send(7) for _ in range(SEND_LIMIT)) and not limits.allow_send(7)

    asked: list[tuple[int, int]] = []
    failing = [False]

    class Bot:
        async def get_chat_member(self, chat_id: int, user_id: int) -> object:
            asked.append((chat_id, user_id))
            if failing[0]:
                raise NetworkError("down")
            return SimpleNamespace(status="administrator" if user_id == 1 else "member")

    cache = AdminCache(clock=lambda: now[0])

    async def check(user: int) -> bool:
        return await cache.is_admin(Bot(), -5, user)  # type: ignore[arg-type]

    assert asyncio.run(check(1)) and not asyncio.run(check(2))
    assert asyncio.run(check(1)) and not asyncio.run(check(2))
    assert asked == [(-5, 1), (-5, 2)]
    now[0] += ADMIN_TTL
    failing[0] = True
    assert not asyncio.run(check(1))  # could not ask: not an admin for this press, and not remembered
    failing[0] = False
    assert asyncio.run(check(1)) and asked[-1] == (-5, 1) and len(asked) == 4
