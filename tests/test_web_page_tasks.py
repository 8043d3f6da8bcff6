"""The page with segmentation and pose models, in a real browser: a ``detbot web`` with several models
(``DETBOT_MODELS``: detect, segment, pose), a worker of the segmentation model and one of the pose model (none of
the detection model: the page never sends to it here), Debian's headless Chromium.

The page offers the models, sends the one chosen, and draws what the answer's kept boxes carry — each mask as a
translucent polygon in its class's colour, each pose's sure keypoints — client-side. The drawing is checked
pixel by pixel against the clean picture: inside a shown mask the canvas is the picture blended with the class's
colour, outside every mask (and away from boxes and labels) it is the picture itself; the slider and the class
toggles take masks and keypoints away with their boxes, without a request.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from detector.draw import KEYPOINT_VISIBLE, LINE_WIDTH_PER_PX, MASK_ALPHA, colour_of
from detector.render import format_share
from detector.result import polygon_area
from tests.conftest import RedisServer
from tests.shapes import MODEL_PATH, POSE_MODEL_PATH, SEG_MODEL_PATH
from tests.web_support import BrowserPage, chrome, page_folders, web_servers
from tests.workers import running_workers, wait_for

MODELS = f"detect={MODEL_PATH},segment={SEG_MODEL_PATH},pose={POSE_MODEL_PATH}"
# A channel of a blended pixel may round either way in the browser's compositing; a clean one is exact.
BLEND_TOLERANCE = 3
CLEAN_TOLERANCE = 2
# Pixels this close to an outline are anti-aliased: neither inside nor outside.
EDGE = 2
# A label is at most this wide (px) at the picture's size: "12 triangle 0.87" in the page's font.
LABEL_WIDTH = 260
SHARE = re.compile(r"· (<?\d+\.\d)% of the image$")


@dataclass
class TasksPage(BrowserPage):
    picture: Path

    def count(self, what: str) -> int:
        """What the canvas says it drew: ``masks`` or ``keypoints``."""
        return int(self.driver.find_element(By.ID, "canvas").get_attribute(f"data-{what}") or -1)

    def canvas(self) -> np.ndarray:
        """The canvas's pixels (RGB), as the page has drawn them."""
        url = self.driver.execute_script("return document.getElementById('canvas').toDataURL('image/png');")
        return rgb(base64.b64decode(url.split(",", 1)[1]))

    def ask(self, model: str) -> dict[str, Any]:
        """A fresh page, ``model`` chosen, the picture uploaded: the job the page shows, every kept box drawn."""
        self.open()
        Select(self.driver.find_element(By.ID, "model")).select_by_value(model)
        self.driver.find_element(By.ID, "file").send_keys(str(self.picture))
        job = self.answer()
        self.driver.find_element(By.ID, "confidence").send_keys(Keys.HOME)
        self.until(lambda d: self.drawn() == len(job["candidates"]), "every kept box")
        return job


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TasksPage]:
    workdir, picture, downloads = page_folders(tmp_path_factory, "web-page-tasks", 2100)
    server = RedisServer(workdir / "redis")
    server.start()
    common = {"DETBOT_MODELS": MODELS}
    envs = [{**common, "DETBOT_WORKER_MODEL": "segment"}, {**common, "DETBOT_WORKER_MODEL": "pose"}]
    try:
        with running_workers(server.url, envs=envs, log_dir=workdir), \
                web_servers(server.url, workdir, tasks=common) as servers:
            driver = chrome(downloads)
            try:
                yield TasksPage(driver, servers["tasks"], downloads, picture)
            finally:
                driver.quit()
    finally:
        server.stop()


def rgb(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def line_width(shape: tuple[int, ...]) -> int:
    return max(round((shape[0] + shape[1]) / 2 * LINE_WIDTH_PER_PX), 2)


def class_rgb(class_id: int) -> np.ndarray:
    return np.array(colour_of(class_id)[::-1], dtype=np.int16)


def decorations(shape: tuple[int, ...], boxes: list[dict[str, Any]]) -> np.ndarray:
    """Where boxes and labels may be drawn: each box's outline, widened, and the band its label takes at its top
    (above the box, or inside it at the picture's top edge)."""
    lw = line_width(shape)
    label = max(11, lw * 8) * 1.3 + lw + EDGE
    out = np.zeros(shape[:2], np.uint8)
    for b in boxes:
        x1, y1, x2, y2 = (round(b[k]) for k in ("x1", "y1", "x2", "y2"))
        cv2.rectangle(out, (x1, y1), (x2, y2), 1, 2 * lw + 2)
        cv2.rectangle(out, (x1 - lw - EDGE, round(y1 - label)), (x1 + LABEL_WIDTH, round(y1 + label)), 1, -1)
    return out.astype(bool)


def mask_map(shape: tuple[int, ...], boxes: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Which box's mask shows at each pixel (-1: none), painted as the page paints them — the most confident
    last, on top — and the pixels on or near an outline."""
    owner = np.full(shape[:2], -1, np.int32)
    edges = np.zeros(shape[:2], np.uint8)
    for i in reversed(range(len(boxes))):
        polygon = boxes[i].get("polygon")
        if polygon and len(polygon) >= 3:
            points = np.round(np.array(polygon)).astype(np.int32)
            cv2.fillPoly(owner, [points], i)
            cv2.polylines(edges, [points], True, 1, 2 * EDGE + 1)
    return owner, edges.astype(bool)


def check_masks(drawn: np.ndarray, clean: np.ndarray, boxes: list[dict[str, Any]]) -> None:
    """Inside each shown mask the picture blended with its class's colour; outside every mask the picture."""
    owner, edges = mask_map(clean.shape, boxes)
    free = ~edges & ~decorations(clean.shape, boxes)
    colours = np.array([class_rgb(b["class_id"]) for b in boxes] or [[0, 0, 0]], dtype=np.float64)
    blended = np.round(clean * (1 - MASK_ALPHA) + colours[np.maximum(owner, 0)] * MASK_ALPHA)
    for i, box in enumerate(boxes):
        inside = free & (owner == i)
        if not box.get("polygon") or inside.sum() < 30:
            continue  # no mask, or one hidden under others' labels and outlines
        close = (np.abs(drawn[inside] - blended[inside]) <= BLEND_TOLERANCE).all(axis=1).mean()
        assert close > 0.98, f"mask {i + 1} ({box['class_name']}): {close:.1%} of its pixels show it"
    outside = free & (owner < 0)
    assert outside.sum() > clean.shape[0] * clean.shape[1] / 4
    same = (np.abs(drawn[outside] - clean[outside]) <= CLEAN_TOLERANCE).all(axis=1).mean()
    assert same > 0.999, f"only {same:.2%} of the picture outside the masks is untouched"


def requests_made(page: TasksPage) -> int:
    return int(page.driver.execute_script("return performance.getEntriesByType('resource').length"))


def test_the_page_offers_the_servers_models_the_first_by_default(page: TasksPage) -> None:
    page.open()
    choice = page.driver.find_element(By.ID, "model")
    assert choice.is_displayed()
    options = Select(choice).options
    assert [o.get_attribute("value") for o in options] == ["detect", "segment", "pose"]
    assert Select(choice).first_selected_option.get_attribute("value") == "detect"
    # What each finds, once its workers said it (the detection model has none here: its name alone).
    assert [o.text for o in options] == ["detect", "segment (masks)", "pose (poses)"]
    page.open("ru")
    assert page.driver.find_element(By.CSS_SELECTOR, "label[for=model]").text == "Модель"
    assert [o.text for o in Select(page.driver.find_element(By.ID, "model")).options][1:] == \
        ["segment (маски)", "pose (позы)"]


def test_a_segment_answer_draws_masks_that_the_slider_and_the_toggles_take_away(page: TasksPage) -> None:
    job = page.ask("segment")
    assert job["result"]["task"] == "segment" and job["result"]["model"] == SEG_MODEL_PATH.name
    candidates = job["candidates"]
    with_masks = [c for c in candidates if c.get("polygon")]
    assert len(with_masks) >= 3
    clean = rgb(page.picture.read_bytes())
    before = requests_made(page)
    # Every kept box at the floor: each mask drawn where its polygon is, nothing outside them.
    assert page.count("masks") == len(with_masks)
    check_masks(page.canvas(), clean, candidates)
    # Each row gives its mask's share of the image, as the bot's list does.
    width, height = job["result"]["width"], job["result"]["height"]
    shares = [found.group(1) + "%" if (found := SHARE.search(row)) else None for row in page.rows()]
    assert shares == [format_share(min(polygon_area([tuple(p) for p in c["polygon"]]) / (width * height), 1))
                      if c.get("polygon") else None for c in candidates], page.rows()
    # A class off: its masks go with its boxes, the others stay.
    toggle = page.driver.find_elements(By.CSS_SELECTOR, "#classes input[type=checkbox]")[0]
    off = toggle.get_attribute("data-class")
    toggle.click()
    rest = [c for c in candidates if c["class_name"] != off]
    page.until(lambda d: page.drawn() == len(rest), f"the {off} boxes to go")
    assert page.count("masks") == sum(bool(c.get("polygon")) for c in rest)
    check_masks(page.canvas(), clean, rest)
    toggle.click()
    # Between two confidences: the two best objects' masks only.
    confidences = sorted((c["confidence"] for c in candidates), reverse=True)
    page.slide((confidences[1] + confidences[2]) / 2)
    page.until(lambda d: page.drawn() == 2, "two boxes")
    assert page.count("masks") == sum(bool(c.get("polygon")) for c in candidates[:2])
    check_masks(page.canvas(), clean, candidates[:2])
    # Above every confidence: no box, no mask — the clean picture.
    page.driver.find_element(By.ID, "confidence").send_keys(Keys.END)
    page.until(lambda d: page.drawn() == 0, "no boxes")
    assert page.count("masks") == 0
    check_masks(page.canvas(), clean, [])
    assert requests_made(page) == before  # none of it asked the server
    # In Russian the rows say the share in Russian.
    page.driver.find_element(By.ID, "confidence").send_keys(Keys.HOME)
    page.driver.find_element(By.ID, "language").click()
    page.until(lambda d: all(row.endswith("изображения") for row in page.rows()) and page.rows(), "Russian rows")


def test_the_downloaded_png_has_the_masks(page: TasksPage) -> None:
    job = page.ask("segment")
    page.slide(0.5)
    shown = [c for c in job["candidates"] if c["confidence"] >= 0.5]
    page.until(lambda d: page.drawn() == len(shown), "the boxes at 0.5")
    for old in page.downloads.iterdir():
        old.unlink()
    page.driver.find_element(By.ID, "download-png").click()
    png = page.downloads / "shapes-detbot.png"
    wait_for(png.is_file, 30, "the PNG")
    wait_for(lambda: png.stat().st_size > 0 and not list(page.downloads.glob("*.crdownload")), 30, "the whole PNG")
    check_masks(rgb(png.read_bytes()), rgb(page.picture.read_bytes()), shown)


def test_a_pose_answer_draws_the_sure_keypoints_and_the_slider_takes_them_away(page: TasksPage) -> None:
    job = page.ask("pose")
    result, candidates = job["result"], job["candidates"]
    assert result["task"] == "pose" and result["skeleton"]
    sure = [(round(x), round(y), c["class_id"]) for c in candidates for x, y, k in c["keypoints"]
            if k >= KEYPOINT_VISIBLE]
    assert sure
    assert page.count("keypoints") == len(sure)
    assert page.count("masks") == 0
    drawn, clean = page.canvas(), rgb(page.picture.read_bytes())
    # Each keypoint's dot in its class's colour (unless a label drawn later covers it).
    coloured = [bool((np.abs(drawn[y, x] - class_rgb(cls)) <= 12).all()) for x, y, cls in sure
                if 0 <= x < clean.shape[1] and 0 <= y < clean.shape[0]]
    assert sum(coloured) >= 0.8 * len(coloured), coloured
    page.driver.find_element(By.ID, "confidence").send_keys(Keys.END)
    page.until(lambda d: page.drawn() == 0, "no boxes")
    assert page.count("keypoints") == 0
    check_masks(page.canvas(), clean, [])
    # Another model chosen: the same picture goes to it, and its answer replaces this one.
    Select(page.driver.find_element(By.ID, "model")).select_by_value("segment")
    page.until(lambda d: d.find_element(By.ID, "result").get_attribute("data-job") != job["id"], "a new job")
    assert page.answer()["result"]["task"] == "segment"
    page.until(lambda d: page.count("masks") > 0 and page.count("keypoints") == 0, "masks instead of keypoints")
