"""Settings of ``detbot worker``: the detector's own ``DETBOT_*`` settings plus the queue's.

Built once in ``jobs.worker.main()``; nothing here reads the environment at import time.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from detector.settings import DetectorSettings
from jobs.defaults import JOB_TIMEOUT, MAX_ATTEMPTS, QUEUE_NAME

# Where a worker looks for Redis when REDIS_URL is not set: a Redis on the same machine.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class WorkerSettings(DetectorSettings):
    """Everything one worker process needs: which model (inherited ``DETBOT_*``), which Redis and queue, limits.

    A subclass of :class:`DetectorSettings`, so ``Detector.from_settings(settings)`` takes it as it is and
    every detector setting (model, device, backend, threads, limits) is a worker setting too.
    """

    model_config = SettingsConfigDict(env_prefix="DETBOT_", extra="ignore")

    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        validation_alias=AliasChoices("REDIS_URL", "DETBOT_REDIS_URL"),
        description="Redis holding the queue, images and results.",
    )
    queue: str = Field(QUEUE_NAME, min_length=1, description="Name of the RQ queue to take jobs from.")
    job_timeout: int = Field(
        JOB_TIMEOUT, ge=1, description="Seconds one job may run; the producer's own timeout applies if shorter."
    )
    max_attempts: int = Field(
        MAX_ATTEMPTS, ge=1, description="A job whose worker died this many times ends with failed_after_retries."
    )
    worker_name: str | None = Field(None, description="Unique worker name; default: a random one.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics and /healthz on this port; off when unset."
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics server binds to (a container needs 0.0.0.0).")
    log_level: str = Field("INFO", description="Python logging level of the worker.")
    test_job_delay_ms: int = Field(
        0, ge=0, description="FOR TESTS ONLY: sleep this long inside every job, to catch a worker mid-job."
    )


def load_settings() -> WorkerSettings:
    """Read the settings from the environment (``main()`` calls this once; never at import time)."""
    return WorkerSettings()
