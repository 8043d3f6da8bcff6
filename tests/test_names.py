"""Class names in Russian: the reviewed COCO table, translation files, and the way back for filters."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detector.names import (
    COCO_CLASSES,
    COCO_RU,
    ClassNames,
    ClassNamesError,
    load_class_names,
    lookup_key,
    parse_class_names,
)
from tests.conftest import ROOT, detbot_env

CYRILLIC_NAME = re.compile(r"^[а-яё«»\- ]+$", re.IGNORECASE)
SHAPES_RU = {"ru": {"circle": "круг", "square": ["квадрат", "квадратик"], "triangle": "треугольник"}}


def ultralytics_coco_names() -> list[str]:
    """The names in ultralytics' own coco.yaml, read from the package without importing it."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec and spec.origin
    data = yaml.safe_load((Path(spec.origin).parent / "cfg" / "datasets" / "coco.yaml").read_text())
    return [data["names"][i] for i in range(len(data["names"]))]


def test_coco_table_has_ultralytics_exact_names_in_order() -> None:
    assert list(COCO_CLASSES) == ultralytics_coco_names()
    assert list(COCO_RU) == list(COCO_CLASSES)


def test_every_russian_name_is_russian_and_no_name_means_two_classes() -> None:
    seen: dict[str, str] = {}
    for english, names in COCO_RU.items():
        for name in names:
            assert CYRILLIC_NAME.match(name), name
            assert seen.setdefault(lookup_key(name), english) == english, f"{name}: {english} and {seen[name]}"
    shown = [names[0] for names in COCO_RU.values()]
    assert len(set(shown)) == 80


def test_reviewed_names() -> None:
    coco = ClassNames()
    assert [coco.display(i, COCO_CLASSES[i], "ru") for i in (0, 16, 67, 64, 62)] == [
        "человек", "собака", "мобильный телефон", "компьютерная мышь", "телевизор"]
    assert coco.display(0, "person", "en") == "person"


def test_coco_names_only_for_a_coco_model() -> None:
    coco = ClassNames()
    # A custom model with a "person" class at another index keeps its own name.
    assert coco.display(2, "person", "ru") == "person"
    assert coco.labels({0: "circle", 1: "person"}, "ru") == {0: "circle", 1: "person"}
    assert coco.labels(dict(enumerate(COCO_CLASSES)), "ru")[77] == "плюшевый мишка"


def test_translation_file_wins_and_gives_custom_names() -> None:
    names = parse_class_names({"ru": {"circle": "круг", "person": "пешеход"}})
    assert names.labels({0: "circle", 1: "square"}, "ru") == {0: "круг", 1: "square"}
    assert names.display(0, "person", "ru") == "пешеход"
    assert names.display(0, "circle", "en") == "circle"


def test_a_model_with_russian_names_can_be_shown_in_english() -> None:
    names = parse_class_names({"en": {"кот": "cat"}})
    assert names.display(0, "кот", "en") == "cat"
    assert names.display(0, "кот", "ru") == "кот"
    assert names.model_name("Cat") == "кот"


@pytest.mark.parametrize(("written", "model"), [
    ("человек", "person"), ("Человек", "person"), ("люди", "person"), ("самолет", "airplane"),
    ("самолёт", "airplane"), ("мобильный_телефон", "cell phone"), ("мобильный-телефон", "cell phone"),
    ("хот-дог", "hot dog"), ("машина", "car"), ("person", "person"), ("dog", "dog"), ("дракон", "дракон"),
])
def test_filters_in_either_language(written: str, model: str) -> None:
    assert ClassNames().model_name(written) == model


def test_filters_through_a_translation_file() -> None:
    names = parse_class_names(SHAPES_RU)
    assert names.model_names(["круг", "КВАДРАТИК", "треугольник", "square"]) == [
        "circle", "square", "triangle", "square"]
    assert names.model_name("собака") == "dog"  # the built-in table still reads COCO names


def test_load_translation_file(tmp_path: Path) -> None:
    path = tmp_path / "shapes.names.json"
    path.write_text(json.dumps(SHAPES_RU, ensure_ascii=False), encoding="utf-8")
    assert load_class_names(path).display(1, "square", "ru") == "квадрат"
    assert load_class_names(None).display(0, "person", "ru") == "человек"
    assert load_class_names("").tables == {}


@pytest.mark.parametrize(("content", "error"), [
    ("not json", "not valid UTF-8 JSON"),
    ('["ru"]', "expected an object of languages"),
    ('{"ru": ["круг"]}', "must be a language code holding an object"),
    ('{"ru": {"circle": 3}}', "ru.circle: expected a name"),
    ('{"ru": {"circle": []}}', "ru.circle: expected a name"),
    ('{"ru": {"circle": [""]}}', "is not a class name"),
    ('{"ru": {"": "круг"}}', "empty class name"),
])
def test_bad_translation_file_is_one_clear_line(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "names.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ClassNamesError, match=re.escape(error)) as info:
        load_class_names(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_translation_file(tmp_path: Path) -> None:
    with pytest.raises(ClassNamesError, match="cannot be read"):
        load_class_names(tmp_path / "nope.json")


def test_names_module_loads_no_cv2_or_torch() -> None:
    code = "import detector.names, sys; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env=detbot_env(), check=True).stdout.split()
    assert not {"cv2", "torch", "ultralytics", "PIL"} & set(out)
