"""Adjustable answers: what the buttons under an answer need, kept in Redis, never in the bot's memory.

One hash per answer (``jobs.keys.answer``), written when the answer is sent and gone after its TTL
(``DETBOT_ANSWER_TTL``): where the answer is (chat, messages), who asked, and per photo its clean image's
Telegram ``file_id`` and every box the worker kept down to the floor; plus the view the buttons set now
(confidence, class filter). So a press works after a bot restart, and the clean photo is fetched again
from Telegram rather than kept in Redis (a few KB per answer instead of the photo's hundreds).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis

from detector.params import DetectParams, class_key
from detector.render import rows_to_boxes, select
from detector.result import Box, Detection
from jobs import keys

# Presses remembered per answer, so one handled again (its bot replica stopped half-way and another took it
# over) changes nothing twice: far more than anyone presses within a take-over's seconds.
PRESSES_KEPT = 32
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
    """Read and write answers in Redis (blocking calls: the bot runs them in a thread)."""

    def __init__(self, redis: Redis, ttl: int, bot_id: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self.bot_id = bot_id  # names the keys: another bot on the same Redis never reads this bot's answers

    def save(self, answer_id: str, answer: Answer) -> None:
        fixed = asdict(answer)
        view, texts = fixed.pop("view"), fixed.pop("texts")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.answer(self.bot_id, answer_id), mapping={
            "answer": json.dumps(fixed, separators=(",", ":")), "view": json.dumps(view), "texts": json.dumps(texts),
        })
        pipe.expire(keys.answer(self.bot_id, answer_id), self.ttl)
        pipe.execute()

    def load(self, answer_id: str) -> Answer | None:
        """The answer, or None once it expired (or never was)."""
        raw: dict[bytes, bytes] = self.redis.hgetall(keys.answer(self.bot_id, answer_id))  # type: ignore[assignment]
        if not raw.get(b"answer"):
            return None
        data = json.loads(raw[b"answer"])
        data["photos"] = [Photo(**p) for p in data["photos"]]
        return Answer(**data, view=json.loads(raw.get(b"view") or b"{}"), texts=json.loads(raw.get(b"texts") or b"[]"))

    def set_view(self, answer_id: str, view: DetectParams, press: str = "") -> bool:
        """The view a press set; ``press`` (the callback query's id) makes it happen once: False when that
        press was applied already (or the answer expired)."""
        return self._press(answer_id, press, json.dumps(view.to_dict()))

    def claim_press(self, answer_id: str, press: str) -> bool:
        """A press that sends something (crops, JSON) is carried out once: False if it was claimed before."""
        return self._press(answer_id, press, "")

    def _press(self, answer_id: str, press: str, view: str) -> bool:
        return bool(self.redis.eval(_PRESS, 1, keys.answer(self.bot_id, answer_id), view, press, PRESSES_KEPT))

    def set_texts(self, answer_id: str, texts: list[int]) -> None:
        self._update(answer_id, "texts", json.dumps(texts))

    def _update(self, answer_id: str, name: str, value: str) -> None:
        """Only while the answer exists: an expired one is never brought back half-written (without a TTL)."""
        self.redis.eval(_UPDATE, 1, keys.answer(self.bot_id, answer_id), name, value)


# KEYS[1]: the answer; ARGV: the new view ('' none), the press's id ('' none), how many press ids to keep.
_PRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  local seen = cjson.decode(redis.call('HGET', KEYS[1], 'presses') or '[]')
  for _, id in ipairs(seen) do if id == ARGV[2] then return 0 end end
  table.insert(seen, ARGV[2])
  while #seen > tonumber(ARGV[3]) do table.remove(seen, 1) end
  redis.call('HSET', KEYS[1], 'presses', cjson.encode(seen))
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'view', ARGV[1]) end
return 1
"""

_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""
