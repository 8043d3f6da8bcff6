"""No photo waits for a compile: every input shape, every backend; the canvases' geometry; the precision.

No timing is asserted anywhere: a compile a photo waits for is counted by the engine itself
(``compiles_on_demand``), and the speed figures live in docs/performance.md.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from detector import engines, processing
from detector.model import Detector
from detector.params import DetectParams
from ops.shapes import iou, make_images
from tests.conftest import TEST_EXPORT_DIR

CORES = 2
# From this confidence up a box must be found at both input shapes (a box near the threshold may fall on
# either side of it in one run and not the other).
SURE = 0.35
# The shapes model's training size and stride.
IMGSZ, STRIDE = 256, 32
# Photo sizes beyond the letterbox set: tiny, huge, panoramas both ways, odd sizes.
ODD_SIZES = [(1, 1), (7, 3000), (3000, 7), (33, 1000), (1000, 33), (1080, 810), (810, 1080), (4000, 3000),
             (479, 641), (255, 257)]


@pytest.fixture(scope="module")
def openvino(shapes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Detector:
    """An OpenVINO detector on two cores (a wide engine too), canvases still compiling when it answers."""
    mp = pytest.MonkeyPatch()
    mp.setattr("detector.model.usable_cores", lambda: CORES)
    try:
        return Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=TEST_EXPORT_DIR,
                        cores_dir=tmp_path_factory.mktemp("cores"))
    finally:
        mp.undo()


def test_every_photo_size_letterboxes_to_one_of_the_rect_shapes() -> None:
    shapes = set(processing.rect_shapes(640, 32))
    assert len(shapes) == 39 and (480, 640) in shapes and (640, 32) in shapes  # 20 + 20, the square once
    rng = np.random.default_rng(5)
    for h, w in [*ODD_SIZES, *rng.integers(1, 5000, (300, 2)).tolist()]:
        fitted, _ = processing.letterbox(np.zeros((h, w, 3), np.uint8), 640, 32)
        assert fitted.shape[:2] == processing.rect_shape(h, w, 640, 32) in shapes


def test_canvases_hold_every_shape_and_fit_the_common_photos_exactly() -> None:
    canvases = processing.canvases(640, 32)
    assert canvases[0] == (640, 640)
    assert set(canvases) == {(640, 640), (480, 640), (640, 480), (448, 640), (640, 448), (384, 640), (640, 384)}
    for shape in processing.rect_shapes(640, 32):
        held = processing.cover(shape, canvases)
        assert held in canvases and held[0] >= shape[0] and held[1] >= shape[1]
        smaller = [c for c in canvases if c[0] >= shape[0] and c[1] >= shape[1] and c[0] * c[1] < held[0] * held[1]]
        assert not smaller
    for w, h in ((4032, 3024), (6000, 4000), (1920, 1080), (1280, 1280)):  # 4:3, 3:2, 16:9, 1:1 photos
        for shape in (processing.rect_shape(h, w, 640, 32), processing.rect_shape(w, h, 640, 32)):
            assert processing.cover(shape, canvases) == shape  # no padding beyond their own shape
    assert processing.cover((480, 640), None) == (480, 640)  # an engine that runs any shape


def test_a_canvas_keeps_the_photo_centred_and_the_boxes_in_place() -> None:
    image = np.full((300, 1000, 3), 200, np.uint8)  # rect: 192 × 640 at 640
    own, geo = processing.letterbox(image, 640, 32)
    padded, big = processing.letterbox(image, 640, 32, canvas=(384, 640))
    assert own.shape[:2] == (192, 640) and padded.shape[:2] == (384, 640)
    assert big.gain == geo.gain and big.pad_x == geo.pad_x and big.pad_y == geo.pad_y + 96
    inner = padded[big.pad_y:big.pad_y + 192]
    assert (inner == 200).all() and (padded[: big.pad_y] == processing.PAD_VALUE).all()


def test_no_photo_of_any_shape_waits_for_a_compile(openvino: Detector) -> None:
    """Photos answered while the canvases compile in the background run on the square, after that on the
    smallest canvas that holds them; neither the one-core nor the all-cores engine compiles for a photo."""
    narrow, wide = openvino._engine, openvino._wide_engine
    assert narrow is not None and wide is not None
    before = narrow.compiles_on_demand, wide.compiles_on_demand
    sizes = [*itertools.product([8, 100, 192, 256, 300], [8, 100, 192, 256, 300]), *ODD_SIZES]
    images = [np.full((h, w, 3), 90, np.uint8) for h, w in sizes]
    for image in images[:5]:  # most likely before the background compiles are over (fine either way)
        openvino.detect(image)
    assert openvino.prepared.wait(120)
    canvases = processing.canvases(IMGSZ, STRIDE)
    assert narrow.ready() == wide.ready() == canvases
    for image in images:
        assert openvino.detect(image, waiting=0).timings.threads == CORES  # the all-cores engine
        openvino.detect(image, waiting=1)  # a backlog: the engine of this worker's own core
    for shape in processing.rect_shapes(IMGSZ, STRIDE):  # every shape a letterbox can give
        openvino.detect(np.full((*shape, 3), 90, np.uint8))
    assert (narrow.compiles_on_demand, wide.compiles_on_demand) == before == (0, 0)


def test_an_unplanned_shape_is_counted_as_a_compile(openvino: Detector) -> None:
    """The counter the test above relies on: an input outside the canvases is compiled on the photo's path."""
    engine = openvino._engine
    assert engine is not None
    before = engine.compiles_on_demand
    out = engine(np.full((96, 224, 3), 90, np.uint8))
    assert engine.compiles_on_demand == before + 1 and out[0].ndim == 3
    engine(np.full((96, 224, 3), 90, np.uint8))
    assert engine.compiles_on_demand == before + 1  # kept: compiled once


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_runtimes_without_static_shapes_run_any_shape_as_it_is(shapes_model: Path, backend: str) -> None:
    d = Detector(str(shapes_model), backend=backend, device="cpu", export_dir=TEST_EXPORT_DIR,
                 use_idle_cores=False)
    assert d._engine is not None and d._engine.canvases is None and d._engine.ready() is None
    for h, w in ODD_SIZES:
        d.detect(np.full((h, w, 3), 90, np.uint8))
    assert d._engine.compiles_on_demand == 0


Found = list[tuple[int, float, tuple[float, ...]]]  # class, confidence, box


def agree(a: Found, b: Found) -> bool:
    """Every box of ``a`` at SURE or more has a box of its class in ``b`` at IoU > 0.9."""
    return all(any(c == cls and iou(box, other) > 0.9 for c, _, other in b) for cls, conf, box in a if conf >= SURE)


def test_a_photo_in_a_canvas_finds_what_it_finds_at_its_own_shape(openvino: Detector) -> None:
    """Padding into a larger canvas is more grey around the same photo: same objects, same boxes."""
    assert openvino.prepared.wait(120)
    engine = openvino._engine
    assert engine is not None
    padded = 0
    for image, _shapes in make_images(seed=3300, count=16):
        fitted, geometry = processing.letterbox(image, IMGSZ, STRIDE)  # its own shape, compiled for it here
        rows = processing.postprocess(engine(fitted)[0], geometry, image.shape[:2], np.full(3, 0.2, np.float32), 100)
        own: Found = [(int(r[5]), float(r[4]), tuple(map(float, r[:4]))) for r in rows]
        det = openvino.detect(image, DetectParams(0.2), waiting=1)  # the same engine, in its canvas
        canvas: Found = [(b.class_id, b.confidence, b.xyxy) for b in det.boxes]
        assert agree(own, canvas) and agree(canvas, own)
        padded += processing.cover(fitted.shape[:2], engine.ready()) != fitted.shape[:2]
    assert padded >= 4  # the check above really compared padded runs


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", ("bf16", "AMX")),
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", ("bf16", "AVX512_BF16")),
    ("fpu avx2 avx512f avx512_vnni", ("f32", "neither")),
    ("fpu avx2 fma", ("f32", "neither")),
])
def test_auto_precision_follows_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str,
                                        expected: tuple[str, str]) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    monkeypatch.setattr(engines, "CPUINFO", str(cpuinfo))
    chosen = engines.choose_precision("auto")
    assert chosen.name == expected[0] and expected[1] in chosen.reason
    assert engines.choose_precision("f32") == engines.Precision("f32", "asked for, not auto")
    assert "Some CPU, " in engines.cpu_summary()


def test_the_chosen_precision_reaches_openvino(shapes_model: Path) -> None:
    d = Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=TEST_EXPORT_DIR,
                 use_idle_cores=False, precision="f32")
    assert d.precision.name == "f32"
    hint = d._engine.compiled.get_property("INFERENCE_PRECISION_HINT")  # type: ignore[union-attr]
    assert "32" in str(hint)


def test_doctor_names_the_precision_and_why(shapes_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.settings import WorkerSettings
    from ops.doctor import Context, check_model

    monkeypatch.setenv("DETBOT_MODEL", str(shapes_model))
    monkeypatch.setenv("DETBOT_BACKEND", "openvino")
    monkeypatch.setenv("DETBOT_EXPORT_DIR", str(TEST_EXPORT_DIR))
    monkeypatch.setenv("DETBOT_PRECISION", "f32")
    result = check_model(Context(settings=WorkerSettings(), telegram=None, offline=True))
    assert result.status == "ok" and "backend openvino in f32 (asked for, not auto)" in result.detail
