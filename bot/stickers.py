"""A person's own sticker set, made by the bot: the "➕ add to my sticker set" button under a sticker it sent.

- **The set:** one per person and bot, named ``u<person's id>_by_<bot's username>`` (Telegram wants a bot's sets
  to end in ``_by_<username>``) and titled after the bot ("detbot stickers"). The first sticker creates it
  (``createNewStickerSet``), later ones join it (``addStickerToSet``); ``getStickerSet`` says which, and how
  full it is. Nothing of it is kept in Redis: Telegram holds the set, the name is the person's id.
- **The sticker:** the one the button is under, downloaded from Telegram as the bot sent it and uploaded for
  the person (``uploadStickerFile``, static): the documented way into a set, and no second render.
- **Telegram's refusals, in words:** a set full (120 static stickers), a name taken (a set the person deleted
  keeps its name: the next name ``u<id>_2_by_…`` is tried, then the person is told), a person who never started
  the bot (Telegram makes sets only for people who have: the answer opens the bot's chat to press Start).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import Bot, InputFile, InputSticker, StickerSet, User
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.i18n import N_, Catalog
from bot.telegram_io import describe, fetch_file

log = logging.getLogger(__name__)

# A static sticker set takes at most this many stickers (Telegram's limit).
SET_LIMIT = 120
# Names tried for a person's set: ``u<id>_by_<bot>``, then ``u<id>_2_by_<bot>``, ...: a deleted set's name stays
# taken, so a person who deleted theirs gets a new one; more than this means something else is wrong.
NAME_TRIES = 3
# Every sticker of the set answers to this emoji (Telegram wants one to twenty).
EMOJI = "✂️"
STICKER_FORMAT = "static"

ADDED = N_("stickers.added")
CREATED = N_("stickers.created")
FULL = N_("stickers.full")
NAME_TAKEN = N_("stickers.name_taken")
START_FIRST = N_("stickers.start_first")
FAILED = N_("stickers.failed")
TITLE = N_("stickers.title")
READY = N_("stickers.ready")

# How Telegram words the refusals the person is told about (its descriptions, lower-cased).
_NO_SET = ("stickerset_invalid",)
_NAME_OCCUPIED = ("already occupied",)
_FULL = ("stickers_too_much", "stickerset_too_much", "too much")
_NOT_STARTED = ("peer_id_invalid", "user_id_invalid", "user not found", "chat not found", "can't initiate",
                "bot was blocked")


@dataclass(frozen=True)
class Outcome:
    """What became of one "add": ``message`` (a message id of the catalogs) with its values, and whether the
    sticker is in the set now."""

    message: str
    ok: bool
    name: str = ""
    title: str = ""
    count: int = 0

    def text(self, tr: Catalog, bot_username: str) -> str:
        return tr.gettext(self.message, name=self.name, title=self.title, count=self.count, limit=SET_LIMIT,
                          bot=bot_username)


def set_name(user_id: int, bot_username: str, attempt: int = 0) -> str:
    """The name of a person's set (``attempt`` > 0: the next one, when a deleted set keeps the first taken)."""
    return f"u{user_id}{f'_{attempt + 1}' if attempt else ''}_by_{bot_username}"


def _says(exc: TelegramError, words: tuple[str, ...]) -> bool:
    text = str(exc).lower()
    return any(word in text for word in words)


class StickerSets:
    """Adding a sticker the bot sent to the set of the person who pressed."""

    async def add(self, bot: Bot, person: User, sticker_file_id: str, tr: Catalog) -> Outcome:
        """Into ``person``'s set (made now if it does not exist yet); never raises for Telegram's refusals."""
        try:
            return await self._add(bot, person, sticker_file_id, tr)
        except Forbidden as exc:
            return self._refused(person, exc, START_FIRST)
        except BadRequest as exc:
            if _says(exc, _NOT_STARTED):
                return self._refused(person, exc, START_FIRST)
            if _says(exc, _FULL):
                return self._refused(person, exc, FULL)
            log.warning("sticker of user %s not added: %s", person.id, describe(exc))
            return Outcome(FAILED, False)
        except TelegramError as exc:
            log.warning("sticker of user %s not added: %s", person.id, describe(exc))
            return Outcome(FAILED, False)

    async def _add(self, bot: Bot, person: User, file_id: str, tr: Catalog) -> Outcome:
        data = await fetch_file(bot, file_id)
        uploaded = await bot.upload_sticker_file(person.id, InputFile(data, filename="sticker.webp"), STICKER_FORMAT)
        sticker = InputSticker(uploaded.file_id, [EMOJI], STICKER_FORMAT)
        for attempt in range(NAME_TRIES):
            name = set_name(person.id, bot.username, attempt)
            found = await self._find(bot, name)
            if found is None:
                title = tr.gettext(TITLE, bot=bot.first_name or bot.username)[:64]
                try:
                    await bot.create_new_sticker_set(person.id, name, title, [sticker])
                except BadRequest as exc:
                    if _says(exc, _NAME_OCCUPIED):
                        log.info("sticker set name %s is taken (a set deleted since?); trying the next", name)
                        continue
                    raise
                log.info("sticker set %s made for user %s", name, person.id)
                await self._tell(bot, person, tr, name, title)
                return Outcome(CREATED, True, name, title, 1)
            if len(found.stickers) >= SET_LIMIT:
                log.info("sticker of user %s not added: set %s is full", person.id, name)
                return Outcome(FULL, False, name, found.title, len(found.stickers))
            await bot.add_sticker_to_set(person.id, name, sticker)
            log.info("sticker added to set %s of user %s", name, person.id)
            return Outcome(ADDED, True, name, found.title, len(found.stickers) + 1)
        log.warning("sticker of user %s not added: %d set names taken", person.id, NAME_TRIES)
        return Outcome(NAME_TAKEN, False)

    @staticmethod
    async def _find(bot: Bot, name: str) -> StickerSet | None:
        """The set, or None when Telegram has none of that name."""
        try:
            return await bot.get_sticker_set(name)
        except BadRequest as exc:
            if _says(exc, _NO_SET):
                return None
            raise

    @staticmethod
    async def _tell(bot: Bot, person: User, tr: Catalog, name: str, title: str) -> None:
        """A new set: its link in the person's private chat with the bot (a pop-up cannot hold a link)."""
        try:
            await bot.send_message(person.id, tr.gettext(READY, name=name, title=title))
        except TelegramError as exc:
            log.info("link to sticker set %s not sent to user %s: %s", name, person.id, describe(exc))

    @staticmethod
    def _refused(person: User, exc: TelegramError, message: str) -> Outcome:
        log.info("sticker of user %s not added: %s", person.id, describe(exc))
        return Outcome(message, False)
