"""Labels in any script: Cyrillic really drawn with the font's glyphs, inside the image, offline, cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detector.draw import colour_of, draw_boxes, line_width
from detector.labels import (
    BLACK,
    WHITE,
    FontNotFoundError,
    LabelFont,
    default_font_path,
    draw_label,
    font_size_for,
    padding,
    place,
    text_colour,
)
from detector.result import Box
from tests.conftest import ROOT, detbot_env

RUSSIAN_ALPHABET = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ«»"
# A code point no font has a glyph for (the last private-use one): it renders as the font's "missing" box.
NO_GLYPH = "\U0010fffd"
BLUE = (255, 42, 4)
GREY = 114


@pytest.fixture(scope="module")
def font() -> LabelFont:
    return LabelFont()


def canvas(h: int = 200, w: int = 400) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def ink(image: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Where the label's text is: pixels that are not the label's background colour."""
    return np.any(image != np.array(background, np.uint8), axis=2)


def glyphs(font: LabelFont, text: str, size: int) -> np.ndarray:
    """The text drawn directly by Pillow with the same font, as a boolean mask: the reference."""
    face = font.face(size)
    ascent, descent = face.getmetrics()
    image = Image.new("L", (int(face.getlength(text)) + 1, ascent + descent))
    ImageDraw.Draw(image).text((0, ascent), text, font=face, fill=255, anchor="ls")
    return np.asarray(image) > 127


def test_cyrillic_label_is_drawn_with_the_fonts_glyphs(font: LabelFont) -> None:
    image = canvas()
    x1, y1, x2, y2 = draw_label(image, font, ["человек"], (50, 100, 300, 190), BLUE, 3)
    drawn = image[y1:y2, x1:x2]
    assert (drawn[0, 0] == BLUE).all()  # the label's background
    size = font_size_for(3)
    pad = padding(size)
    # White text on the blue background: how far each pixel went from blue to white is the glyph's coverage.
    coverage = (drawn[..., 2].astype(float) - BLUE[2]) / (255 - BLUE[2])
    text = coverage > 0.5
    reference = glyphs(font, "человек", size)
    region = text[pad: pad + reference.shape[0], pad: pad + reference.shape[1]]
    assert region.sum() > 100
    assert (region == reference[:, : region.shape[1]]).mean() > 0.99
    # ... and not what a renderer without Cyrillic would print.
    question_marks = glyphs(font, "?" * len("человек"), size)
    width = min(question_marks.shape[1], region.shape[1])
    assert (region[:, :width] != question_marks[:, :width]).mean() > 0.05


def test_every_russian_letter_has_a_glyph(font: LabelFont) -> None:
    missing = font.mask(NO_GLYPH, 20)
    for letter in RUSSIAN_ALPHABET:
        mask = font.mask(letter, 20)
        assert mask.max() > 0, letter
        assert mask.shape != missing.shape or (mask != missing).any(), f"{letter} has no glyph in {font.path}"
    assert len({font.mask(c, 20).tobytes() for c in RUSSIAN_ALPHABET}) == len(RUSSIAN_ALPHABET)


def test_label_reads_number_name_confidence_on_one_baseline(font: LabelFont) -> None:
    size = font_size_for(2)
    parts = font.parts(["3", "собака", "0.87"], size, BLUE)
    heights = {p.shape[0] for p in parts}
    assert heights == {font.mask("x", size).shape[0] + 2 * padding(size)}
    # padding, "3", space, "собака", space, "0.87", padding
    assert len(parts) == 7


def test_pieces_are_rendered_once(font: LabelFont) -> None:
    first = font.parts(["1", "кошка", "0.50"], 22, BLUE)
    again = font.parts(["2", "кошка", "0.50"], 22, BLUE)
    assert first[3] is again[3] and first[5] is again[5]


@pytest.mark.parametrize("box", [
    (0, 0, 50, 50),            # top-left corner: no room above, the label goes inside
    (380, 150, 400, 200),      # right edge: shifted left to stay in the image
    (-20, -20, 500, 300),      # box bigger than the image
    (390, 195, 399, 199),      # bottom-right corner
])
def test_label_stays_inside_the_image(font: LabelFont, box: tuple[int, int, int, int]) -> None:
    image = canvas()
    x1, y1, x2, y2 = draw_label(image, font, ["12", "мобильный телефон", "0.99"], box, BLUE, 2)
    assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 200
    assert ink(image, (GREY, GREY, GREY)).any()


def test_label_wider_than_the_image_is_clipped_not_an_error(font: LabelFont) -> None:
    image = canvas(30, 40)
    x1, _y1, x2, _y2 = draw_label(image, font, ["1", "плюшевый мишка", "0.99"], (5, 5, 30, 25), BLUE, 2)
    assert (x1, x2) == (0, 40)


def test_label_goes_above_the_box_when_there_is_room() -> None:
    assert place((100, 80, 200, 150), (60, 20), (400, 300)) == (100, 60)
    assert place((100, 10, 200, 150), (60, 20), (400, 300)) == (100, 10)


def test_text_colour_follows_the_background() -> None:
    assert text_colour((243, 243, 243)) == BLACK
    assert text_colour(BLUE) == WHITE


def test_font_comes_from_matplotlib_without_importing_it() -> None:
    code = ("from detector.labels import LabelFont; f = LabelFont(); f.mask('ж', 20); import sys; "
            "print(f.path); print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env=detbot_env(), check=True).stdout.split("\n")
    assert out[0].endswith("mpl-data/fonts/ttf/DejaVuSans.ttf") and out[1] == "False"
    assert (Path(out[0]).parent / "LICENSE_DEJAVU").is_file()
    assert default_font_path() == Path(out[0])


def test_a_missing_font_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FontNotFoundError, match="does not exist"):
        LabelFont(tmp_path / "nope.ttf")


# -- the annotated image --------------------------------------------------------------------------------

def test_boxes_are_labelled_number_name_confidence_in_the_given_language(font: LabelFont) -> None:
    boxes = [Box(0, "circle", 0.91, 40, 60, 140, 160), Box(1, "square", 0.55, 200, 100, 300, 190)]
    russian = draw_boxes(canvas(), boxes, {0: "круг", 1: "квадрат"}, font)
    english = draw_boxes(canvas(), boxes, None, font)
    size = font_size_for(line_width(russian))
    for number, box, name in ((1, boxes[0], "круг"), (2, boxes[1], "квадрат")):
        # Exactly the label of these pieces (each checked against the font's glyphs above), above the box.
        label = np.hstack(font.parts([str(number), name, f"{box.confidence:.2f}"], size, colour_of(box.class_id)))
        x, y = int(box.x1), int(box.y1) - label.shape[0]
        assert (russian[y: y + label.shape[0], x: x + label.shape[1]] == label).all(), name
    assert (russian != english).any()


def test_a_class_keeps_its_colour(font: LabelFont) -> None:
    image = draw_boxes(canvas(), [Box(7, "x", 0.9, 50, 80, 150, 180), Box(7, "x", 0.8, 200, 80, 300, 180)],
                       None, font)
    assert (image[130, 50] == colour_of(7)).all() and (image[130, 200] == colour_of(7)).all()
