"""Every sentence the bot says, in one place; error codes from the queue map to friendly replies here."""

from __future__ import annotations

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
from detector.render import format_confidence
from jobs import store

# Telegram's Bot API refuses to hand out files larger than this (getFile); checked before asking.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
# A worker's message is shown only for detector errors, and never longer than this.
MAX_DETAIL_CHARS = 300

HELP = (
    "I find objects in photos and draw boxes around them.\n\n"
    "• Send a photo (or an image file). Add a confidence in the caption to change the threshold: "
    "0.4, 40% or conf=0.4.\n"
    "• /detect person,dog 0.3 as a caption (or as a reply to a photo) keeps only some classes.\n"
    "• /threshold shows this chat's default confidence, /threshold 0.35 sets it, /threshold reset clears it.\n"
    "• In groups I answer when asked: a caption starting with /detect, a caption mentioning me, "
    "/detect as a reply to a photo, or a photo sent as a reply to me. Admins can turn /auto on."
)
COMMANDS = [
    ("detect", "Find objects: as a photo caption or a reply to a photo, e.g. /detect 0.4"),
    ("threshold", "Show or set this chat's confidence threshold"),
    ("auto", "Groups: answer every photo (on) or only when asked (off)"),
    ("help", "What this bot does and how to use it"),
]

SEND_A_PHOTO = "Please send a photo or an image file (JPEG, PNG, WebP…); I can't look at stickers, GIFs or videos."
SEND_A_PHOTO_HINT = "Send me a photo and I'll find the objects in it. /help tells you more."
NOT_AN_IMAGE_FILE = "That file is not an image. Please send a photo or an image file (JPEG, PNG, WebP…)."
TOO_BIG = "That file is too big: I can download files up to 20 MB. Please send it as a photo or a smaller file."
DETECT_NEEDS_PHOTO = "Reply with /detect to a photo, or send a photo with /detect in its caption."
UNAVAILABLE = "The service is temporarily unavailable. Please try again in a few minutes."
BUSY = "I'm busy right now, please try again in a minute."
DOWNLOAD_FAILED = "I couldn't download your photo from Telegram. Please send it again."
NOT_ALLOWED = "Sorry, this is a private bot."
ADMINS_ONLY = "Sorry, only this group's admins can change that."
SOMETHING_WRONG = "Sorry, something went wrong on my side. Please try again."
AUTO_PRIVATE = "In private chats I answer every photo."
TOO_COMPLEX_IMAGE = (
    "This image file is built in a way I won't read (it would take far too long). "
    "Please send a normal photo, or save it again as JPEG or PNG."
)

_DETECTOR_DEFAULTS = {
    EmptyImageError.code: "The file is empty.",
    NotAnImageError.code: "This is not an image I can read (JPEG, PNG, WebP, BMP, TIFF or GIF).",
    UnsupportedFormatError.code: "This image format is not supported; send a JPEG, PNG, WebP, BMP, TIFF or GIF.",
    CorruptImageError.code: "The image is damaged or truncated and cannot be read.",
    ImageTooLargeError.code: "The image is too large. Please send a smaller one.",
    UnknownClassError.code: "I don't know that class.",
    InvalidConfidenceError.code: "The confidence must be above 0 and at most 1.",
    "bad_image": "I couldn't read that image.",
}
# Codes whose reply is always the bot's own sentence, never the worker's words.
_OWN_WORDS = {TooComplexImageError.code: TOO_COMPLEX_IMAGE}
_QUEUE_ERRORS = {
    store.CODE_TIMEOUT: "Detection took too long and was stopped. Please try again, perhaps with a smaller image.",
    store.CODE_RETRIES_EXHAUSTED: "Sorry, detection failed on this image several times. Please try another image.",
    store.CODE_IMAGE_EXPIRED: "Sorry, your photo waited too long in the queue and expired. Please send it again.",
    store.CODE_INTERNAL: SOMETHING_WRONG,
    store.CODE_EXPIRED: "Sorry, the result for your photo expired before I could send it. Please send it again.",
}


def error_reply(code: str, message: str = "") -> str:
    """A friendly reply for an error completion; the worker's own words only for detector errors."""
    if code in _OWN_WORDS:
        return _OWN_WORDS[code]
    if code in _DETECTOR_DEFAULTS:
        detail = message.strip().splitlines()[0][:MAX_DETAIL_CHARS] if message.strip() else ""
        return detail or _DETECTOR_DEFAULTS[code]
    return _QUEUE_ERRORS.get(code, SOMETHING_WRONG)


def rate_limited(limit: int, retry_in: float, per: str) -> str:
    return f"Slow down a little: {limit} photos per minute {per}. Try again in {max(1, round(retry_in))} s."


def confidence_too_small(token: str, smallest: float) -> str:
    return f"{token} is too small a confidence: the smallest I use is {smallest:g}."


def threshold_status(chat_value: float | None, default: float) -> str:
    if chat_value is None:
        return (
            f"Confidence threshold here: {format_confidence(default)} (the global default). "
            "Set one for this chat with /threshold 0.35."
        )
    return (
        f"Confidence threshold here: {format_confidence(chat_value)} (set for this chat; "
        f"the global default is {format_confidence(default)}). /threshold reset goes back to the default."
    )


def threshold_set(value: float) -> str:
    return f"Done: photos in this chat now use confidence ≥ {format_confidence(value)} unless a caption says otherwise."


def threshold_reset(default: float) -> str:
    return f"Done: this chat uses the global default again ({format_confidence(default)})."


def auto_status(on: bool) -> str:
    if on:
        return "Auto is on: I answer every photo in this group. /auto off: only when asked."
    return "Auto is off: I answer photos when asked (/detect, a mention, or a reply to me). /auto on: every photo."


def queued(position: int | None) -> str:
    return f"⏳ Queued, position {position}…" if position else "⏳ Working on it…"


def album_item_failed(index: int, reply: str) -> str:
    return f"Photo {index}: {reply}"
