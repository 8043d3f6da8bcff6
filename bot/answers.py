"""Adjustable answers: what the buttons under an answer need, kept in Redis, never in the bot's memory.

One hash per answer (``jobs.keys.answer``), written when the answer is sent and gone after its TTL
(``DETBOT_ANSWER_TTL``): where the answer is (chat, messages), who asked, and per photo its clean image's
Telegram ``file_id`` and every box the worker kept down to the floor; plus the view the buttons set now
(confidence, class filter). So a press works after a bot restart, and the clean photo is fetched again
from Telegram rather than kept in Redis (a few KB per answer instead of the photo's hundreds). Besides, what
the crops and JSON buttons sent last (``sent:<action>``: the view and when), so a burst of presses sends
one set, whichever bot process takes each press; and the ids of the latest presses, so a press handled again
(its bot replica stopped half-way, another took its updates over) changes or sends nothing twice.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from detector.params import DetectParams, class_key
from detector.render import rows_to_boxes, select
from detector.result import Box, Detection
from jobs import keys

# Presses remembered per answer, so one handled again (its bot replica stopped half-way and another took it
# over) changes nothing twice: far more than anyone presses within a take-over's seconds.
PRESSES_KEPT = 32
# What a press's one step in Redis (:data:`_PRESS`) found.
SEND_GONE, SEND_FRESH, SEND_REPLAYED, SEND_RECENT = 0, 1, 2, 3
# Hash field prefix of what an action sent last: ``<view JSON>|<unix time>``.
SENT_FIELD = "sent:"
# Bytes of randomness in an answer's id: 8 bytes are 11 URL-safe characters, so ``a:<id>:<action>`` stays
# far below Telegram's 64-byte callback_data, and nobody guesses another chat's answer id.
ID_BYTES = 8


def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def params_of(det: Detection) -> DetectParams:
    """The parameters an answer was drawn with, read back from its detection."""
    return DetectParams(det.confidence, det.classes, tuple(det.class_confidence.items()))


@dataclass
class Photo:
    """One photo of an answer: its clean image on Telegram, its message, the boxes down to the floor."""

    file_id: str
    message_id: int
    # The detection as the worker stored it (size, model, timings), boxes left out: ``candidates`` hold them.
    base: dict[str, Any]
    candidates: list[list[Any]]
    index: int = 0  # place in an album (1-based); 0 for a single photo

    def detection(self) -> Detection:
        return Detection.from_dict({**self.base, "boxes": []})

    def boxes(self) -> tuple[Box, ...]:
        return rows_to_boxes(self.candidates)

    def shown(self, view: DetectParams) -> Detection:
        """What ``view`` shows of this photo, as a first answer at ``view`` would have shown it."""
        classes = None
        if view.classes is not None:
            by_key = {class_key(b.class_name): b.class_name for b in self.boxes()}
            classes = tuple(by_key.get(c, c) for c in view.classes)
        return select(self.boxes(), self.detection(), view, classes)


@dataclass
class Answer:
    """Everything a press needs, and the current view."""

    chat_id: int
    thread: int | None
    reply_to: int  # the person's message the answer replies to
    asker: int | None
    private: bool
    language: str
    floor: float
    start: dict[str, Any]  # DetectParams.to_dict() of the first answer
    top: list[str]  # up to 3 most frequent classes found: the "only <class>" buttons
    photos: list[Photo]
    # The message carrying the keyboard: the photo, or an album's (first) summary message.
    keyboard_message: int = 0
    texts: list[int] = field(default_factory=list)  # follow-up text messages, in order
    view: dict[str, Any] = field(default_factory=dict)  # current parameters; {} = the start

    @property
    def album(self) -> bool:
        return any(p.index for p in self.photos)

    def start_params(self) -> DetectParams:
        return DetectParams.from_dict(self.start)

    def view_params(self) -> DetectParams:
        return DetectParams.from_dict(self.view) if self.view else self.start_params()


class AnswerBook:
    """Read and write one bot's answers in Redis (``redis.asyncio``: a press never holds a thread)."""

    def __init__(self, redis: Redis, ttl: int, bot_id: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self.bot_id = bot_id  # names the keys: another bot on the same Redis never reads this bot's answers

    def _key(self, answer_id: str) -> str:
        return keys.answer(self.bot_id, answer_id)

    async def save(self, answer_id: str, answer: Answer) -> None:
        fixed = asdict(answer)
        view, texts = fixed.pop("view"), fixed.pop("texts")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._key(answer_id), mapping={
            "answer": json.dumps(fixed, separators=(",", ":")), "view": json.dumps(view), "texts": json.dumps(texts),
        })
        pipe.expire(self._key(answer_id), self.ttl)
        await pipe.execute()

    async def load(self, answer_id: str) -> Answer | None:
        """The answer, or None once it expired (or never was)."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(self._key(answer_id))  # type: ignore[assignment]
        if not raw.get(b"answer"):
            return None
        data = json.loads(raw[b"answer"])
        data["photos"] = [Photo(**p) for p in data["photos"]]
        return Answer(**data, view=json.loads(raw.get(b"view") or b"{}"), texts=json.loads(raw.get(b"texts") or b"[]"))

    async def set_view(self, answer_id: str, view: DetectParams, press: str = "") -> bool:
        """The view a press set; ``press`` (the callback query's id) makes it happen once: False when that
        press was applied already (handled again after its bot replica stopped half-way) or the answer expired."""
        return await self._press(answer_id, press, view=json.dumps(view.to_dict())) == SEND_FRESH

    async def pressed(self, answer_id: str, press: str) -> bool:
        """Whether the press ``press`` was applied to the answer already (it is handled again)."""
        raw = await self.redis.hget(self._key(answer_id), "presses")
        return bool(press) and press in json.loads(raw or b"[]")

    async def claim_send(self, answer_id: str, press: str, action: str, view: DetectParams, repeat: float) -> int:
        """Whether ``action`` (crops, JSON) of ``view`` goes out for this press, noted in the same step:
        SEND_FRESH (it does: now noted as sent), SEND_RECENT (the same view went out less than ``repeat``
        seconds ago: one set per burst of presses, whichever bot process takes each), SEND_REPLAYED (this very
        press was carried out before) or SEND_GONE (the answer expired)."""
        return await self._press(answer_id, press, sent=f"{SENT_FIELD}{action}",
                                 value=json.dumps(view.to_dict(), sort_keys=True), repeat=repeat)

    async def unmark_sent(self, answer_id: str, action: str) -> None:
        """The send failed (or was refused by a limit): a press may ask for it again at once."""
        await self.redis.hdel(self._key(answer_id), f"{SENT_FIELD}{action}")

    async def _press(self, answer_id: str, press: str, *, view: str = "", sent: str = "", value: str = "",
                     repeat: float = 0.0) -> int:
        return int(await self.redis.eval(_PRESS, 1, self._key(answer_id), press, PRESSES_KEPT, view, sent, value,
                                         time.time(), repeat))

    async def set_texts(self, answer_id: str, texts: list[int]) -> None:
        await self._update(answer_id, "texts", json.dumps(texts))

    async def _update(self, answer_id: str, name: str, value: str) -> None:
        """Only while the answer exists: an expired one is never brought back half-written (without a TTL)."""
        await self.redis.eval(_UPDATE, 1, self._key(answer_id), name, value)


# One press, applied once, in one step. KEYS[1]: the answer; ARGV: the press's id ('' none), how many press
# ids to keep, the new view ('' none), the sent field of a crops/JSON press ('' none), the view JSON it
# sends, now, the repeat window. Returns SEND_GONE for an expired answer, SEND_REPLAYED for a press id seen
# before (nothing changes), SEND_RECENT when the same view's set went out within the window (the press is
# noted, nothing else), else SEND_FRESH with the view or the sent mark written.
_PRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seen = {}
if ARGV[1] ~= '' then
  seen = cjson.decode(redis.call('HGET', KEYS[1], 'presses') or '[]')
  for _, id in ipairs(seen) do if id == ARGV[1] then return 2 end end
  table.insert(seen, ARGV[1])
  while #seen > tonumber(ARGV[2]) do table.remove(seen, 1) end
  redis.call('HSET', KEYS[1], 'presses', cjson.encode(seen))
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'view', ARGV[3]) end
if ARGV[4] ~= '' then
  local last = redis.call('HGET', KEYS[1], ARGV[4])
  if last then
    local view, at = string.match(last, '^(.*)|([^|]*)$')
    if view == ARGV[5] and tonumber(ARGV[6]) - tonumber(at) < tonumber(ARGV[7]) then return 3 end
  end
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[5] .. '|' .. ARGV[6])
end
return 1
"""

_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""
