"""Every sentence the bot says, by message id, and those put together from parts, in the chat's language.

The words live in the catalogs (``bot/locales``); this module names the ids (``N_`` marks them for
extraction) and builds the composite answers: the detection summary and box list, rate-limit and
settings replies, error replies. Numbers keep their dot in every language (``0.35``): it is what people
type back into ``/threshold`` and ``/detect``, and the parser accepts ``0,35`` as well.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.i18n import ENGLISH, N_, RUSSIAN, Catalog
from detector.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    InvalidConfidenceError,
    NotAnImageError,
    TooComplexImageError,
    UnknownClassError,
    UnsupportedFormatError,
)
from detector.names import ClassNames
from detector.render import format_confidence
from detector.result import Box, Detection
from jobs import store

# Telegram's Bot API refuses to hand out files larger than this (getFile); checked before asking.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
BYTES_PER_MB = 1024 * 1024

HELP = N_("reply.help")
SEND_A_PHOTO = N_("reply.send_a_photo")
SEND_A_PHOTO_HINT = N_("reply.send_a_photo_hint")
NOT_AN_IMAGE_FILE = N_("reply.not_an_image_file")
DETECT_NEEDS_PHOTO = N_("reply.detect_needs_photo")
UNAVAILABLE = N_("reply.unavailable")
# A queued photo whose job Redis no longer has (it lost its data): what its status message becomes.
LOST = N_("reply.lost")
BUSY = N_("reply.busy")
# One chat has as many photos waiting as it may (jobs.fair.chat_limit): other chats still get in.
CHAT_BUSY = N_("reply.chat_busy")
DOWNLOAD_FAILED = N_("reply.download_failed")
NOT_ALLOWED = N_("reply.not_allowed")
ADMINS_ONLY = N_("reply.admins_only")
SOMETHING_WRONG = N_("reply.something_wrong")
AUTO_PRIVATE = N_("reply.auto_private")
CLASSES_UNKNOWN = N_("reply.classes_unknown")
TOO_COMPLEX_IMAGE = N_("error.too_complex_image")

# The command menu (setMyCommands), registered once per language.
COMMANDS = (
    ("detect", N_("command.detect")),
    ("threshold", N_("command.threshold")),
    ("auto", N_("command.auto")),
    ("language", N_("command.language")),
    ("classes", N_("command.classes")),
    ("help", N_("command.help")),
)
LANGUAGE_NAMES = {ENGLISH: N_("language.name.en"), RUSSIAN: N_("language.name.ru")}

_DETECTOR_ERRORS = {
    EmptyImageError.code: N_("error.empty_image"),
    NotAnImageError.code: N_("error.not_an_image"),
    UnsupportedFormatError.code: N_("error.unsupported_format"),
    CorruptImageError.code: N_("error.corrupt_image"),
    UnknownClassError.code: N_("error.unknown_class"),
    InvalidConfidenceError.code: N_("error.invalid_confidence"),
    TooComplexImageError.code: TOO_COMPLEX_IMAGE,
    "bad_image": N_("error.bad_image"),
}
_QUEUE_ERRORS = {
    store.CODE_TIMEOUT: N_("error.timeout"),
    store.CODE_RETRIES_EXHAUSTED: N_("error.failed_after_retries"),
    store.CODE_IMAGE_EXPIRED: N_("error.image_expired"),
    store.CODE_INTERNAL: SOMETHING_WRONG,
    store.CODE_EXPIRED: N_("error.result_expired"),
}


def too_big(tr: Catalog) -> str:
    return tr.gettext("reply.too_big", megabytes=MAX_DOWNLOAD_BYTES // BYTES_PER_MB)


def error_reply(tr: Catalog, code: str, *, max_pixels: int | None = None) -> str:
    """A friendly reply for an error code (the detector's or the queue's); an unknown code is "sorry"."""
    if code == ImageTooLargeError.code and max_pixels:
        return tr.gettext("error.image_too_large", megapixels=round(max_pixels / 1e6))
    if code == ImageTooLargeError.code:
        return tr.gettext("error.image_too_large_plain")
    return tr.gettext(_DETECTOR_ERRORS.get(code) or _QUEUE_ERRORS.get(code) or SOMETHING_WRONG)


def unknown_class(tr: Catalog, unknown: Iterable[str], known: Iterable[str]) -> str:
    """A class filter named classes the model does not have: which, and the ones it has (both already in
    the chat's language)."""
    return tr.gettext("error.unknown_class_list", unknown=", ".join(unknown), known=", ".join(sorted(known)))


def completion_error(tr: Catalog, code: str, details: dict[str, object], names: ClassNames) -> str:
    """The friendly sentence for a failed job (its code and particulars); the worker's own words never
    reach the person. Class names are said in ``tr``'s language."""
    unknown, known = details.get("unknown"), details.get("known")
    if code == UnknownClassError.code and isinstance(unknown, list) and isinstance(known, list):
        return unknown_class(tr, [names.display(None, str(n), tr.language) for n in unknown],
                             [names.display(None, str(n), tr.language) for n in known])
    return error_reply(tr, code or store.CODE_INTERNAL)


def no_such_class(tr: Catalog, name: str, suggestions: Iterable[str], names: ClassNames) -> str:
    """A filter named a class the model does not have (checked at intake): the closest one, if any."""
    shown = [names.display(None, s, tr.language) for s in suggestions]
    if shown:
        return tr.gettext(N_("error.no_such_class_suggest"), name=name, suggestion=shown[0])
    return tr.gettext(N_("error.no_such_class"), name=name)


def class_list(tr: Catalog, model_names: list[str], names: ClassNames) -> list[str]:
    """``/classes``: a header, then one class per line in the chat's language (the model's name beside a
    translation, so either can be written in a filter)."""
    lines = [tr.ngettext("reply.classes", "reply.classes.plural", len(model_names))]
    for name in model_names:
        shown = names.display(None, name, tr.language)
        lines.append(f"• {shown}" if shown == name else f"• {shown} ({name})")
    return lines


def rate_limited(tr: Catalog, limit: int, retry_in: float, scope: str) -> str:
    """``scope``: ``user`` (photos per person) or ``chat`` (photos per chat)."""
    if scope == "user":
        first = tr.ngettext("rate.user", "rate.user.plural", limit)
    else:
        first = tr.ngettext("rate.chat", "rate.chat.plural", limit)
    retry = tr.ngettext("rate.retry", "rate.retry.plural", max(1, round(retry_in)))
    return f"{first} {retry}"


def threshold_status(tr: Catalog, chat_value: float | None, default: float,
                     per_class: tuple[tuple[str, float], ...] = (), names: ClassNames | None = None) -> str:
    """The chat's default and where it comes from, then one line per class with its own threshold."""
    if chat_value is None:
        text = tr.gettext("threshold.status_default", default=format_confidence(default))
    else:
        text = tr.gettext("threshold.status_chat", value=format_confidence(chat_value),
                          default=format_confidence(default))
    if per_class:
        shown = names or ClassNames()
        lines = [f"• {shown.display(None, n, tr.language)} ≥ {format_confidence(v)}" for n, v in per_class]
        text += "\n" + tr.gettext("threshold.per_class") + "\n" + "\n".join(lines)
    return text


def class_threshold_set(tr: Catalog, name: str, value: float) -> str:
    return tr.gettext("threshold.class_set", name=name, value=format_confidence(value))


def threshold_set(tr: Catalog, value: float) -> str:
    return tr.gettext("threshold.set", value=format_confidence(value))


def threshold_reset(tr: Catalog, default: float) -> str:
    return tr.gettext("threshold.reset", default=format_confidence(default))


def auto_status(tr: Catalog, on: bool) -> str:
    return tr.gettext("auto.on") if on else tr.gettext("auto.off")


def language_name(tr: Catalog, language: str) -> str:
    return tr.gettext(LANGUAGE_NAMES.get(language, LANGUAGE_NAMES[ENGLISH]))


def language_status(tr: Catalog, chosen: str | None) -> str:
    """``/language`` with no argument; ``tr`` is the language in use, ``chosen`` the chat's own choice."""
    if chosen:
        return tr.gettext("language.status_chat", language=language_name(tr, chosen))
    return tr.gettext("language.status_auto", language=language_name(tr, tr.language))


def language_set(tr: Catalog) -> str:
    """The chat now speaks ``tr``'s language: said in that language."""
    return tr.gettext("language.set", language=language_name(tr, tr.language))


def language_reset(tr: Catalog) -> str:
    """Back to automatic; ``tr`` is the asker's own language, which the answer is in."""
    return tr.gettext("language.reset", language=language_name(tr, tr.language))


def queued(tr: Catalog, position: int | None) -> str:
    return tr.gettext("status.queued", position=position) if position else tr.gettext("status.working")


def album_photo(tr: Catalog, index: int) -> str:
    return tr.gettext("album.photo", index=index)


def album_item(tr: Catalog, index: int, text: str) -> str:
    return tr.gettext("album.item", index=index, text=text)


# -- the answer -----------------------------------------------------------------------------------------

def _name(names: ClassNames, tr: Catalog, box: Box) -> str:
    return names.display(box.class_id, box.class_name, tr.language)


def summary_line(tr: Catalog, det: Detection, names: ClassNames) -> str:
    """How many objects per class, at which threshold (the class names in the chat's language)."""
    confidence = format_confidence(det.confidence)
    only = ""
    if det.classes:
        shown = [names.display(None, c, tr.language) for c in det.classes]
        only = tr.gettext("answer.only", classes=", ".join(shown))
    if det.class_confidence:
        own = ", ".join(f"{names.display(None, n, tr.language)} ≥ {format_confidence(v)}"
                        for n, v in sorted(det.class_confidence.items()))
        only += tr.gettext("answer.per_class", thresholds=own)
    if not det.boxes:
        return tr.gettext("answer.nothing", confidence=confidence, only=only)
    counts: dict[str, int] = {}
    for box in det.boxes:
        counts[_name(names, tr, box)] = counts.get(_name(names, tr, box), 0) + 1
    parts = ", ".join(
        tr.gettext("answer.count", name=name, count=count)
        for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return tr.ngettext("answer.summary", "answer.summary.plural", len(det.boxes), confidence=confidence,
                       only=only, counts=parts)


def box_lines(tr: Catalog, det: Detection, names: ClassNames) -> list[str]:
    """``1. собака 0.87 [x1, y1, x2, y2]``, whole pixels; numbered as the labels on the image."""
    return [_box_line(tr, i, box, _name(names, tr, box)) for i, box in enumerate(det.boxes, 1)]


def _box_line(tr: Catalog, index: int, box: Box, name: str) -> str:
    confidence = format_confidence(box.confidence)
    coords = ", ".join(str(round(v)) for v in box.xyxy)
    return tr.gettext("answer.box", index=index, name=name, confidence=confidence, coords=coords)


def detection_lines(tr: Catalog, det: Detection, names: ClassNames) -> list[str]:
    """The answer's text: the summary line, then one line per box."""
    return [summary_line(tr, det, names), *box_lines(tr, det, names)]


# -- usage ----------------------------------------------------------------------------------------------

USAGE_DETECT = N_("usage.detect")
USAGE_THRESHOLD = N_("usage.threshold")
USAGE_AUTO = N_("usage.auto")
USAGE_LANGUAGE = N_("usage.language")
NOT_A_CONFIDENCE = N_("usage.not_a_confidence")
PERCENT_HINT = N_("usage.percent_hint")
CONFIDENCE_TOO_SMALL = N_("usage.confidence_too_small")
OUT_OF_RANGE = N_("usage.out_of_range")
ONE_CONFIDENCE = N_("usage.one_confidence")
NOT_A_CLASS = N_("usage.not_a_class")
# Plural: said with ngettext(TOO_MANY_CLASSES, TOO_MANY_CLASSES + ".plural", limit).
TOO_MANY_CLASSES = "usage.too_many_classes"


def too_many_classes(tr: Catalog, limit: int) -> str:
    return tr.ngettext("usage.too_many_classes", "usage.too_many_classes.plural", limit)


def usage(tr: Catalog, problem: str | None, how: str | None, **params: object) -> str:
    """A refusal of what someone wrote: what is wrong (``problem``), then how to write it (``how``)."""
    return "\n".join(tr.gettext(key, **params) for key in (problem, how) if key)
