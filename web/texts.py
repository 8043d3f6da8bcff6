"""Every sentence the web face says, in English and Russian: its own, and the bot's where they are the same.

The web's own words (the page's labels, the API's refusals that have no Telegram counterpart) live in
``web/locales/{en,ru}.json``: plain JSON, because the page (plain JavaScript, no build step) reads the same
files. What the bot already says — image errors, "busy", the answer's summary and box lines, usage
problems — comes from the bot's gettext catalogs (``bot/locales``), so a person reads the same sentence in
a chat and on the page. ``tests/test_web_units.py`` checks both languages have every key with the same
placeholders.
"""

from __future__ import annotations

import gettext
import json
from functools import cache
from pathlib import Path
from typing import Any

from bot.i18n import DOMAIN, ENGLISH, LANGUAGES, LOCALE_DIR, RUSSIAN, Catalog, catalog, supported

WEB_LOCALE_DIR = Path(__file__).with_name("locales")

# The bot's messages the page words its answer and its waiting with (the rest it gets from the API).
PAGE_BOT_MESSAGES = ("answer.box", "answer.box.share", "answer.count", "answer.nothing", "answer.only",
                     "answer.per_class", "status.queued", "status.working", "reply.unavailable", "reply.busy")
PAGE_BOT_PLURALS = (("answer.summary", "answer.summary.plural"),)
# A number that falls in each of the browser's plural categories (Intl.PluralRules) per language, to pick
# the matching gettext form: the page chooses by category, gettext by number.
PLURAL_SAMPLES = {ENGLISH: {"one": 1, "other": 2}, RUSSIAN: {"one": 1, "few": 2, "many": 5, "other": 5}}


@cache
def own_texts(language: str) -> dict[str, str]:
    """The web's own messages in ``language`` (a supported one), as the JSON file holds them."""
    path = WEB_LOCALE_DIR / f"{language}.json"
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


class Texts:
    """One language's words: ``texts(key, **params)`` the web's own, ``texts.bot`` the bot's catalog."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else ENGLISH
        self.bot: Catalog = catalog(self.language)
        self._own = own_texts(self.language)

    def __call__(self, key: str, /, **params: object) -> str:
        text = self._own.get(key) or own_texts(ENGLISH)[key]
        return text.format(**params) if params else text


@cache
def texts(language: str) -> Texts:
    return Texts(language)


def choose_language(asked: str | None, accept_language: str | None, default: str) -> str:
    """The language to answer in: ``?lang=``, else the browser's first language detbot speaks
    (``Accept-Language``, by its q-values), else the deployment's default."""
    found = supported(asked)
    if found:
        return found
    ranked: list[tuple[float, int, str]] = []
    for place, part in enumerate((accept_language or "").split(",")[:20]):
        code, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        language = supported(code)
        if language and weight > 0:
            ranked.append((-weight, place, language))
    return min(ranked)[2] if ranked else (supported(default) or ENGLISH)


@cache
def page_catalog(language: str) -> dict[str, Any]:
    """What the page says in ``language``: the web's own texts and the bot's answer lines, plural forms
    by the browser's plural category."""
    translations = gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=False)
    bot: dict[str, Any] = {key: translations.gettext(key) for key in PAGE_BOT_MESSAGES}
    for singular, plural in PAGE_BOT_PLURALS:
        bot[singular] = {category: translations.ngettext(singular, plural, n)
                         for category, n in PLURAL_SAMPLES[language].items()}
    return {"language": language, "texts": own_texts(language), "bot": bot}
