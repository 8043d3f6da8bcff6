"""Real ``detbot web`` processes for the web tests: started on a free port, stopped at the end, raw HTTP; and
the page in a real browser (Debian's headless Chromium driven by Selenium) for the page's tests.

A web process prints ``web listening on http://HOST:PORT`` once its socket is bound (``--listen
127.0.0.1:0`` takes a free port); it answers ``/healthz`` once the application has started.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from ops.shapes import make_images
from tests.conftest import DETBOT, ROOT, detbot_env
from tests.images import png_bytes
from tests.workers import wait_for
from web.initdata import sign

# `detbot web` imports FastAPI and the bot's catalogs: a second or two, more on a busy CI box.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 40.0
# A job on the shapes model takes well under a second once a worker is up; CI boxes are slow and shared.
ANSWER_TIMEOUT = 60.0
LISTENING = re.compile(r"web listening on (http://\S+)")
# Class names of the shapes model in Russian, as an operator gives them (DETBOT_CLASS_NAMES).
SHAPES_RU = '{"ru": {"circle": "круг", "square": "квадрат", "triangle": "треугольник"}}'


class WebServer:
    """One ``detbot web`` subprocess; its output goes to a file, never a pipe that could fill up."""

    def __init__(self, redis_url: str, log_dir: Path, name: str, **env: str) -> None:
        self.log_path = log_dir / f"web-{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [*DETBOT, "web", "--listen", "127.0.0.1:0"], cwd=ROOT,
            env=detbot_env(PYTHONPATH=str(ROOT), REDIS_URL=redis_url, **env), stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.url = ""

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, healthy: bool = True) -> WebServer:
        """Until it listens, and (``healthy``) answers /healthz with 200: its Redis is up."""
        def listening() -> str | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"detbot web exited with {self.proc.returncode}:\n{self.output()}")
            found = LISTENING.search(self.output())
            return found.group(1) if found else None

        self.url = wait_for(listening, START_TIMEOUT, "detbot web to listen")
        if not healthy:
            return self

        def answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
            return False

        wait_for(answers, START_TIMEOUT, "detbot web to answer /healthz")
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=ANSWER_TIMEOUT)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(STOP_TIMEOUT)
        finally:
            self._log.close()


@contextlib.contextmanager
def web_servers(redis_url: str, log_dir: Path, wait_healthy: bool = True, **configs: dict[str, str],
                ) -> Iterator[dict[str, WebServer]]:
    """Several web processes at once (each name with its environment), all ready; stopped on exit."""
    servers = {name: WebServer(redis_url, log_dir, name, **env) for name, env in configs.items()}
    try:
        for server in servers.values():
            server.wait_ready(wait_healthy)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def init_data(user_id: int, token: str, auth_date: float | None = None, **fields: str) -> str:
    """initData as Telegram hands it to a Mini App for ``user_id``, signed with ``token`` (Telegram's algorithm,
    web.initdata.sign); ``auth_date`` now by default; ``fields`` add to it (``start_param``...)."""
    signed = {"auth_date": str(int(time.time() if auth_date is None else auth_date)),
              "query_id": f"AAH{user_id}query", **fields,
              "user": json.dumps({"id": user_id, "first_name": "Ann", "language_code": "en"})}
    return str(httpx.QueryParams({**signed, "hash": sign(signed, token)}))


def tma(data: str) -> dict[str, str]:
    """The header the page sends initData in."""
    return {"Authorization": f"tma {data}"}


def shapes_png(seed: int, least: int = 1, landscape: bool = False) -> tuple[bytes, list[Any]]:
    """A fresh shapes picture (PNG) with at least ``least`` shapes (wider than high with ``landscape``), and
    its shapes; seeds ≥ 1000 are pictures the model never saw."""
    for offset in range(200):
        image, shapes = make_images(seed + offset, 1)[0]
        if len(shapes) >= least and (not landscape or image.shape[1] > image.shape[0] * 1.2):
            return png_bytes(image), list(shapes)
    raise AssertionError(f"no shapes image with {least} shapes near seed {seed}")


def raw_request(port: int, head: str, body_chunks: Iterator[bytes] | None = None, timeout: float = 30.0) -> bytes:
    """Send an HTTP/1.1 request byte for byte (no client rewrites its path) and return the whole response.
    ``head``: the request line and headers, one a line (``Connection: close`` is added).

    The body is sent from a thread while the response is read, so a server that answers before the body
    ends (and then closes) is heard: its answer is read as it arrives, not after the sending gave up.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall((head.strip().replace("\n", "\r\n") + "\r\nConnection: close\r\n\r\n").encode())

        def send_body() -> None:
            with contextlib.suppress(OSError):  # the server answered and closed: stop sending
                for chunk in body_chunks or ():
                    sock.sendall(chunk)

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
        sender.join(timeout)
        return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


# -- the page in a real browser (Debian's chromium, driven by Selenium) ------------------------------------

# The browser's window: wide enough for the picture beside its list.
WINDOW = (1100, 760)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@dataclass
class BrowserPage:
    """The page in a real browser, against one ``detbot web``; ``downloads``: where the browser saves files."""

    driver: WebDriver
    web: WebServer
    downloads: Path

    def open(self, language: str = "en") -> None:
        self.driver.get(self.web.url + "/")
        self.driver.execute_script("localStorage.setItem('detbot.language', arguments[0]);", language)
        self.driver.get(self.web.url + "/")
        self.until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"), "the page to start")

    def until(self, condition: object, what: str, timeout: float = ANSWER_TIMEOUT) -> object:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition, what)  # type: ignore[arg-type]

    def rows(self) -> list[str]:
        """The list's rows, read in one script: a render replacing them mid-read cannot leave a stale one."""
        rows: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll('#boxes li')].map((row) => row.textContent);")
        return rows

    def drawn(self) -> int:
        return int(self.driver.find_element(By.ID, "canvas").get_attribute("data-boxes") or -1)

    def answer(self) -> dict[str, Any]:
        """The job the page shows, as the API gives it to anyone (the page drew it from the same)."""
        self.until(lambda d: d.find_element(By.ID, "result").is_displayed(), "the answer")
        job_id = self.driver.find_element(By.ID, "result").get_attribute("data-job")
        job: dict[str, Any] = httpx.get(f"{self.web.url}/api/v1/jobs/{job_id}", timeout=30).json()
        assert job["status"] == "done", job
        return job

    def slide(self, value: float) -> None:
        """Put the slider at ``value`` as a drag ends there: the value, then the input event."""
        self.driver.execute_script(
            "const s = document.getElementById('confidence'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input', {bubbles: true}));", str(value))


def page_folders(factory: pytest.TempPathFactory, name: str, seed: int) -> tuple[Path, Path, Path]:
    """A browser test module's folder, a fresh landscape shapes picture in it (at least 4 shapes, from ``seed``)
    and the folder the browser downloads into."""
    workdir = factory.mktemp(name)
    image, _ = shapes_png(seed, least=4, landscape=True)
    picture = workdir / "shapes.png"
    picture.write_bytes(image)
    downloads = workdir / "downloads"
    downloads.mkdir()
    return workdir, picture, downloads


def system_browser() -> tuple[str, str]:
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver (.ci/run does)")
    return browser, driver


def chrome(downloads: Path) -> WebDriver:
    browser, driver = system_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", "--lang=en-US",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
