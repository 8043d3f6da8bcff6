"""The bot's pure parts: argument parsing, Telegram length limits, rate limits, replies, log redaction, albums."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from telegram import Chat, Message, User

from bot import logs, mini_app, replies
from bot.albums import (
    AlbumCollector,
    AssembledAlbum,
    Collected,
    album_answer,
    album_reply_to,
    queued_album,
)
from bot.answers import Answer, Photo
from bot.buttons import keyboard, viewable
from bot.classes import model_params
from bot.i18n import ENGLISH, RUSSIAN, catalog
from bot.intake import sender_of
from bot.limits import Limits, RateLimiter
from bot.logs import REDACTED, RedactFilter
from bot.mini_app import MiniAppLinks, MiniAppRequest
from bot.outcome import Wording
from bot.parsing import (
    UsageError,
    mentions,
    parse_auto,
    parse_caption,
    parse_confidence,
    parse_detect_args,
    parse_threshold,
)
from bot.settings import BotSettings, MiniAppSettings
from bot.text import CAPTION_LIMIT, MESSAGE_LIMIT, pack_lines, split_caption, utf16_len
from detector.names import ClassNames, parse_class_names
from detector.params import DetectParams
from detector.render import boxes_to_rows, format_confidence
from detector.result import Box, Detection
from jobs.store import Completion

BOT = "detbot_test_bot"


@pytest.mark.parametrize(
    ("token", "value"),
    [("0.4", 0.4), (".4", 0.4), ("0,4", 0.4), ("40%", 0.4), ("conf=0.4", 0.4), ("confidence:35%", 0.35),
     ("1", 1.0), ("100%", 1.0), ("0.05", 0.05)],
)
def test_confidence_forms(token: str, value: float) -> None:
    assert parse_confidence(token) == pytest.approx(value)


@pytest.mark.parametrize("token", ["0", "0%", "-0.2", "1.5", "150%", "conf=abc", "0.4.5", "abc", "101"])
def test_confidence_out_of_range_or_unparsable(token: str) -> None:
    with pytest.raises(UsageError):
        parse_confidence(token)


def test_confidence_hint_for_percent_without_sign() -> None:
    with pytest.raises(UsageError, match="40%"):
        parse_confidence("40")


def test_caption_forms() -> None:
    assert parse_caption("0.4", BOT).args == DetectParams(0.4)
    assert parse_caption("my cat, 40%", BOT).args == DetectParams(0.4)
    assert parse_caption("just a holiday photo", BOT).args == DetectParams()
    assert parse_caption(None, BOT).args == DetectParams()
    cap = parse_caption("/detect person,dog 0.3", BOT)
    assert cap.command and cap.args == DetectParams(0.3, ("person", "dog"))
    cap = parse_caption(f"/detect@{BOT.upper()} 0.3", BOT)
    assert cap.command and cap.args.confidence == 0.3
    assert parse_caption("/detect@some_other_bot 0.3", BOT).other_bot
    cap = parse_caption(f"what is this @{BOT} conf=0.6", BOT)
    assert cap.mentioned and not cap.command and cap.args.confidence == 0.6


def test_mentions_match_the_whole_name_only() -> None:
    assert mentions(f"look @{BOT.upper()}!", BOT)
    assert not mentions(f"look @{BOT}2", BOT) and not mentions(None, BOT) and not mentions("@", "")


def test_free_text_numbers_are_not_confidences() -> None:
    assert parse_caption("party 2024", BOT).args == DetectParams()


def test_counts_in_free_text_are_not_confidences() -> None:
    """ "my 2 cats" was refused ("did you mean 2%?"); a lone number is still read as a confidence."""
    for caption in ("my 2 cats", "1 cat", "2 dogs and 3 cats", "party 2024"):
        assert parse_caption(caption, BOT).args == DetectParams(), caption
    assert parse_caption("my 2 cats 0.4", BOT).args == DetectParams(0.4)
    with pytest.raises(UsageError, match="2%"):
        parse_caption("2", BOT)


@pytest.mark.parametrize("caption", ["²", "my ² cats", "x²", "٠.٤", "４０%", "conf=²"])
def test_unicode_digits_never_crash_the_parser(caption: str) -> None:
    """ "²" passed str.isdigit and broke int(): a single photo got "something went wrong", an album nothing.
    Only ASCII digits make a confidence; other digits are free text (or a usage error after conf=)."""
    try:
        assert parse_caption(caption, BOT).args.confidence is None
    except UsageError:
        assert caption.startswith("conf=")
    assert parse_detect_args("²").confidence is None


@pytest.mark.parametrize("token", ["0.00001", "0.001%", "conf=0.00004"])
def test_tiny_confidence_refused_with_a_message_not_replaced(token: str) -> None:
    with pytest.raises(UsageError, match="too small") as caught:
        parse_caption(f"my cat {token}", BOT)
    assert "0.0001" in str(caught.value)
    with pytest.raises(UsageError, match="too small"):
        parse_threshold([token])
    # The smallest kept confidence is written as it is, not as "0.00".
    assert format_confidence(parse_confidence("0.0001")) == "0.0001"
    assert format_confidence(0.25) == "0.25"


def test_anonymous_admins_and_channels_are_counted_per_sender_chat() -> None:
    """Every anonymous admin is the same service account in from_user: keyed by it, all groups shared one
    rate bucket. The sender chat (the group itself, or the channel) is the sender."""
    anonymous = User(1087968824, "Group", True, username="GroupAnonymousBot")
    when = datetime.now(timezone.utc)
    group_a, group_b = Chat(-1001, "supergroup"), Chat(-1002, "supergroup")
    in_a = Message(1, when, group_a, from_user=anonymous, sender_chat=group_a)
    in_b = Message(1, when, group_b, from_user=anonymous, sender_chat=group_b)
    channel = Message(2, when, group_a, from_user=User(136817688, "Channel", True), sender_chat=Chat(-1009, "channel"))
    person = Message(3, when, group_a, from_user=User(42, "Ann", False))
    assert [sender_of(m) for m in (in_a, in_b, channel, person)] == [-1001, -1002, -1009, 42]


@pytest.mark.parametrize("caption", ["2.5", "0 please", "/detect blah!!", "/detect 0.3 0.4", "conf=", "my cat 0.4 0.5"])
def test_bad_captions_are_usage_errors(caption: str) -> None:
    with pytest.raises(UsageError):
        parse_caption(caption, BOT)


def test_detect_args_classes_any_order() -> None:
    assert parse_detect_args("dog, Person 0.3 dog") == DetectParams(0.3, ("dog", "person"))
    assert parse_detect_args("") == DetectParams()


def test_threshold_and_auto_arguments() -> None:
    assert parse_threshold([]) is None
    assert parse_threshold(["reset"]) == "reset"
    assert parse_threshold(["35%"]) == pytest.approx(0.35)
    for bad in (["abc"], ["0"], ["0.3", "0.4"]):
        with pytest.raises(UsageError, match="/threshold"):
            parse_threshold(bad)
    assert parse_auto([]) is None and parse_auto(["on"]) is True and parse_auto(["OFF"]) is False
    with pytest.raises(UsageError):
        parse_auto(["maybe"])


def detection_lines(det: Detection) -> list[str]:
    return replies.detection_lines(catalog(ENGLISH), det, ClassNames())


def _detection(n: int, name: str = "circle") -> Detection:
    boxes = tuple(Box(0, name, 0.9 - i * 0.001, 10.0 + i, 20.0, 110.0 + i, 220.0) for i in range(n))
    return Detection(boxes=boxes, width=640, height=480, confidence=0.25)


def test_long_box_list_split_without_losing_a_line() -> None:
    lines = detection_lines(_detection(300))
    caption, rest = split_caption(lines)
    assert utf16_len(caption) <= CAPTION_LIMIT
    assert rest and all(utf16_len(chunk) <= MESSAGE_LIMIT for chunk in rest)
    assert "\n".join([caption, *rest]).split("\n") == lines


def test_utf16_counting_splits_astral_characters_correctly() -> None:
    # Each emoji is 2 UTF-16 units: 600 of them are 1200 units, over the caption limit though 600 chars.
    name = "🐱" * 600
    assert utf16_len(name) == 1200
    caption, rest = split_caption([name, "next line"])
    assert utf16_len(caption) <= CAPTION_LIMIT
    assert caption + rest[0].split("\n")[0] == name
    assert rest[-1].endswith("next line")


def test_pack_lines_respects_limit_and_order() -> None:
    lines = [f"line {i} " + "x" * (i % 50) for i in range(500)]
    chunks = pack_lines(lines, 300)
    assert all(utf16_len(c) <= 300 for c in chunks)
    assert "\n".join(chunks).split("\n") == lines


def test_short_answer_fits_caption() -> None:
    caption, rest = split_caption(detection_lines(_detection(3)))
    assert rest == [] and caption.startswith("3 objects at confidence ≥ 0.25: circle ×3")


def test_rate_limiter_window() -> None:
    now = [0.0]
    limits = Limits(per_user=2, per_chat=3, clock=lambda: now[0])
    assert limits.take(1, 100) is None and limits.take(1, 100) is None
    refusal = limits.take(1, 100)
    assert refusal is not None and refusal.scope == "user" and refusal.limit == 2
    assert refusal.retry_in == pytest.approx(60.0)
    assert limits.take(2, 100) is None
    refusal = limits.take(3, 100)
    assert refusal is not None and refusal.scope == "chat"
    now[0] = 61.0
    assert limits.take(1, 100) is None
    assert limits.take(4, 200, count=3) is not None  # an album larger than the user's room: refused whole
    assert limits.user.room(4) == 2


def test_rate_limit_zero_means_off() -> None:
    limiter = RateLimiter(0)
    limits = Limits(0, 0)
    assert all(limits.take(1, 1) is None for _ in range(1000))
    assert limiter.limit == 0


@pytest.mark.parametrize(
    "code",
    ["timeout", "failed_after_retries", "image_expired", "internal_error", "result_expired", "empty_image",
     "not_an_image", "unsupported_format", "corrupt_image", "image_too_large", "unknown_class", "bad_image",
     "too_complex_image", "something_new"],
)
def test_every_error_code_has_a_friendly_reply(code: str) -> None:
    text = replies.error_reply(catalog(ENGLISH), code)
    assert text and "Traceback" not in text and "_" not in text


def test_the_workers_words_never_reach_the_person() -> None:
    wording = Wording(parse_class_names({"ru": {"circle": "круг", "square": "квадрат"}}))
    unknown = Completion("j", ok=False, routing={"language": "ru"}, code="unknown_class",
                         message="Unknown class giraffe. This model knows: circle, square.",
                         details={"unknown": ["giraffe"], "known": ["circle", "square"]})
    assert wording.error_text(unknown) == "Не знаю такого класса: жираф. Эта модель знает: квадрат, круг."
    english = Completion("j", ok=False, routing={}, code="unknown_class", details=unknown.details)
    assert wording.error_text(english) == "Unknown class giraffe. This model knows: circle, square."
    secret = 'Traceback (most recent call last):\n  File "/app/x.py"'
    failed = Completion("j", ok=False, routing={"language": "ru"}, code="internal_error", message=secret)
    assert wording.error_text(failed) == catalog(RUSSIAN).gettext(replies.SOMETHING_WRONG)


def test_log_filter_redacts_token_and_keeps_tracebacks_redacted() -> None:
    """The message is one line; an unexpected error's traceback is kept (frames and all), the token
    redacted in both, and the output of the very handler ``detbot bot`` installs."""
    import io

    token = "123456:ABC-secret"
    handler = logs.configure("INFO", [token])
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        logging.getLogger("httpx").warning("GET %s\nnext", f"https://x/bot{token}/getMe")
        try:
            raise ValueError(f"bad url https://x/bot{token}/getFile")
        except ValueError:
            logging.getLogger("bot.test").exception("update %s failed", 7)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    first, second = out.splitlines()[:2]
    assert first.endswith(f"GET https://x/bot{REDACTED}/getMe next")
    assert second.endswith("update 7 failed")
    assert "Traceback (most recent call last):" in out and "test_bot_units.py" in out
    assert f"ValueError: bad url https://x/bot{REDACTED}/getFile" in out
    assert token not in out
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "plain", None, None)
    assert RedactFilter([token]).filter(record) and record.exc_text is None  # no exception, no traceback


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "42:abc")
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", "http://127.0.0.1:8081/")
    monkeypatch.setenv("DETBOT_ALLOWED_CHATS", "12, -100345")
    monkeypatch.setenv("DETBOT_DEFAULT_CONFIDENCE", "0.3")
    settings = BotSettings()  # type: ignore[call-arg]
    assert settings.api_url == "http://127.0.0.1:8081/bot"
    assert settings.file_url == "http://127.0.0.1:8081/file/bot"
    assert settings.allowed_chats == frozenset({12, -100345})
    assert settings.default_confidence == 0.3
    assert "42:abc" not in repr(settings)
    monkeypatch.setenv("DETBOT_DEFAULT_CONFIDENCE", "1.5")
    with pytest.raises(ValueError):
        BotSettings()  # type: ignore[call-arg]


def test_application_has_rate_limiter_error_handler_and_commands() -> None:
    from redis import Redis
    from telegram.ext import CommandHandler

    from bot.app import build_application
    from bot.ratelimit import ChatRateLimiter

    settings = BotSettings.model_validate({"telegram_bot_token": "1:abc", "telegram_api_base_url": "http://127.0.0.1:9"})
    app = build_application(settings, Redis.from_url("redis://127.0.0.1:9/0"))
    assert isinstance(app.bot.rate_limiter, ChatRateLimiter)
    assert len(app.error_handlers) == 1
    commands = {c for handlers in app.handlers.values() for h in handlers if isinstance(h, CommandHandler)
                for c in h.commands}
    assert commands == {"start", "help", "threshold", "auto", "detect", "language", "classes"}
    assert app.bot.base_url == "http://127.0.0.1:9/bot1:abc"


# -- albums ---------------------------------------------------------------------------------------------

def _album_message(message_id: int, chat_id: int = 77, group: str = "g1") -> Message:
    return Message(message_id, datetime.now(timezone.utc), Chat(chat_id, "private"), media_group_id=group)


def test_album_collector_hands_the_whole_album_to_its_first_update() -> None:
    async def scenario() -> tuple[Collected | None, list[Collected | None], Collected | None]:
        collector = AlbumCollector(delay=0.01)
        first = asyncio.create_task(collector.collect(_album_message(12), explicit=False))
        await asyncio.sleep(0)  # let the first update open the album
        # No await between these: they arrive while the first update still waits for stragglers.
        others = [await collector.collect(_album_message(11), explicit=True),
                  await collector.collect(_album_message(13), explicit=False)]
        other_chat = await collector.collect(_album_message(11, chat_id=78), explicit=False)
        return await first, others, other_chat

    whole, others, other_chat = asyncio.run(scenario())
    assert others == [None, None]
    assert whole is not None and whole.explicit  # one photo that asked the bot makes the album asked
    assert [m.message_id for m in whole.photos] == [11, 12, 13]  # in the order they were sent
    # The same media_group_id in another chat is another album.
    assert other_chat is not None and [m.message_id for m in other_chat.photos] == [11]


def test_a_late_photo_of_an_album_is_answered_on_its_own_as_asked_as_its_album() -> None:
    """In a group only the first photo carries "/detect": a photo that comes after the album was handed
    over used to start an album of its own that nobody asked for, and was silently dropped."""
    async def scenario() -> tuple[Collected | None, Collected | None, Collected | None]:
        collector = AlbumCollector(delay=0.01)
        album = await collector.collect(_album_message(21, group="g7"), explicit=True)
        late = await collector.collect(_album_message(22, group="g7"), explicit=False)
        unasked = await collector.collect(_album_message(31, group="g8"), explicit=False)
        return album, late, unasked

    album, late, unasked = asyncio.run(scenario())
    assert album is not None and [m.message_id for m in album.photos] == [21]
    assert late is not None and [m.message_id for m in late.photos] == [22] and late.explicit
    assert unasked is not None and not unasked.explicit  # another album keeps its own answer to "asked?"


def test_queued_album_knows_its_size_from_every_routing() -> None:
    album_id, routings = queued_album([{"chat_id": 5, "message_id": m} for m in (21, 22, 23)], reply_to=21)
    assert [r["album"] for r in routings] == [
        {"id": album_id, "index": i, "count": 3, "reply_to": 21} for i in (1, 2, 3)]
    assert [r["message_id"] for r in routings] == [21, 22, 23]
    assert album_reply_to(routings[2]) == 21 and album_reply_to({"chat_id": 5}) is None


def _album_result(routing: dict[str, Any], job: str, det: Detection | None) -> Completion:
    if det is None:
        return Completion(job, ok=False, routing=routing, code="corrupt_image", message="damaged")
    return Completion(job, ok=True, routing=routing, detection=det.to_dict(), annotated=b"jpeg-" + job.encode())


def test_album_answer_lists_every_photo_and_its_failures() -> None:
    _, routings = queued_album([{"chat_id": 5, "message_id": m} for m in (1, 2, 3)], reply_to=1)
    parts = [_album_result(routings[0], "a", _detection(2)), _album_result(routings[1], "b", None),
             _album_result(routings[2], "c", _detection(1, "square"))]
    answer = album_answer(AssembledAlbum("x", list(enumerate(parts, 1))), Wording())
    assert (answer.ok, answer.failed) == (2, 1)
    assert [image for image, _ in answer.photos] == [b"jpeg-a", b"jpeg-c"]
    assert [caption for _, caption in answer.photos] == [
        "Photo 1: 2 objects at confidence ≥ 0.25: circle ×2", "Photo 3: 1 object at confidence ≥ 0.25: square ×1"]
    assert answer.lines[0] == "Photo 1: 2 objects at confidence ≥ 0.25: circle ×2"
    assert answer.lines[3] == "Photo 2: " + replies.error_reply(catalog(ENGLISH), "corrupt_image")
    assert answer.lines[4].startswith("Photo 3: 1 object")
    # One good photo goes out as a photo of its own, captioned with its place in the album.
    lone = album_answer(AssembledAlbum("y", [(1, parts[1]), (2, parts[2])]), Wording())
    assert lone.photos == [(b"jpeg-c", "Photo 2")] and (lone.ok, lone.failed) == (1, 1)


# -- class names as people write them (issue 12) ----------------------------------------------------------

COCO_SOME = ["person", "dog", "cell phone", "traffic light", "teddy bear", "hot dog", "car", "cat"]


def test_class_index_finds_multi_word_names_in_any_spelling() -> None:
    from bot.classes import ClassIndex

    index = ClassIndex(COCO_SOME)
    assert index.lookup("Teddy_Bear") == "teddy bear" and index.lookup("TRAFFIC-light") == "traffic light"
    found, unknown = index.resolve(["cell", "phone", "traffic", "light", "dog", "hot", "dog", "Person"])
    assert found == ["cell phone", "traffic light", "dog", "hot dog", "person"] and unknown == []


def test_class_index_reads_translations_and_checks_per_class_names() -> None:
    from bot.classes import ClassIndex, PublishedClasses

    aliases = parse_class_names({}).aliases()  # the built-in Russian COCO names
    index = ClassIndex(COCO_SOME, aliases)
    assert index.resolve(["мобильный", "телефон", "собака"]) == (["cell phone", "dog"], [])
    params, unknown = index.params(DetectParams(0.4, ["Cell", "Phone"], (("Собака", 0.3), ("dgo", 0.5))))
    assert params == DetectParams(0.4, ["cell phone"], (("dog", 0.3),))
    assert [u.name for u in unknown] == ["dgo"] and unknown[0].suggestions[0] == "dog"
    assert ClassIndex(["circle"], aliases).lookup("собака") is None  # another model's translation: not ours
    reads: list[int] = []
    clock = [0.0]
    published = PublishedClasses(lambda: reads.append(1) or COCO_SOME, aliases, clock=lambda: clock[0])
    assert published.index() is not None and published.index() is not None and len(reads) == 1
    clock[0] = 61.0
    published.index()
    assert len(reads) == 2  # read again after a minute: a worker restarted with another model is seen


def test_class_index_suggests_the_closest_name_for_a_typo() -> None:
    from bot.classes import ClassIndex, Unknown

    found, unknown = ClassIndex(COCO_SOME).resolve(["dgo", "person", "zzzz"])
    assert found == ["person"]
    assert unknown[0] == Unknown("dgo", unknown[0].suggestions) and unknown[0].suggestions[0] == "dog"
    assert unknown[1] == Unknown("zzzz", ())


def test_filters_in_russian_become_the_models_names() -> None:
    names = parse_class_names({"ru": {"circle": "круг"}})
    asked = parse_detect_args("Круг, собака 0.3")
    # Before any worker published the model's names (no index), the names are only translated.
    assert model_params(None, asked, names) == (DetectParams(0.3, ("circle", "dog")), [])
    per_class = DetectParams(None, None, (("круг", 0.6),))
    assert model_params(None, per_class, names)[0].per_class == {"circle": 0.6}
    assert model_params(None, DetectParams(0.4), names) == (DetectParams(0.4), [])


# -- Telegram's flood limits ----------------------------------------------------------------------------

def test_a_429_holds_back_only_its_own_chat() -> None:
    from telegram.error import RetryAfter

    from bot.ratelimit import ChatRateLimiter

    async def scenario() -> None:
        limiter = ChatRateLimiter()
        sent: list[str] = []

        async def flooded() -> bool:
            raise RetryAfter(30)

        async def send(name: str) -> bool:
            sent.append(name)
            return True

        with pytest.raises(RetryAfter):  # raised to the caller, not waited out for everyone
            await limiter.process_request(flooded, (), {}, "sendPhoto", {"chat_id": 1}, None)
        same = asyncio.create_task(limiter.process_request(send, ("same",), {}, "sendMessage", {"chat_id": 1}, None))
        await limiter.process_request(send, ("other",), {}, "sendPhoto", {"chat_id": 2}, None)
        await limiter.process_request(send, ("file",), {}, "getFile", {"file_id": "x"}, None)
        assert sent == ["other", "file"] and not same.done() and limiter.flooded(1) and not limiter.flooded(2)
        same.cancel()

    asyncio.run(scenario())


def test_a_press_edit_never_waits_behind_a_backlog_of_answers() -> None:
    from bot.ratelimit import OVERALL_RATE, ChatRateLimiter

    async def scenario() -> None:
        limiter = ChatRateLimiter()
        sent: list[str] = []

        async def send(name: str) -> bool:
            sent.append(name)
            return True

        # Three seconds of answers to as many chats: far more than the overall budget lets out at once.
        answers = [asyncio.create_task(limiter.process_request(send, (f"answer {n}",), {}, "sendPhoto",
                                                               {"chat_id": 1000 + n}, None))
                   for n in range(3 * OVERALL_RATE[0])]
        await asyncio.sleep(0)  # every answer is waiting for its pace now
        for n in range(3):  # a press's re-drawing: several edits (an album's photos)
            await limiter.process_request(send, (f"edit {n}",), {}, "editMessageMedia", {"chat_id": 7}, None)
        # In line behind the answers, the last edit would come after all of them.
        assert sum(name.startswith("answer") for name in sent) < 2 * OVERALL_RATE[0], sent
        await asyncio.gather(*answers)
        assert len(sent) == 3 * OVERALL_RATE[0] + 3  # the answers all went out too

    asyncio.run(scenario())


def test_per_class_thresholds_parse_in_detect_and_threshold() -> None:
    assert parse_detect_args("person:0.6 dog:30% 0.4") == DetectParams(0.4, None, (("person", 0.6), ("dog", 0.3)))
    assert parse_detect_args("cell_phone:0.5,cat") == DetectParams(None, ["cat"], (("cell_phone", 0.5),))
    assert parse_detect_args("conf:0.4") == DetectParams(0.4)  # the confidence's own spelling, not a class
    assert parse_threshold(["person", "0.6"]) == ("person", 0.6)
    assert parse_threshold(["cell", "phone", "50%"]) == ("cell phone", 0.5)
    for bad in ("person:abc", "person:1.5"):
        with pytest.raises(UsageError):
            parse_detect_args(bad)
    with pytest.raises(UsageError):
        parse_threshold(["person", "lots"])


# -- the Mini App's button and requests --------------------------------------------------------------------

def mini_app_answer(private: bool) -> Answer:
    base = {"width": 100, "height": 80, "confidence": 0.4, "model": "m", "classes": None, "timings": {},
            "class_confidence": {}}
    rows = boxes_to_rows([Box(0, "circle", 0.9, 1, 1, 20, 20), Box(1, "square", 0.3, 30, 30, 60, 60)])
    return Answer(7 if private else -1007, None, 1, 7, private, "en", 0.05, DetectParams(0.4).to_dict(), ["circle"],
                  [Photo("f", 2, base, rows)], keyboard_message=2)


def slider_of(markup: Any) -> Any:
    found = [b for row in markup.inline_keyboard for b in row if b.text.startswith("🎚")]
    return found[0] if found else None


def test_the_slider_button_is_a_web_app_in_private_chats_and_the_apps_link_in_groups() -> None:
    tr, names = catalog(ENGLISH), ClassNames()
    links = MiniAppLinks("https://d.example/", "slider", "detbot_bot")
    private = slider_of(keyboard(tr, "AnsWer123", mini_app_answer(True), names, links))
    assert private.web_app.url == "https://d.example/?answer=AnsWer123" and private.url is None
    group = slider_of(keyboard(tr, "AnsWer123", mini_app_answer(False), names, links))
    assert group.url == "https://t.me/detbot_bot/slider?startapp=AnsWer123" and group.web_app is None
    # Without a registered app a group gets no button (a web_app one would be refused), nor without a URL.
    bare = MiniAppLinks("https://d.example/", None, "detbot_bot")
    assert slider_of(keyboard(tr, "AnsWer123", mini_app_answer(False), names, bare)) is None
    assert slider_of(keyboard(tr, "AnsWer123", mini_app_answer(True), names, None)) is None
    assert slider_of(keyboard(catalog(RUSSIAN), "AnsWer123", mini_app_answer(True), names, links)).text == "🎚 ползунок"


def test_a_mini_app_view_is_what_the_answer_can_show() -> None:
    answer = mini_app_answer(True)
    view = viewable(DetectParams(0.01, ["circle", "dog"], (("square", 0.02),)), answer)
    assert (view.threshold, view.classes, view.class_confidence) == (0.05, ("circle",), (("square", 0.05),))
    assert viewable(DetectParams(0.5, ["dog"]), answer).classes is None  # nothing it has: every class


def test_mini_app_requests_cross_redis_and_grow_stale() -> None:
    request = MiniAppRequest.new(mini_app.KIND_VIEW, "AnsWer123", -1007, 7, view={"confidence": 0.5})
    back = MiniAppRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert back == request and not back.stale(request.at + 60) and back.stale(request.at + mini_app.REQUEST_MAX_AGE + 1)
    for bad in ({}, {"kind": "delete"}, {**request.to_dict(), "chat_id": "x"}):
        with pytest.raises(ValueError):
            MiniAppRequest.from_dict(bad)


@pytest.mark.parametrize(("url", "ok"), [("https://d.example", True), ("http://d.example/", False),
                                         ("https://d.example/?x=1", False), ("", True)])
def test_the_public_url_must_be_https(url: str, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETBOT_WEB_PUBLIC_URL", url)
    if ok:
        assert MiniAppSettings().web_public_url in (None, "https://d.example/")
    else:
        with pytest.raises(ValueError):
            MiniAppSettings()
