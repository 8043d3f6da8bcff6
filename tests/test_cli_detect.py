"""``detbot detect`` as a person runs it: a real subprocess on the shapes model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
from PIL import Image

from ops.shapes import NUM_KEYPOINTS, SKELETON, make_images
from tests.conftest import DETBOT, detbot_env
from tests.shapes import POSE_MODEL_PATH, SEG_MODEL_PATH

# Loading torch and the model takes seconds; a minute means it hangs.
CLI_TIMEOUT = 120


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DETBOT, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT, env=detbot_env(**env)
    )


def test_detect_lists_the_right_shapes_and_survives_bad_files(tmp_path: Path) -> None:
    img, shapes = make_images(2001, 1)[0]
    good = tmp_path / "shapes.png"
    cv2.imwrite(str(good), img)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    out = tmp_path / "out"
    proc = run("detect", str(bad), str(good), "--confidence", "0.4", "--out", str(out))
    assert proc.returncode == 2
    assert f"{bad}: This is not an image" in proc.stderr
    assert "Traceback" not in proc.stderr
    counts: dict[str, int] = {}
    for s in shapes:
        counts[s.name] = counts.get(s.name, 0) + 1
    summary = proc.stdout.splitlines()[0]
    assert summary.startswith(f"{good}: {len(shapes)} object")
    assert "confidence ≥ 0.40" in summary
    for name, n in counts.items():
        assert f"{name} ×{n}" in summary
    assert len(proc.stdout.splitlines()) == 1 + len(shapes)
    annotated = Image.open(out / "shapes.jpg")
    assert annotated.format == "JPEG" and annotated.size == (img.shape[1], img.shape[0])


def test_detect_json_has_the_same_fields(tmp_path: Path) -> None:
    img, shapes = make_images(2002, 1)[0]
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    proc = run("detect", str(path), "--json", "--classes", "circle,square,triangle")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["image"] == str(path)
    assert data["width"] == img.shape[1] and data["height"] == img.shape[0]
    assert sorted(b["class_name"] for b in data["boxes"]) == sorted(s.name for s in shapes)
    assert set(data["boxes"][0]) == {"class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"}
    assert data["timings"]["inference_ms"] > 0


def test_missing_model_fails_with_one_clear_line(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), make_images(2003, 1)[0][0])
    proc = run("detect", str(img), DETBOT_MODEL=str(tmp_path / "missing.pt"))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DETBOT_MODEL" in lines[0]


def test_bad_confidence_is_a_usage_error(tmp_path: Path) -> None:
    proc = run("detect", "x.png", "--confidence", "1.5")
    assert proc.returncode == 2 and "outside (0, 1]" in proc.stderr


def test_detect_json_of_a_segmentation_and_a_pose_model(tmp_path: Path) -> None:
    """``--json`` on the segmentation and pose test models: the task at the top, per object its outline or its
    keypoints in pixels of the image; the text form gives each mask's part of the image."""
    img, shapes = make_images(2003, 1)[0]
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    h, w = img.shape[:2]
    seg = run("detect", str(path), "--json", "--model", str(SEG_MODEL_PATH))
    assert seg.returncode == 0, seg.stderr
    data = json.loads(seg.stdout)
    assert data["task"] == "segment" and "skeleton" not in data
    assert sorted(b["class_name"] for b in data["boxes"]) == sorted(s.name for s in shapes)
    for box in data["boxes"]:
        assert set(box) == {"class_id", "class_name", "confidence", "x1", "y1", "x2", "y2", "polygon"}
        assert len(box["polygon"]) >= 3
        assert all(box["x1"] - 1 <= x <= box["x2"] + 1 and box["y1"] - 1 <= y <= box["y2"] + 1
                   for x, y in box["polygon"])
    text = run("detect", str(path), "--model", str(SEG_MODEL_PATH)).stdout.splitlines()
    assert all(line.endswith("of the image") for line in text[1:]) and len(text) == 1 + len(shapes)

    pose = run("detect", str(path), "--json", "--model", str(POSE_MODEL_PATH))
    assert pose.returncode == 0, pose.stderr
    data = json.loads(pose.stdout)
    assert data["task"] == "pose" and data["skeleton"] == [list(pair) for pair in SKELETON]
    for box in data["boxes"]:
        assert "polygon" not in box and len(box["keypoints"]) == NUM_KEYPOINTS
        assert all(0 <= x <= w and 0 <= y <= h and 0 <= c <= 1 for x, y, c in box["keypoints"])
