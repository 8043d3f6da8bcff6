"""Exported backends on the real shapes model: export + cache, reuse, damage, failure, agreement, bench."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector import Box, engines, export_cache, processing
from detector.model import Detector
from detector.params import DetectParams
from ops.shapes import iou, make_images
from tests.conftest import DETBOT, ROOT, detbot_env
from tests.images import BUS, ZIDANE

# Seeds the shapes model never saw (training used 1, validation 2).
AGREEMENT_SEED = 1000
AGREEMENT_IMAGES = 24
# From this confidence up a box must be found by every backend; below it a box may fall on either side
# of the 0.25 threshold in one backend and not in another without anything being wrong.
SURE = 0.3
# Two processes exporting at once finish well within this; far beyond it one of them hangs.
PROCESS_TIMEOUT = 300


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for the module: each backend is exported once, by the first test that needs it."""
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def torch_detector(shapes_model: Path) -> Detector:
    return Detector(str(shapes_model), backend="torch", device="cpu")


def best_partner(box: Box, boxes: Sequence[Box]) -> Box | None:
    """The box of the same class that overlaps ``box`` most."""
    same = [b for b in boxes if b.class_id == box.class_id]
    return max(same, key=lambda b: iou(b.xyxy, box.xyxy)) if same else None


def entry_files(cache_dir: Path) -> dict[str, float]:
    """Every file of every published cache entry, with its modification time."""
    return {
        str(p.relative_to(cache_dir)): p.stat().st_mtime_ns
        for p in cache_dir.glob("*/*")
        if p.is_file() and not p.parent.name.startswith(".") and p.parent.name != "cores"  # cores: detector.cores
    }


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_export_is_cached_and_reused(shapes_model: Path, cache: Path, backend: str) -> None:
    before = export_cache.export_count()
    first = Detector(str(shapes_model), backend=backend, device="cpu", export_dir=cache)
    assert first.backend == backend and first.export is not None
    assert first.imgsz == 256  # the checkpoint's own size, as with PyTorch
    assert first.names == {0: "circle", 1: "square", 2: "triangle"}
    files = entry_files(cache)
    assert any(name.endswith((".onnx", ".xml")) for name in files)

    second = Detector(str(shapes_model), backend=backend, device="cpu", export_dir=cache)
    assert second.export is not None and second.export.reused
    assert second.export.path == first.export.path
    assert entry_files(cache) == files  # nothing rewritten
    # At most one export for both Detectors (none if an earlier test already made this one).
    assert export_cache.export_count() - before == (0 if first.export.reused else 1)
    assert [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")] == []  # no staging left


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_backends_agree_with_torch(
    shapes_model: Path, cache: Path, torch_detector: Detector, backend: str
) -> None:
    """Every backend finds the same objects as PyTorch: each drawn shape that one of them finds clearly
    (confidence >= SURE) the other finds too, same class, boxes at IoU >= 0.9, confidences within 0.05.
    An object's box is the most confident box of its class on it (IoU >= 0.5): a duplicate next to it that
    one backend merges and the other keeps is not another object."""
    fast = Detector(str(shapes_model), backend=backend, device="cpu", export_dir=cache)
    assert fast.backend == backend
    checked = 0
    for img, shapes in make_images(AGREEMENT_SEED, AGREEMENT_IMAGES):
        ref = torch_detector.detect(img, DetectParams(0.25))
        got = fast.detect(img, DetectParams(0.25))
        for shape in shapes:
            a, b = object_box(ref.boxes, shape), object_box(got.boxes, shape)
            sure = max(x.confidence for x in (a, b) if x is not None) if (a or b) else 0.0
            if sure < SURE:
                continue
            assert a is not None and b is not None, f"{backend}: {shape} found by one only: {a} {b}"
            assert iou(a.xyxy, b.xyxy) >= 0.9, (a, b)
            assert abs(a.confidence - b.confidence) <= 0.05, (a, b)
            checked += 1
    assert checked >= 2 * AGREEMENT_IMAGES  # several objects per image: the comparison means something


def object_box(boxes: Sequence[Box], shape: Any) -> Box | None:
    """The most confident box of the shape's class lying on it (IoU >= 0.5), if any."""
    on_it = [b for b in boxes if b.class_name == shape.name and iou(b.xyxy, shape.box) >= 0.5]
    return max(on_it, key=lambda b: b.confidence) if on_it else None


def test_annotated_output_from_an_exported_backend(shapes_model: Path, cache: Path) -> None:
    import cv2

    fast = Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=cache)
    img, _ = make_images(AGREEMENT_SEED, 1)[0]
    original = img.copy()
    det, jpeg = fast.detect_annotated(img, DetectParams(0.25))
    assert det.boxes and det.timings.annotate_ms > 0
    np.testing.assert_array_equal(img, original)  # the caller's array is not drawn on
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert drawn is not None and drawn.shape == img.shape
    b = det.boxes[0]
    edge = drawn[int(b.y1) + 2 : int(b.y2) - 2, int(b.x1) : int(b.x1) + 2].astype(int)
    assert np.abs(edge - img[int(b.y1) + 2 : int(b.y2) - 2, int(b.x1) : int(b.x1) + 2]).mean() > 30


@pytest.mark.parametrize("damage", ["truncated", "no_manifest", "garbage_manifest"])
def test_damaged_cache_entry_is_exported_again(
    shapes_model: Path, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    Detector(str(shapes_model), backend="onnx", device="cpu", export_dir=cache)  # make sure it exists
    local = tmp_path / "exports"
    shutil.copytree(cache, local)
    entry = next(p for p in local.iterdir() if p.is_dir() and "-onnx-" in p.name)
    model = entry / "model.onnx"
    if damage == "truncated":  # a worker killed mid-copy, or a full disk
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "no_manifest":
        (entry / export_cache.MANIFEST).unlink()
    else:
        (entry / export_cache.MANIFEST).write_text("{not json")
    (local / f".{entry.name}.dead1234").mkdir()  # the staging folder of an exporter that died
    before = export_cache.export_count()
    with caplog.at_level(logging.WARNING):
        det = Detector(str(shapes_model), backend="onnx", device="cpu", export_dir=local)
    assert det.backend == "onnx" and det.export is not None and not det.export.reused
    assert export_cache.export_count() == before + 1
    assert export_cache.read_entry(entry) is not None  # whole again
    assert not (local / f".{entry.name}.dead1234").exists()
    img, shapes = make_images(AGREEMENT_SEED, 1)[0]
    assert len(det.detect(img, DetectParams(0.25)).boxes) >= len(shapes) - 1
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_export_failure_falls_back_to_torch_with_one_warning(
    shapes_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("a file where the cache folder should be")
    cases = [
        {"backend": "openvino", "export_dir": not_a_dir / "exports"},  # the cache cannot be created
        {"backend": "openvino", "export_dir": tmp_path / "ok", "int8": True},  # INT8 without calibration data
    ]
    img, shapes = make_images(AGREEMENT_SEED, 1)[0]
    for case in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            det = Detector(str(shapes_model), device="cpu", **case)  # type: ignore[arg-type]
        assert det.backend == "torch" and det.export is None
        assert len(det.detect(img, DetectParams(0.25)).boxes) >= len(shapes) - 1
        ours = [r for r in caplog.records if r.name == "detector.model"]
        assert len(ours) == 1, [r.getMessage() for r in ours]
        message = ours[0].getMessage()
        assert "using torch" in message and "\n" not in message and ours[0].exc_info is None


def test_two_workers_starting_together_export_once(shapes_model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "exports"
    code = (
        "import json, sys\n"
        "from detector import export_cache\n"
        "from detector.model import Detector\n"
        f"d = Detector({str(shapes_model)!r}, backend='onnx', device='cpu', export_dir={str(cache_dir)!r})\n"
        "print(json.dumps({'backend': d.backend, 'exports': export_cache.export_count(), 'reused': d.export.reused}))\n"
    )
    env = detbot_env()
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert [r["backend"] for r in results] == ["onnx", "onnx"]
    assert sum(r["exports"] for r in results) == 1
    assert sorted(r["reused"] for r in results) == [False, True]
    entries = [p for p in cache_dir.iterdir() if p.is_dir() and p.name != "cores"]  # cores: detector.cores
    assert len(entries) == 1 and export_cache.read_entry(entries[0]) is not None


def test_thread_budget_reaches_the_runtimes(shapes_model: Path, cache: Path) -> None:
    for threads in (1, 2):
        ov = Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=cache, threads=threads)
        assert ov._engine.compiled.get_property("INFERENCE_NUM_THREADS") == threads  # type: ignore[union-attr]
        # Unpinned: pinned workers all land on the same first core and two workers run at the speed of one.
        assert ov._engine.compiled.get_property("ENABLE_CPU_PINNING") is False  # type: ignore[union-attr]
        onnx = Detector(str(shapes_model), backend="onnx", device="cpu", export_dir=cache, threads=threads)
        options = onnx._engine._session.get_session_options()  # type: ignore[union-attr]
        assert options.intra_op_num_threads == threads


def test_auto_backend_choice() -> None:
    assert engines.resolve_backend("auto", "cpu") == "openvino"  # installed with detbot
    assert engines.resolve_backend("auto", "cuda:0") == "torch"
    assert engines.resolve_backend("onnx", "cpu") == "onnx"


def test_merge_nms_keeps_what_torchvision_keeps_at_every_floor() -> None:
    """Class by class and exact: the kept set is torchvision's batched NMS (in float64) at the floors
    detbot runs (answers 0.05, evaluation 0.001), for the all-pairs path and the loop alike."""
    import torch
    import torchvision

    rng = np.random.default_rng(77)
    n, nc = 1500, 4  # over NMS_MATRIX_LIMIT: one class takes the loop, the others the matrix
    objects = rng.integers(0, 40, n)
    centres = rng.uniform(50, 600, (40, 2))[objects] + rng.normal(0, 5, (n, 2))
    wh = rng.uniform(20, 150, (40, 2))[objects] * rng.uniform(0.85, 1.15, (n, 2))
    scores = rng.uniform(0, 1, (n, nc)) ** 4
    scores[:, 0] += 0.2  # class 0 wins most candidates: more than NMS_MATRIX_LIMIT of them
    raw = np.concatenate([centres, wh, scores], axis=1).T[None].astype(np.float32)
    for floor in (0.001, 0.05, 0.25):
        got = processing.decode_raw(raw, floor)
        pred = raw[0]
        best = pred[4:].max(axis=0)
        keep = best > floor
        xy, half = pred[:2, keep].T, pred[2:4, keep].T / 2
        boxes = torch.from_numpy(np.concatenate([xy - half, xy + half], axis=1)).double()
        ref = torchvision.ops.batched_nms(boxes, torch.from_numpy(best[keep]).double(),
                                          torch.from_numpy(pred[4:, keep].argmax(axis=0)), processing.NMS_IOU)
        assert np.array_equal(np.sort(best[keep][ref.numpy()]), np.sort(got[:, 4]))
        assert (np.diff(got[:, 4]) <= 0).all()  # best first
    limit = processing.NMS_MATRIX_LIMIT
    try:
        processing.NMS_MATRIX_LIMIT = 0  # every class through the loop
        looped = processing.decode_raw(raw, 0.001)
    finally:
        processing.NMS_MATRIX_LIMIT = limit
    matrix = processing.decode_raw(raw, 0.001)
    np.testing.assert_array_equal(matrix[:, 4:], looped[:, 4:])
    np.testing.assert_allclose(matrix[:, :4], looped[:, :4], atol=1e-3)


def test_merge_nms_keeps_what_ultralytics_keeps() -> None:
    """Our NumPy NMS keeps the candidates ultralytics' own NMS keeps; each box is then the score-weighted
    mean of the candidates it suppressed, so it moves a little, towards its neighbours, never far."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(1234)
    n, nc = 400, 3
    # Fifteen objects, each with a cluster of jittered candidate boxes around it, as a raw head gives.
    objects = rng.integers(0, 15, n)
    centres = rng.uniform(50, 600, (15, 2))[objects] + rng.normal(0, 4, (n, 2))
    wh = rng.uniform(40, 120, (15, 2))[objects] * rng.uniform(0.9, 1.1, (n, 2))
    scores = rng.uniform(0, 1, (n, nc)) ** 3
    raw = np.concatenate([centres, wh, scores], axis=1).T[None].astype(np.float32)  # 1 × (4+nc) × n
    ours = processing.decode_raw(raw, 0.25)
    ref = non_max_suppression(torch.from_numpy(raw), 0.25, processing.NMS_IOU, max_det=1000)[0].numpy()
    assert 10 < len(ref) < 0.5 * (raw[0, 4:].max(axis=0) > 0.25).sum()  # NMS really removed boxes
    assert ours.shape == ref.shape
    ours, ref = ours[np.argsort(-ours[:, 4])], ref[np.argsort(-ref[:, 4])]
    np.testing.assert_allclose(ours[:, 4:], ref[:, 4:], atol=1e-6)  # same candidates kept, same classes
    moved = [iou(tuple(a[:4]), tuple(b[:4])) for a, b in zip(ours, ref, strict=True)]
    assert min(moved) > 0.8 and sum(m < 0.999 for m in moved) > 5  # merged: moved, but only a little


def test_bench_command_measures_every_figure(shapes_model: Path, tmp_path: Path) -> None:
    out, folder = tmp_path / "bench.json", tmp_path / "photos"
    folder.mkdir()
    for photo in (BUS, ZIDANE):  # a folder of photos: each worker takes them in turn
        shutil.copyfile(photo, folder / photo.name)
    cmd = [*DETBOT, "bench", "--model", str(shapes_model), "--imgsz", "256", "--backends", "openvino",
           "--images", str(folder), "--runs", "3", "--workers", "2", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=detbot_env(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| openvino, " in proc.stdout and "| baseline |" in proc.stdout
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"baseline", "openvino", "floor-openvino"}
    ov = rows["openvino"]
    assert ov["backend"] == "openvino" and ov["export_s"] is not None
    assert 0 < ov["p50_ms"] <= ov["p95_ms"] and ov["ips_1"] > 0 and ov["ips_n"] > 0 and ov["p50_busy_ms"] > 0
    assert ov["rss_mb"] > 0 and ov["first_answer_warm_s"] > 0 and ov["first_answer_cold_s"] > 0
    assert report["image"] == str(folder) and "photos" in proc.stdout
    assert report["auto"].startswith("auto picks: openvino") and report["auto"] in proc.stdout
    assert set(ov["stages_ms"]) == {"decode_ms", "inference_ms", "annotate_ms", "objects", "stored_bytes", "jpeg_bytes"}
    assert rows["baseline"]["ratios"]["p50"] == pytest.approx(1.0)
    assert ov["ratios"]["p50"] == pytest.approx(rows["baseline"]["p50_ms"] / ov["p50_ms"])
    # The engine's floor, measured in the same run, beside detbot's cost per photo and its img/s.
    floor = rows["floor-openvino"]
    assert floor["mean_ms"] > 0 and floor["ips_n"] > 0
    assert ov["ratios"]["floor_mean"] == pytest.approx(ov["mean_ms"] / floor["mean_ms"])
    assert ov["ratios"]["floor_ips_n"] == pytest.approx(floor["ips_n"] / ov["ips_n"])
    assert "| floor ms/photo" in proc.stdout and f"{ov['ratios']['floor_mean']:.2f}×" in proc.stdout
    # Which precision, and why, in the header and on the row.
    assert report["precision"]["name"] == ov["precision"] and report["precision"]["reason"] in proc.stdout
    assert report["order"].startswith("shuffled") and "CPU: " in proc.stdout


def test_jpeg_fast_path_decodes_as_pil_does() -> None:
    from PIL import Image

    from detector import CorruptImageError
    from detector.image import decode, decode_image

    bus = BUS.read_bytes()
    fast = decode(bus, 10**8)
    assert fast.shape == (1080, 810, 3)
    assert np.abs(fast.astype(int) - decode_image(bus)).mean() < 1.0  # same photo, same colour order
    with pytest.raises(CorruptImageError):
        decode(bus[: len(bus) // 2], 10**8)  # truncated: no end marker, so the strict PIL path decides
    rotated = io.BytesIO()
    im = Image.fromarray(np.zeros((100, 200, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(rotated, format="JPEG", exif=exif.tobytes())
    assert decode(rotated.getvalue(), 10**8).shape == (200, 100, 3)
