"""Who is calling: API keys, client addresses, fairness lanes and the per-minute limits on both.

- Keys (``DETBOT_WEB_KEYS``) come in the ``X-API-Key`` header only, are compared in constant time and are
  never logged: a key is known by its *id*, the first hex digits of its SHA-256.
- An address is the client's IP; all of an IPv6 /64 counts as one address (one host hands out many).
- Each key (or, without keys, each address) is one more "chat" in the queue's fairness lanes
  (:mod:`jobs.fair`): its own few jobs in RQ's list, the rest held behind other chats' photos.
- Limits are the bot's own (:mod:`bot.limits`), counted in this process's memory: a limit that needs Redis
  would stop working exactly when Redis is away. Several web processes each count their own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

# Telegram's chat ids fit in 52 bits (negative for groups): lanes from here up are never a chat's.
WEB_LANE_BASE = 1 << 60
# Bits of a lane taken from the owner's hash: collisions between two keys only make them share a lane.
LANE_BITS = 48
# Hex digits of a key's SHA-256 that name it in logs and in its jobs (never the key itself).
KEY_ID_DIGITS = 12
# All addresses of an IPv6 network this wide are one client (a home or office gets a /64 or more).
IPV6_CLIENT_PREFIX = 64



def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:KEY_ID_DIGITS]


def address_number(host: str | None) -> int:
    """A client address as the number its limits are counted under (an IPv6 /64 as one)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:  # not an IP (a Unix socket, a test client): one bucket per name
        return int(hashlib.sha256((host or "").encode()).hexdigest()[:16], 16)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:1.2.3.4 is the IPv4 client 1.2.3.4
            return int(address.ipv4_mapped)
        return int(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False).network_address)
    return int(address)


def lane_of(owner: str) -> int:
    """The fairness lane (:mod:`jobs.fair`) of a key or an address: far above every Telegram chat id."""
    return WEB_LANE_BASE + int(hashlib.sha256(owner.encode()).hexdigest()[: LANE_BITS // 4], 16)


class ApiKeys:
    """The configured API keys; ``match`` finds the one presented (None: none matches)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self.ids = tuple(key_id(k) for k in keys)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def match(self, presented: str) -> int | None:
        """The index of the presented key; every key is compared, in constant time, whatever matches."""
        found = None
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(key, presented.encode()):
                found = index
        return found


@dataclass(frozen=True)
class Caller:
    """Who made a request: the key's index and id (-1 and "" without keys) and the client's address."""

    key_index: int
    key_id: str
    address: str

    @property
    def owner(self) -> str:
        """Whose jobs a request may read: its key's (with keys), everybody's on a keyless local server."""
        return self.key_id

    @property
    def buckets(self) -> tuple[int, int]:
        """What the photo limits count (:class:`bot.limits.Limits`' "user" and "chat"): the key and the
        address (without keys the web counts no key: only the address)."""
        address = address_number(self.address)
        return (self.key_index if self.key_index >= 0 else address), address

    @property
    def lane(self) -> int:
        return lane_of(f"key:{self.key_id}" if self.key_id else f"address:{address_number(self.address)}")
