"""The bot's settings, read from the environment when ``main()`` builds them (never at import time)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.i18n import ENGLISH, LANGUAGES
from detector.settings import DEFAULT_CONFIDENCE, ClassNamesSettings, ImageLimitSettings
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
# The chat action covers an answer's first 5 s; a status message only for a photo still waiting after that
# (an earlier one would mostly be deleted moments later, spending the chat's budget on nothing).
STATUS_DELAY_MS = 5000


class TelegramSettings(BaseSettings):
    """How to reach Telegram as the bot: the token and the Bot API server. ``detbot doctor`` and
    ``detbot run`` read them too (where the token is optional)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    telegram_bot_token: SecretStr = Field(
        validation_alias="TELEGRAM_BOT_TOKEN", description="The token from @BotFather (required; never logged)."
    )
    telegram_api_base_url: str = Field(
        DEFAULT_API_BASE_URL, validation_alias="TELEGRAM_API_BASE_URL",
        description="Bot API server; the bot uses {base}/bot<token> and {base}/file/bot<token>.",
    )

    @property
    def api_url(self) -> str:
        return f"{self.telegram_api_base_url.rstrip('/')}/bot"

    @property
    def file_url(self) -> str:
        return f"{self.telegram_api_base_url.rstrip('/')}/file/bot"


class FrontEndSettings(BaseSettings):
    """What every front end that takes photos for the queue shares (the bot, the web face): the default
    threshold and language, the queue's room, how long an answer can be adjusted. Telegram-free."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

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


class BotSettings(QueueSettings, TelegramSettings, ImageLimitSettings, ClassNamesSettings, FrontEndSettings):
    """Everything ``detbot bot`` can be configured with; see docs/bot.md for the table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    rate_limit_user: int = Field(DEFAULT_USER_RATE, ge=0, description="Photos per user per minute; 0: no limit.")
    rate_limit_chat: int = Field(DEFAULT_CHAT_RATE, ge=0, description="Photos per chat per minute; 0: no limit.")
    allowed_chats: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), description="Comma-separated chat ids; empty: every chat may use the bot."
    )
    bot_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of /metrics and /healthz on 127.0.0.1; unset: off."
    )
    bot_metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint listens on.")
    test_status_check_ms: int = Field(
        60_000, ge=1, description="FOR TESTS ONLY: how often the bot retries status-message deletions Telegram "
        "missed and looks for queued photos whose job Redis lost, so a test sees it quickly.",
    )
    test_retry_delay_ms: int = Field(
        1000, ge=1, description="FOR TESTS ONLY: first pause before sending an answer again after a network "
        "error or a 5xx (doubled each time), so a test reaches the bound on attempts quickly.",
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
