"""Settings of the ``detbot`` tools, composed from those of the processes they run and inspect.

``detbot run`` reads ``QueueSettings`` (which Redis, which queue) and the worker's metrics port, plus its own
``DETBOT_WORKERS``/``DETBOT_DATA_DIR``/``DETBOT_REDIS_PORT``; ``detbot doctor`` reads ``WorkerSettings``.
Both read the bot's ``TelegramSettings`` when a token is set: neither needs one.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.settings import BotSettings
from bot.settings import telegram_if_set as telegram_if_set  # re-exported: the tools read it here
from detector.settings import DetectorSettings
from jobs.settings import ENV_PREFIX, QueueSettings, WorkerMetricsSettings, WorkerSettings
from web.settings import WebSettings

# The embedded Redis's port when none is set: the port workers and bots use by default, so a
# `detbot worker` started by hand on this machine finds it without any setting.
DEFAULT_REDIS_PORT = 6379
# The embedded Redis's memory cap: a hundred queued photos of a few MB each, their results and the bot's
# bookkeeping fit several times over; past it photos are refused ("busy") rather than the machine swapping.
DEFAULT_REDIS_MAXMEMORY = "1gb"


class RunSettings(QueueSettings, WorkerMetricsSettings):
    """What ``detbot run`` itself needs; the children read their own settings from the same environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    workers: int | None = Field(None, ge=0, description="Worker processes; default: one per CPU core.")
    data_dir: Path = Field(Path(".detbot"), description="Folder of the embedded Redis's data.")
    redis_port: int = Field(DEFAULT_REDIS_PORT, ge=0, le=65535,
                            description="Port of the embedded Redis (127.0.0.1); 0: any free port.")
    redis_maxmemory: str = Field(
        DEFAULT_REDIS_MAXMEMORY, pattern=r"^[1-9][0-9]*([kmg]b?)?$",
        description="Memory cap of the embedded Redis (redis-server units: 512mb, 2gb); a full Redis answers "
                    "\"busy\" and never evicts queued photos.",
    )

    @property
    def external_redis(self) -> str | None:
        """REDIS_URL when it is set and not empty; None: ``detbot run`` starts an embedded redis-server."""
        return self.redis_url if self.redis_url_set and self.redis_url else None


# Every settings class of a detbot process: together they read every environment variable detbot knows.
ALL_SETTINGS: tuple[type[BaseSettings], ...] = (DetectorSettings, WorkerSettings, BotSettings, RunSettings,
                                                WebSettings)
