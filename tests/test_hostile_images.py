"""Files built to make header parsers slow or greedy (issue 11, rule 1): each is refused from its structure,
quickly, with a friendly reply; wide images that are real are decoded without float64 copies.

Memory is measured in a child process (its VmHWM), so this test process's own history does not count.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bot.i18n import ENGLISH, RUSSIAN, catalog
from bot.replies import error_reply
from detector.errors import TooComplexImageError
from detector.image import decode_image, read_header
from detector.precheck import TOO_COMPLEX
from tests import images

# Generous: the structural walks take milliseconds; this only catches a parser that went back to seconds.
REFUSAL_SECONDS = 1.0
# A refusal may hold the file (up to 20 MB) and little else. Parsed by PIL, the same files took 50–270 MB
# (and 4–35 s); a refusal measured 17 MB at most, for an 18 MB file.
REFUSAL_GROWTH_MB = 40
# A worker's whole budget is 1.5 GB with the model; decoding a 36-megapixel 16-bit/float image took 1.2 GB alone.
WIDE_DECODE_MB = 700

_SMALL = np.full((32, 32, 3), 128, np.uint8)
HOSTILE: dict[str, Callable[[], bytes]] = {
    "tiff_million_strips": images.tiff_many_strips,
    "tiff_1x10000_strips": images.tiff_tall_strips,
    "tiff_thousands_of_frames": images.tiff_many_frames,
    "jpeg_millions_of_markers": lambda: images.jpeg_many_markers(images.encode(_SMALL, "JPEG")),
    "jpeg_thousands_of_scans": lambda: images.jpeg_many_scans(images.encode(_SMALL, "JPEG")),
    "jpeg_exif_garbage": lambda: images.jpeg_with_app1(images.encode(_SMALL, "JPEG"),
                                                       b"Exif\x00\x00" + images.exif_garbage()),
    "png_millions_of_chunks": images.png_many_chunks,
    "png_exif_garbage": lambda: images.png_with_exif(images.png_bytes(_SMALL), images.exif_garbage()),
    "gif_thousands_of_frames": images.gif_many_frames,
    "gif_millions_of_extensions": images.gif_many_extensions,
    "gif_comment_of_millions_of_sub_blocks": images.gif_one_long_comment,
    "png_thousands_of_text_bombs": images.png_many_texts,
    "webp_100k_chunks": lambda: images.webp_many_chunks(images.encode(_SMALL, "WEBP")),
}

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child started by this (large) test process
# would report the parent's peak and hide its own.
_CHILD = """
import json, sys, time
from detector.errors import ImageError
from detector.image import decode
def mb():
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmHWM:")).split()[1]) / 1024
base = mb()
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    started = time.perf_counter()
    try:
        shape = list(decode(data, 40_000_000).shape)
        code = "ok"
    except ImageError as exc:
        shape, code = [], exc.code
    del data
    print(json.dumps({"path": path, "code": code, "shape": shape, "s": time.perf_counter() - started,
                      "growth_mb": mb() - base}), flush=True)
"""


def _in_child(paths: list[Path]) -> list[dict[str, object]]:
    """Decode each file, in order, in a fresh process; the peak RSS growth over its start after each."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, paths)], cwd=root, capture_output=True,
                         text=True, check=True, timeout=300)
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_file_refused_quickly_with_a_friendly_reply(kind: str) -> None:
    data = HOSTILE[kind]()
    started = time.perf_counter()
    with pytest.raises(TooComplexImageError) as caught:
        read_header(data)
    assert time.perf_counter() - started < REFUSAL_SECONDS
    assert str(caught.value) == TOO_COMPLEX and caught.value.detail
    assert caught.value.code == "too_complex_image"
    # What the person reads, whether the bot refuses it or a worker does, in either language.
    assert error_reply(catalog(ENGLISH), caught.value.code) == TOO_COMPLEX
    assert "JPEG" in error_reply(catalog(RUSSIAN), caught.value.code) != TOO_COMPLEX
    with pytest.raises(TooComplexImageError):
        decode_image(data)


def test_hostile_files_cost_no_memory(tmp_path: Path) -> None:
    paths = []
    for kind, make in sorted(HOSTILE.items()):
        paths.append(tmp_path / kind)
        paths[-1].write_bytes(make())
    results = _in_child(paths)
    assert [r["code"] for r in results] == ["too_complex_image"] * len(paths), results
    assert max(float(r["growth_mb"]) for r in results) < REFUSAL_GROWTH_MB, results  # type: ignore[arg-type]


def test_ordinary_multi_strip_tiled_and_exif_files_still_accepted() -> None:
    """The caps are far from real files: strips, tiles, pages, EXIF, 16-bit all pass."""
    from PIL import Image

    photo = images.encode(np.random.default_rng(1).integers(0, 255, (600, 400, 3), np.uint8), "JPEG")
    rgb = Image.open(io.BytesIO(photo))
    cases = []
    for params in ({}, {"compression": "tiff_lzw"}, {"compression": "tiff_deflate"}):
        buf = io.BytesIO()
        rgb.save(buf, format="TIFF", **params)
        cases.append(buf.getvalue())
    pages = io.BytesIO()
    rgb.save(pages, format="TIFF", save_all=True, append_images=[rgb] * 5)
    cases.append(pages.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    with_exif = io.BytesIO()
    rgb.save(with_exif, format="JPEG", exif=exif)
    cases.append(with_exif.getvalue())
    gif = io.BytesIO()
    rgb.save(gif, format="GIF", save_all=True, append_images=[rgb] * 10)
    cases.append(gif.getvalue())
    for data in cases:
        assert decode_image(data).shape[2] == 3


def test_odd_but_harmless_exif_still_accepted() -> None:
    """Cameras leave odd next-pointers in EXIF (a third directory, a chained EXIF sub-directory): PIL never
    loads those, so they are no reason to refuse a photo."""
    import struct

    # IFD0 (orientation, EXIF pointer) -> IFD1 -> IFD2; the EXIF sub-directory points on to IFD1.
    at0, size = 8, 2 + 2 * 12 + 4
    at1, at2, sub = at0 + size, at0 + 2 * size, at0 + 3 * size
    blob = (b"II*\x00" + struct.pack("<I", at0) + images._ifd([(0x0112, 3, 1, 1), (34665, 4, 1, sub)], at1)
            + images._ifd([(0x0112, 3, 1, 1), (0x0100, 4, 1, 1)], at2)
            + images._ifd([(0x0112, 3, 1, 1), (0x0100, 4, 1, 1)], at1)
            + images._ifd([(0x9000, 7, 4, 0x30333230), (0x9003, 7, 4, 0)], at1))
    jpeg = images.jpeg_with_app1(images.encode(_SMALL, "JPEG"), b"Exif\x00\x00" + blob)
    assert decode_image(jpeg).shape == (32, 32, 3)


def test_wide_images_decode_without_ballooning(tmp_path: Path) -> None:
    """A 16-bit PNG and a float TIFF of 36 megapixels: decoded, scaled to 8 bits, within a worker's budget."""
    wide, floats = tmp_path / "wide.png", tmp_path / "float.tif"
    wide.write_bytes(images.wide_png())
    floats.write_bytes(images.float_tiff())
    for path in (wide, floats):
        (result,) = _in_child([path])
        assert result["code"] == "ok" and result["shape"] == [6000, 6000, 3], result
        assert float(result["growth_mb"]) < WIDE_DECODE_MB, result  # type: ignore[arg-type]


def test_wide_scaling_keeps_the_picture() -> None:
    """Brightest value to 255, negatives and NaN to 0, 8-bit data left as it is."""
    from detector.image import _to_uint8

    ramp = np.array([[0, 1000, 65535]], np.uint16)
    assert _to_uint8(ramp).tolist() == [[0, 3, 255]]
    floats = np.array([[-5.0, np.nan, 100.0, 200.0]], np.float32)
    assert _to_uint8(floats).tolist() == [[0, 0, 100, 200]]
