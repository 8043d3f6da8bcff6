"""``detbot web``'s settings, read from the environment (``DETBOT_WEB_*``) when ``main()`` builds them."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from bot.settings import FrontEndSettings, MiniAppSettings, listen_address
from detector.settings import ClassNamesSettings, ImageLimitSettings
from jobs.settings import ENV_PREFIX, QueueSettings

# The page and the API on this machine only, until API keys make it safe to listen anywhere else.
DEFAULT_LISTEN = "127.0.0.1:8080"
# Photos per minute per API key: a script feeding a stream of images, paced.
DEFAULT_KEY_RATE = 60
# Photos per minute per client address (an IPv6 /64 counts as one address): a busy office behind one NAT.
DEFAULT_ADDRESS_RATE = 30
# API requests per minute per address, status checks included: a page waits on one request per photo, so
# this only stops floods (wrong keys tried, a loop without a pause).
DEFAULT_REQUEST_RATE = 600
# Largest request body: Telegram's own 20 MB download limit (the bot's), plus room for the form around it.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024
# Connections served at once beyond which new ones get 503 at once: a flood of slow clients cannot pin
# the process's memory and file descriptors.
DEFAULT_MAX_CONNECTIONS = 200


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) to its host and port, the host required; raises ValueError."""
    return listen_address(value, default_host=None, example=DEFAULT_LISTEN)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebSettings(QueueSettings, ImageLimitSettings, ClassNamesSettings, FrontEndSettings, MiniAppSettings):
    """Everything ``detbot web`` can be configured with (README, "The web face")."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    web_listen: str = Field(
        DEFAULT_LISTEN, description="HOST:PORT of the page and the API; anything but loopback needs DETBOT_WEB_KEYS.",
    )
    web_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="Comma-separated API keys, sent in the X-API-Key header; empty: no key (loopback only).",
    )
    web_models: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Queues the API's `model` field may name, comma-separated (each queue's workers run one "
        "model); empty: DETBOT_QUEUE only.",
    )
    web_cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins (https://app.example.com) whose pages may call the API; empty: none (CORS closed).",
    )
    web_trusted_proxies: str = Field(
        "", description="Addresses of reverse proxies whose X-Forwarded-For is believed (comma-separated, or *); "
        "empty: none.",
    )
    web_rate_limit_key: int = Field(DEFAULT_KEY_RATE, ge=0, description="Photos per minute per API key; 0: no limit.")
    web_rate_limit_address: int = Field(
        DEFAULT_ADDRESS_RATE, ge=0, description="Photos per minute per client address (IPv6: per /64); 0: no limit.",
    )
    web_request_limit: int = Field(
        DEFAULT_REQUEST_RATE, ge=0, description="API requests per minute per client address; 0: no limit.",
    )
    web_max_connections: int = Field(
        DEFAULT_MAX_CONNECTIONS, ge=1, description="Connections served at once; more get 503 at once.",
    )

    @field_validator("web_keys", "web_models", "web_cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.replace(";", ",").split(",") if part.strip())
        return value

    @field_validator("web_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()

    @field_validator("web_cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        origins = tuple(origin.rstrip("/") for origin in value)
        for origin in origins:
            if "*" in origin or not origin.startswith(("https://", "http://")) or origin.count("/") != 2:
                raise ValueError(f"{origin!r} is not an origin such as https://app.example.com (no path, no *)")
        return origins

    @property
    def max_body(self) -> int:
        return MAX_IMAGE_BYTES + FORM_OVERHEAD_BYTES

    def models(self) -> tuple[str, ...]:
        """The queues the API serves, DETBOT_QUEUE first (the default model)."""
        return tuple(dict.fromkeys((self.queue, *self.web_models)))

    def keys(self) -> tuple[str, ...]:
        return tuple(k.get_secret_value() for k in self.web_keys if k.get_secret_value())
