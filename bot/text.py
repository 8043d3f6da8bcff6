"""Telegram's length limits, counted the way Telegram counts them (UTF-16 code units).

Nothing is ever cut: what does not fit a caption follows in messages, split on line boundaries.
"""

from __future__ import annotations

# Telegram's limit on a photo caption, in UTF-16 code units.
CAPTION_LIMIT = 1024
# Telegram's limit on one text message, in UTF-16 code units.
MESSAGE_LIMIT = 4096


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _hard_split(line: str, limit: int) -> list[str]:
    """A single line longer than ``limit``: cut between characters, never inside a surrogate pair."""
    parts: list[str] = []
    current = ""
    for ch in line:
        if utf16_len(current) + utf16_len(ch) > limit:
            parts.append(current)
            current = ""
        current += ch
    if current:
        parts.append(current)
    return parts


def pack_lines(lines: list[str], limit: int) -> list[str]:
    """Join lines into as few chunks as possible, each at most ``limit`` UTF-16 units."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        pieces = _hard_split(line, limit) if utf16_len(line) > limit else [line]
        for piece in pieces:
            extra = utf16_len(piece) + (1 if current else 0)
            if current and size + extra > limit:
                chunks.append("\n".join(current))
                current, size = [], 0
                extra = utf16_len(piece)
            current.append(piece)
            size += extra
    if current:
        chunks.append("\n".join(current))
    return chunks


def split_caption(lines: list[str], caption_limit: int = CAPTION_LIMIT, message_limit: int = MESSAGE_LIMIT,
                  ) -> tuple[str, list[str]]:
    """The caption (whole lines that fit) and the follow-up messages holding every remaining line."""
    caption_lines: list[str] = []
    size = 0
    rest = list(lines)
    while rest:
        extra = utf16_len(rest[0]) + (1 if caption_lines else 0)
        if size + extra > caption_limit:
            break
        caption_lines.append(rest.pop(0))
        size += extra
    if not caption_lines and rest:
        # Even the first line is too long for a caption: its head goes there, the tail follows.
        head, *tail = _hard_split(rest.pop(0), caption_limit)
        caption_lines = [head]
        rest = ["".join(tail), *rest] if tail else rest
    return "\n".join(caption_lines), pack_lines(rest, message_limit)

