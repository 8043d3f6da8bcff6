"""Settings shared by every process on the queue (``QueueSettings``) and those of ``detbot worker``.

Each environment variable is declared once, in one class, and reused by composition: ``WorkerSettings`` is
``QueueSettings`` + the detector's own ``DetectorSettings`` + the worker's fields; the bot's settings add
``QueueSettings`` to its Telegram ones. Built once in a ``main()``; nothing here reads the environment at
import time.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector.settings import DetectorSettings
from jobs.defaults import DETECTION_FLOOR, JOB_TIMEOUT, MAX_ATTEMPTS, QUEUE_NAME

# Where a process looks for Redis when REDIS_URL is not set: a Redis on the same machine.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# Where prefixed settings come from: DETBOT_QUEUE, DETBOT_LOG_LEVEL, ... (the few without it name an alias).
ENV_PREFIX = "DETBOT_"


class QueueSettings(BaseSettings):
    """What the bot, the workers and the ``detbot`` tools share: which Redis, which queue, how much logging."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    redis_url: str = Field(
        DEFAULT_REDIS_URL, validation_alias="REDIS_URL",
        description="Redis holding the queue, images, results and per-chat settings.",
    )
    redis_password: SecretStr | None = Field(
        None, validation_alias="REDIS_PASSWORD",
        description="Redis's password, any characters (@ / : too); put into REDIS_URL for you (compose sets it).",
    )
    queue: str = Field(QUEUE_NAME, min_length=1, description="Name of the RQ queue (bot and workers must agree).")
    log_level: str = Field("INFO", description="Python logging level: DEBUG, INFO, WARNING or ERROR.")

    @model_validator(mode="before")
    @classmethod
    def _password_into_url(cls, data: Any) -> Any:
        """REDIS_PASSWORD goes into REDIS_URL percent-encoded, so a password with ``@``, ``/`` or ``:`` works
        (written into the URL by hand it would break the URL)."""
        if not isinstance(data, dict):
            return data
        url_key = next((k for k in ("REDIS_URL", "redis_url") if k in data), None)
        password = next((data[k] for k in ("REDIS_PASSWORD", "redis_password") if data.get(k)), None)
        if url_key is not None and password:
            secret = password.get_secret_value() if isinstance(password, SecretStr) else str(password)
            data = {**data, url_key: with_password(str(data[url_key]), secret)}
        return data

    @property
    def redis_url_set(self) -> bool:
        """Whether REDIS_URL was given at all (unset means ``detbot run`` starts an embedded Redis)."""
        return "redis_url" in self.model_fields_set


class WorkerMetricsSettings(BaseSettings):
    """Where a worker serves /metrics and /healthz; ``detbot run`` gives worker *i* the port + *i*."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    metrics_port: int | None = Field(
        None, ge=1, le=65535,
        description="Serve /metrics and /healthz on this port; off when unset (`detbot run`: worker i on port + i).",
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics server binds to (a container needs 0.0.0.0).")


class WorkerSettings(QueueSettings, WorkerMetricsSettings, DetectorSettings):
    """Everything one worker process needs: which model (the detector's ``DETBOT_*``), Redis and queue, limits.

    A subclass of :class:`DetectorSettings`, so ``Detector.from_settings(settings)`` takes it as it is and
    every detector setting (model, device, backend, threads, limits) is a worker setting too.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    job_timeout: int = Field(
        JOB_TIMEOUT, ge=1, description="Seconds one job may run (then a 'timeout' answer); the worker's value "
        "decides, whatever the producer wrote into the job.",
    )
    max_attempts: int = Field(
        MAX_ATTEMPTS, ge=1, description="A job whose worker died this many times ends with failed_after_retries."
    )
    worker_name: str | None = Field(None, description="Unique worker name; default: a random one.")
    detection_floor: float = Field(
        DETECTION_FLOOR, gt=0, le=1,
        description="Boxes are kept down to this confidence, so the answer's buttons re-draw any threshold above it.",
    )
    test_job_delay_ms: int = Field(
        0, ge=0, description="FOR TESTS ONLY: sleep this long inside every job, to catch a worker mid-job."
    )


def load_settings() -> WorkerSettings:
    """Read the settings from the environment (``main()`` calls this once; never at import time)."""
    return WorkerSettings()


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> the one environment variable it is read from (its alias, else prefix + name, upper-case:
    pydantic-settings matches names case-insensitively). A field with several aliases is an error: every
    setting has exactly one name."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names = {}
    for field_name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            raise TypeError(f"{cls.__name__}.{field_name} has several names: {alias.choices}")
        names[field_name] = (alias if isinstance(alias, str) else prefix + field_name).upper()
    return names


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded) in place of any it had; its user name stays."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    user = parts.username or ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{user}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def settings_problems(cls: type[BaseSettings], exc: ValidationError) -> str:
    """What is wrong, naming each variable as a person sets it (pydantic reports a field or its alias):
    ``DETBOT_X: not set; DETBOT_Y: <why>``, for a process's one line at start."""
    names = env_names(cls)
    problems = []
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else ""
        env = names.get(loc, loc.upper() or "settings")
        problems.append(f"{env}: {'not set' if err['type'] == 'missing' else err['msg']}")
    return "; ".join(problems)
