"""The PTB Application: every handler, one global error handler, Telegram's rate limits, the delivery loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from telegram import Bot, BotCommand, Message, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import mini_app, replies
from bot.albums import AlbumCollector
from bot.buttons import Buttons, answer_press, build_buttons
from bot.chat_settings import ChatSettings, ChatStore
from bot.classes import PublishedClasses, Unknown, model_params
from bot.delivery import Delivery
from bot.i18n import LANGUAGES, N_, Catalog, catalog, language_for
from bot.intake import Intake, Request, image_of, sender_of, thread_of
from bot.limits import Limits
from bot.metrics import BotMetrics
from bot.mini_app import MiniAppLinks, MiniAppRequest
from bot.models import Model, Models
from bot.parsing import (
    DETECT_COMMANDS,
    UsageError,
    mentions,
    parse_auto,
    parse_caption,
    parse_detect_args,
    parse_language,
    parse_model,
    parse_threshold,
    split_command,
)
from bot.ratelimit import ChatRateLimiter
from bot.settings import BotSettings
from bot.status import StatusBoard
from bot.telegram_io import describe, say
from bot.text import MESSAGE_LIMIT, pack_lines
from bot.video import CALLBACK_PREFIX as VIDEO_CALLBACK
from bot.video import Videos, video_of
from bot.video_answers import VideoAnswers
from bot.video_presses import VideoPresses
from detector.names import ClassNames, load_class_names
from detector.params import MAX_CLASSES, DetectParams
from jobs.client import DetectionClient, consumer_name
from jobs.exceptions import JobsError, QueueUnavailableError
from jobs.models import OUTAGE_GRACE, ModelSpec

log = logging.getLogger(__name__)

STARTED_FOR_STICKERS = N_("stickers.started")
# Pause before the delivery loop starts over after an unexpected error (it must never stay down).
DELIVERY_RESTART_DELAY = 2.0
SERVICES = "detbot"

PHOTO = filters.PHOTO | filters.Document.IMAGE
OTHER_MEDIA = filters.Sticker.ALL
# Clips (bot/video.py): videos, animations (GIFs), round video notes, videos sent as files.
VIDEO = filters.VIDEO | filters.ANIMATION | filters.VIDEO_NOTE | filters.Document.VIDEO
NEW_MESSAGE = filters.UpdateType.MESSAGE
# The updates the bot asks Telegram for (one list, whoever polls): messages; my_chat_member (the bot blocked,
# kicked or added back: its chat's pending answers follow that); callback_query (the answers' buttons).
ALLOWED_UPDATES = [Update.MESSAGE, Update.MY_CHAT_MEMBER, Update.CALLBACK_QUERY]


@dataclass
class Services:
    """Everything the handlers share; built once per Application."""

    settings: BotSettings
    redis: Redis
    client: DetectionClient
    chats: ChatStore
    limits: Limits
    metrics: BotMetrics
    intake: Intake
    status: StatusBoard
    delivery: Delivery
    names: ClassNames
    classes: PublishedClasses
    buttons: Buttons
    models: Models
    replica: str  # this process's name among the bot's replicas: its consumer name, its lease's value
    albums: AlbumCollector = field(default_factory=AlbumCollector)
    videos: Videos | None = None  # clips: their intake and progress message
    video_presses: VideoPresses | None = None  # clips' buttons: cancel, JSON
    # Supergroups accepted by the allow-list because the group they were is in it (see ChatStore.migrate).
    migrated_allowed: set[int] = field(default_factory=set)
    delivery_task: asyncio.Task[None] | None = None
    status_task: asyncio.Task[None] | None = None  # retries of status-message deletions Telegram missed


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.application.bot_data[SERVICES]


def _replied_to_bot(message: Message, bot: Bot) -> bool:
    replied = message.reply_to_message
    return bool(replied and replied.from_user and replied.from_user.id == bot.id)


def _addressed(message: Message, bot: Bot, commands: frozenset[str] = DETECT_COMMANDS) -> bool:
    """A message other than a photo counts as meant for the bot: /detect caption (or another model's
    command), mention, reply to it."""
    command, _rest, other_bot = split_command(message.caption or "", bot.username)
    return (command in commands and not other_bot) or mentions(message.caption, bot.username) \
        or _replied_to_bot(message, bot)


def _private(message: Message) -> bool:
    return message.chat.type == ChatType.PRIVATE


async def _reply(context: ContextTypes.DEFAULT_TYPE, message: Message, text: str) -> None:
    await say(context.bot, message.chat_id, text, reply=message.message_id, thread=thread_of(message))


def _catalog(svc: Services, message: Message, chat: ChatSettings) -> Catalog:
    """The language to answer ``message`` in: the chat's choice, else its sender's, else the default."""
    person = message.from_user.language_code if message.from_user else None
    return catalog(language_for(chat.language, person, svc.settings.default_language))


async def _tr(context: ContextTypes.DEFAULT_TYPE, message: Message) -> Catalog:
    """:func:`_catalog` after reading the chat's settings; with Redis away, the sender's language."""
    svc = services(context)
    try:
        chat = await asyncio.to_thread(svc.chats.get, message.chat_id)
    except QueueUnavailableError:
        chat = ChatSettings()
    return _catalog(svc, message, chat)


# -- photos ---------------------------------------------------------------------------------------------

async def on_image(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo, image document or clip: answered in private chats, in groups only when asked (or /auto on)."""
    message = update.message
    if message is None:
        return
    caption = message.caption or ""
    command, _rest, other_bot = split_command(caption, context.bot.username)
    asks = command is not None and command in services(context).models.commands()
    if other_bot and asks:
        return
    mentioned = mentions(caption, context.bot.username)
    explicit = _private(message) or asks or mentioned or _replied_to_bot(message, context.bot)
    if message.media_group_id:
        # The album's first update answers the whole album once it is complete; the others stop here.
        album = await services(context).albums.collect(message, explicit)
        if album is not None:
            await _process(context, album.photos, album.photos[0], album.explicit, None)
        return
    await _process(context, [message], message, explicit, None)


async def _process(context: ContextTypes.DEFAULT_TYPE, photos: list[Message], asked_by: Message, explicit: bool,
                   args: DetectParams | None, command: str = "") -> None:
    """Read the chat's settings, decide whether to answer, parse the arguments, choose the model (the
    command's, else the chat's), hand over to the intake."""
    svc = services(context)
    try:
        chat_settings = await asyncio.to_thread(svc.chats.get, asked_by.chat_id)
    except QueueUnavailableError:
        if explicit:
            tr = _catalog(svc, asked_by, ChatSettings())
            await svc.intake.refuse(photos[0], "redis_unreachable", tr.gettext(replies.UNAVAILABLE), len(photos))
        else:
            log.info("group photo in chat %s not checked for /auto: Redis unreachable", asked_by.chat_id)
        return
    if not (explicit or chat_settings.auto):
        return
    tr = _catalog(svc, asked_by, chat_settings)
    if args is None:
        try:
            args, command = _caption_args(photos, context.bot.username, svc.models.commands())
        except UsageError as exc:
            await svc.intake.refuse(photos[0], "usage", exc.text(tr), len(photos))
            return
    try:
        model = await _serving_model(svc, command, chat_settings, tr)
    except QueueUnavailableError:
        await svc.intake.refuse(photos[0], "redis_unreachable", tr.gettext(replies.UNAVAILABLE), len(photos))
        return
    if isinstance(model, str):
        await _model_refused(svc, photos, asked_by, model)
        return
    params, unknown = await _model_params(svc, args, model)
    if unknown:
        text = replies.no_such_class(tr, unknown[0].name, unknown[0].suggestions, svc.names)
        await svc.intake.refuse(photos[0], "unknown_class", text, len(photos))
        return
    # The chat's per-class thresholds this model applies (those of classes it knows).
    chat_settings = replace(chat_settings, class_thresholds=svc.models.thresholds_for(
        model, chat_settings.class_thresholds))
    request = Request(asked_by.chat, sender_of(asked_by), photos, asked_by, params,
                      chat_settings, tr, model)
    videos = svc.videos
    clips = [m for m in photos if video_of(m) is not None] if videos is not None else []
    for clip in clips:  # each clip on its own, as its own request in an album (which may mix photos and clips)
        await videos.handle(dataclasses.replace(  # type: ignore[union-attr]
            request, photos=[clip], asked_by=clip if len(photos) > 1 else asked_by))
    request.photos = [m for m in photos if m not in clips]
    if request.photos:
        await svc.intake.handle(request)


async def _serving_model(svc: Services, command: str, chat: ChatSettings, tr: Catalog) -> Model | str:
    """The model that answers: the command's (``/segment``), else the chat's (``/model``); or, when there is
    none to answer (the deployment has no such model, or none of its workers runs), what to tell the person.
    Raises QueueUnavailableError."""
    models = svc.models
    if command:
        found = await asyncio.to_thread(models.for_command, command, chat.model)
        if found is None:
            return replies.no_model(tr, command, _listed_models(models))
        model = found
    else:
        model = models.for_chat(chat.model)
    if model.default:
        return model  # the bot's own service: its photos wait through a worker outage, as they always did
    alive = await asyncio.to_thread(models.liveness, model)
    if not alive.served:
        log.warning("model %s has no live worker (none alive in the last %d s)", model.name, OUTAGE_GRACE)
        return replies.model_not_running(tr, model.name, models.default.name)
    return model


async def _model_refused(svc: Services, photos: list[Message], asked_by: Message, text: str) -> None:
    """A photo no model can answer: said once (an update sent again, or replayed, says nothing twice)."""
    ids = [asked_by.message_id, *(p.message_id for p in photos)]
    if await asyncio.to_thread(svc.chats.was_handled, asked_by.chat_id, asked_by.message_id):
        return
    await svc.intake.refuse(photos[0], "model_unavailable", text, len(photos))
    await asyncio.to_thread(svc.chats.mark_handled, asked_by.chat_id, ids)


def _listed_models(models: Models) -> list[str]:
    """The names of DETBOT_MODELS, in order (none for the lone DETBOT_MODEL)."""
    return [m.name for m in models.all if m.name]


async def _model_params(svc: Services, args: DetectParams, model: Model | None = None,
                        ) -> tuple[DetectParams, list[Unknown]]:
    """The class names of ``args`` as the model writes them (:func:`bot.classes.model_params`), checked
    against ``model``'s published names (None: every model's; a chat's per-class threshold serves every
    model); with Redis away the names are only translated and the worker checks them."""
    if not (args.classes or args.class_confidence):
        return args, []
    try:
        index = await asyncio.to_thread(svc.models.class_index, model) if model is not None else \
            await asyncio.to_thread(svc.models.every_class)
    except QueueUnavailableError:
        index = None
    return model_params(index, args, svc.names)


def _caption_args(photos: list[Message], username: str, commands: frozenset[str]) -> tuple[DetectParams, str]:
    """The arguments of the first caption of the photos, and the model command it starts with ("" none)."""
    for photo in photos:
        if photo.caption:
            caption = parse_caption(photo.caption, username, commands)
            return caption.args, caption.name
    return DetectParams(), ""


async def on_detect(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/detect [classes] [confidence]`` sent as a reply to a photo (a caption /detect goes to on_image);
    ``/segment``, ``/pose``, ``/<model>`` likewise, with that model."""
    message = update.message
    if message is None:
        return
    target = message.reply_to_message
    if target is None or (image_of(target) is None and video_of(target) is None):
        other_media = target is not None and bool(target.sticker)
        tr = await _tr(context, message)
        await _reply(context, message, tr.gettext(replies.SEND_A_PHOTO if other_media else replies.DETECT_NEEDS_PHOTO))
        return
    try:
        args = parse_detect_args(" ".join(context.args or []))
    except UsageError as exc:
        await _reply(context, message, exc.text(await _tr(context, message)))
        return
    command, _rest, _other = split_command(message.text or "", context.bot.username)
    await _process(context, [target], message, True, args, command or "")


async def on_video_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press under a clip's progress message (cancel) or answer (JSON)."""
    presses = services(context).video_presses
    if update.callback_query is not None and presses is not None:
        await presses.press(context.bot, update.callback_query)


# -- other messages -------------------------------------------------------------------------------------

async def on_other_media(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stickers: a short hint in private chats, in groups only when addressed."""
    message = update.message
    if message is None:
        return
    asked = _addressed(message, context.bot, services(context).models.commands())
    if _private(message) or asked:
        log.info("refused media chat=%s msg=%s: not a photo", message.chat_id, message.message_id)
        services(context).metrics.refuse("not_a_photo")
        await _reply(context, message, (await _tr(context, message)).gettext(replies.SEND_A_PHOTO))


async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A file that is not an image: refused politely where the bot was asked."""
    message = update.message
    if message is None:
        return
    asked = _addressed(message, context.bot, services(context).models.commands())
    if _private(message) or asked:
        mime = message.document.mime_type if message.document else None
        log.info("refused document chat=%s msg=%s: %s", message.chat_id, message.message_id, mime or "no type")
        services(context).metrics.refuse("not_an_image")
        await _reply(context, message, (await _tr(context, message)).gettext(replies.NOT_AN_IMAGE_FILE))


async def on_private_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.message:
        await _reply(context, update.message, (await _tr(context, update.message)).gettext(replies.SEND_A_PHOTO_HINT))


async def on_classes(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/classes``: every class the model knows, in the chat's language, in as many messages as it takes."""
    message = update.message
    if message is None:
        return
    svc = services(context)
    try:
        chat = await asyncio.to_thread(svc.chats.get, message.chat_id)
        tr = _catalog(svc, message, chat)
        model, asked = _classes_model(svc, context.args or [], chat)
        index = await asyncio.to_thread(svc.models.class_index, model) if model is not None else None
    except QueueUnavailableError:
        await _reply(context, message, (await _tr(context, message)).gettext(replies.UNAVAILABLE))
        return
    if model is None:
        await _reply(context, message, replies.no_model(tr, asked, _listed_models(svc.models)))
        return
    if index is None:
        await _reply(context, message, tr.gettext(replies.CLASSES_UNKNOWN))
        return
    lines = replies.class_list(tr, index.names, svc.names)
    if svc.models.several:
        lines.insert(0, replies.classes_of(tr, model.name))
    for chunk in pack_lines(lines, MESSAGE_LIMIT):
        await _reply(context, message, chunk)


def _classes_model(svc: Services, args: list[str], chat: ChatSettings) -> tuple[Model | None, str]:
    """``/classes`` shows the chat's model's classes; ``/classes <model>`` another model's (None: no such)."""
    if not args:
        return svc.models.for_chat(chat.model), ""
    asked = args[0].lower().lstrip("/")
    return svc.models.named(asked), asked


async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press on a button under an answer (bot.buttons)."""
    if update.callback_query is not None:
        await services(context).buttons.press(context.bot, update.callback_query)


async def on_mini_app(request: MiniAppRequest, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A Mini App's request from the web face (bot.mini_app): applied like a press, or its photo fetched;
    the verdict goes back to the web waiting for it."""
    svc = services(context)
    buttons = svc.buttons
    data = b""
    if request.stale(time.time()):
        log.warning("Mini App request %s on answer %s dropped: it waited %.0f s (the bot was away)",
                    request.request_id, request.answer_id, time.time() - request.at)
        verdict = mini_app.STALE
    elif not _chat_allowed(svc, request.chat_id):
        log.info("Mini App request on answer %s refused: chat %s not in DETBOT_ALLOWED_CHATS", request.answer_id,
                 request.chat_id)
        verdict = mini_app.NOT_YOURS
    elif request.kind == mini_app.KIND_VIEW:
        verdict = await buttons.apply_view(context.bot, request)
        log.info("Mini App view on answer %s by user %s: %s", request.answer_id, request.user_id, verdict)
    else:
        verdict, data = await buttons.clean_photo(context.bot, request)
    try:
        await mini_app.give_verdict(buttons.book.redis, svc.settings.bot_id, request.request_id, verdict, data)
    except RedisError as exc:  # the web times out and says so; the change itself is made
        log.warning("verdict on Mini App request %s not given: %s", request.request_id, describe(exc))


def _chat_allowed(svc: Services, chat_id: int) -> bool:
    allowed = svc.settings.allowed_chats
    return not allowed or chat_id in allowed or chat_id in svc.migrated_allowed


async def on_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.message:
        # ``/start stickers``: opened from a sticker's ➕, which Telegram refused before the person started the bot.
        key = STARTED_FOR_STICKERS if context.args == ["stickers"] else replies.HELP
        await _reply(context, update.message, (await _tr(context, update.message)).gettext(key))


# -- settings -------------------------------------------------------------------------------------------

async def _is_admin(context: ContextTypes.DEFAULT_TYPE, message: Message) -> bool:
    if _private(message):
        return True
    if message.sender_chat and message.sender_chat.id == message.chat_id:
        return True  # an anonymous admin writes as the group itself
    if message.from_user is None:
        return False
    member = await context.bot.get_chat_member(message.chat_id, message.from_user.id)
    return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)


# A settings command's action: (services, message, parsed value, chat's settings, reply language) -> reply.
SettingsAction = Callable[[Services, Message, Any, ChatSettings, Catalog], Awaitable[str]]


async def _settings_command(update: Update, context: ContextTypes.DEFAULT_TYPE,
                            parse: Callable[[list[str]], Any], act: SettingsAction) -> None:
    message = update.message
    if message is None:
        return
    svc = services(context)
    tr = _catalog(svc, message, ChatSettings())
    try:
        current = await asyncio.to_thread(svc.chats.get, message.chat_id)
        tr = _catalog(svc, message, current)
        value = parse(list(context.args or []))
        if value is not None and not await _is_admin(context, message):
            log.info("refused settings change chat=%s user=%s: not an admin", message.chat_id,
                     message.from_user.id if message.from_user else None)
            await _reply(context, message, tr.gettext(replies.ADMINS_ONLY))
            return
        text = await act(svc, message, value, current, tr)
    except UsageError as exc:
        text = exc.text(tr)
    except QueueUnavailableError:
        log.warning("settings command in chat %s refused: Redis unreachable", message.chat_id)
        text = tr.gettext(replies.UNAVAILABLE)
    except TelegramError as exc:
        log.warning("settings command in chat %s failed: %s", message.chat_id, describe(exc))
        text = tr.gettext(replies.SOMETHING_WRONG)
    await _reply(context, message, text)


async def _threshold(svc: Services, message: Message, value: Any, current: ChatSettings, tr: Catalog) -> str:
    default = svc.settings.default_confidence
    if value is None:
        return replies.threshold_status(tr, current.threshold, default, current.class_thresholds, svc.names)
    if value == "reset":
        await asyncio.to_thread(svc.chats.reset_thresholds, message.chat_id)
        log.info("threshold reset chat=%s", message.chat_id)
        return replies.threshold_reset(tr, default)
    if isinstance(value, tuple):
        return await _class_threshold(svc, message, value[0], value[1], current, tr)
    await asyncio.to_thread(svc.chats.set_threshold, message.chat_id, float(value))
    log.info("threshold set chat=%s value=%.2f", message.chat_id, value)
    return replies.threshold_set(tr, float(value))


async def _class_threshold(svc: Services, message: Message, written: str, value: float, current: ChatSettings,
                           tr: Catalog) -> str:
    """``/threshold person 0.6``: the class checked against the model's names like a filter."""
    params, unknown = await _model_params(svc, DetectParams(class_confidence=((written, value),)))
    if unknown:
        return replies.no_such_class(tr, unknown[0].name, unknown[0].suggestions, svc.names)
    (name, checked), = params.class_confidence
    if name not in dict(current.class_thresholds) and len(current.class_thresholds) >= MAX_CLASSES:
        return tr.gettext(replies.TOO_MANY_CLASSES, count=MAX_CLASSES)
    await asyncio.to_thread(svc.chats.set_class_threshold, message.chat_id, name, checked)
    log.info("threshold set chat=%s class=%s value=%.2f", message.chat_id, name, checked)
    return replies.class_threshold_set(tr, svc.names.display(None, name, tr.language), checked)


async def _auto(svc: Services, message: Message, value: Any, current: ChatSettings, tr: Catalog) -> str:
    if _private(message):
        return tr.gettext(replies.AUTO_PRIVATE)
    if value is None:
        return replies.auto_status(tr, bool(current.auto))
    await asyncio.to_thread(svc.chats.set_auto, message.chat_id, bool(value))
    log.info("auto %s chat=%s", "on" if value else "off", message.chat_id)
    return replies.auto_status(tr, bool(value))


async def _language(svc: Services, message: Message, value: Any, current: ChatSettings, tr: Catalog) -> str:
    """Show, set or reset the chat's language; a change is confirmed in the language now in use."""
    if value is None:
        return replies.language_status(tr, current.language)
    chosen = None if value == "reset" else str(value)
    await asyncio.to_thread(svc.chats.set_language, message.chat_id, chosen)
    log.info("language %s chat=%s", chosen or "reset", message.chat_id)
    now = _catalog(svc, message, ChatSettings(language=chosen))
    return replies.language_set(now) if chosen else replies.language_reset(now)


async def on_threshold(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _settings_command(update, context, parse_threshold, _threshold)


async def on_auto(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _settings_command(update, context, parse_auto, _auto)


async def on_language(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _settings_command(update, context, parse_language, _language)


async def _model(svc: Services, message: Message, value: Any, current: ChatSettings, tr: Catalog) -> str:
    """``/model``: show the chat's model and the others (with whether each runs now), set it, or reset it."""
    models = svc.models
    if value is None or not models.several:
        return await asyncio.to_thread(_model_status, models, current, tr, value is not None)
    if value == "reset":
        await asyncio.to_thread(svc.chats.set_model, message.chat_id, None)
        log.info("model reset chat=%s", message.chat_id)
        return replies.model_set(tr, models.default.name, True)
    chosen = models.named(str(value))
    if chosen is None:
        return replies.no_model(tr, str(value), _listed_models(models))
    await asyncio.to_thread(svc.chats.set_model, message.chat_id, None if chosen.default else chosen.name)
    log.info("model %s chat=%s", chosen.name, message.chat_id)
    text = replies.model_set(tr, chosen.name, chosen.default)
    if not chosen.default and not (await asyncio.to_thread(models.liveness, chosen)).served:
        text += "\n" + replies.model_not_running(tr, chosen.name, models.default.name)
    return text


def _model_status(models: Models, current: ChatSettings, tr: Catalog, asked_to_set: bool) -> str:
    """The chat's model and every other, each with its weights, task and whether a worker runs it (blocking)."""
    if not models.several:
        info = models.info(models.default)
        return replies.one_model(tr, info.weights if info else "", info.task if info else "", asked_to_set)
    chosen = models.for_chat(current.model)
    rows = []
    for model in models.all:
        info = models.info(model)
        rows.append(replies.ModelRow(model.name, info.weights if info else "", info.task if info else "",
                                     models.liveness(model).live > 0, model is chosen, model.default))
    return replies.model_status(tr, rows)


async def on_model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _settings_command(update, context, parse_model, _model)


# -- cross-cutting --------------------------------------------------------------------------------------

async def check_allowed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The optional allow-list: other chats get one short line in private, nothing in groups."""
    svc = services(context)
    allowed = svc.settings.allowed_chats
    chat = update.effective_chat
    if chat is None or _chat_allowed(svc, chat.id):
        return
    if await asyncio.to_thread(svc.chats.migrated_from, chat.id) in allowed:
        svc.migrated_allowed.add(chat.id)  # an allowed group that became a supergroup
        return
    log.info("ignored update from chat %s: not in DETBOT_ALLOWED_CHATS", chat.id)
    if update.message and chat.type == ChatType.PRIVATE:
        # No Redis read for a chat that is not served: the sender's own language.
        tr = _catalog(services(context), update.message, ChatSettings())
        await _reply(context, update.message, tr.gettext(replies.NOT_ALLOWED))
    if update.callback_query is not None:
        await answer_press(update.callback_query)  # no button keeps spinning, even here
    raise ApplicationHandlerStop


async def note_chat(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Before the allow-list: a group migrating to a supergroup, and chats talking to the bot again."""
    message = update.message
    if message is None:
        return
    svc = services(context)
    svc.delivery.chat_back(message.chat_id)
    if message.migrate_to_chat_id:
        await _migrated(svc, message.chat_id, message.migrate_to_chat_id)
    elif message.migrate_from_chat_id:
        await _migrated(svc, message.migrate_from_chat_id, message.chat_id)


async def _migrated(svc: Services, old: int, new: int) -> None:
    """A group became a supergroup: settings, allow-list entry and pending answers follow it."""
    if new in svc.migrated_allowed:
        return  # both service messages (old and new chat) announce the same migration
    svc.delivery.moved(old, new)
    try:
        await asyncio.to_thread(svc.chats.migrate, old, new)
    except JobsError as exc:
        log.warning("group %s became supergroup %s; its settings could not be copied: %s", old, new,
                    describe(exc))
    allowed = svc.settings.allowed_chats
    if allowed and old in allowed and new not in allowed:
        svc.migrated_allowed.add(new)
        log.warning("group %s became supergroup %s: answering it; add %s to DETBOT_ALLOWED_CHATS", old, new, new)
    elif not allowed or new in allowed:
        svc.migrated_allowed.add(new)
        log.info("group %s became supergroup %s; its settings follow it", old, new)


async def on_my_member(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The bot was blocked, kicked or left: that chat's waiting answers are dropped at once."""
    change = update.my_chat_member
    if change is None:
        return
    status = change.new_chat_member.status
    delivery = services(context).delivery
    if status in (ChatMemberStatus.BANNED, ChatMemberStatus.LEFT):
        await delivery.chat_gone(change.chat.id, f"bot {status}")
        try:
            await asyncio.to_thread(services(context).chats.forget, change.chat.id)
        except JobsError as exc:
            log.warning("chat %s is gone; its settings stay until the next time: %s", change.chat.id, describe(exc))
    else:
        delivery.chat_back(change.chat.id)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The last resort: the error with its traceback in the log, and a reply so the person is not left waiting."""
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed: %s", update_id, describe(context.error) if context.error else "unknown error",
              exc_info=context.error)  # unexpected: the traceback (token redacted, bot.logs) finds the bug
    if isinstance(update, Update) and update.message:
        # Nothing more that could fail: the sender's own language, without reading the chat's settings.
        tr = _catalog(services(context), update.message, ChatSettings())
        await _reply(context, update.message, tr.gettext(replies.SOMETHING_WRONG))


async def _run_delivery(svc: Services) -> None:
    while True:
        try:
            await svc.delivery.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("delivery loop failed: %s; restarting it", describe(exc))
            await asyncio.sleep(DELIVERY_RESTART_DELAY)


async def _register_commands(bot: Bot, default_language: str, models: list[str]) -> None:
    """The command menu in every language: the default for everyone, the others for Telegram apps set to
    them (``language_code`` scope), so the menu reads in each person's language."""
    for language in sorted(LANGUAGES, key=lambda lang: lang != default_language):
        tr = catalog(language)
        commands = [BotCommand(name, tr.gettext(key)) for name, key in replies.COMMANDS]
        commands[1:1] = [BotCommand(name, text) for name, text in replies.model_commands(tr, models)]
        try:
            await bot.set_my_commands(commands, language_code=None if language == default_language else language)
        except TelegramError as exc:
            log.warning("could not register the %s commands: %s", language, describe(exc))


async def _post_init(application: Application) -> None:
    svc: Services = application.bot_data[SERVICES]
    settings = svc.settings
    if settings.web_public_url:  # the 🎚 button's group link names the bot: known once getMe answered
        svc.buttons.links = MiniAppLinks(settings.web_public_url, settings.web_app_name, application.bot.username)
    await _register_commands(application.bot, svc.settings.default_language, _listed_models(svc.models))
    svc.delivery_task = asyncio.create_task(_run_delivery(svc))
    svc.status_task = asyncio.create_task(svc.status.keep_retrying())
    log.info("bot @%s started", application.bot.username)


async def _post_stop(application: Application) -> None:
    svc: Services = application.bot_data[SERVICES]
    await svc.delivery.stop()
    await svc.buttons.close()
    for task in (svc.delivery_task, svc.status_task):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_application(
    settings: BotSettings,
    redis: Redis,
    *,
    reader_redis: Callable[[], Redis] | None = None,
    metrics: BotMetrics | None = None,
    names: ClassNames | None = None,
    replica: str | None = None,
) -> Application:
    """The bot, ready for :func:`bot.main.run` (detbot's own polling): handlers, error handler, rate limiter,
    delivery loop.

    ``redis`` serves the handlers; ``reader_redis`` makes the connection of the blocking result reader;
    ``names``: the class names in people's languages (default: read from ``settings.class_names``);
    ``replica``: this process's name among the bot's replicas (default: a new unique one).
    """
    telegram_limits = ChatRateLimiter()
    application = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.api_url)
        .base_file_url(settings.file_url)
        .rate_limiter(telegram_limits)
        .updater(None)  # updates are fetched by bot.polling (into Redis first), not by PTB's Updater
        .post_init(_post_init)
        .post_stop(_post_stop)
        .build()
    )
    metrics = metrics or BotMetrics()
    bot_id = settings.bot_id
    replica = replica or consumer_name()
    if names is None:
        names = load_class_names(settings.class_names)
    models = _models(settings, redis, names)
    client = models.default.client
    chats = ChatStore(redis, bot_id)
    status = StatusBoard(application.bot, client, chats, settings.test_status_delay_ms / 1000,
                         near_limit=telegram_limits.near_limit,
                         check_interval=settings.test_status_check_ms / 1000)
    limits = Limits(settings.rate_limit_user, settings.rate_limit_chat)

    def make_reader() -> DetectionClient:
        return DetectionClient(reader_redis() if reader_redis else redis, queue_name=settings.queue, bot_id=bot_id,
                               consumer=replica)

    svc = Services(
        settings=settings,
        redis=redis,
        client=client,
        chats=chats,
        limits=limits,
        metrics=metrics,
        intake=Intake(application.bot, settings, client, chats, limits, metrics, status, application.create_task),
        status=status,
        delivery=Delivery(application.bot, make_reader, metrics, status, names, settings.default_language,
                          retry_delay=settings.test_retry_delay_ms / 1000,
                          album_check=settings.test_album_check_ms / 1000),
        names=names,
        classes=models.default.classes,
        models=models,
        replica=replica,
        buttons=build_buttons(settings.redis_url, settings.queue, settings.answer_ttl, bot_id, names,
                              settings.default_language),
    )
    svc.delivery.buttons = svc.buttons
    svc.videos = Videos(application.bot, settings, svc.intake, redis)
    svc.delivery.videos = VideoAnswers(application.bot, settings, redis, names)
    svc.video_presses = VideoPresses(settings, redis, svc.buttons, svc.delivery.videos)

    async def migrated(old: int, new: int) -> None:
        await _migrated(svc, old, new)

    svc.delivery.migrated = migrated
    metrics.watch_queue(lambda: sum(model.client.queued() for model in models.all))  # every model's queue
    application.bot_data[SERVICES] = svc

    _add_handlers(application)
    return application


def _models(settings: BotSettings, redis: Redis, names: ClassNames) -> Models:
    """The deployment's models (``DETBOT_MODELS``), each with a client of its queue; every model's
    completions come to the default queue's stream of this bot, read by one reader (``bot.delivery``)."""
    specs = settings.deployment()

    def make_client(spec: ModelSpec) -> DetectionClient:
        return DetectionClient(redis, queue_name=spec.queue, max_queued=settings.max_queued_jobs,
                               bot_id=settings.bot_id, events_queue=specs[0].queue)

    return Models(specs, make_client, names.aliases())


def _add_handlers(application: Application) -> None:
    """Every handler, in the order PTB tries them (negative groups first: before any answer)."""
    application.add_handler(TypeHandler(Update, note_chat), group=-2)
    application.add_handler(TypeHandler(Update, check_allowed), group=-1)
    application.add_handler(ChatMemberHandler(on_my_member, ChatMemberHandler.MY_CHAT_MEMBER))
    application.add_handler(CallbackQueryHandler(on_video_button, pattern=f"^{VIDEO_CALLBACK}:"))
    application.add_handler(CallbackQueryHandler(on_button))
    application.add_handler(TypeHandler(MiniAppRequest, on_mini_app))
    application.add_handler(CommandHandler(["start", "help"], on_help, filters=NEW_MESSAGE))
    application.add_handler(CommandHandler("threshold", on_threshold, filters=NEW_MESSAGE))
    application.add_handler(CommandHandler("auto", on_auto, filters=NEW_MESSAGE))
    application.add_handler(CommandHandler("language", on_language, filters=NEW_MESSAGE))
    application.add_handler(CommandHandler("model", on_model, filters=NEW_MESSAGE))
    commands = sorted(application.bot_data[SERVICES].models.commands())
    application.add_handler(CommandHandler(commands, on_detect, filters=NEW_MESSAGE))
    application.add_handler(CommandHandler("classes", on_classes, filters=NEW_MESSAGE))
    application.add_handler(MessageHandler(NEW_MESSAGE & PHOTO, on_image))
    application.add_handler(MessageHandler(NEW_MESSAGE & VIDEO, on_image))  # clips follow the photos' rules
    application.add_handler(MessageHandler(NEW_MESSAGE & OTHER_MEDIA, on_other_media))
    application.add_handler(MessageHandler(NEW_MESSAGE & filters.Document.ALL, on_document))
    application.add_handler(MessageHandler(NEW_MESSAGE & filters.ChatType.PRIVATE & filters.TEXT, on_private_text))
    application.add_error_handler(on_error)
