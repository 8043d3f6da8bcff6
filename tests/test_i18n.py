"""The message catalogs: every key in both languages with the same placeholders, compiled, plural forms right."""

from __future__ import annotations

import gettext
import io
import re
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog as PoCatalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from bot import replies
from bot.i18n import DOMAIN, ENGLISH, LANGUAGES, LOCALE_DIR, RUSSIAN, catalog, language_for, supported
from bot.parsing import (
    UsageError,
    parse_auto,
    parse_caption,
    parse_confidence,
    parse_detect_args,
    parse_language,
    parse_threshold,
)
from detector.names import ClassNames, parse_class_names
from detector.params import DetectParams
from detector.render import summary_line as english_summary
from detector.result import Box, Detection
from tests.conftest import ROOT

# Russian messages made of symbols and placeholders only: nothing to translate, so no Cyrillic expected.
SYMBOLS_ONLY = {"answer.box", "answer.count", "button.lower", "button.higher", "button.current", "button.json"}
CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalog(language: str) -> PoCatalog:
    with po_path(language).open("rb") as f:
        return read_po(f, locale=language)


def source_keys() -> set[str]:
    """Every message id the code uses, extracted the way ``pybabel extract -F babel.cfg -k N_`` does."""
    method_map = [("bot/**.py", "python")]
    keywords = {"gettext": None, "ngettext": (1, 2), "N_": None}
    found = extract_from_dir(str(ROOT), method_map, keywords=keywords)
    return {msgid if isinstance(msgid, str) else msgid[0] for _file, _line, msgid, *_ in found}


def key_problems(po: PoCatalog, keys: set[str]) -> list[str]:
    """What is wrong with one catalog against the code's keys: missing, extra, empty or fuzzy replies."""
    ids = {m.id if isinstance(m.id, str) else m.id[0]: m for m in po if m.id}
    problems = [f"missing {k}" for k in sorted(keys - ids.keys())]
    problems += [f"extra {k}" for k in sorted(ids.keys() - keys)]
    for key, message in ids.items():
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        if not all(forms):
            problems.append(f"untranslated {key}")
        if message.fuzzy:
            problems.append(f"fuzzy {key}")
    return problems


def placeholders(text: str) -> set[str]:
    return {field for _lit, field, _spec, _conv in string.Formatter().parse(text) if field is not None}


def forms_of(po: PoCatalog) -> dict[str, tuple[str, ...]]:
    return {
        (m.id if isinstance(m.id, str) else m.id[0]): (m.string if isinstance(m.string, tuple) else (m.string,))
        for m in po if m.id
    }


# -- keys and placeholders ------------------------------------------------------------------------------

@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_the_code_uses_is_in_the_catalog_and_nothing_else(language: str) -> None:
    keys = source_keys()
    assert len(keys) > 50
    assert key_problems(read_catalog(language), keys) == []


def test_a_missing_or_extra_key_is_reported() -> None:
    po = read_catalog(RUSSIAN)
    po.delete("reply.busy")
    po.add("reply.nobody.uses.this", "лишнее")
    assert key_problems(po, source_keys()) == ["missing reply.busy", "extra reply.nobody.uses.this"]


def test_both_catalogs_have_the_same_placeholders_in_every_form() -> None:
    english, russian = forms_of(read_catalog(ENGLISH)), forms_of(read_catalog(RUSSIAN))
    for key, forms in english.items():
        wanted = placeholders(forms[0])
        for form in (*forms, *russian[key]):
            assert placeholders(form) == wanted, (key, form)


def test_russian_catalog_is_russian() -> None:
    untranslated = [k for k, forms in forms_of(read_catalog(RUSSIAN)).items()
                    if k not in SYMBOLS_ONLY and not all(CYRILLIC.search(f) for f in forms)]
    assert untranslated == []


# -- compiled catalogs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("language", LANGUAGES)
def test_compiled_catalog_is_up_to_date_with_its_po(language: str) -> None:
    """A .po edited without ``pybabel compile -d bot/locales -D detbot`` fails here."""
    fresh = io.BytesIO()
    write_mo(fresh, read_catalog(language))
    fresh.seek(0)
    mo = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.mo"
    with mo.open("rb") as f:
        shipped = gettext.GNUTranslations(f)
    expected = gettext.GNUTranslations(fresh)
    assert shipped._catalog == expected._catalog, f"{mo} is stale: run pybabel compile -d bot/locales -D detbot"


def test_plural_forms_header() -> None:
    assert read_catalog(ENGLISH).num_plurals == 2
    assert read_catalog(RUSSIAN).num_plurals == 3


@pytest.mark.parametrize(("n", "word"), [
    (1, "объект"), (2, "объекта"), (4, "объекта"), (5, "объектов"), (11, "объектов"), (12, "объектов"),
    (14, "объектов"), (21, "объект"), (22, "объекта"), (25, "объектов"), (101, "объект"), (111, "объектов"),
])
def test_russian_plural_forms(n: int, word: str) -> None:
    boxes = tuple(Box(0, "person", 0.9, 0, 0, 1, 1) for _ in range(n))
    line = replies.summary_line(catalog(RUSSIAN), Detection(boxes, 10, 10, 0.5), ClassNames())
    assert line.startswith(f"Найден{'' if word == 'объект' else 'о'} {n} {word} с уверенностью ≥ 0.50")
    assert line.endswith(f"человек ×{n}")


@pytest.mark.parametrize(("seconds", "text"), [(1, "1 секунду"), (3, "3 секунды"), (7, "7 секунд"), (21, "21 секунду")])
def test_russian_plural_in_rate_limit(seconds: int, text: str) -> None:
    reply = replies.rate_limited(catalog(RUSSIAN), 10, seconds, "user")
    assert reply.endswith(f"Попробуйте через {text}.") and "10 фотографий в минуту" in reply
    assert "1 фотографию в минуту" in replies.rate_limited(catalog(RUSSIAN), 1, seconds, "chat")


def test_english_plural() -> None:
    en = catalog(ENGLISH)
    assert replies.rate_limited(en, 1, 1, "user").startswith("Slow down a little: 1 photo per minute per person.")
    assert "10 photos per minute in this chat" in replies.rate_limited(en, 10, 1, "chat")


# -- the answers ----------------------------------------------------------------------------------------

def detection(*names: str, classes: tuple[str, ...] | None = None) -> Detection:
    boxes = tuple(Box(i, n, 0.9 - i * 0.1, 10.4, 20.6, 110.0, 220.0) for i, n in enumerate(names))
    return Detection(boxes=boxes, width=640, height=480, confidence=0.5, classes=classes)


def test_english_answer_is_the_detectors_own_text() -> None:
    for det in (detection("circle", "square", "circle"), detection(), detection(classes=("dog",))):
        assert replies.summary_line(catalog(ENGLISH), det, ClassNames()) == english_summary(det)


def test_russian_answer_names_classes_in_russian() -> None:
    names = parse_class_names({"ru": {"circle": "круг", "square": ["квадрат", "квадратик"]}})
    lines = replies.detection_lines(catalog(RUSSIAN), detection("circle", "square", "circle"), names)
    assert lines == [
        "Найдено 3 объекта с уверенностью ≥ 0.50: круг ×2, квадрат ×1",
        "1. круг 0.90 [10, 21, 110, 220]",
        "2. квадрат 0.80 [10, 21, 110, 220]",
        "3. круг 0.70 [10, 21, 110, 220]",
    ]
    nothing = replies.summary_line(catalog(RUSSIAN), detection(classes=("circle",)), names)
    assert nothing == "Ничего не найдено с уверенностью ≥ 0.50 (только круг). Попробуйте порог пониже, например 0.15."


def test_every_error_code_has_a_sentence_in_both_languages() -> None:
    codes = ["empty_image", "not_an_image", "unsupported_format", "corrupt_image", "image_too_large",
             "unknown_class", "invalid_confidence", "bad_image", "timeout", "failed_after_retries",
             "image_expired", "internal_error", "result_expired", "no_such_code"]
    for language in LANGUAGES:
        said = [replies.error_reply(catalog(language), code, max_pixels=40_000_000) for code in codes]
        assert all(r and "." not in r.split()[0] for r in said)  # a sentence, not a message id
    assert "40" in replies.error_reply(catalog(RUSSIAN), "image_too_large", max_pixels=40_000_000)
    assert replies.error_reply(catalog(RUSSIAN), "no_such_code") == catalog(RUSSIAN).gettext(replies.SOMETHING_WRONG)


def test_command_menu_in_both_languages() -> None:
    for language in LANGUAGES:
        descriptions = [catalog(language).gettext(key) for _name, key in replies.COMMANDS]
        # Telegram: 1-256 characters per description.
        assert all(0 < len(d) <= 256 and not d.startswith("command.") for d in descriptions)
    assert "language" in dict(replies.COMMANDS)


def test_help_lists_the_same_commands_in_both_languages() -> None:
    def commands(text: str) -> set[str]:
        return set(re.findall(r"/(\w+)", text))

    english, russian = (catalog(lang).gettext(replies.HELP) for lang in LANGUAGES)
    assert commands(english) == commands(russian) >= {name for name, _ in replies.COMMANDS} - {"help"}


# -- which language -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("chat", "person", "default", "expected"), [
    (None, "ru", "en", "ru"),          # the person's Telegram language
    (None, "ru-RU", "en", "ru"),
    (None, "en-GB", "ru", "en"),
    (None, "de", "en", "en"),          # a language the bot does not speak: the deployment's default
    (None, "de", "ru", "ru"),
    (None, None, "ru", "ru"),          # no person (anonymous admin, channel): the default
    ("en", "ru", "ru", "en"),          # the chat's choice beats the person's language
    ("ru", "en", "en", "ru"),
    ("auto", "ru", "en", "ru"),        # "auto" is no choice
    (None, None, "xx", "en"),          # a broken default still answers in English
])
def test_language_precedence(chat: str | None, person: str | None, default: str, expected: str) -> None:
    assert language_for(chat, person, default) == expected


def test_supported_language_codes() -> None:
    assert [supported(c) for c in ("ru", "RU", "ru_RU", " ru-ua ", "en", "uk", "", None)] == [
        "ru", "ru", "ru", "ru", "en", None, None, None]


def test_an_unknown_language_gets_english_and_catalogs_are_shared() -> None:
    assert catalog("xx").language == ENGLISH
    assert catalog(RUSSIAN) is catalog(RUSSIAN)


# -- what people write ----------------------------------------------------------------------------------

def refusal(call: Callable[[], object]) -> UsageError:
    with pytest.raises(UsageError) as info:
        call()
    return info.value


def test_usage_errors_are_said_in_the_chats_language() -> None:
    ru, en = catalog(RUSSIAN), catalog(ENGLISH)
    hint = refusal(lambda: parse_confidence("40"))
    assert hint.text(ru) == "Порог уверенности должен быть от 0 до 1: может быть, вы имели в виду 40%?"
    assert hint.text(en) == str(hint) == "The confidence must be between 0 and 1: did you mean 40%?"
    wrong = refusal(lambda: parse_detect_args("0.3 0.4")).text(ru).splitlines()
    assert wrong[0] == "Укажите один порог уверенности, а не несколько." and "/detect человек,собака" in wrong[2]
    threshold = refusal(lambda: parse_threshold(["abc"])).text(ru)
    assert threshold.startswith("«abc» — это не порог уверенности.\nКак пользоваться: /threshold")
    assert refusal(lambda: parse_auto(["может"])).text(ru).startswith("Как пользоваться: /auto")


def test_too_many_classes_plural() -> None:
    many = ",".join(f"класс{i}" for i in range(30))
    assert refusal(lambda: parse_detect_args(many)).text(catalog(RUSSIAN)) == "Не больше 20 классов за раз, пожалуйста."


def test_russian_class_filter_parses() -> None:
    assert parse_detect_args("человек,собака 0,3") == DetectParams(0.3, ("человек", "собака"))
    assert parse_caption("/detect мобильный_телефон", "bot").args.classes == ("мобильный телефон",)


@pytest.mark.parametrize(("args", "expected"), [
    ([], None), (["ru"], "ru"), (["EN"], "en"), (["ru-RU"], "ru"), (["reset"], "reset"), (["auto"], "reset"),
    (["сброс"], "reset"),
])
def test_language_arguments(args: list[str], expected: str | None) -> None:
    assert parse_language(args) == expected


@pytest.mark.parametrize("args", [["de"], ["ru", "en"], ["русский"]])
def test_bad_language_arguments(args: list[str]) -> None:
    assert refusal(lambda: parse_language(args)).text(catalog(RUSSIAN)).startswith("Как пользоваться: /language")
