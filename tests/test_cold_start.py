"""A cold start: PyTorch answers while the export is made in the background, then the export takes over."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from detector import export_cache
from detector.model import Detector
from detector.params import DetectParams
from ops.shapes import iou, make_images
from tests.conftest import TEST_EXPORT_DIR

# Fresh images the shapes model never saw (its train/val seeds are 1 and 2; other tests use other ranges).
SEED = 3200
# Confidence the compared objects clearly pass in either engine.
SURE = 0.3
# A background export of the tiny shapes model finishes well within this; far beyond it, it hangs.
EXPORT_TIMEOUT = 300.0


def gated_export(monkeypatch: pytest.MonkeyPatch, gate: threading.Event) -> None:
    """Start-up sees an empty cache; the background export waits for ``gate`` before it runs."""
    real = export_cache.ensure_export

    def ensure_export(spec: export_cache.ExportSpec, cache_dir: Path) -> export_cache.Export:
        assert gate.wait(EXPORT_TIMEOUT), "the test never opened the gate"
        return real(spec, cache_dir)

    monkeypatch.setattr(export_cache, "cached_export", lambda spec, cache_dir: None)
    monkeypatch.setattr(export_cache, "ensure_export", ensure_export)


def test_answers_come_from_pytorch_before_the_export_and_from_the_export_after(
    shapes_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    gated_export(monkeypatch, gate)
    det = Detector(str(shapes_model), backend="onnx", device="cpu", export_dir=TEST_EXPORT_DIR,
                   cores_dir=tmp_path / "cores", background_export=True)
    image = make_images(SEED, 1)[0][0]
    before = det.detect(image, DetectParams(SURE))
    assert det.backend == "torch" and det.export is None and not det.export_done.is_set()
    assert before.boxes  # a real answer, served while the export has not even started
    gate.set()
    assert det.export_done.wait(EXPORT_TIMEOUT)
    assert det.backend == "onnx" and det.export is not None
    after = det.detect(image, DetectParams(SURE))
    assert [b.class_name for b in after.boxes] == [b.class_name for b in before.boxes]
    assert all(iou(a.xyxy, b.xyxy) > 0.9 for a, b in zip(after.boxes, before.boxes, strict=True))


def test_a_failed_background_export_leaves_pytorch_answering(
    shapes_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(spec: export_cache.ExportSpec, cache_dir: Path) -> export_cache.Export:
        raise export_cache.ExportError("no space left on device")

    monkeypatch.setattr(export_cache, "cached_export", lambda spec, cache_dir: None)
    monkeypatch.setattr(export_cache, "ensure_export", broken)
    with caplog.at_level(logging.WARNING, logger="detector.model"):
        det = Detector(str(shapes_model), backend="onnx", device="cpu", export_dir=tmp_path / "exports",
                       use_idle_cores=False, background_export=True)
        assert det.export_done.wait(EXPORT_TIMEOUT)
    assert det.backend == "torch" and det.export is None
    assert "onnx backend unavailable for shapes.pt, using torch: ExportError: no space left" in caplog.text
    assert det.detect(make_images(SEED, 1)[0][0], DetectParams(SURE)).boxes


def test_a_warm_cache_loads_the_export_at_once(shapes_model: Path) -> None:
    export_cache.ensure_export(export_cache.ExportSpec(shapes_model, "onnx"), TEST_EXPORT_DIR)
    det = Detector(str(shapes_model), backend="onnx", device="cpu", export_dir=TEST_EXPORT_DIR,
                   use_idle_cores=False, background_export=True)
    assert det.backend == "onnx" and det.export is not None and det.export_done.is_set()
