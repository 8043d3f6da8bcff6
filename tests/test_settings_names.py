"""Every setting has one name, is declared once, and the README and .env.example list exactly the real ones.

The names come from the settings classes themselves (``jobs.settings.env_names``), so a renamed, added or
removed field fails here until the README's "Settings" table and .env.example follow.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from bot.settings import BotSettings
from jobs.settings import env_names
from ops.settings import ALL_SETTINGS, RunSettings, telegram_if_set
from tests.conftest import ROOT
from tests.test_compose import COMPOSE_ONLY, TEST_ONLY_MARK, example_keys

README = ROOT / "README.md"


def all_names() -> set[str]:
    return {name for cls in ALL_SETTINGS for name in env_names(cls).values()}


def names_for_tests_only() -> set[str]:
    """Settings for the test suite: in the README's table (marked so), never in .env.example."""
    return {
        env_names(cls)[field] for cls in ALL_SETTINGS for field, info in cls.model_fields.items()
        if TEST_ONLY_MARK in (info.description or "")
    }


def readme_settings() -> tuple[set[str], set[str]]:
    """The README's "Settings" section: the names in its table's first column, and the compose-only names
    listed after the table."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # header and separator
    table = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])}
    compose = section.split("Compose-only:", 1)[1].split(".", 1)[0]
    return table, set(re.findall(r"`([A-Z][A-Z0-9_]*)`", compose))


def declaring_classes() -> dict[str, set[str]]:
    """Environment variable -> the settings classes that declare a field for it themselves (not inherited)."""
    declared: dict[str, set[str]] = {}
    for top in ALL_SETTINGS:
        names = env_names(top)
        for cls in top.__mro__:
            if not (isinstance(cls, type) and issubclass(cls, BaseSettings)) or cls is BaseSettings:
                continue
            for field in vars(cls).get("__annotations__", {}):
                if field in cls.model_fields:
                    declared.setdefault(names[field], set()).add(f"{cls.__module__}.{cls.__qualname__}")
    return declared


def test_the_readme_table_lists_every_setting_and_nothing_else() -> None:
    table, compose = readme_settings()
    assert table == all_names()
    assert compose == set(COMPOSE_ONLY)


def test_env_example_lists_every_setting_a_user_may_set_and_the_compose_only_ones() -> None:
    keys = example_keys()
    assert len(keys) == len(set(keys)), "a variable appears twice in .env.example"
    assert set(keys) == (all_names() - names_for_tests_only()) | set(COMPOSE_ONLY)


def test_every_variable_is_declared_by_exactly_one_class() -> None:
    declared = declaring_classes()
    assert declared.keys() == all_names()
    assert {name: classes for name, classes in declared.items() if len(classes) > 1} == {}


def test_names_are_the_documented_ones() -> None:
    """One name per setting: REDIS_URL and the Telegram pair without prefix, every other one DETBOT_*."""
    names = all_names()
    assert {"REDIS_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_BASE_URL"} <= names
    assert {n for n in names if not n.startswith("DETBOT_")} == {"REDIS_URL", "REDIS_PASSWORD", "TELEGRAM_BOT_TOKEN",
                                                                 "TELEGRAM_API_BASE_URL"}
    assert "DETBOT_REDIS_URL" not in names
    for cls in ALL_SETTINGS:
        shared = env_names(cls)
        assert shared.get("redis_url", "REDIS_URL") == "REDIS_URL", cls
        assert shared.get("telegram_bot_token", "TELEGRAM_BOT_TOKEN") == "TELEGRAM_BOT_TOKEN", cls


def test_the_bot_names_a_missing_token_as_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.main import _settings_error

    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setenv("DETBOT_MAX_PIXELS", "lots")
    with pytest.raises(ValidationError) as caught:
        BotSettings()  # type: ignore[call-arg]
    problems = _settings_error(caught.value).removeprefix("detbot bot: invalid settings: ").split("; ")
    assert "TELEGRAM_BOT_TOKEN: not set" in problems
    assert [p.split(":")[0] for p in problems] == ["DETBOT_MAX_PIXELS", "TELEGRAM_BOT_TOKEN"]


def test_ops_read_the_token_only_when_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    assert telegram_if_set() is None
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "")  # what .env.example's `TELEGRAM_BOT_TOKEN=` gives
    assert telegram_if_set() is None
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "42:abc")
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", "http://127.0.0.1:9")
    telegram = telegram_if_set()
    assert telegram is not None and telegram.api_url == "http://127.0.0.1:9/bot"


def test_run_starts_its_own_redis_only_when_redis_url_is_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert RunSettings().external_redis is None
    monkeypatch.setenv("REDIS_URL", "")
    assert RunSettings().external_redis is None
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    assert RunSettings().external_redis == "redis://elsewhere:6379/0"
