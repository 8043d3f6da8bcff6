"""DetectParams: one value for what a person asked, validated once, layered, and applied by the detector."""

from __future__ import annotations

import math

import pytest

from detector.errors import InvalidConfidenceError, InvalidParamsError, UnknownClassError
from detector.params import MAX_CLASSES, DetectParams, class_key
from detector.settings import DEFAULT_CONFIDENCE
from ops.shapes import make_images

# Seeds the model never saw (training used 1, validation 2).
FRESH_SEED = 1201


def test_names_compare_case_and_separator_insensitively() -> None:
    assert class_key("Teddy_Bear") == class_key("teddy  bear") == class_key("TEDDY-bear") == "teddy bear"
    params = DetectParams(0.4, ["Person", "cell_phone", "person"], (("Dog", 0.3),))
    assert params.classes == ("person", "cell phone")
    assert params.class_confidence == (("dog", 0.3),)
    assert params.threshold_for("DOG") == 0.3 and params.threshold_for("person") == 0.4


def test_default_confidence_applies_in_one_place() -> None:
    assert DetectParams().threshold == DEFAULT_CONFIDENCE
    assert DetectParams(0.5).threshold == 0.5
    assert DetectParams(0.5, class_confidence=(("cat", 0.1),)).min_confidence == 0.1


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, 0.00001, math.nan, "0.4", True])
def test_bad_confidences_are_refused(bad: object) -> None:
    with pytest.raises(InvalidConfidenceError):
        DetectParams(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfidenceError):
        DetectParams(class_confidence=(("dog", bad),))  # type: ignore[arg-type]


def test_bad_class_lists_are_refused() -> None:
    with pytest.raises(InvalidParamsError):
        DetectParams(classes="dog")
    with pytest.raises(InvalidParamsError):
        DetectParams(classes=[""])
    with pytest.raises(InvalidParamsError, match=f"At most {MAX_CLASSES}"):
        DetectParams(classes=[f"c{i}" for i in range(MAX_CLASSES + 1)])


def test_layers_first_wins_and_per_class_merges() -> None:
    caption = DetectParams(classes=["dog"], class_confidence=(("dog", 0.6),))
    chat = DetectParams(0.35, class_confidence=(("dog", 0.2), ("cat", 0.3)))
    default = DetectParams(0.25)
    merged = DetectParams.layered(caption, chat, default)
    assert merged == DetectParams(0.35, ["dog"], (("cat", 0.3), ("dog", 0.6)))
    assert DetectParams.layered(None, DetectParams(), default).threshold == 0.25
    # Precedence: caption > chat per-class > chat default > global default.
    assert DetectParams.layered(DetectParams(0.3), chat, default) == DetectParams(0.3)
    own = DetectParams(0.3, class_confidence=(("dog", 0.5),))
    assert DetectParams.layered(own, chat, default) == DetectParams(0.3, class_confidence=(("dog", 0.5),))


def test_round_trip_through_the_queue_and_untrusted_dicts() -> None:
    params = DetectParams(0.4, ["person"], (("dog", 0.3),))
    assert DetectParams.from_dict(params.to_dict()) == params
    assert DetectParams.from_dict({}) == DetectParams()
    with pytest.raises(InvalidParamsError):
        DetectParams.from_dict(["confidence", 0.4])
    with pytest.raises(InvalidParamsError):
        DetectParams.from_dict({"class_confidence": [["dog", 0.3]]})
    with pytest.raises(InvalidConfidenceError):
        DetectParams.from_dict({"confidence": "high"})


def test_keeps_applies_filter_and_per_class_thresholds() -> None:
    params = DetectParams(0.5, ["dog", "cat"], (("cat", 0.2),))
    assert params.keeps("cat", 0.25) and not params.keeps("dog", 0.25) and params.keeps("dog", 0.5)
    assert not params.keeps("person", 0.99)


def test_detector_applies_per_class_thresholds(detector) -> None:  # type: ignore[no-untyped-def]
    """A class raised to 1.0 disappears, the others stay exactly as with the plain threshold."""
    for img, shapes in make_images(FRESH_SEED, 8):
        names = sorted({s.name for s in shapes})
        if len(names) < 2:
            continue
        plain = detector.detect(img, DetectParams(0.25))
        muted = detector.detect(img, DetectParams(0.25, class_confidence=((names[0], 1.0),)))
        assert {b.class_name for b in muted.boxes} == {b.class_name for b in plain.boxes} - {names[0]}
        assert [b for b in plain.boxes if b.class_name != names[0]] == list(muted.boxes)
        lowered = detector.detect(img, DetectParams(0.9, class_confidence=((names[1], 0.05),)))
        low = detector.detect(img, DetectParams(0.05, [names[1]]))
        assert [b for b in lowered.boxes if b.class_name == names[1]] == list(low.boxes)
        assert all(b.confidence >= 0.9 for b in lowered.boxes if b.class_name != names[1])
        assert muted.class_confidence == {names[0]: 1.0}
        return
    pytest.fail("no image with two classes in the sample")


def test_detector_refuses_unknown_per_class_names(detector) -> None:  # type: ignore[no-untyped-def]
    img = make_images(FRESH_SEED, 1)[0][0]
    with pytest.raises(UnknownClassError, match="circle, square, triangle"):
        detector.detect(img, DetectParams(class_confidence=(("giraffe", 0.5),)))
