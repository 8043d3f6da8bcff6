"""The detector on the real shapes model: accuracy on unseen images, every input format, every bad input."""

from __future__ import annotations

import io
import resource

import numpy as np
import pytest
from PIL import Image

from detector import (
    CorruptImageError,
    Detection,
    EmptyImageError,
    ImageTooLargeError,
    InvalidConfidenceError,
    NotAnImageError,
    UnknownClassError,
    UnsupportedFormatError,
    format_text,
)
from detector.draw import encode_jpeg
from detector.image import decode_image
from detector.params import DetectParams
from detector.settings import MAX_ANNOTATED_SIDE
from ops.shapes import iou, make_images
from tests.images import BUS, encode, huge_png, png_bytes

# Seeds the model never saw (training used 1, validation 2).
FRESH_SEED = 1001
FRESH_IMAGES = 12
# Recall is checked at this threshold: on 120 unseen images (seeds 1001-1010, ~400 shapes) the shipped model
# finds every shape with its class at 0.15; at 0.25 one small circle in those 400 scores as a square.
RECALL_CONFIDENCE = 0.15


def unmatched(det: Detection, shapes: list) -> list:  # type: ignore[type-arg]
    """Drawn shapes with no detected box of the same class at IoU >= 0.5 (each box used once)."""
    free = list(det.boxes)
    missing = []
    for shape in shapes:
        best = max((b for b in free if b.class_name == shape.name), key=lambda b: iou(b.xyxy, shape.box), default=None)
        if best is None or iou(best.xyxy, shape.box) < 0.5:
            missing.append(shape)
        else:
            free.remove(best)
    return missing


def test_finds_every_shape_in_unseen_images(detector) -> None:  # type: ignore[no-untyped-def]
    images = make_images(FRESH_SEED, FRESH_IMAGES)
    total = 0
    for img, shapes in images:
        det = detector.detect(png_bytes(img), DetectParams(RECALL_CONFIDENCE))
        assert unmatched(det, shapes) == [], format_text(det)
        assert (det.width, det.height) == (img.shape[1], img.shape[0])
        total += len(shapes)
    assert total >= 2 * FRESH_IMAGES  # several shapes per image, so the check means something


def test_boxes_sorted_by_confidence_and_typed(detector) -> None:  # type: ignore[no-untyped-def]
    img, shapes = make_images(FRESH_SEED + 1, 1)[0]
    det = detector.detect(img, DetectParams(0.05))
    confs = [b.confidence for b in det.boxes]
    assert confs == sorted(confs, reverse=True)
    assert len(det.boxes) >= len(shapes)
    for b in det.boxes:
        assert detector.names[b.class_id] == b.class_name
        assert 0 <= b.x1 < b.x2 <= det.width and 0 <= b.y1 < b.y2 <= det.height
    assert det.timings.inference_ms > 0
    assert Detection.from_dict(det.to_dict()) == det


def test_class_filter_by_name(detector) -> None:  # type: ignore[no-untyped-def]
    for img, shapes in make_images(FRESH_SEED + 2, 6):
        names = {s.name for s in shapes}
        if len(names) < 2:
            continue
        keep = sorted(names)[0]
        det = detector.detect(img, DetectParams(0.25, [keep.upper()]))
        assert {b.class_name for b in det.boxes} == {keep}
        assert det.classes == (keep,)
        assert unmatched(det, [s for s in shapes if s.name == keep]) == []
        return
    pytest.fail("no image with two classes in the sample")


def test_unknown_class_and_bad_confidence_are_clear(detector) -> None:  # type: ignore[no-untyped-def]
    img = make_images(FRESH_SEED, 1)[0][0]
    with pytest.raises(UnknownClassError, match="circle, square, triangle"):
        detector.detect(img, DetectParams(classes=["dog"]))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(InvalidConfidenceError):
            DetectParams(bad)


def test_higher_threshold_never_adds_boxes(detector) -> None:  # type: ignore[no-untyped-def]
    img = make_images(FRESH_SEED + 3, 1)[0][0]
    low, high = detector.detect(img, DetectParams(0.05)), detector.detect(img, DetectParams(0.9))
    assert len(high.boxes) <= len(low.boxes)
    assert all(b.confidence >= 0.9 for b in high.boxes)
    assert high.confidence == 0.9


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_decode_to_the_exact_pixels(fmt: str) -> None:
    img = make_images(FRESH_SEED + 4, 1)[0][0]
    assert np.array_equal(decode_image(encode(img, fmt)), img)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_supported_format_gives_the_same_detections(detector, fmt: str) -> None:  # type: ignore[no-untyped-def]
    img, shapes = make_images(FRESH_SEED, 1)[0]
    reference = detector.detect(img, DetectParams(0.25))
    assert unmatched(reference, shapes) == []
    data = encode(img, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    det = detector.detect(data, DetectParams(0.25))
    assert (det.width, det.height) == (img.shape[1], img.shape[0])
    # Lossy formats (JPEG, WebP, GIF's 256 colours) may move a box a little, never lose a shape.
    assert unmatched(det, shapes) == [], f"{fmt}: {format_text(det)}"
    if fmt in ("PNG", "BMP", "TIFF"):
        assert det.boxes == reference.boxes  # same pixels, same answer


def test_modes_grayscale_rgba_palette_16bit_decode_to_bgr() -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (255, 0, 0)
    cases = {
        "L": Image.fromarray(rgb).convert("L"),
        "RGBA": Image.fromarray(rgb).convert("RGBA"),
        "P": Image.fromarray(rgb).convert("P"),
        "I;16": Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
    }
    for mode, im in cases.items():
        buf = io.BytesIO()
        im.save(buf, format="TIFF" if mode in ("I;16", "CMYK") else "PNG")
        arr = decode_image(buf.getvalue())
        assert arr.shape == (40, 60, 3) and arr.dtype == np.uint8, mode
    # Colour order: red in RGB must come out as (0, 0, 255) in BGR.
    assert tuple(decode_image(png_rgb(rgb))[0, 0]) == (0, 0, 255)


def png_rgb(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_rgba_transparency_is_composited_on_white() -> None:
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    assert decode_image(buf.getvalue())[5, 5].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied() -> None:
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[:, :100] = (0, 255, 0)  # left half green
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    arr = decode_image(buf.getvalue())
    assert arr.shape[:2] == (200, 100)
    # After a clockwise turn the former left half is on top.
    assert arr[20, 50, 1] > 200 and arr[180, 50, 1] < 60


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (30, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    blue, _, red = decode_image(buf.getvalue())[10, 10].tolist()
    assert red > 200 and blue < 50  # the red first frame, not the blue second one


def test_bad_inputs_have_their_own_error_and_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bus = BUS.read_bytes()
    with pytest.raises(EmptyImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(NotAnImageError, match="not an image"):
        decode_image(b"%PDF-1.4 definitely not a photo" * 10)
    with pytest.raises(CorruptImageError, match="damaged"):
        decode_image(bus[: len(bus) // 2])
    with pytest.raises(CorruptImageError):
        decode_image(bus[:300])
    ico = io.BytesIO()
    Image.new("RGB", (16, 16)).save(ico, format="ICO")
    with pytest.raises(UnsupportedFormatError, match="ICO"):
        decode_image(ico.getvalue())


def test_pixel_limit_checked_from_header_without_decoding() -> None:
    bomb = huge_png()
    assert len(bomb) < 200_000  # a small file ...
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError, match="too large"):
        decode_image(bomb)  # ... that would need 400 MB (1.2 GB as RGB) to decode
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100
    # The limit is configurable, and an ordinary photo is above a tiny one.
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        decode_image(BUS.read_bytes(), max_pixels=100_000)
    assert decode_image(BUS.read_bytes(), max_pixels=1_000_000).shape == (1080, 810, 3)


def test_detector_rejects_bad_input_and_keeps_working(detector) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EmptyImageError):
        detector.detect(b"")
    with pytest.raises(NotAnImageError):
        detector.detect(b"hello")
    img, shapes = make_images(FRESH_SEED, 1)[0]
    assert unmatched(detector.detect(img), shapes) == []


def test_annotated_jpeg_is_real_and_capped(detector) -> None:  # type: ignore[no-untyped-def]
    img, _ = make_images(FRESH_SEED, 1)[0]
    det, jpeg = detector.detect_annotated(png_bytes(img), DetectParams(0.25))
    out = Image.open(io.BytesIO(jpeg))
    assert out.format == "JPEG" and out.size == (det.width, det.height)
    assert det.timings.annotate_ms > 0
    # Boxes were drawn: the annotated image differs from the plain one where the boxes are.
    drawn = np.asarray(out.convert("RGB"))[:, :, ::-1].astype(int)
    b = det.boxes[0]
    edge = drawn[int(b.y1) : int(b.y2), max(0, int(b.x1) - 1) : int(b.x1) + 2]
    plain = img[int(b.y1) : int(b.y2), max(0, int(b.x1) - 1) : int(b.x1) + 2].astype(int)
    assert np.abs(edge - plain).mean() > 30
    big = np.zeros((3000, 5000, 3), np.uint8)
    capped = Image.open(io.BytesIO(encode_jpeg(big)))
    assert max(capped.size) == MAX_ANNOTATED_SIDE and capped.size == (2560, 1536)


def test_real_photo_runs(detector) -> None:  # type: ignore[no-untyped-def]
    det = detector.detect(BUS.read_bytes(), DetectParams(0.25))
    assert (det.width, det.height) == (810, 1080)
    assert det.model == "shapes.pt"


def test_inference_size_is_the_models_own(detector) -> None:  # type: ignore[no-untyped-def]
    assert detector.imgsz == 256  # trained at 256 px; running it at 640 would miss large shapes


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [("missing.pt", None, "does not exist"), ("broken.pt", b"not a checkpoint", "not loadable YOLO weights")],
)
def test_unloadable_model_is_one_clear_error(tmp_path, name: str, content: bytes | None, reason: str) -> None:  # type: ignore[no-untyped-def]
    from detector import ModelLoadError
    from detector.model import Detector

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=reason) as info:
        Detector(str(path), backend="torch")
    assert "DETBOT_MODEL" in str(info.value) and "\n" not in str(info.value)
