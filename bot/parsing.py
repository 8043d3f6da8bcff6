"""Understanding what a person wrote: captions, /detect, /threshold and /auto arguments.

Pure functions; every refusal is a :class:`UsageError` whose message is shown to the person as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot import replies
from detector.errors import DetectorError, InvalidConfidenceError
from detector.params import CONFIDENCE_DECIMALS, DetectParams, check_confidence

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

DETECT_USAGE = (
    "Send a photo, optionally with a confidence in the caption: 0.4, 40% or conf=0.4.\n"
    "Or: /detect 0.4, or /detect person,dog 0.3 to keep only some classes.\n"
    "The confidence must be above 0 and at most 1 (or 1%–100%)."
)
THRESHOLD_USAGE = (
    "Usage: /threshold shows this chat's default confidence; /threshold 0.35 (or 35%) sets it; "
    "/threshold reset goes back to the global default."
)
AUTO_USAGE = "Usage: /auto shows the setting; /auto on answers every photo in this group; /auto off only when asked."


class UsageError(ValueError):
    """Arguments a person wrote that cannot be used; ``str()`` is the reply."""


@dataclass(frozen=True)
class Caption:
    """A photo caption, read for group triggers and arguments."""

    command: bool = False
    mentioned: bool = False
    other_bot: bool = False
    args: DetectParams = field(default_factory=DetectParams)


def parse_confidence(token: str) -> float:
    """One confidence token to a float in (0, 1]; raises UsageError with a hint."""
    m = _CONF_TOKEN.match(token.strip())
    if not m:
        raise UsageError(f"'{token}' is not a confidence.\n{DETECT_USAGE}")
    value = float(m.group(1).replace(",", "."))
    if m.group(2):
        value /= 100
    if 0 < value < SMALLEST_CONFIDENCE / 2:  # would round to 0: say so, never a silent default
        raise UsageError(replies.confidence_too_small(token, SMALLEST_CONFIDENCE))
    if not m.group(2) and 1 < value <= 100:
        raise UsageError(f"The confidence must be between 0 and 1: did you mean {value:g}%?")
    try:
        return check_confidence(value)
    except InvalidConfidenceError:
        raise UsageError(f"The confidence must be above 0 and at most 1, not {token}.") from None


def looks_like_confidence(token: str) -> bool:
    return bool(_CONF_LIKE.match(token))


def parse_detect_args(text: str) -> DetectParams:
    """``/detect`` arguments: at most one confidence and a comma-separated class filter, in any order."""
    confidence: float | None = None
    names: list[str] = []
    for token in text.split():
        if looks_like_confidence(token):
            if confidence is not None:
                raise UsageError(f"Give one confidence, not several.\n{DETECT_USAGE}")
            confidence = parse_confidence(token)
        else:
            names.extend(n.strip().lower() for n in token.split(","))
    classes: list[str] = []
    for name in names:
        if not name:
            continue
        if not _CLASS_NAME.match(name):
            raise UsageError(f"'{name}' is not a class name.\n{DETECT_USAGE}")
        classes.append(name)
    try:
        return DetectParams(confidence, classes or None)
    except DetectorError as exc:
        raise UsageError(str(exc)) from None


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


def parse_caption(caption: str | None, username: str) -> Caption:
    """A photo's caption: a /detect command, a mention of the bot, a bare confidence, or free text.

    Free words are allowed (``my cat 0.4``) but a token meant as a confidence must be a valid one.
    """
    text = (caption or "").strip()
    command, rest, other = split_command(text, username)
    if command == "detect":
        if other:
            return Caption(other_bot=True)
        rest, mentioned = _strip_mentions(rest, username)
        return Caption(command=True, mentioned=mentioned, args=parse_detect_args(rest))
    rest, mentioned = _strip_mentions(text, username)
    confidence: float | None = None
    tokens = rest.split()
    for token in tokens:
        if len(tokens) > 1 and _COUNT.match(token):
            continue  # free text; a caption of only "2" is still read as a (mistyped) confidence
        if looks_like_confidence(token):
            if confidence is not None:
                raise UsageError(f"Give one confidence, not several.\n{DETECT_USAGE}")
            confidence = parse_confidence(token)
    return Caption(mentioned=mentioned, args=DetectParams(confidence))


def parse_threshold(args: list[str]) -> float | str | None:
    """``/threshold`` arguments: None (show), ``"reset"``, or a confidence."""
    if not args:
        return None
    if len(args) == 1 and args[0].lower() in ("reset", "default", "clear"):
        return "reset"
    if len(args) == 1:
        try:
            return parse_confidence(args[0])
        except UsageError as exc:
            first_line = str(exc).split("\n", 1)[0]
            raise UsageError(f"{first_line}\n{THRESHOLD_USAGE}") from None
    raise UsageError(THRESHOLD_USAGE)


def parse_auto(args: list[str]) -> bool | None:
    """``/auto`` arguments: None (show), True or False."""
    if not args:
        return None
    if len(args) == 1 and args[0].lower() in ("on", "yes", "true", "1", "enable"):
        return True
    if len(args) == 1 and args[0].lower() in ("off", "no", "false", "0", "disable"):
        return False
    raise UsageError(AUTO_USAGE)
