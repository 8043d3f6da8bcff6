"""The page in a real browser: Debian's headless Chromium driven by Selenium, against a real ``detbot web``, a
real Redis and a real worker on the shapes model.

Nothing is downloaded at run time: the browser and its driver are the system's (``apt-get install chromium
chromium-driver``; .ci/run installs them), handed to Selenium through a ``Service`` with the driver's path,
so Selenium Manager never looks for one. The page loads, a shapes picture goes in (picker, drop, paste),
the answer comes from the worker, and the slider and the class toggles change the boxes on the canvas and
the rows of the list without a request.

As the bot's Mini App the page is opened the way a Telegram app opens it: the answer's URL with Telegram's
launch parameters in the fragment (``#tgWebAppData=<initData>&…``), or with ``window.Telegram.WebApp`` put
in place before the page's script runs, as Telegram's own script would — nothing is fetched from Telegram.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
from PIL import Image
from redis import Redis
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from jobs import keys
from tests.conftest import ROOT, RedisServer
from tests.telegram_stub import BotProcess, TelegramStub, encode, wait_answer
from tests.web_support import SHAPES_RU, WINDOW, BrowserPage, chrome, init_data, page_folders, web_servers
from tests.workers import running_workers, wait_for

SCREENSHOT = ROOT / "docs" / "web-page.png"
TOKEN = "864209753:PAGE-mini-app-token"
PUBLIC_URL = "https://detbot.example/"
# The screenshot in the README is re-taken only on request, so a test run never dirties the checkout.
UPDATE_SCREENSHOT = "DETBOT_UPDATE_SCREENSHOT"


@dataclass
class Page(BrowserPage):
    picture: Path
    stub: TelegramStub
    redis: Redis


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    workdir, picture, downloads = page_folders(tmp_path_factory, "web-page", 2000)
    names = workdir / "names.json"
    names.write_text(SHAPES_RU, encoding="utf-8")
    server = RedisServer(workdir / "redis")
    server.start()
    # The bot too (against the Bot API stand-in), whose answers the page opens as its Mini App.
    stub = TelegramStub(TOKEN).start()
    mini_app = {"TELEGRAM_BOT_TOKEN": TOKEN, "DETBOT_WEB_PUBLIC_URL": PUBLIC_URL}
    try:
        with running_workers(server.url, log_dir=workdir), \
                web_servers(server.url, workdir, page={"DETBOT_CLASS_NAMES": str(names), **mini_app}) as servers:
            bot = BotProcess(stub, server.url, workdir / "bot.log", DETBOT_WEB_PUBLIC_URL=PUBLIC_URL).start()
            driver = chrome(downloads)
            try:
                yield Page(driver, servers["page"], downloads, picture, stub, Redis.from_url(server.url))
            finally:
                driver.quit()
                bot.stop()
    finally:
        stub.stop()
        server.stop()


def upload_with_the_picker(page: Page) -> None:
    page.driver.find_element(By.ID, "file").send_keys(str(page.picture))


def test_a_picture_is_answered_and_the_slider_shows_and_hides_boxes_without_a_request(page: Page) -> None:
    page.open()
    assert not page.driver.find_element(By.ID, "model-box").is_displayed()  # one model: no choice offered
    upload_with_the_picker(page)
    state = page.answer()
    candidates = state["candidates"]
    assert isinstance(candidates, list) and len(candidates) >= 4
    assert not any(c.get("polygon") or c.get("keypoints") for c in candidates)
    assert page.driver.find_element(By.ID, "canvas").get_attribute("data-masks") == "0"
    confidences = sorted((c["confidence"] for c in candidates), reverse=True)
    requests_before = page.driver.execute_script("return performance.getEntriesByType('resource').length")
    # At the asked threshold (the default 0.25): the boxes above it, drawn and listed.
    start = sum(c >= 0.25 for c in confidences)
    assert len(page.rows()) == start == page.drawn() > 0
    # The slider to the top: every box goes; to the floor: every kept box comes back.
    slider = page.driver.find_element(By.ID, "confidence")
    slider.send_keys(Keys.END)
    page.until(lambda d: page.drawn() == sum(c >= 1.0 for c in confidences), "the boxes to go")
    assert len(page.rows()) == page.drawn() == 0
    assert "No objects found" in page.driver.find_element(By.ID, "summary").text
    slider.send_keys(Keys.HOME)
    page.until(lambda d: page.drawn() == len(confidences), "every kept box")
    assert len(page.rows()) == len(confidences)
    # Between two boxes' confidences: exactly the boxes above it, in the list and on the canvas.
    middle = (confidences[1] + confidences[2]) / 2
    page.slide(middle)
    page.until(lambda d: page.drawn() == 2, "two boxes")
    assert len(page.rows()) == 2
    assert page.rows()[0].startswith("1. ") and f"{confidences[0]:.2f}" in page.rows()[0]
    # The canvas really changes: no box drawn is the clean picture, boxes drawn are not.
    pixels = "return document.getElementById('canvas').toDataURL();"
    with_boxes = page.driver.execute_script(pixels)
    slider.send_keys(Keys.END)
    page.until(lambda d: page.drawn() == 0, "no boxes")
    assert page.driver.execute_script(pixels) != with_boxes
    # No request was made for any of it.
    assert page.driver.execute_script("return performance.getEntriesByType('resource').length") == requests_before


def test_class_toggles_hide_and_show_their_boxes(page: Page) -> None:
    page.open()
    upload_with_the_picker(page)
    state = page.answer()
    page.driver.find_element(By.ID, "confidence").send_keys(Keys.HOME)
    candidates = state["candidates"]
    assert isinstance(candidates, list)
    page.until(lambda d: page.drawn() == len(candidates), "every kept box")
    toggles = page.driver.find_elements(By.CSS_SELECTOR, "#classes input[type=checkbox]")
    assert len(toggles) == len({c["class_name"] for c in candidates})
    first = toggles[0].get_attribute("data-class")
    of_first = sum(c["class_name"] == first for c in candidates)
    toggles[0].click()
    page.until(lambda d: page.drawn() == len(candidates) - of_first, f"the {first} boxes to go")
    assert not any(f" {first} " in row for row in page.rows())
    assert "(only " in page.driver.find_element(By.ID, "summary").text
    toggles[0].click()
    page.until(lambda d: page.drawn() == len(candidates), f"the {first} boxes to come back")


def test_the_page_speaks_russian_with_the_class_names_in_russian(page: Page) -> None:
    page.open("ru")
    assert page.driver.find_element(By.ID, "language").text == "English"
    upload_with_the_picker(page)
    page.answer()
    summary = page.driver.find_element(By.ID, "summary").text
    assert summary.startswith("Найдено"), summary
    assert any(name in " ".join(page.rows()) for name in ("круг", "квадрат", "треугольник")), page.rows()
    page.driver.find_element(By.ID, "language").click()  # switched in place, the answer kept
    page.until(lambda d: d.find_element(By.ID, "summary").text.split()[1] in ("object", "objects"), "English")
    assert page.driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_a_picture_can_be_dropped_or_pasted(page: Page, how: str) -> None:
    page.open()
    # A real File in a real DataTransfer, delivered as the browser delivers a drop or a paste.
    page.driver.execute_async_script("""
        const [how, done] = arguments;
        const bytes = Uint8Array.from(atob(window.detbotTestPicture), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], 'shapes.png', {type: 'image/png'}));
        const event = how === 'drop'
          ? new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true})
          : new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true});
        document.dispatchEvent(event);
        done();
    """.replace("window.detbotTestPicture", json.dumps(_base64(page.picture))), how)
    state = page.answer()
    assert page.drawn() == sum(c["confidence"] >= 0.25 for c in state["candidates"])


def test_downloads_are_the_json_and_the_png_of_what_is_shown(page: Page) -> None:
    page.open()
    upload_with_the_picker(page)
    state = page.answer()
    candidates = state["candidates"]
    assert isinstance(candidates, list)
    page.slide(0.5)
    page.until(lambda d: page.drawn() == sum(c["confidence"] >= 0.5 for c in candidates), "the boxes at 0.5")
    for old in page.downloads.iterdir():
        old.unlink()
    page.driver.find_element(By.ID, "download-json").click()
    page.driver.find_element(By.ID, "download-png").click()
    json_file = page.downloads / "shapes.json"
    png_file = page.downloads / "shapes-detbot.png"
    wait_for(lambda: json_file.is_file() and png_file.is_file(), 30, "the downloads")
    shown = json.loads(json_file.read_text())
    assert shown["confidence"] == 0.5 and shown["image"] == "shapes.png" and shown["classes"] is None
    assert shown["boxes"] == [c for c in candidates if c["confidence"] >= 0.5]
    assert {"width", "height", "model", "timings", "class_confidence"} <= set(shown)
    with Image.open(png_file) as png:
        assert png.format == "PNG" and png.size == (shown["width"], shown["height"])


def test_the_screenshot_of_the_page(page: Page, tmp_path: Path) -> None:
    """The README's picture of the page, taken here (written to docs/ with DETBOT_UPDATE_SCREENSHOT=1)."""
    page.open()
    upload_with_the_picker(page)
    page.answer()
    page.slide(0.3)
    page.until(lambda d: d.find_element(By.ID, "confidence-value").text == "0.30", "the slider at 0.30")
    shot = tmp_path / "web-page.png"
    try:
        assert page.driver.save_screenshot(str(shot))
    except WebDriverException as exc:  # pragma: no cover - a broken browser is a failure, said plainly
        pytest.fail(f"the browser could not take a screenshot: {exc}")
    with Image.open(shot) as taken:
        assert taken.size[0] >= WINDOW[0] - 20
        small = taken.convert("RGB").quantize(colors=48)
        small.save(shot, optimize=True)
    if os.environ.get(UPDATE_SCREENSHOT):
        shutil.copyfile(shot, SCREENSHOT)
    assert SCREENSHOT.is_file(), "docs/web-page.png is missing: run this test with DETBOT_UPDATE_SCREENSHOT=1"


# -- as the bot's Mini App ------------------------------------------------------------------------------------

def answered_in_telegram(page: Page, user: int) -> tuple[int, str]:
    """A person sends the page's picture to the bot: the answer's message id and the answer's id."""
    stub = page.stub
    with Image.open(page.picture) as img:
        jpeg = encode(np.asarray(img.convert("RGB"))[:, :, ::-1])
    msg = stub.photo(stub.private_chat(user), user, jpeg)
    mid = int(wait_answer(stub, user, msg["message_id"]).result["message_id"])
    data = next(b["callback_data"] for row in stub.keyboard(user, mid) for b in row if "callback_data" in b)
    answer_id = data.split(":")[1]
    wait_for(lambda: page.redis.exists(keys.answer(stub.bot_id, answer_id)), 30, "the answer's buttons stored")
    return mid, answer_id


def open_as_mini_app(page: Page, answer_id: str, signed: str) -> None:
    """The page as a Telegram app opens the 🎚 button's URL: the launch parameters in the fragment."""
    page.open("en")
    fragment = urlencode({"tgWebAppData": signed, "tgWebAppVersion": "8.0", "tgWebAppPlatform": "tdesktop"})
    page.driver.get(f"{page.web.url}/?answer={answer_id}#{fragment}")
    page.until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"), "the page to start")


def test_as_the_mini_app_the_page_shows_the_answer_slides_and_applies_it_in_the_chat(page: Page) -> None:
    user = 91_001
    mid, answer_id = answered_in_telegram(page, user)
    signed = init_data(user, TOKEN)
    open_as_mini_app(page, answer_id, signed)
    driver = page.driver
    page.until(lambda d: d.find_element(By.ID, "result").get_attribute("data-answer") == answer_id, "the answer")
    assert not driver.find_element(By.ID, "drop").is_displayed()  # an answer, not an upload
    assert driver.find_element(By.ID, "apply").is_displayed()
    shown = httpx.get(f"{page.web.url}/api/v1/answers/{answer_id}", headers={"Authorization": f"tma {signed}"},
                      timeout=30).json()
    confidences = [c["confidence"] for c in shown["photos"][0]["candidates"]]
    page.until(lambda d: page.drawn() == sum(c >= 0.25 for c in confidences) > 0, "the answer's boxes on its photo")
    assert driver.execute_script("return document.getElementById('canvas').width") > 0
    page.slide(0.9)
    page.until(lambda d: page.drawn() == sum(c >= 0.9 for c in confidences), "the boxes at 0.9")
    assert len(page.rows()) == page.drawn()
    driver.find_element(By.ID, "apply").click()
    page.until(lambda d: d.find_element(By.ID, "apply-box").get_attribute("data-status") == "applied", "applied")
    assert "the answer in the chat shows this now" in driver.find_element(By.ID, "apply-status").text
    edits = [c for c in page.stub.sent("editMessageMedia", user) if int(c.params["message_id"]) == mid]
    assert len(edits) == 1 and "≥ 0.90" in str(edits[0].params["media"].get("caption"))


def test_as_the_mini_app_forged_init_data_gets_401(page: Page) -> None:
    """Put in place as Telegram's script would (window.Telegram.WebApp), forged initData: the page says to
    open it from Telegram, and the API answered 401."""
    user = 91_002
    _mid, answer_id = answered_in_telegram(page, user)
    forged = init_data(user, TOKEN).replace("hash=", "hash=0")
    source = ("window.Telegram = {WebApp: {initData: " + json.dumps(forged) +
              ", ready() { window.detbotReady = true; }, expand() {}}};")
    script = page.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})
    try:
        page.open("en")
        page.driver.get(f"{page.web.url}/?answer={answer_id}")
        page.until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"), "the page to start")
        status = page.driver.find_element(By.ID, "status")
        assert "Open this page from Telegram" in status.text and "error" in (status.get_attribute("class") or "")
        assert page.driver.execute_script("return window.detbotReady") is True  # told Telegram it is ready
        code = page.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/api/v1/answers/' + arguments[0], {headers: {Authorization: 'tma ' + Telegram.WebApp.initData}})"
            ".then((r) => done(r.status));", answer_id)
        assert code == 401
        assert not page.driver.find_element(By.ID, "result").is_displayed()
    finally:
        page.driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})


def _base64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()
