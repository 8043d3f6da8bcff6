"""Understanding what a person wrote: captions, /detect, /threshold, /auto and /language arguments.

Pure functions; every refusal is a :class:`UsageError` that names what is wrong and how to write it as
message ids, so the reply is said in the chat's language (:meth:`UsageError.text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot import replies
from bot.i18n import AUTO, ENGLISH, Catalog, catalog, supported
from detector.errors import DetectorError, InvalidConfidenceError
from detector.params import CONFIDENCE_DECIMALS, MAX_CLASSES, DetectParams, check_confidence

# Confidences are kept to CONFIDENCE_DECIMALS decimals: anything below half of this would become 0.
SMALLEST_CONFIDENCE = 10.0**-CONFIDENCE_DECIMALS

# `0.4`, `.4`, `0,4`, `40%`, `conf=0.4`, `confidence:40%`: one confidence token. ASCII digits only: `\\d`
# alone also matches other scripts' digits, and `str.isdigit` superscripts like "²" that int() refuses.
_CONF_TOKEN = re.compile(r"^(?:conf(?:idence)?[=:])?([-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+))(%?)$",
                         re.IGNORECASE | re.ASCII)
# Something that was meant as a confidence but is not one (`conf=abc`, `0.4.5`, `-`): refused, not ignored.
_CONF_LIKE = re.compile(r"^(?:conf(?:idence)?[=:].*|[-+]?[\d.,]+%?)$", re.IGNORECASE | re.ASCII)
# A whole number among other words ("my 2 cats", "party 2024") is a count or a year, not a confidence.
_COUNT = re.compile(r"^0*[1-9]\d*$", re.ASCII)
_COMMAND = re.compile(r"^/(\w+)(?:@(\w+))?(?=\s|$)", re.IGNORECASE)
_CLASS_NAME = re.compile(r"^\w[\w\-]*$")
# A model's name as written after /model (a Telegram command's characters).
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")

# Words that mean "back to the default" in /threshold and /language, in both languages.
RESET_WORDS = ("reset", "default", "clear", AUTO, "сброс", "сбросить", "авто")
ON_WORDS = ("on", "yes", "true", "1", "enable", "вкл", "да")
OFF_WORDS = ("off", "no", "false", "0", "disable", "выкл", "нет")


class UsageError(ValueError):
    """Arguments a person wrote that cannot be used: ``problem`` (what is wrong) and ``how`` (the usage
    lines), both message ids, with the placeholders' values. ``count``: ``problem`` has plural forms.

    ``str()`` is the English text, for logs and tests; replies use :meth:`text` in the chat's language.
    """

    def __init__(self, problem: str | None, how: str | None = None, count: int | None = None,
                 **params: object) -> None:
        super().__init__(problem or how)
        self.problem, self.how, self.count, self.params = problem, how, count, params

    def text(self, tr: Catalog) -> str:
        if self.count is not None and self.problem:
            plural = self.problem + ".plural"  # the catalogs' convention for a plural message's second id
            first = tr.ngettext(self.problem, plural, self.count, **self.params)
            return "\n".join([first, *([tr.gettext(self.how)] if self.how else [])])
        return replies.usage(tr, self.problem, self.how, **self.params)

    def with_usage(self, how: str) -> UsageError:
        """The same problem, followed by another command's usage lines."""
        return UsageError(self.problem, how, self.count, **self.params)

    def __str__(self) -> str:
        return self.text(catalog(ENGLISH))


@dataclass(frozen=True)
class Caption:
    """A photo caption, read for group triggers and arguments."""

    command: bool = False
    # Which command started it (``detect``, or a model's: ``segment``, ``pose``, a model's own name).
    name: str = ""
    mentioned: bool = False
    other_bot: bool = False
    args: DetectParams = field(default_factory=DetectParams)


def parse_confidence(token: str) -> float:
    """One confidence token to a float in (0, 1]; raises UsageError with a hint."""
    m = _CONF_TOKEN.match(token.strip())
    if not m:
        raise UsageError(replies.NOT_A_CONFIDENCE, replies.USAGE_DETECT, token=token)
    value = float(m.group(1).replace(",", "."))
    if m.group(2):
        value /= 100
    if 0 < value < SMALLEST_CONFIDENCE / 2:  # would round to 0: say so, never a silent default
        raise UsageError(replies.CONFIDENCE_TOO_SMALL, token=token, smallest=f"{SMALLEST_CONFIDENCE:g}")
    if not m.group(2) and 1 < value <= 100:
        raise UsageError(replies.PERCENT_HINT, value=f"{value:g}")
    try:
        return check_confidence(value)
    except InvalidConfidenceError:
        raise UsageError(replies.OUT_OF_RANGE, token=token) from None


def looks_like_confidence(token: str) -> bool:
    return bool(_CONF_LIKE.match(token))


def parse_detect_args(text: str) -> DetectParams:
    """``/detect`` arguments, in any order: at most one confidence (every class), class names (only these,
    comma- or space-separated; words of a multi-word name are put together later against the model's
    names) and per-class thresholds ``person:0.6`` (``cell_phone:0.5``)."""
    confidence: float | None = None
    names: list[str] = []
    per_class: list[tuple[str, float]] = []
    for token in text.split():
        if looks_like_confidence(token):
            if confidence is not None:
                raise UsageError(replies.ONE_CONFIDENCE, replies.USAGE_DETECT)
            confidence = parse_confidence(token)
            continue
        for part in filter(None, (p.strip().lower() for p in token.split(","))):
            name, colon, value = part.rpartition(":")
            if colon:
                per_class.append((_class_name(name), parse_confidence(value)))
            else:
                names.append(_class_name(part))
    if len(set(names)) > MAX_CLASSES or len({n for n, _ in per_class}) > MAX_CLASSES:
        raise UsageError(replies.TOO_MANY_CLASSES, count=MAX_CLASSES)
    try:
        return DetectParams(confidence, names or None, tuple(per_class))
    except DetectorError:
        # The only check left there is a name's length: a paste accident, not a class.
        longest = max([*names, *(n for n, _ in per_class)], key=len)
        raise UsageError(replies.NOT_A_CLASS, replies.USAGE_DETECT, name=longest[:20]) from None


def _class_name(name: str) -> str:
    if not _CLASS_NAME.match(name):
        raise UsageError(replies.NOT_A_CLASS, replies.USAGE_DETECT, name=name)
    return name


def _strip_mentions(text: str, username: str) -> tuple[str, bool]:
    if not username:
        return text, False
    pattern = re.compile(rf"@{re.escape(username)}\b", re.IGNORECASE)
    stripped, count = pattern.subn(" ", text)
    return stripped, count > 0


def mentions(text: str | None, username: str) -> bool:
    """True if ``text`` mentions ``@username`` (whole name, any case)."""
    return _strip_mentions(text or "", username)[1]


def split_command(text: str, username: str) -> tuple[str | None, str, bool]:
    """``/cmd@bot args`` -> (command, args, for another bot). No command: (None, text, False)."""
    m = _COMMAND.match(text.strip())
    if not m:
        return None, text.strip(), False
    target = m.group(2)
    other = bool(target) and target.lower() != username.lower()
    return m.group(1).lower(), text.strip()[m.end():].strip(), other


# The commands that ask for an answer to a photo when nothing else is configured.
DETECT_COMMANDS = frozenset({"detect"})


def parse_caption(caption: str | None, username: str, commands: frozenset[str] = DETECT_COMMANDS) -> Caption:
    """A photo's caption: a /detect command (or another of ``commands``: a model's, ``/segment``), a mention
    of the bot, a bare confidence, or free text.

    Free words are allowed (``my cat 0.4``) but a token meant as a confidence must be a valid one.
    """
    text = (caption or "").strip()
    command, rest, other = split_command(text, username)
    if command is not None and command in commands:
        if other:
            return Caption(other_bot=True)
        rest, mentioned = _strip_mentions(rest, username)
        return Caption(command=True, name=command, mentioned=mentioned, args=parse_detect_args(rest))
    rest, mentioned = _strip_mentions(text, username)
    confidence: float | None = None
    tokens = rest.split()
    for token in tokens:
        if len(tokens) > 1 and _COUNT.match(token):
            continue  # free text; a caption of only "2" is still read as a (mistyped) confidence
        if looks_like_confidence(token):
            if confidence is not None:
                raise UsageError(replies.ONE_CONFIDENCE, replies.USAGE_DETECT)
            confidence = parse_confidence(token)
    return Caption(mentioned=mentioned, args=DetectParams(confidence))


def parse_threshold(args: list[str]) -> float | str | tuple[str, float] | None:
    """``/threshold`` arguments: None (show), ``"reset"`` (the chat's default and every per-class value),
    a confidence (the chat's default), or a class and its confidence (``person 0.6``, ``cell phone 0.5``)."""
    if not args:
        return None
    if len(args) == 1 and args[0].lower() in RESET_WORDS:
        return "reset"
    try:
        if len(args) == 1:
            return parse_confidence(args[0])
        if looks_like_confidence(args[-1]):
            return " ".join(_class_name(a.lower()) for a in args[:-1]), parse_confidence(args[-1])
    except UsageError as exc:
        raise exc.with_usage(replies.USAGE_THRESHOLD) from None
    raise UsageError(None, replies.USAGE_THRESHOLD)


def parse_auto(args: list[str]) -> bool | None:
    """``/auto`` arguments: None (show), True or False."""
    if not args:
        return None
    if len(args) == 1 and args[0].lower() in ON_WORDS:
        return True
    if len(args) == 1 and args[0].lower() in OFF_WORDS:
        return False
    raise UsageError(None, replies.USAGE_AUTO)


def parse_model(args: list[str]) -> str | None:
    """``/model`` arguments: None (show), ``"reset"`` (the default model again), or a model's name (checked
    against the deployment's by the command)."""
    if not args:
        return None
    if len(args) == 1 and args[0].lower() in RESET_WORDS:
        return "reset"
    if len(args) == 1 and _COMMAND_NAME.fullmatch(args[0].lower().lstrip("/")):
        return args[0].lower().lstrip("/")
    raise UsageError(None, replies.USAGE_MODEL)


def parse_language(args: list[str]) -> str | None:
    """``/language`` arguments: None (show), ``"reset"`` (automatic again), or a language code."""
    if not args:
        return None
    if len(args) == 1 and args[0].lower() in RESET_WORDS:
        return "reset"
    language = supported(args[0]) if len(args) == 1 else None
    if language is None:
        raise UsageError(None, replies.USAGE_LANGUAGE)
    return language
