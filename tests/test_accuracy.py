"""``detbot bench accuracy`` and ``detbot bench --accuracy``'s figures, on the shapes model and fresh images
the model never saw."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from detector.params import DetectParams
from ops.agreement import AGREEMENT_FLOOR, compare, map50
from ops.shapes import iou, make_images, write_split, write_yaml
from tests.conftest import DETBOT, ROOT, TEST_EXPORT_DIR, detbot_env
from tests.shapes import POSE_MODEL_PATH, SEG_MODEL_PATH

# Seeds of fresh images: the model's own train/val seeds are 1 and 2, the other tests use 1000-1999.
SEED = 3000
IMAGES = 6
# The shapes model scores 99.5 on its validation set; a handful of fresh images stays far above this.
MIN_MAP50 = 90.0


def test_map50_of_the_shapes_model_is_high(detector: Any) -> None:
    assert map50(detector, make_images(SEED, IMAGES)) >= MIN_MAP50


def test_a_backend_compared_with_itself_agrees_on_every_object(detector: Any) -> None:
    data = make_images(SEED, IMAGES)
    results = [detector.detect(img, DetectParams(AGREEMENT_FLOOR)) for img, _ in data]
    same = compare(results, results, [shapes for _, shapes in data])
    assert same["objects"] > IMAGES and same["unmatched"] == 0
    assert same["worst_iou"] == 1.0 and same["worst_conf_diff"] == 0.0


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty boxes: no union, no overlap


# ``detbot bench accuracy`` on a tiny shapes dataset: a few fresh images keep it quick, enough objects
# (~4 per image) keep mAP meaningful.
DATASET_SEED = 3100
DATASET_IMAGES = 8
# The shapes model scores ~99 mAP50 on its validation set; well above this on any few fresh images.
MIN_SHAPES_MAP50 = 85.0
# detbot's path against ultralytics' predict() on the same images: same model, same NMS family.
MAX_POINTS_FROM_PREDICT = 3.0
ACCURACY_TIMEOUT = 300


def test_bench_accuracy_reports_every_backend_against_ultralytics(shapes_model: Path, tmp_path: Path) -> None:
    write_split(tmp_path, "val", DATASET_SEED, DATASET_IMAGES)
    data = write_yaml(tmp_path, train="images/val")
    out = tmp_path / "accuracy.json"
    cmd = [*DETBOT, "bench", "accuracy", "--model", str(shapes_model), "--data", str(data),
           "--backends", "torch,onnx", "--cache", str(TEST_EXPORT_DIR), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=detbot_env(), capture_output=True, text=True,
                          timeout=ACCURACY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["ultralytics val()", "ultralytics predict()", "detbot torch", "detbot onnx"]
    for name, row in rows.items():
        assert f"| {name} | {row['map50']:.2f} | {row['map50_95']:.2f} |" in proc.stdout
        assert row["images"] == DATASET_IMAGES
        assert MIN_SHAPES_MAP50 <= row["map50"] <= 100 and 0 < row["map50_95"] <= row["map50"]
    predict = rows["ultralytics predict()"]
    for name in ("detbot torch", "detbot onnx"):
        assert abs(rows[name]["map50"] - predict["map50"]) <= MAX_POINTS_FROM_PREDICT
        assert abs(rows[name]["map50_95"] - predict["map50_95"]) <= MAX_POINTS_FROM_PREDICT
        assert rows[name]["delta_map50"] == round(rows[name]["map50"] - rows["ultralytics val()"]["map50"], 2)


@pytest.mark.parametrize("task", ["segment", "pose"])
def test_bench_accuracy_scores_masks_and_keypoints(task: str, tmp_path: Path) -> None:
    """A segmentation model is scored on its masks, a pose model on its keypoints, beside its boxes: detbot's
    path (outlines from the prototypes, merged keypoints) against ultralytics' val() and predict()."""
    model = SEG_MODEL_PATH if task == "segment" else POSE_MODEL_PATH
    write_split(tmp_path, "val", DATASET_SEED, DATASET_IMAGES, task)
    data = write_yaml(tmp_path, train="images/val", task=task)
    out = tmp_path / "accuracy.json"
    cmd = [*DETBOT, "bench", "accuracy", "--model", str(model), "--data", str(data), "--backends", "onnx",
           "--cache", str(TEST_EXPORT_DIR), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=detbot_env(), capture_output=True, text=True,
                          timeout=ACCURACY_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["ultralytics val()", "ultralytics predict()", "detbot onnx"]
    metric = "mask" if task == "segment" else "pose"
    assert f"| {metric} mAP50 | {metric} mAP50-95 |" in proc.stdout
    for row in rows.values():
        assert row["task_metric"] == metric
        assert f"| {row['task_map50']:.2f} | {row['task_map50_95']:.2f} |" in proc.stdout
        assert MIN_SHAPES_MAP50 <= row["task_map50"] <= 100 and 0 < row["task_map50_95"] <= row["task_map50"]
    ours, predict = rows["detbot onnx"], rows["ultralytics predict()"]
    assert abs(ours["task_map50"] - predict["task_map50"]) <= MAX_POINTS_FROM_PREDICT
    assert abs(ours["task_map50_95"] - predict["task_map50_95"]) <= MAX_POINTS_FROM_PREDICT
    assert ours["delta_task_map50_95"] == round(ours["task_map50_95"] - rows["ultralytics val()"]["task_map50_95"], 2)
