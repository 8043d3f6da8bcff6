"""Who may press a button under an answer, where, and how often: checked before a press costs anything.

- **Bound to its answer:** a press acts only on the answer whose keyboard it came from: the callback's chat
  and message must be the stored answer's (a forged ``callback_data`` naming another chat's answer does
  nothing there, and nothing is sent anywhere).
- **How often:** per person, in the bot's memory (like the photos' rate limits, :mod:`bot.limits`): at most
  ``PRESS_LIMIT`` presses per ``PRESS_WINDOW``, and of those at most ``SEND_LIMIT`` per ``SEND_WINDOW`` that
  post new messages (crops, JSON). Over it, the press gets a short notice on the button itself
  (``answerCallbackQuery``): no message in the chat, one log line per person per window.
- **Who:** in a private chat the person; in a group the person who asked and the group's admins. Whether
  someone is an admin is asked once (``getChatMember``) and believed for ``ADMIN_TTL``.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from telegram import Bot, CallbackQuery
from telegram.constants import ChatMemberStatus
from telegram.error import TelegramError

from bot.answers import Answer
from bot.limits import Notices, RateLimiter, take_all
from bot.telegram_io import describe

log = logging.getLogger(__name__)

# Presses one person may make within PRESS_WINDOW seconds: walking "−" down every step is 7 presses in a few
# seconds; a script makes hundreds, each a Redis round trip and possibly a re-drawing.
PRESS_LIMIT = 20
PRESS_WINDOW = 10.0
# Crops and JSON post new messages in the chat (a crops set counts as up to 10 against the chat's budget and
# the bot's 30 a second): fewer of those per person.
SEND_LIMIT = 6
SEND_WINDOW = 60.0
# A person's admin status in a group is believed this long: a stranger's repeated presses cost one
# getChatMember, and a demoted admin may press at most this long after the change.
ADMIN_TTL = 60.0
# (group, person) pairs remembered; the oldest are forgotten first (they are asked again).
ADMIN_MEMORY = 10_000


def bound(answer: Answer, query: CallbackQuery, messages: Sequence[int] | None = None) -> bool:
    """Whether the press came from the answer's own keyboard: the message it is on is the answer's (or one of
    ``messages``: a sticker's own buttons are under the stickers sent for the answer)."""
    message = query.message
    allowed = (answer.keyboard_message,) if messages is None else messages
    return message is not None and message.chat.id == answer.chat_id and message.message_id in allowed


# A press on a message a replica has only just sent (its state follows the message by a moment: stored once
# Telegram accepted it) waits for that state up to ARRIVAL_WAIT, looking every ARRIVAL_POLL; only for a message
# younger than ARRIVAL_WINDOW (an older one's state is stored, or expired).
ARRIVAL_WAIT = 10.0
ARRIVAL_POLL = 0.25
ARRIVAL_WINDOW = 60.0
T = TypeVar("T")


def just_sent(query: CallbackQuery, window: float = ARRIVAL_WINDOW) -> bool:
    """The pressed message is younger than ``window`` seconds: its state may still be on its way."""
    date = getattr(query.message, "date", None)
    if not isinstance(date, dtm.datetime):
        return False
    return (dtm.datetime.now(dtm.timezone.utc) - date).total_seconds() < window


async def arriving(load: Callable[[], Awaitable[T | None]]) -> T | None:
    """What ``load`` finds once the replica sending the message has stored it (None if it never comes)."""
    deadline = asyncio.get_running_loop().time() + ARRIVAL_WAIT
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(ARRIVAL_POLL)
        found = await load()
        if found is not None:
            return found
    return None


class AdminCache:
    """Group admins, as ``getChatMember`` said within the last ``ttl`` seconds (a failed check is not kept)."""

    def __init__(self, ttl: float = ADMIN_TTL, memory: int = ADMIN_MEMORY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.memory = memory
        self.clock = clock
        self._known: OrderedDict[tuple[int, int], tuple[bool, float]] = OrderedDict()

    async def is_admin(self, bot: Bot, chat_id: int, user_id: int) -> bool:
        key = (chat_id, user_id)
        now = self.clock()
        known = self._known.get(key)
        if known is not None and now - known[1] < self.ttl:
            return known[0]
        try:
            member = await bot.get_chat_member(chat_id, user_id)
        except TelegramError as exc:
            log.warning("cannot check user %s in chat %s: %s", user_id, chat_id, describe(exc))
            return False
        admin = member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)
        self._known.pop(key, None)
        self._known[key] = (admin, now)  # re-inserted: oldest first
        while len(self._known) > self.memory:
            self._known.popitem(last=False)
        return admin

    def __len__(self) -> int:
        return len(self._known)


class PressLimits:
    """The per-person press limits (0 turns one off)."""

    def __init__(self, presses: int = PRESS_LIMIT, sends: int = SEND_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.presses = RateLimiter(presses, PRESS_WINDOW, clock)
        self.sends = RateLimiter(sends, SEND_WINDOW, clock)
        # One log line per person per window for refused presses: a flood would otherwise be a log flood.
        self.noted = Notices(PRESS_WINDOW, clock)

    def allow_press(self, user_id: int) -> bool:
        """Count a press of ``user_id``, or refuse it (uncounted) when the person is over the limit."""
        return self._take(self.presses, user_id, "presses")

    def allow_send(self, user_id: int) -> bool:
        """Count a set of crops or a JSON about to be sent for ``user_id``, or refuse it (uncounted)."""
        return self._take(self.sends, user_id, "crops/JSON")

    def _take(self, limiter: RateLimiter, user_id: int, what: str) -> bool:
        if take_all([(limiter, user_id)]) is None:
            return True
        if self.noted.due(user_id):
            log.info("%s of user %s refused: over the limit of %d in %.0f s (further ones this window unlogged)",
                     what, user_id, limiter.limit, limiter.window)
        return False
