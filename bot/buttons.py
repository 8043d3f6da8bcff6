"""The buttons under every answer: confidence lower / higher / back, only one class / all classes, crops,
JSON. A press re-draws the same message on a worker (:mod:`jobs.render`) from the boxes kept with the
answer (:mod:`bot.answers`): the model never runs again.

- callback_data is ``a:<answer id>:<action>`` (under Telegram's 64 bytes); everything else is in Redis, so
  buttons work after a restart of the bot.
- Every press is answered (``answerCallbackQuery``): no button keeps spinning.
- Rapid presses coalesce per answer: each press changes the view in Redis at once, one re-drawing per
  answer is in flight, and when it ends it starts again only if the view changed meanwhile: the last
  state wins, with fewer renders than presses.
- Crops and JSON: one set per burst of presses (the view sent and when are kept with the answer in Redis).
- Any number of bot replicas: a press is applied once (its id is kept with the answer, so one handled again
  after a take-over changes and sends nothing twice), and a press on an answer still going out waits for its
  stored state: on the answer's lock when this process sends it, by looking in Redis when another does.
- Who may press, where and how often (:mod:`bot.press_gate`): the answer's own keyboard only; in a private
  chat the person, in a group the person who asked and the group's admins (cached); a per-person limit.
- Nothing here waits in a thread: Redis through ``redis.asyncio``, so presses cannot use up the threads the
  rest of the bot shares; the clean image a render starts from is bounded in bytes (:mod:`bot.clean_images`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    InputMediaPhoto,
    WebAppInfo,
)
from telegram.error import BadRequest, TelegramError

from bot import mini_app, replies
from bot.albums import album_reply_to
from bot.answers import SEND_GONE, SEND_RECENT, SEND_REPLAYED, Answer, AnswerBook, Photo, new_id, params_of
from bot.clean_images import CleanImages
from bot.cutouts import ADD_STICKER, Cutouts, chosen_object, piece_label, segmented
from bot.i18n import N_, Catalog, catalog, language_for
from bot.mini_app import MiniAppLinks, MiniAppRequest
from bot.press_gate import ARRIVAL_WINDOW, AdminCache, PressLimits, arriving, bound, just_sent
from bot.stickers import START_FIRST, StickerSets
from bot.telegram_io import describe, reply_to
from bot.text import MESSAGE_LIMIT, pack_lines, split_caption
from detector.errors import DetectorError
from detector.names import ClassNames
from detector.params import DetectParams, class_key
from detector.render import crop_order, format_confidence
from detector.result import Box, Detection
from jobs.render import KIND_CROPS, KIND_DRAW, RENDER_WAIT, RenderClient, RenderError, room_for
from jobs.store import Completion

log = logging.getLogger(__name__)

# The confidence steps the lower / higher buttons walk: fine where most answers are, coarse above.
STEPS = (0.05, 0.10, 0.15, 0.25, 0.40, 0.60, 0.80, 0.90)
# Two thresholds closer than this are the same step (they are rounded to 4 decimals anyway).
STEP_EPSILON = 1e-6
# "only <class>" buttons for at most this many classes, the most frequent first (a keyboard row).
MAX_CLASS_BUTTONS = 3
# A press of crops or JSON showing the view whose set went out less than this long ago is told "above":
# a burst of presses sends one set, and a person who lost it sees it again a minute later.
SENT_REPEAT = 60.0
# The buttons' Redis socket waits longer than a render's BLPOP (RENDER_WAIT), which it would trip otherwise;
# connecting to a healthy Redis takes milliseconds.
REDIS_SOCKET_TIMEOUT = RENDER_WAIT + 5.0
REDIS_CONNECT_TIMEOUT = 3.0
# The buttons' Redis connections: each re-drawing waiting for a worker holds one for up to RENDER_WAIT; a
# press beyond them waits for one (as long as a render would), so presses of many people at once never
# open thousands of connections.
REDIS_CONNECTIONS = 32
CALLBACK_PREFIX = "a"

LOWER, HIGHER, CURRENT, RESET, ALL, CROPS, JSON_DOC, ONLY = "lo", "hi", "nv", "rs", "al", "cr", "js", "c"
# A segmentation answer's: the objects cut along their masks, the largest as a sticker (bot.cutouts).
CUTOUTS, STICKER = "co", "st"
# The actions that post new messages in the chat (the stricter per-person limit, one set per burst).
SENDS = frozenset({CROPS, JSON_DOC, CUTOUTS, STICKER})

BUTTON_LOWER = N_("button.lower")
BUTTON_HIGHER = N_("button.higher")
BUTTON_CURRENT = N_("button.current")
BUTTON_RESET = N_("button.reset")
BUTTON_ONLY = N_("button.only")
BUTTON_ALL = N_("button.all")
BUTTON_CROPS = N_("button.crops")
BUTTON_JSON = N_("button.json")
BUTTON_MINI_APP = N_("button.mini_app")
BUTTON_CUTOUTS = N_("button.cutouts")
BUTTON_STICKER = N_("button.sticker")
EXPIRED = N_("buttons.expired")
NOT_YOURS = N_("buttons.not_yours")
CURRENT_VALUE = N_("buttons.current_value")
NOTHING_TO_CROP = N_("buttons.nothing_to_crop")
FAILED = N_("buttons.failed")
TOO_FAST = N_("buttons.too_fast")
NOT_HERE = N_("buttons.not_here")
ALREADY_SENT = N_("buttons.already_sent")
ALREADY_IN_SET = N_("stickers.already")


# What :meth:`Buttons._change` came to.
CHANGED_OUTCOME, KEPT_OUTCOME, GONE_OUTCOME, NOT_HERE_OUTCOME, NOT_YOURS_OUTCOME, TOO_FAST_OUTCOME, \
    UNAVAILABLE_OUTCOME = "changed", "kept", "gone", "not_here", "not_yours", "too_fast", "unavailable"
# A Mini App's verdict for each (a change is re-drawn first: applied, or failed).
MINI_APP_VERDICTS = {KEPT_OUTCOME: mini_app.UNCHANGED, GONE_OUTCOME: mini_app.GONE, NOT_HERE_OUTCOME: mini_app.BAD,
                     NOT_YOURS_OUTCOME: mini_app.NOT_YOURS, TOO_FAST_OUTCOME: mini_app.TOO_FAST,
                     UNAVAILABLE_OUTCOME: mini_app.UNAVAILABLE}


@dataclass(frozen=True)
class Change:
    """What a press or a Mini App's apply did to an answer's view (the answer, once it was read)."""

    outcome: str
    answer: Answer | None = None


def callback(answer_id: str, action: str) -> str:
    return f"{CALLBACK_PREFIX}:{answer_id}:{action}"


def parse_callback(data: str | None) -> tuple[str, str] | None:
    """``(answer id, action)`` of a button's data, or None for anything else."""
    parts = (data or "").split(":")
    if len(parts) != 3 or parts[0] != CALLBACK_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def step_down(value: float, floor: float) -> float | None:
    """The next lower step, never below the floor the boxes were kept to (None: none left)."""
    below = [s for s in STEPS if floor - STEP_EPSILON <= s < value - STEP_EPSILON]
    return max(below) if below else None


def step_up(value: float) -> float | None:
    above = [s for s in STEPS if s > value + STEP_EPSILON]
    return min(above) if above else None


def changed(view: DetectParams, start: DetectParams) -> bool:
    """Whether the confidence differs from the one the answer started with (the reset button shows)."""
    return (view.threshold, view.class_confidence) != (start.threshold, start.class_confidence)


def apply(action: str, answer: Answer) -> DetectParams | None:
    """The view after ``action``; None when the action does not change the view (or is unknown)."""
    view, start = answer.view_params(), answer.start_params()
    if action in (LOWER, HIGHER):
        value = step_down(view.threshold, answer.floor) if action == LOWER else step_up(view.threshold)
        return None if value is None else DetectParams(value, view.classes)
    if action == RESET:
        return DetectParams(start.confidence, view.classes, start.class_confidence)
    if action == ALL:
        return DetectParams(view.confidence, None, view.class_confidence)
    if action.startswith(ONLY) and action[len(ONLY):].isdigit():
        index = int(action[len(ONLY):])
        if index < len(answer.top):
            return DetectParams(view.confidence, [answer.top[index]], view.class_confidence)
    return None


def viewable(asked: DetectParams, answer: Answer) -> DetectParams:
    """A Mini App's view as the answer can show it: the threshold no lower than the floor its boxes were
    kept to, the class filter only classes the answer has (nothing else could be shown)."""
    present = {class_key(b.class_name) for p in answer.photos for b in p.boxes()}
    classes = None if asked.classes is None else [c for c in asked.classes if c in present] or None
    per_class = tuple((c, max(v, answer.floor)) for c, v in asked.class_confidence if c in present)
    return DetectParams(max(asked.threshold, answer.floor), classes, per_class)


def top_classes(dets: Sequence[Detection], photos: Sequence[Photo]) -> list[str]:
    """The classes of the "only" buttons: the most frequent in the answer; from every box kept when the
    answer shows none (so a too-high threshold still offers its classes)."""
    counts: dict[str, int] = {}
    boxes = [b for d in dets for b in d.boxes] or [b for p in photos for b in p.boxes()]
    for box in boxes:
        counts[box.class_name] = counts.get(box.class_name, 0) + 1
    return [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:MAX_CLASS_BUTTONS]


def keyboard(tr: Catalog, answer_id: str, answer: Answer, names: ClassNames,
             links: MiniAppLinks | None = None) -> InlineKeyboardMarkup:
    view, start = answer.view_params(), answer.start_params()

    def button(key: str, action: str, **params: object) -> InlineKeyboardButton:
        return InlineKeyboardButton(tr.gettext(key, **params), callback_data=callback(answer_id, action))

    rows: list[list[InlineKeyboardButton]] = []
    confidence = []
    lower, higher = step_down(view.threshold, answer.floor), step_up(view.threshold)
    if lower is not None:
        confidence.append(button(BUTTON_LOWER, LOWER, value=format_confidence(lower)))
    confidence.append(button(BUTTON_CURRENT, CURRENT, value=format_confidence(view.threshold)))
    if higher is not None:
        confidence.append(button(BUTTON_HIGHER, HIGHER, value=format_confidence(higher)))
    rows.append(confidence)
    if changed(view, start):
        rows.append([button(BUTTON_RESET, RESET, value=format_confidence(start.threshold))])
    only = list(view.classes or [])
    classes = [button(BUTTON_ONLY, f"{ONLY}{i}", name=names.display(None, name, tr.language))
               for i, name in enumerate(answer.top) if only != [class_key(name)]]
    if view.classes is not None:
        classes.append(button(BUTTON_ALL, ALL))
    if classes:
        rows.append(classes)
    last = _sends_row(button, answer)
    slider = mini_app_button(tr, answer_id, answer, links)
    rows.append(last if slider is None else [*last, slider])
    return InlineKeyboardMarkup(rows)


def mini_app_button(tr: Catalog, answer_id: str, answer: Answer, links: MiniAppLinks | None,
                    ) -> InlineKeyboardButton | None:
    """The 🎚 button that opens the answer in the Mini App (:class:`bot.mini_app.MiniAppLinks`): a
    ``web_app`` button in a private chat, the registered app's direct link in a group (Telegram allows
    ``web_app`` buttons only in private chats), none without a public URL."""
    if links is None:
        return None
    text = tr.gettext(BUTTON_MINI_APP)
    if answer.private:
        return InlineKeyboardButton(text, web_app=WebAppInfo(links.page(answer_id)))
    direct = links.direct(answer_id)
    return InlineKeyboardButton(text, url=direct) if direct else None


def _sends_row(button: Callable[..., InlineKeyboardButton], answer: Answer) -> list[InlineKeyboardButton]:
    """The last row: crops and JSON; a segmentation answer's objects cut along their masks and as a sticker."""
    if segmented(answer):
        return [button(BUTTON_CUTOUTS, CUTOUTS), button(BUTTON_STICKER, STICKER), button(BUTTON_JSON, JSON_DOC)]
    return [button(BUTTON_CROPS, CROPS), button(BUTTON_JSON, JSON_DOC)]


@dataclass
class Offer:
    """An answer about to be sent with its keyboard; :meth:`Buttons.keep` stores it once it is out."""

    answer_id: str
    answer: Answer
    markup: InlineKeyboardMarkup


class Buttons:
    """Offering keyboards with answers, and handling presses."""

    def __init__(self, book: AnswerBook, renderer: RenderClient, names: ClassNames, default_language: str,
                 limits: PressLimits | None = None, admins: AdminCache | None = None) -> None:
        self.book = book
        self.renderer = renderer
        self.names = names
        self.default_language = default_language
        self.limits = limits or PressLimits()
        self.admins = admins or AdminCache()
        self.clean = CleanImages(renderer)
        # The 🎚 button's links (DETBOT_WEB_PUBLIC_URL); set once the bot knows its username (post_init).
        self.links: MiniAppLinks | None = None
        self.cutouts = Cutouts(renderer, self.clean, names, book, callback)
        self.sticker_sets = StickerSets()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self.renders = 0  # re-drawings started (the coalescing makes this fewer than presses)

    async def close(self) -> None:
        """Release the Redis connections of the buttons (at the bot's stop)."""
        await self.book.redis.aclose(close_connection_pool=True)

    # -- offering ---------------------------------------------------------------------------------------

    def offer(self, completions: Sequence[Completion], dets: Sequence[Detection], indexes: Sequence[int],
              ) -> Offer | None:
        """A keyboard for an answer of these photos (one, or an album's with their places in it); None when
        a result carries no boxes to re-draw (a worker older than the buttons) or no photo to fetch."""
        photos = []
        for c, index in zip(completions, indexes, strict=True):
            data = c.detection or {}
            if "candidates" not in data or not c.routing.get("file_id"):
                return None
            base = {k: v for k, v in data.items() if k not in ("boxes", "candidates", "floor")}
            photos.append(Photo(str(c.routing["file_id"]), 0, base, data["candidates"], index))
        if not photos:
            return None
        first = completions[0]
        routing = first.routing
        answer = Answer(
            chat_id=int(routing["chat_id"]), thread=routing.get("thread_id"),
            reply_to=int(album_reply_to(routing) or routing.get("message_id") or 0),
            asker=routing.get("user_id"), private=routing.get("chat_type") == "private",
            language=str(routing.get("language") or self.default_language),
            floor=min(float((c.detection or {}).get("floor", STEPS[0])) for c in completions),
            start=params_of(dets[0]).to_dict(), top=top_classes(dets, photos), photos=photos,
            queue=str(routing.get("queue") or ""),
        )
        answer_id = new_id()
        return Offer(answer_id, answer, keyboard(catalog(answer.language), answer_id, answer, self.names, self.links))

    def holding(self, offer: Offer) -> asyncio.Lock:
        """The answer's lock, held by the delivery while the answer goes out: a press waits for its state."""
        return self._lock(offer.answer_id)

    async def keep(self, offer: Offer, keyboard_message: int, photo_messages: Sequence[int], texts: Sequence[int],
                   ) -> None:
        """The answer is out: store what its buttons need (a failure only costs the buttons, logged)."""
        answer = offer.answer
        answer.keyboard_message = keyboard_message
        answer.texts = list(texts)
        for photo, message_id in zip(answer.photos, photo_messages, strict=False):
            photo.message_id = message_id
        try:
            await self.book.save(offer.answer_id, answer)
        except Exception as exc:
            log.warning("buttons of answer %s not stored: %s", offer.answer_id, describe(exc))

    # -- presses ----------------------------------------------------------------------------------------

    async def press(self, bot: Bot, query: CallbackQuery) -> None:
        """A press: checked (limit, answer, place, person) before it costs anything, then applied."""
        parsed = parse_callback(query.data)
        if parsed is None:
            await answer_press(query)
            return
        answer_id, action = parsed
        change = await self._change(bot, answer_id, query.from_user.id, query.id,
                                    lambda answer: apply(action, answer), query, action)
        answer = change.answer
        tr = self._catalog(answer, query)
        if change.outcome == TOO_FAST_OUTCOME:
            await answer_press(query, tr.gettext(TOO_FAST))
        elif change.outcome == UNAVAILABLE_OUTCOME:
            await answer_press(query, self._catalog(None, query).gettext(replies.UNAVAILABLE))
        elif change.outcome == GONE_OUTCOME:
            await self._expired(bot, query, tr, answer_id)
        elif change.outcome == NOT_HERE_OUTCOME:
            await answer_press(query, tr.gettext(NOT_HERE), show_alert=True)
        elif change.outcome == NOT_YOURS_OUTCOME:
            await answer_press(query, tr.gettext(NOT_YOURS), show_alert=True)
        elif change.outcome == CHANGED_OUTCOME:
            drawn = await self._redraw_soon(bot, answer_id)
            await answer_press(query, None if drawn else tr.gettext(FAILED))
        elif answer is not None and action == ADD_STICKER:
            await self._add_sticker(bot, query, tr, answer_id, answer)
        elif answer is not None and (action in SENDS or chosen_object(answer, action) is not None):
            await self._send_once(bot, query, tr, answer_id, answer, action)
        elif answer is not None:
            value = format_confidence(answer.view_params().threshold)
            await answer_press(query, tr.gettext(CURRENT_VALUE, value=value))

    async def apply_view(self, bot: Bot, request: MiniAppRequest) -> str:
        """A Mini App's "apply": the view it asks for, through the same steps as a press (the limit, the
        asker-or-admin rule, applied once by the request's id, the coalesced re-drawing and the edit of the
        answer in the chat); returns the verdict (:mod:`bot.mini_app`). Only the place check is a press's
        alone: a request names its answer, and the answer's own messages are the ones edited."""
        try:
            asked = DetectParams.from_dict(request.view)
        except DetectorError:
            return mini_app.BAD
        change = await self._change(bot, request.answer_id, request.user_id, request.request_id,
                                    lambda answer: viewable(asked, answer))
        if change.outcome != CHANGED_OUTCOME:
            return MINI_APP_VERDICTS[change.outcome]
        return mini_app.APPLIED if await self._redraw_soon(bot, request.answer_id) else mini_app.FAILED

    async def clean_photo(self, bot: Bot, request: MiniAppRequest) -> tuple[str, bytes]:
        """A Mini App's photo: the answer's clean image (as the re-drawings start from it: at most
        CLEAN_MAX_BYTES, :mod:`bot.clean_images`) for the person who may open the answer, and the verdict."""
        try:
            answer = await self.book.load(request.answer_id)
        except RedisError as exc:
            log.warning("photo of answer %s for the Mini App: Redis unreachable (%s)", request.answer_id,
                        describe(exc))
            return mini_app.UNAVAILABLE, b""
        if answer is None:
            return mini_app.GONE, b""
        if not mini_app.may_view(answer, request.user_id):
            return mini_app.NOT_YOURS, b""
        photo = next((p for p in answer.photos if p.index == request.index), None)
        if photo is None:
            return mini_app.BAD, b""
        try:
            clean = await self.clean.get(bot, photo)
            if not await room_for(self.book.redis, len(clean.data)):
                log.warning("photo of answer %s for the Mini App refused: Redis is near its maxmemory",
                            request.answer_id)
                return mini_app.UNAVAILABLE, b""
        except (RenderError, TelegramError, RedisError, OSError) as exc:
            log.warning("photo of answer %s for the Mini App not fetched: %s", request.answer_id, describe(exc))
            return mini_app.UNAVAILABLE, b""
        return mini_app.SENT, clean.data

    async def _change(self, bot: Bot, answer_id: str, user_id: int, press_id: str,
                      decide: Callable[[Answer], DetectParams | None], query: CallbackQuery | None = None,
                      action: str = "") -> Change:
        """What a press or a Mini App's apply does to an answer's view, checked before it costs anything:
        the person's limit, the answer (waited for while another replica still sends it, for a press), the
        place (a press's: under the answer's own message), the person (the asker, or a group's admin); then
        ``decide`` gives the new view (None: none) and it is written once, keyed by ``press_id``. ``action``: the
        press's (a sticker's own buttons are under the stickers sent for the answer, and anyone may add one to
        their own set)."""
        if not self.limits.allow_press(user_id):
            return Change(TOO_FAST_OUTCOME)
        async with self._lock(answer_id):
            try:
                answer = await self.book.load(answer_id)
                window = min(ARRIVAL_WINDOW, self.book.ttl)  # an older answer's state is stored, or expired
                if answer is None and query is not None and just_sent(query, window):
                    answer = await arriving(lambda: self.book.load(answer_id))
            except RedisError as exc:
                log.warning("button of answer %s: Redis unreachable (%s)", answer_id, describe(exc))
                return Change(UNAVAILABLE_OUTCOME)
            if answer is None:
                return Change(GONE_OUTCOME)
            under_sticker = action == ADD_STICKER or (action != "" and chosen_object(answer, action) is not None)
            if query is not None and not bound(answer, query, answer.stickers if under_sticker else None):
                log.warning("button of answer %s refused: pressed under message %s of chat %s, not under the "
                            "answer's", answer_id, query.message.message_id if query.message else None,
                            query.message.chat.id if query.message else None)
                return Change(NOT_HERE_OUTCOME, answer)
            # Adding a sticker to one's own set changes nothing in the chat: anyone may.
            if action != ADD_STICKER and not await self._may_press(bot, answer, user_id):
                log.info("%s of answer %s refused: user %s neither asked nor is an admin of chat %s",
                         "button" if query is not None else "Mini App view", answer_id, user_id, answer.chat_id)
                return Change(NOT_YOURS_OUTCOME, answer)
            view = decide(answer)
            try:
                if view is None:
                    return Change(KEPT_OUTCOME, answer)  # crops, JSON, the current value: no view to set
                if view == answer.view_params():
                    # "Back" when already there: nothing to re-draw, unless this very press set that view and
                    # its replica stopped before the answer was re-drawn (it is handled again).
                    if not await self.book.pressed(answer_id, press_id):
                        return Change(KEPT_OUTCOME, answer)
                    applied_before = True
                else:
                    applied_before = not await self.book.set_view(answer_id, view, press_id)
                if applied_before:
                    # Handled again after its replica stopped half-way: re-drawn as it is, the view stays where
                    # that press put it (or the answer expired: the re-drawing finds nothing).
                    log.info("press %s on answer %s was applied before (handled again after a stop)", press_id,
                             answer_id)
            except RedisError as exc:
                log.warning("button of answer %s: Redis unreachable (%s)", answer_id, describe(exc))
                return Change(UNAVAILABLE_OUTCOME, answer)
            return Change(CHANGED_OUTCOME, answer)

    async def _unavailable(self, query: CallbackQuery, answer: Answer | None, answer_id: str, exc: Exception,
                           ) -> None:
        log.warning("button of answer %s: Redis unreachable (%s)", answer_id, describe(exc))
        await answer_press(query, self._catalog(answer, query).gettext(replies.UNAVAILABLE))

    def _lock(self, answer_id: str) -> asyncio.Lock:
        lock = self._locks.get(answer_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[answer_id] = lock
        return lock

    def _catalog(self, answer: Answer | None, query: CallbackQuery) -> Catalog:
        if answer is not None:
            return catalog(answer.language)
        return catalog(language_for(None, query.from_user.language_code, self.default_language))

    async def _expired(self, bot: Bot, query: CallbackQuery, tr: Catalog, answer_id: str) -> None:
        """A press after the answer's TTL: a short notice, and the keyboard goes."""
        log.info("button of answer %s pressed after it expired", answer_id)
        await answer_press(query, tr.gettext(EXPIRED))
        if query.message is not None:
            try:
                await bot.edit_message_reply_markup(query.message.chat.id, query.message.message_id, reply_markup=None)
            except TelegramError as exc:
                log.info("keyboard of expired answer %s not removed: %s", answer_id, describe(exc))

    async def _may_press(self, bot: Bot, answer: Answer, user_id: int) -> bool:
        if answer.private or user_id == answer.asker:
            return True
        return await self.admins.is_admin(bot, answer.chat_id, user_id)

    # -- re-drawing -------------------------------------------------------------------------------------

    async def _redraw_soon(self, bot: Bot, answer_id: str) -> bool:
        """One re-drawing per answer in flight; a change meanwhile is told True at once and makes it run once
        more at the end. The change that starts it waits for its first drawing: whether it went out."""
        if answer_id in self._running:
            self._dirty.add(answer_id)
            return True
        first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[answer_id] = asyncio.create_task(self._redraw_loop(bot, answer_id, first))
        return await first

    async def _redraw_loop(self, bot: Bot, answer_id: str, first: asyncio.Future[bool]) -> None:
        try:
            while True:
                self._dirty.discard(answer_id)
                answer = await self.book.load(answer_id)
                if answer is None:
                    return
                self.renders += 1
                await self._redraw(bot, answer_id, answer)
                if not first.done():
                    first.set_result(True)
                if answer_id not in self._dirty:
                    return
        except (RenderError, TelegramError, RedisError, OSError) as exc:
            log.warning("answer %s not re-drawn: %s", answer_id, describe(exc))
        except Exception as exc:  # a press must never take the bot down, nor leave a traceback in a chat
            log.error("answer %s not re-drawn: %s", answer_id, describe(exc), exc_info=exc)
        finally:
            if not first.done():
                first.set_result(False)
            self._running.pop(answer_id, None)
            self._dirty.discard(answer_id)

    async def _redraw(self, bot: Bot, answer_id: str, answer: Answer) -> None:
        view, tr = answer.view_params(), catalog(answer.language)
        markup = keyboard(tr, answer_id, answer, self.names, self.links)
        dets = [p.shown(view) for p in answer.photos]
        images = await asyncio.gather(*(self._draw(bot, p, d, answer) for p, d in zip(answer.photos, dets,
                                                                                       strict=True)))
        if not answer.album:
            caption, rest = split_caption(replies.detection_lines(tr, dets[0], self.names))
            await self._edit_media(bot, answer, answer.photos[0].message_id, images[0], caption, markup)
            await self._sync_texts(bot, answer_id, answer, rest)
            return
        lines: list[str] = []
        for photo, det, image in zip(answer.photos, dets, images, strict=True):
            summary, *boxes = replies.detection_lines(tr, det, self.names)
            lines += [replies.album_item(tr, photo.index, summary), *boxes]
            if photo.message_id:
                # As the album's first answer captions them: a lone photo by its place, others with their summary.
                caption = replies.album_photo(tr, photo.index) if len(answer.photos) == 1 else \
                    split_caption([replies.album_item(tr, photo.index, summary)])[0]
                await self._edit_media(bot, answer, photo.message_id, image, caption, None)
        first, *rest = pack_lines(lines, MESSAGE_LIMIT)
        await self._edit_text(bot, answer, answer.keyboard_message, first, markup)
        await self._sync_texts(bot, answer_id, answer, rest)

    async def _draw(self, bot: Bot, photo: Photo, det: Detection, answer: Answer) -> bytes:
        clean = await self.clean.get(bot, photo)
        return (await self.renderer.render(KIND_DRAW, clean.data, clean.fit(det.boxes), answer.language,
                                           queue_name=answer.queue or None))[0]

    @staticmethod
    async def _edit_media(bot: Bot, answer: Answer, message_id: int, image: bytes, caption: str,
                          markup: InlineKeyboardMarkup | None) -> None:
        try:
            await bot.edit_message_media(InputMediaPhoto(image, caption=caption), chat_id=answer.chat_id,
                                         message_id=message_id, reply_markup=markup)
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    @staticmethod
    async def _edit_text(bot: Bot, answer: Answer, message_id: int, text: str,
                         markup: InlineKeyboardMarkup | None) -> None:
        try:
            await bot.edit_message_text(text, chat_id=answer.chat_id, message_id=message_id, reply_markup=markup)
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    async def _sync_texts(self, bot: Bot, answer_id: str, answer: Answer, chunks: list[str]) -> None:
        """The follow-up messages of a long list: edited, added or deleted to match the new text."""
        kept = list(answer.texts)
        out: list[int] = []
        for i, chunk in enumerate(chunks):
            if i < len(kept):
                await self._edit_text(bot, answer, kept[i], chunk, None)
                out.append(kept[i])
            else:
                sent = await bot.send_message(answer.chat_id, chunk, reply_parameters=reply_to(answer.reply_to),
                                              message_thread_id=answer.thread)
                out.append(sent.message_id)
        for message_id in kept[len(chunks):]:
            try:
                await bot.delete_message(answer.chat_id, message_id)
            except BadRequest as exc:
                log.info("follow-up %s of answer %s not deleted: %s", message_id, answer_id, describe(exc))
        if out != kept:
            await self.book.set_texts(answer_id, out)

    # -- crops and JSON ---------------------------------------------------------------------------------

    async def _send_once(self, bot: Bot, query: CallbackQuery, tr: Catalog, answer_id: str, answer: Answer,
                         action: str) -> None:
        """Crops or JSON of the view shown now, one set per burst of presses: a press while the same view's
        set went out less than SENT_REPEAT ago (or is going out) is told it is above, whichever bot process
        took the first one, and a press handled again after a stop sends nothing twice (both are decided in
        one step with the answer's Redis hash: :meth:`AnswerBook.claim_send`)."""
        view = answer.view_params()
        if action in (CROPS, CUTOUTS, STICKER) and not crop_pieces(answer, view):
            await answer_press(query, tr.gettext(NOTHING_TO_CROP))
            return
        try:
            claim = await self.book.claim_send(answer_id, query.id, action, view, SENT_REPEAT)
        except RedisError as exc:
            await self._unavailable(query, answer, answer_id, exc)
            return
        if claim == SEND_REPLAYED:
            log.info("press %s on answer %s was carried out before (handled again after a stop)", query.id,
                     answer_id)
            await answer_press(query)
            return
        if claim == SEND_GONE:
            await self._expired(bot, query, tr, answer_id)
            return
        if claim == SEND_RECENT:
            await answer_press(query, tr.gettext(ALREADY_SENT))
            return
        if not self.limits.allow_send(query.from_user.id):
            with contextlib.suppress(RedisError):
                await self.book.unmark_sent(answer_id, action)
            await answer_press(query, tr.gettext(TOO_FAST))
            return
        await answer_press(query)
        sent = await self._send(bot, answer_id, answer, view, action)
        if not sent:
            with contextlib.suppress(RedisError):
                await self.book.unmark_sent(answer_id, action)

    async def _send(self, bot: Bot, answer_id: str, answer: Answer, view: DetectParams, action: str) -> bool:
        if action == CUTOUTS:
            return await self.cutouts.cutouts(bot, answer, view)
        if action == STICKER:
            return await self.cutouts.sticker(bot, answer_id, answer, view)
        chosen = chosen_object(answer, action)
        if chosen is not None:  # a sticker of another object, pressed under a sticker
            return await self.cutouts.sticker(bot, answer_id, answer, view, chosen)
        return await (self._crops(bot, answer, view) if action == CROPS else self._json(bot, answer, view))

    async def _add_sticker(self, bot: Bot, query: CallbackQuery, tr: Catalog, answer_id: str, answer: Answer,
                           ) -> None:
        """➕ under a sticker the bot sent: into the presser's own sticker set (:mod:`bot.stickers`). Anyone may:
        it changes nothing in the chat, only the presser's own set. Bound to the stickers sent for this answer;
        once per person and sticker (kept with the answer, so a press handled again, or by another replica,
        adds nothing twice); the per-person limit of sends."""
        message = query.message
        sticker = getattr(message, "sticker", None)
        if message is None or sticker is None:  # bound to the answer's stickers already (press)
            await answer_press(query, tr.gettext(NOT_HERE), show_alert=True)
            return
        person = query.from_user
        tr = catalog(language_for(None, person.language_code, answer.language))  # the presser's own set
        mark = f"{ADD_STICKER}{person.id}:{message.message_id}"
        try:
            claim = await self.book.claim_send(answer_id, query.id, mark, DetectParams(), self.book.ttl)
        except RedisError as exc:
            await self._unavailable(query, answer, answer_id, exc)
            return
        if claim in (SEND_REPLAYED, SEND_GONE, SEND_RECENT):
            await answer_press(query, None if claim == SEND_REPLAYED else tr.gettext(
                ALREADY_IN_SET if claim == SEND_RECENT else EXPIRED))
            return
        if not self.limits.allow_send(person.id):
            with contextlib.suppress(RedisError):
                await self.book.unmark_sent(answer_id, mark)
            await answer_press(query, tr.gettext(TOO_FAST))
            return
        outcome = await self.sticker_sets.add(bot, person, sticker.file_id, tr)
        if not outcome.ok:
            with contextlib.suppress(RedisError):
                await self.book.unmark_sent(answer_id, mark)
        start = f"https://t.me/{bot.username}?start=stickers" if outcome.message == START_FIRST else None
        await answer_press(query, outcome.text(tr, bot.username), show_alert=True, url=start)

    async def _crops(self, bot: Bot, answer: Answer, view: DetectParams) -> bool:
        """The objects shown now cut out, largest first, at most ten, as one media group under the answer."""
        pieces = crop_pieces(answer, view)
        try:
            media: list[tuple[bytes, str]] = []
            for photo in answer.photos:
                own = [p for p in pieces if p[0] is photo]
                if not own:
                    continue
                clean = await self.clean.get(bot, photo)
                crops = await self.renderer.render(KIND_CROPS, clean.data, clean.fit([p[2] for p in own]),
                                                   answer.language, queue_name=answer.queue or None)
                for (_, i, box), jpeg in zip(own, crops, strict=True):
                    media.append((jpeg, piece_label(self.names, answer, photo, i, box)))
            reply = reply_to(answer.keyboard_message)
            if len(media) == 1:  # Telegram refuses a media group of one
                await bot.send_photo(answer.chat_id, media[0][0], caption=media[0][1], reply_parameters=reply,
                                     message_thread_id=answer.thread)
            else:
                group = [InputMediaPhoto(jpeg, caption=caption) for jpeg, caption in media]
                await bot.send_media_group(answer.chat_id, group, reply_parameters=reply,
                                           message_thread_id=answer.thread)
        except (RenderError, TelegramError, RedisError, OSError) as exc:
            log.warning("crops of an answer in chat %s not sent: %s", answer.chat_id, describe(exc))
            return False
        return True

    async def _json(self, bot: Bot, answer: Answer, view: DetectParams) -> bool:
        """The boxes shown now as a .json document, the schema of ``detbot detect --json``."""
        items = [{"image": f"photo {p.index or 1}", **p.shown(view).to_dict()} for p in answer.photos]
        doc: Any = items if answer.album else items[0]
        data = json.dumps(doc, ensure_ascii=False, indent=1).encode()
        try:
            await bot.send_document(answer.chat_id, InputFile(data, filename="detections.json"),
                                    reply_parameters=reply_to(answer.keyboard_message),
                                    message_thread_id=answer.thread)
        except TelegramError as exc:
            log.warning("JSON of an answer in chat %s not sent: %s", answer.chat_id, describe(exc))
            return False
        return True


def crop_pieces(answer: Answer, view: DetectParams) -> list[tuple[Photo, int, Box]]:
    """The boxes ``view`` shows over the answer's photos, in crop order (largest first, at most ten)."""
    every = [(photo, i, box) for photo in answer.photos for i, box in enumerate(photo.shown(view).boxes)]
    return [every[i] for i in crop_order([box for _, _, box in every])]


async def answer_press(query: CallbackQuery, text: str | None = None, show_alert: bool = False,
                       url: str | None = None) -> None:
    """answerCallbackQuery, never raising: a press replayed after a restart is too old to answer (Telegram
    refuses after about 15 s), and the rest of the press still happens. ``url``: a ``t.me/<bot>?start=`` link
    the person's app opens (the bot's chat, to press Start)."""
    try:
        await query.answer(text, show_alert=show_alert, url=url)
    except TelegramError as exc:
        log.info("press %s not answered: %s", query.id, describe(exc))


def build_buttons(redis_url: str, queue_name: str, answer_ttl: int, bot_id: int, names: ClassNames,
                  default_language: str) -> Buttons:
    """The buttons of bot ``bot_id`` on a Redis client of their own (``redis.asyncio``): a render's wait never
    holds a thread."""
    pool = BlockingConnectionPool.from_url(
        redis_url, max_connections=REDIS_CONNECTIONS, timeout=RENDER_WAIT, socket_timeout=REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT, health_check_interval=30,
    )
    redis = AsyncRedis(connection_pool=pool)
    return Buttons(AnswerBook(redis, answer_ttl, bot_id), RenderClient(redis, queue_name), names, default_language)
