"""The web face's parts that need no worker: the Mini App's initData check, the texts in both languages,
the language a request gets, addresses and lanes, and ``detbot web`` / ``detbot run`` refusing or serving."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import string
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import replies
from bot.i18n import ENGLISH, LANGUAGES, RUSSIAN, catalog
from tests.conftest import DETBOT, ROOT, detbot_env, free_port
from tests.test_compose import PASSWORD, TOKEN, compose_config, example_with
from tests.web_support import START_TIMEOUT, shapes_png, web_servers
from tests.workers import wait_for
from web.access import WEB_LANE_BASE, ApiKeys, Caller, address_number, lane_of
from web.initdata import MAX_AGE, InitDataError, check_init_data, sign
from web.settings import WebSettings, is_loopback, parse_listen
from web.texts import WEB_LOCALE_DIR, choose_language, own_texts, page_catalog

BOT_TOKEN = "123456789:AAF-init-data-test-token"
NOW = 1_800_000_000
CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)
# The language switch names the other language in its own words: "English" on the Russian page.
OTHER_LANGUAGE = {"page.switch"}


# -- the Mini App's initData -------------------------------------------------------------------------------

def telegram_hash(fields: dict[str, str], token: str) -> str:
    """Telegram's algorithm, spelled out from its documentation, independently of web.initdata."""
    data_check_string = "\n".join(f"{k}={fields[k]}" for k in sorted(fields))
    secret_key = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    return hmac.new(secret_key, data_check_string.encode(), hashlib.sha256).hexdigest()


def init_data(fields: dict[str, str], token: str = BOT_TOKEN, **override: str) -> str:
    return str(httpx.QueryParams({**fields, "hash": telegram_hash(fields, token), **override}))


FIELDS = {"query_id": "AAHdF6IQAAAAAN0XohDhrOrc", "auth_date": str(NOW - 60), "chat_instance": "-80512",
          "user": json.dumps({"id": 279058397, "first_name": "Влад", "username": "vdkfrost", "language_code": "ru"},
                            ensure_ascii=False)}


def test_signed_init_data_names_its_user() -> None:
    assert sign(FIELDS, BOT_TOKEN) == telegram_hash(FIELDS, BOT_TOKEN)
    user = check_init_data(init_data(FIELDS), BOT_TOKEN, NOW)
    assert (user.id, user.language_code, user.auth_date, user.chat_instance) == (279058397, "ru", NOW - 60, "-80512")


@pytest.mark.parametrize("forged", [
    "",  # nothing
    init_data(FIELDS, token="987654321:another-bot"),  # signed for another bot
    init_data(FIELDS).replace("279058397", "279058398"),  # the user changed after signing
    init_data(FIELDS, hash="0" * 64),  # a made-up hash
    str(httpx.QueryParams(FIELDS)),  # no hash
    init_data(FIELDS) + "&auth_date=" + str(NOW),  # a field twice
    init_data({**FIELDS, "auth_date": str(NOW - MAX_AGE - 1)}),  # older than a day
    init_data({**FIELDS, "auth_date": str(NOW + 3600)}),  # from the future
    init_data({k: v for k, v in FIELDS.items() if k != "auth_date"}),  # no auth_date
    init_data({k: v for k, v in FIELDS.items() if k != "user"}),  # no user
    init_data({**FIELDS, "user": '{"id": "279058397"}'}),  # a user id that is not a number
    "x" * 10_000,  # not Telegram's at all
])
def test_anything_else_is_refused(forged: str) -> None:
    with pytest.raises(InitDataError):
        check_init_data(forged, BOT_TOKEN, NOW)


# -- texts -------------------------------------------------------------------------------------------------

def placeholders(text: str) -> set[str]:
    return {field for _lit, field, _spec, _conv in string.Formatter().parse(text) if field}


def keys_in_code() -> set[str]:
    """Every web text id the code names: ``tr("error.x")`` in Python, ``t("page.x")``/``data-t`` in the page."""
    found: set[str] = set()
    for path in [*(ROOT / "web").glob("*.py"), *(ROOT / "web" / "static").iterdir()]:
        found |= set(re.findall(r"""["']((?:error|page)\.[a-z_]+)["']""", path.read_text(encoding="utf-8")))
    return found


def test_both_languages_have_every_text_the_code_names_with_the_same_placeholders() -> None:
    english, russian = own_texts(ENGLISH), own_texts(RUSSIAN)
    assert set(english) == set(russian) == keys_in_code()
    assert sorted(p.stem for p in WEB_LOCALE_DIR.glob("*.json")) == sorted(LANGUAGES)
    for key in english:
        assert english[key].strip() and russian[key].strip(), key
        assert placeholders(english[key]) == placeholders(russian[key]), key
        assert bool(CYRILLIC.search(russian[key])) != (key in OTHER_LANGUAGE), f"{key}: {russian[key]!r}"
    assert CYRILLIC.search(english["page.switch"])


def test_the_page_gets_the_bots_answer_lines_with_every_plural_form() -> None:
    ru, en = page_catalog(RUSSIAN), page_catalog(ENGLISH)
    assert set(ru["bot"]["answer.summary"]) == {"one", "few", "many", "other"}
    assert set(en["bot"]["answer.summary"]) == {"one", "other"}
    forms = ru["bot"]["answer.summary"]
    assert len({forms["one"], forms["few"], forms["many"]}) == 3  # 1 объект, 2 объекта, 5 объектов
    assert "{counts}" in forms["many"] and "{n}" in forms["many"]
    assert ru["texts"] == own_texts(RUSSIAN)


@pytest.mark.parametrize(("asked", "accept", "expected"), [
    ("ru", "en", RUSSIAN),  # ?lang= wins
    (None, "de-DE,de;q=0.9,ru;q=0.8,en;q=0.5", RUSSIAN),  # the first language spoken here
    (None, "en;q=0.1, ru;q=0.9", RUSSIAN),  # by q-value, not by place
    (None, "ru;q=0, en", ENGLISH),  # q=0: "not this one"
    (None, "fr, de", ENGLISH),  # none spoken: the default
    ("xx", None, ENGLISH),
])
def test_the_language_of_a_request(asked: str | None, accept: str | None, expected: str) -> None:
    assert choose_language(asked, accept, ENGLISH) == expected


# -- who calls ---------------------------------------------------------------------------------------------

def test_an_ipv6_client_is_its_slash_64_and_a_mapped_ipv4_is_the_ipv4() -> None:
    assert address_number("2001:db8:1:2::1") == address_number("2001:db8:1:2:ffff::9")
    assert address_number("2001:db8:1:2::1") != address_number("2001:db8:1:3::1")
    assert address_number("::ffff:192.0.2.7") == address_number("192.0.2.7") != address_number("192.0.2.8")


def test_keys_are_matched_in_full_and_each_is_a_lane_no_chat_has() -> None:
    keys = ApiKeys(("alpha-key", "beta-key"))
    assert (keys.match("alpha-key"), keys.match("beta-key"), keys.match("alpha"), keys.match("")) == (0, 1, None, None)
    one, two = Caller(0, keys.ids[0], "10.0.0.1"), Caller(1, keys.ids[1], "10.0.0.1")
    assert one.lane != two.lane and min(one.lane, two.lane) >= WEB_LANE_BASE
    assert lane_of("address:1") >= WEB_LANE_BASE > 2**52  # Telegram's chat ids fit in 52 bits
    assert "alpha-key" not in keys.ids[0]


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8080", "host:", ":80", "host:99999"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_cors_origins_must_be_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETBOT_WEB_CORS_ORIGINS", "*")
    with pytest.raises(ValueError, match="not an origin"):
        WebSettings()
    monkeypatch.setenv("DETBOT_WEB_CORS_ORIGINS", "https://a.example, https://b.example/")
    assert WebSettings().web_cors_origins == ("https://a.example", "https://b.example")


# -- detbot web, detbot run ----------------------------------------------------------------------------------

def web(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DETBOT, "web", *args], capture_output=True, text=True, timeout=START_TIMEOUT, cwd=ROOT,
                          env=detbot_env(PYTHONPATH=str(ROOT), REDIS_URL="redis://127.0.0.1:1/0", **env))


def test_a_keyless_web_refuses_to_listen_beyond_this_machine() -> None:
    result = web("--listen", "0.0.0.0:0")
    assert result.returncode == 2
    assert "DETBOT_WEB_KEYS" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_taken_port_and_a_bad_setting_are_one_line_each() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = web("--listen", f"127.0.0.1:{taken.getsockname()[1]}")
    assert result.returncode == 2 and "cannot listen" in result.stderr
    bad = web(DETBOT_WEB_RATE_LIMIT_KEY="-1")
    assert bad.returncode == 2 and "DETBOT_WEB_RATE_LIMIT_KEY" in bad.stderr and "Traceback" not in bad.stderr


def test_without_redis_the_web_says_unavailable_and_its_health_says_why(tmp_path: Path) -> None:
    with web_servers(f"redis://127.0.0.1:{free_port()}/0", tmp_path, alone={}, wait_healthy=False) as servers:
        server = servers["alone"]
        with server.client(**{"Accept-Language": "ru"}) as client:
            health = client.get("/healthz")
            upload = client.post("/api/v1/detect", files={"image": ("s.png", shapes_png(1400)[0])})
            status = client.get("/api/v1/jobs/" + "0" * 32)
    assert health.status_code == 503 and health.json() == {"ok": False, "redis": "unreachable"}
    for response in (upload, status):
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        assert response.json()["error"] == {"code": "unavailable",
                                            "message": catalog(RUSSIAN).gettext(replies.UNAVAILABLE)}
    assert "Traceback" not in server.output()


def test_detbot_run_serves_the_page_and_stops_it(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*DETBOT, "run", "--no-bot", "--workers", "0", "--redis-port", str(free_port())],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env=detbot_env(PYTHONPATH=str(ROOT), DETBOT_WEB_LISTEN=f"127.0.0.1:{port}"))
        try:
            def serving() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(serving, START_TIMEOUT, "the page of detbot run")
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            assert page.status_code == 200 and "/static/app.js" in page.text
            proc.terminate()
            assert proc.wait(START_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    out_text = log.read_text()
    assert f"web      `detbot web` on 127.0.0.1:{port}" in out_text
    assert f"web listening on http://127.0.0.1:{port}" in out_text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


# -- compose -----------------------------------------------------------------------------------------------

def test_the_compose_web_profile_is_published_locally_and_needs_its_keys(tmp_path: Path) -> None:
    result = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN=TOKEN, REDIS_PASSWORD=PASSWORD,
                                                   DETBOT_WEB_KEYS="k1,k2"), "--profile", "web")
    assert result.returncode == 0, result.stderr
    service: dict[str, Any] = json.loads(result.stdout)["services"]["web"]
    assert service["command"] == ["detbot", "web"]
    assert [(p["host_ip"], p["target"]) for p in service["ports"]] == [("127.0.0.1", 8080)]
    environment = service["environment"]
    assert not environment["TELEGRAM_BOT_TOKEN"]  # .env's token is blanked: the web face does not get it
    assert environment["DETBOT_WEB_KEYS"] == "k1,k2" and environment["DETBOT_WEB_LISTEN"] == "0.0.0.0:8080"
    assert ":8080/healthz" in " ".join(service["healthcheck"]["test"])
    # As the bot's Mini App it gets the token (to check initData), and the bot the same public URL.
    mini = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN=TOKEN, REDIS_PASSWORD=PASSWORD,
                                                 DETBOT_WEB_KEYS="k1,k2", DETBOT_WEB_PUBLIC_URL="https://d.example/"),
                          "--profile", "web")
    assert mini.returncode == 0, mini.stderr
    services = json.loads(mini.stdout)["services"]
    assert services["web"]["environment"]["TELEGRAM_BOT_TOKEN"] == TOKEN
    assert services["bot"]["environment"]["DETBOT_WEB_PUBLIC_URL"] == "https://d.example/"
