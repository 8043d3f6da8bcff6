"""Message catalogs: every sentence the bot says, per language, in gettext catalogs.

The catalogs live in ``bot/locales/<lang>/LC_MESSAGES/detbot.po`` and are compiled to ``.mo`` with Babel
(``pybabel compile``; see docs/i18n.md). Message ids are symbolic (``reply.busy``): both catalogs hold the
full text, so a key missing from one of them is a test failure rather than English shown to a Russian
speaker. Placeholders are ``str.format`` fields (``{position}``); plural forms follow each catalog's
``Plural-Forms`` header (three in Russian: 1 объект, 2 объекта, 5 объектов).
"""

from __future__ import annotations

import gettext
from functools import cache
from pathlib import Path

# The gettext domain: the catalogs' file name.
DOMAIN = "detbot"
LOCALE_DIR = Path(__file__).with_name("locales")
ENGLISH = "en"
RUSSIAN = "ru"
# Every language the bot speaks; the first is the fallback for a message a catalog lacks.
LANGUAGES = (ENGLISH, RUSSIAN)
# Chat-setting value meaning "no language chosen for this chat: follow each person's Telegram language".
AUTO = "auto"


def N_(msgid: str) -> str:
    """Marks a message id for extraction where it is named, not translated (module constants, tables)."""
    return msgid


class Catalog:
    """One language's messages: ``gettext``/``ngettext`` with ``{name}`` placeholders filled in."""

    def __init__(self, language: str, translations: gettext.NullTranslations) -> None:
        self.language = language
        self._translations = translations

    def gettext(self, msgid: str, /, **params: object) -> str:
        text = self._translations.gettext(msgid)
        return text.format(**params) if params else text

    def ngettext(self, singular: str, plural: str, n: int, /, **params: object) -> str:
        """The plural form for ``n``; ``{n}`` is available to the message besides ``params``."""
        return self._translations.ngettext(singular, plural, n).format(n=n, **params)

    def __repr__(self) -> str:
        return f"Catalog({self.language!r})"


def _load(language: str) -> gettext.GNUTranslations:
    # fallback=False: a missing compiled catalog is an installation error, not a reason to speak ids.
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=False)


@cache
def catalog(language: str) -> Catalog:
    """The catalog of a supported language (an unknown one gets English)."""
    language = language if language in LANGUAGES else ENGLISH
    translations = _load(language)
    if language != ENGLISH:
        # A message missing here (a catalog not updated yet) is said in English rather than as its id.
        translations.add_fallback(_load(ENGLISH))
    return Catalog(language, translations)


def supported(code: str | None) -> str | None:
    """A language code (``ru``, ``ru-RU``, ``EN_us``) to one of LANGUAGES, or None when not spoken here."""
    if not code:
        return None
    base = code.strip().replace("_", "-").split("-", 1)[0].lower()
    return base if base in LANGUAGES else None


def language_for(chat_setting: str | None, language_code: str | None, default: str) -> str:
    """The language to answer in: the chat's own choice, else the person's Telegram language if the bot
    speaks it, else the deployment's default (``DETBOT_DEFAULT_LANGUAGE``).

    In a group the chat's choice is the group's, and ``language_code`` the sender's; a message without a
    person (an anonymous admin, a channel) has no ``language_code`` and gets the default.
    """
    return supported(chat_setting) or supported(language_code) or supported(default) or ENGLISH
