"""The bot's settings, read from the environment when ``main()`` builds them (never at import time)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.i18n import ENGLISH, LANGUAGES
from detector.settings import DEFAULT_CONFIDENCE, ClassNamesSettings, ImageLimitSettings
from detector.video import DEFAULT_MAX_FRAMES, DEFAULT_MAX_SECONDS, DEFAULT_SAMPLE_FPS
from jobs.defaults import MAX_QUEUED_JOBS
from jobs.settings import ENV_PREFIX, QueueSettings

# Telegram's own default: the public Bot API; a local Bot API server or a test stand-in can replace it.
DEFAULT_API_BASE_URL = "https://api.telegram.org"
# A person sending photos one by one rarely exceeds this; a script or a loop does.
DEFAULT_USER_RATE = 10
# A busy group with several people sending photos; beyond this a group floods itself and the queue.
DEFAULT_CHAT_RATE = 30
# The buttons under an answer work this long (seconds): a day covers "I'll look at it tonight", and the
# state it costs is a few KB per answer (docs/bot.md).
DEFAULT_ANSWER_TTL = 24 * 60 * 60
# Telegram's own default for a webhook's simultaneous connections (setWebhook's max_connections, 1-100).
DEFAULT_WEBHOOK_CONNECTIONS = 40
# Where a replica takes webhook requests unless DETBOT_WEBHOOK_LISTEN says otherwise (8443: one of the ports
# Telegram calls, for a bot reached without a proxy).
DEFAULT_WEBHOOK_LISTEN = "0.0.0.0:8443"
# The secret Telegram sends with every webhook request: long enough not to be guessed; Telegram accepts only
# these characters, up to 256 of them.
WEBHOOK_SECRET_MIN = 16
WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")
# A Mini App's short name as @BotFather takes it (the path of its t.me link).
MINI_APP_NAME = re.compile(r"[A-Za-z0-9_]{3,30}")
# A token is "<bot id>:<secret>"; the id names the bot's keys in Redis (never the token itself).
TOKEN_SHAPE = re.compile(r"(\d+):\S+")
# The chat action covers an answer's first 5 s; a status message only for a photo still waiting after that
# (an earlier one would mostly be deleted moments later, spending the chat's budget on nothing).
STATUS_DELAY_MS = 5000


class TelegramSettings(BaseSettings):
    """How to reach Telegram as the bot: the token and the Bot API server. ``detbot doctor`` and
    ``detbot run`` read them too (where the token is optional)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    telegram_bot_token: SecretStr = Field(
        validation_alias="TELEGRAM_BOT_TOKEN", description="The token from @BotFather (required; never logged)."
    )
    telegram_api_base_url: str = Field(
        DEFAULT_API_BASE_URL, validation_alias="TELEGRAM_API_BASE_URL",
        description="Bot API server; the bot uses {base}/bot<token> and {base}/file/bot<token>.",
    )

    @field_validator("telegram_bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        """An empty token is "not set" (``TELEGRAM_BOT_TOKEN=`` in .env; the workers get one); any other must
        carry the bot's id."""
        if value.get_secret_value().strip() and not TOKEN_SHAPE.fullmatch(value.get_secret_value().strip()):
            raise ValueError("not a bot token: it looks like 123456789:AAH... (from @BotFather)")
        return SecretStr(value.get_secret_value().strip())

    @property
    def bot_id(self) -> int:
        """The bot's id: the token's numeric part (known before asking Telegram; names its Redis keys)."""
        return int(self.telegram_bot_token.get_secret_value().split(":", 1)[0])

    @property
    def api_url(self) -> str:
        return f"{self.telegram_api_base_url.rstrip('/')}/bot"

    @property
    def file_url(self) -> str:
        return f"{self.telegram_api_base_url.rstrip('/')}/file/bot"


class FrontEndSettings(BaseSettings):
    """What every front end that takes photos for the queue shares (the bot, the web face): the default
    threshold and language, the queue's room, how long an answer can be adjusted. Telegram-free."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)  # a token or a secret never in an error

    default_confidence: float = Field(
        DEFAULT_CONFIDENCE, gt=0, le=1, description="Threshold when neither caption nor chat sets one."
    )
    max_queued_jobs: int = Field(MAX_QUEUED_JOBS, ge=0, description="Jobs waiting beyond this get 'busy'.")
    answer_ttl: int = Field(
        DEFAULT_ANSWER_TTL, ge=1, description="Seconds the buttons under an answer work (a later press says so), "
        "and a web result stays readable.",
    )
    default_language: str = Field(
        ENGLISH, description="Language for people whose Telegram (or browser) language detbot does not speak: en "
        "or ru."
    )

    @field_validator("default_language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in LANGUAGES:
            raise ValueError(f"must be one of {', '.join(LANGUAGES)}")
        return value


class MiniAppSettings(BaseSettings):
    """Where the bot's Telegram Mini App lives (the web face's page): read by the bot, which puts its 🎚
    button under answers, and by the web, which serves it. Telegram-free."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    web_public_url: str | None = Field(
        None, description="Public HTTPS URL of the web page (behind its TLS proxy); set: answers get a 🎚 button "
        "that opens it as a Telegram Mini App on that answer.",
    )
    web_app_name: str | None = Field(
        None, description="Short name of the Mini App registered with @BotFather (/newapp, its URL "
        "DETBOT_WEB_PUBLIC_URL): group answers get the 🎚 button as its t.me link (Telegram opens web_app "
        "buttons only in private chats); unset: only private answers get the button.",
    )

    @field_validator("web_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be the page's public https:// URL (Telegram opens Mini Apps over HTTPS only), "
                             "e.g. https://detbot.example.com/")
        return value.strip().rstrip("/") + "/"

    @field_validator("web_app_name")
    @classmethod
    def _app_name(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        if not MINI_APP_NAME.fullmatch(value.strip()):
            raise ValueError("must be the Mini App's short name from @BotFather: 3-30 of A-Z a-z 0-9 _")
        return value.strip()


class BotSettings(QueueSettings, TelegramSettings, ImageLimitSettings, ClassNamesSettings, FrontEndSettings,
                  MiniAppSettings):
    """Everything ``detbot bot`` can be configured with; see docs/bot.md for the table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)  # a token or a secret never in an error

    rate_limit_user: int = Field(DEFAULT_USER_RATE, ge=0, description="Photos per user per minute; 0: no limit.")
    rate_limit_chat: int = Field(DEFAULT_CHAT_RATE, ge=0, description="Photos per chat per minute; 0: no limit.")
    allowed_chats: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), description="Comma-separated chat ids; empty: every chat may use the bot."
    )
    bot_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of /metrics and /healthz on 127.0.0.1; unset: off."
    )
    bot_metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint listens on.")
    max_video_seconds: float = Field(
        DEFAULT_MAX_SECONDS, gt=0, le=600, description="Longest video, animation or video note accepted, seconds.",
    )
    video_fps: float = Field(
        DEFAULT_SAMPLE_FPS, gt=0, le=30, description="Frames per second of a video detected, tracked and drawn.",
    )
    max_video_frames: int = Field(
        DEFAULT_MAX_FRAMES, ge=1, le=18_000, description="Most frames of one video detected (at DETBOT_VIDEO_FPS).",
    )

    webhook_url: str | None = Field(
        None, description="Public HTTPS URL Telegram posts updates to; set: webhook mode, unset: long polling.",
    )
    webhook_listen: str = Field(
        DEFAULT_WEBHOOK_LISTEN, description="host:port each replica takes webhook requests on (behind the proxy).",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Secret Telegram sends in X-Telegram-Bot-Api-Secret-Token (16-256 of A-Z a-z 0-9 _ -); "
        "required with DETBOT_WEBHOOK_URL.",
    )
    webhook_max_connections: int = Field(
        DEFAULT_WEBHOOK_CONNECTIONS, ge=1, le=100, description="Webhook requests Telegram makes at once (1-100).",
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be the public https:// URL Telegram calls, e.g. https://bot.example.com/telegram")
        return value.strip()

    @field_validator("webhook_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        listen_address(value)
        return value.strip()

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError(f"must be {WEBHOOK_SECRET_MIN} to 256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> BotSettings:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("DETBOT_WEBHOOK_SECRET must be set with DETBOT_WEBHOOK_URL (16+ characters, "
                             "e.g. openssl rand -hex 24): without it anyone could post updates")
        return self

    @property
    def webhook_path(self) -> str:
        """The path of DETBOT_WEBHOOK_URL: a proxy passes requests on with it unchanged."""
        return urlsplit(self.webhook_url or "").path or "/"

    test_status_check_ms: int = Field(
        60_000, ge=1, description="FOR TESTS ONLY: how often the bot retries status-message deletions Telegram "
        "missed and looks for queued photos whose job Redis lost, so a test sees it quickly.",
    )
    test_retry_delay_ms: int = Field(
        1000, ge=1, description="FOR TESTS ONLY: first pause before sending an answer again after a network "
        "error or a 5xx (doubled each time), so a test reaches the bound on attempts quickly.",
    )

    test_album_check_ms: int = Field(
        10_000, ge=1, description="FOR TESTS ONLY: how long an album none of whose photos completed waits before "
        "the bot asks Redis whether the rest is still coming, so a test sees an album outlast it quickly.",
    )
    test_webhook_check_ms: int = Field(
        30_000, ge=1, description="FOR TESTS ONLY: how often the replica handling updates asks Telegram how its "
        "webhook fares (getWebhookInfo), so a test sees a delivery error quickly.",
    )

    test_status_delay_ms: int = Field(
        STATUS_DELAY_MS, ge=1, description="FOR TESTS ONLY: how long a photo waits before its \"queued\" status "
        "message, so a test can tell a photo waiting for a worker from one being detected without long jobs.",
    )

    @field_validator("allowed_chats", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.replace(";", ",").split(",")]
            return frozenset(int(p) for p in parts if p)
        return value


def listen_address(value: str, default_host: str | None = "0.0.0.0", example: str = "0.0.0.0:8443",
                   ) -> tuple[str, int]:
    """``host:port`` (``[::]:8443`` for IPv6) as a host and a port (0: any free one); ``default_host`` for
    ``:port`` (None: a host is required); ValueError for anything else, naming ``example``."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or (default_host or "")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value.strip()!r} is not host:port (e.g. {example})")
    return host, int(port)


def telegram_if_set() -> TelegramSettings | None:
    """The bot's Telegram settings when TELEGRAM_BOT_TOKEN is set and not empty, else None (the doctor,
    ``detbot run --no-bot`` and the web face work without a token)."""
    try:
        settings = TelegramSettings()
    except ValidationError as exc:
        if all(err["type"] == "missing" for err in exc.errors()):
            return None
        raise
    return settings if settings.telegram_bot_token.get_secret_value() else None
