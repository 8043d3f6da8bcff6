"""The bot's Telegram Mini App (issue 21, item 3) end to end: real ``detbot bot`` processes (two replicas in
the kill test) against the Bot API stand-in, a real worker, a real Redis and a real ``detbot web`` holding
the bot's token.

An answer gets a 🎚 button (a ``web_app`` one in a private chat, the registered app's ``t.me`` link in a
group: the stand-in refuses ``web_app`` buttons in groups, as Telegram does); the page's API takes only
Telegram-signed initData; "apply" goes through the bot's inbox and the buttons' own code, and the stand-in
sees the answer's message edited — once, even when the replica applying it is killed half-way.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from redis import Redis

from jobs import keys
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.telegram_stub import BotProcess, Call, TelegramStub, encode, image_size, wait_answer
from tests.web_support import WebServer, init_data, tma, web_servers
from tests.workers import running_workers

TOKEN = "135792468:MINI-app-test-token_abc"
BOT = "detbot_test_bot"
PUBLIC_URL = "https://detbot.example/"
APP_NAME = "slider"
MINI_APP_ENV = {"DETBOT_WEB_PUBLIC_URL": PUBLIC_URL, "DETBOT_WEB_APP_NAME": APP_NAME}
# A replica killed while it holds the lease: a standby takes it within 10 s (issue 18), then the request.
TAKEOVER_TIMEOUT = 60.0
_ids = itertools.count(1)


@dataclass
class World:
    stub: TelegramStub
    redis: Redis
    redis_url: str
    web: WebServer
    images: list[bytes]
    logs: Path
    bots: list[BotProcess]

    def bot(self, name: str) -> BotProcess:
        bot = BotProcess(self.stub, self.redis_url, self.logs / f"{name}.log", **MINI_APP_ENV)
        self.bots.append(bot)
        return bot


@pytest.fixture(scope="module")
def world(redis_server: RedisServer, shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    logs = tmp_path_factory.mktemp("mini-app")
    stub = TelegramStub(TOKEN, username=BOT).start()
    images = [encode(img) for img, _ in make_images(5200, 10)]
    try:
        with running_workers(redis_server.url, count=1), \
                web_servers(redis_server.url, logs, mini={"TELEGRAM_BOT_TOKEN": TOKEN, **MINI_APP_ENV}) as webs:
            w = World(stub, redis, redis_server.url, webs["mini"], images, logs, [])
            w.bot("bot").start()
            try:
                yield w
            finally:
                for bot in w.bots:
                    bot.stop()
    finally:
        stub.stop()
        redis.close()


def new_user() -> int:
    return 70_000 + next(_ids)


def slider_button(stub: TelegramStub, chat_id: int, message_id: int) -> dict[str, Any]:
    (button,) = [b for row in stub.keyboard(chat_id, message_id) for b in row if b["text"].startswith("🎚")]
    return button


def answer_id_of(stub: TelegramStub, chat_id: int, message_id: int) -> str:
    """The answer id the keyboard's callback buttons carry (``a:<id>:<action>``)."""
    return next(b["callback_data"].split(":")[1] for row in stub.keyboard(chat_id, message_id) for b in row
                if "callback_data" in b)


def ask(world: World, chat: dict[str, Any], user: int, image: int, caption: str | None = None) -> int:
    """A photo answered, its buttons stored; returns the answer's message id."""
    msg = world.stub.photo(chat, user, world.images[image], caption=caption)
    mid = int(wait_answer(world.stub, chat["id"], msg["message_id"]).result["message_id"])
    world.stub.wait_for(lambda: world.redis.exists(keys.answer(world.stub.bot_id, answer_id_of(world.stub, chat["id"],
                                                                                                 mid))),
                        30, "the answer's buttons to be stored")
    return mid


def edits(stub: TelegramStub, chat_id: int, message_id: int) -> list[Call]:
    return [c for c in stub.sent("editMessageMedia", chat_id, ok=None) if int(c.params["message_id"]) == message_id]


def caption_of(call: Call) -> str:
    return str(call.params["media"].get("caption") or "")


def view(world: World, answer_id: str, user: int, confidence: float, **fields: Any) -> httpx.Response:
    return httpx.post(f"{world.web.url}/api/v1/answers/{answer_id}/view", json={"confidence": confidence, **fields},
                      headers=tma(init_data(user, TOKEN)), timeout=60)


def test_private_answers_get_a_web_app_button_and_group_answers_the_registered_apps_link(world: World) -> None:
    stub = world.stub
    user = new_user()
    mid = ask(world, stub.private_chat(user), user, 0)
    answer_id = answer_id_of(stub, user, mid)
    button = slider_button(stub, user, mid)
    assert button["web_app"] == {"url": f"{PUBLIC_URL}?answer={answer_id}"}

    group = stub.group_chat(-1_000_000_700_000 - next(_ids))
    gmid = ask(world, group, user, 1, caption="/detect")
    link = urlsplit(slider_button(stub, group["id"], gmid)["url"])
    assert (link.netloc, link.path) == ("t.me", f"/{BOT}/{APP_NAME}")  # Telegram opens it as the Mini App
    assert parse_qs(link.query) == {"startapp": [answer_id_of(stub, group["id"], gmid)]}
    assert not any(c.ok is False for c in stub.sent(chat_id=group["id"], ok=None))  # no web_app in a group


def test_the_asker_applies_a_threshold_and_the_answer_in_the_chat_is_edited(world: World) -> None:
    stub = world.stub
    user = new_user()
    mid = ask(world, stub.private_chat(user), user, 2)
    answer_id = answer_id_of(stub, user, mid)
    signed = tma(init_data(user, TOKEN))
    with httpx.Client(base_url=world.web.url, headers=signed, timeout=60) as client:
        shown = client.get(f"/api/v1/answers/{answer_id}").json()
        assert shown["asker"] is True and shown["private"] is True and shown["view"]["confidence"] == 0.25
        # The clean photo, fetched by the bot (the web never calls Telegram), the size the boxes are in.
        photo = client.get(shown["photos"][0]["photo_url"])
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        assert image_size(photo.content) == (shown["photos"][0]["width"], shown["photos"][0]["height"])
        assert not [c for c in stub.sent(chat_id=user) if c.method.startswith("send") and c.at > 0 and
                    c.params.get("reply_parameters", {}).get("message_id") == mid]  # nothing sent to the chat

        applied = client.post(f"/api/v1/answers/{answer_id}/view", json={"confidence": 0.9})
        assert applied.status_code == 200 and applied.json()["status"] == "applied", applied.text
        (edit,) = edits(stub, user, mid)
        assert "≥ 0.90" in caption_of(edit)  # the answer in the chat shows the new threshold, as a press would
        assert any(b.get("text") == "≥ 0.90" for row in stub.keyboard(user, mid) for b in row)
        again = client.post(f"/api/v1/answers/{answer_id}/view", json={"confidence": 0.9})
        assert again.json()["status"] == "unchanged" and len(edits(stub, user, mid)) == 1
        assert client.get(f"/api/v1/answers/{answer_id}").json()["view"]["confidence"] == 0.9
    assert not world.redis.xlen(keys.inbox(stub.bot_id))  # handled and gone from the inbox


def test_forged_and_expired_init_data_get_401_and_change_nothing(world: World) -> None:
    stub = world.stub
    user = new_user()
    mid = ask(world, stub.private_chat(user), user, 3)
    answer_id = answer_id_of(stub, user, mid)
    url = f"{world.web.url}/api/v1/answers/{answer_id}/view"
    forged = init_data(user, TOKEN).replace("hash=", "hash=f")
    for data in (forged, init_data(user, "999:another-bot-token"), init_data(user, TOKEN, time.time() - 86_401)):
        refused = httpx.post(url, json={"confidence": 0.9}, headers=tma(data), timeout=30)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "init_data"
    assert httpx.post(url, json={"confidence": 0.9}, timeout=30).status_code == 401
    assert not edits(stub, user, mid)
    assert not world.redis.exists(keys.inbox(stub.bot_id)) or not world.redis.xlen(keys.inbox(stub.bot_id))


def test_in_a_group_a_stranger_gets_403_and_an_admin_applies(world: World) -> None:
    stub = world.stub
    group = stub.group_chat(-1_000_000_700_000 - next(_ids))
    asker, stranger, admin = new_user(), new_user(), new_user()
    stub.admins[group["id"]] = {admin}
    mid = ask(world, group, asker, 4, caption="/detect 0.4")
    answer_id = answer_id_of(stub, group["id"], mid)

    refused = view(world, answer_id, stranger, 0.6)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_yours"
    assert "admin" in refused.json()["error"]["message"]
    assert not edits(stub, group["id"], mid)

    applied = view(world, answer_id, admin, 0.6)
    assert applied.status_code == 200 and applied.json()["status"] == "applied", applied.text
    assert "≥ 0.60" in caption_of(edits(stub, group["id"], mid)[-1])


def test_an_apply_is_applied_once_when_the_replica_applying_it_is_killed(world: World) -> None:
    """The lease holder dies while its edit of the answer is in flight (after it wrote the new view): the
    standby takes the request over from the inbox, finds it applied (its id is kept with the answer) and
    finishes the edit; the view changed once, and the request leaves the inbox."""
    stub = world.stub
    (first,) = world.bots
    standby = world.bot("standby").start(ready="standing by")
    user = new_user()
    mid = ask(world, stub.private_chat(user), user, 5)
    answer_id = answer_id_of(stub, user, mid)
    stub.hang("editMessageMedia", user)
    replies: list[httpx.Response] = []
    asking = threading.Thread(target=lambda: replies.append(view(world, answer_id, user, 0.8)))
    asking.start()
    stub.wait_for(lambda: edits(stub, user, mid), 60, "the holder's edit to reach Telegram")
    first.kill()
    stub.release()
    asking.join(TAKEOVER_TIMEOUT)
    stub.wait_for(lambda: len(edits(stub, user, mid)) >= 2, TAKEOVER_TIMEOUT, "the standby to finish the edit")
    stub.wait_for(lambda: not world.redis.xlen(keys.inbox(stub.bot_id)), 30, "the request to leave the inbox")
    assert replies and replies[0].status_code in (200, 202), replies and replies[0].text
    assert "≥ 0.80" in caption_of(edits(stub, user, mid)[-1])
    answer = world.redis.hgetall(keys.answer(stub.bot_id, answer_id))
    assert b'"confidence": 0.8' in answer[b"view"]
    assert answer[b"presses"].count(b'"') == 2  # one request id kept: applied once
    assert "was applied before (handled again after a stop)" in standby.log()
