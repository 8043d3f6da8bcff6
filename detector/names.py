"""Class names in people's languages: the reviewed Russian names of the 80 COCO classes, translation files
for other models, and the way back from a name a person wrote to the model's own name.

Pure data and lookups (no cv2, no torch): the bot uses it to read ``/detect человек`` and to write its
answers, the worker to draw labels in the chat's language; both must give the same names.

A translation file (``DETBOT_CLASS_NAMES``) is JSON, one table per language, keyed by the model's own
class names; a value is the name shown, or a list whose first entry is shown and whose every entry is
accepted in filters::

    {"ru": {"circle": "круг", "square": ["квадрат", "квадратик"], "triangle": "треугольник"}}

A model's class without an entry is shown under its own name. The built-in COCO table is used for a box
only when the model's class at that index is COCO's (``person`` at 0, ``bicycle`` at 1, …), so a custom
model that happens to have a ``person`` class elsewhere keeps its own name unless its file says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from detector.params import MAX_CLASS_NAME, class_key

# The COCO classes in ultralytics' order and spelling (ultralytics/cfg/datasets/coco.yaml).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# Reviewed Russian names: the everyday word a Russian speaker would use for what COCO's images show (a
# "mouse" is the computer one, a "remote" the TV's, a "sports ball" any ball), in the nominative singular
# so "человек ×3" reads right. Further entries are synonyms accepted in filters (``/detect машина``).
COCO_RU: dict[str, tuple[str, ...]] = {
    "person": ("человек", "люди"),
    "bicycle": ("велосипед",),
    "car": ("автомобиль", "машина"),
    "motorcycle": ("мотоцикл",),
    "airplane": ("самолёт",),
    "bus": ("автобус",),
    "train": ("поезд",),
    "truck": ("грузовик",),
    "boat": ("лодка",),
    "traffic light": ("светофор",),
    "fire hydrant": ("пожарный гидрант", "гидрант"),
    "stop sign": ("знак «Стоп»", "знак стоп"),
    "parking meter": ("паркомат",),
    "bench": ("скамейка", "скамья", "лавка"),
    "bird": ("птица",),
    "cat": ("кошка", "кот"),
    "dog": ("собака",),
    "horse": ("лошадь", "конь"),
    "sheep": ("овца",),
    "cow": ("корова",),
    "elephant": ("слон",),
    "bear": ("медведь",),
    "zebra": ("зебра",),
    "giraffe": ("жираф",),
    "backpack": ("рюкзак",),
    "umbrella": ("зонт", "зонтик"),
    "handbag": ("сумка", "сумочка"),
    "tie": ("галстук",),
    "suitcase": ("чемодан",),
    "frisbee": ("фрисби",),
    "skis": ("лыжи",),
    "snowboard": ("сноуборд",),
    "sports ball": ("мяч",),
    "kite": ("воздушный змей",),
    "baseball bat": ("бейсбольная бита", "бита"),
    "baseball glove": ("бейсбольная перчатка",),
    "skateboard": ("скейтборд",),
    "surfboard": ("доска для сёрфинга",),
    "tennis racket": ("теннисная ракетка", "ракетка"),
    "bottle": ("бутылка",),
    "wine glass": ("бокал",),
    "cup": ("чашка", "кружка"),
    "fork": ("вилка",),
    "knife": ("нож",),
    "spoon": ("ложка",),
    "bowl": ("миска",),
    "banana": ("банан",),
    "apple": ("яблоко",),
    "sandwich": ("сэндвич", "бутерброд"),
    "orange": ("апельсин",),
    "broccoli": ("брокколи",),
    "carrot": ("морковь", "морковка"),
    "hot dog": ("хот-дог",),
    "pizza": ("пицца",),
    "donut": ("пончик",),
    "cake": ("торт",),
    "chair": ("стул",),
    "couch": ("диван",),
    "potted plant": ("растение в горшке", "комнатное растение"),
    "bed": ("кровать",),
    "dining table": ("обеденный стол", "стол"),
    "toilet": ("унитаз",),
    "tv": ("телевизор",),
    "laptop": ("ноутбук",),
    "mouse": ("компьютерная мышь", "мышь", "мышка"),
    "remote": ("пульт",),
    "keyboard": ("клавиатура",),
    "cell phone": ("мобильный телефон", "телефон", "смартфон"),
    "microwave": ("микроволновка",),
    "oven": ("духовка",),
    "toaster": ("тостер",),
    "sink": ("раковина",),
    "refrigerator": ("холодильник",),
    "book": ("книга",),
    "clock": ("часы",),
    "vase": ("ваза",),
    "scissors": ("ножницы",),
    "teddy bear": ("плюшевый мишка",),
    "hair drier": ("фен",),
    "toothbrush": ("зубная щётка",),
}
# The language of the built-in table.
COCO_LANGUAGE = "ru"
# A translation file bigger than this is not a class table (the bot reads it at start, the worker too).
MAX_FILE_BYTES = 1_000_000


class ClassNamesError(ValueError):
    """A translation file that cannot be used; the message names the file and what is wrong."""


def lookup_key(name: str) -> str:
    """How a written name is matched: :func:`class_key`, and ``ё`` as ``е`` (both are written)."""
    return class_key(name).replace("ё", "е")


# language -> class_key(model's name) -> (shown name, *other accepted names)
Tables = Mapping[str, Mapping[str, tuple[str, ...]]]


@dataclass(frozen=True)
class ClassNames:
    """The names shown for a model's classes per language, and the way back from any of them."""

    tables: Tables = field(default_factory=dict)
    # The model's own spelling of each name in ``tables`` (what the way back returns).
    originals: Mapping[str, str] = field(default_factory=dict)
    # Every accepted name (lookup_key) to the model's name; built once, here, from the two above.
    _reverse: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reverse = {lookup_key(alias): english for english, aliases in COCO_RU.items() for alias in aliases}
        for table in self.tables.values():
            for key, aliases in table.items():
                # The translation file wins over the built-in table.
                reverse.update({lookup_key(a): self.originals.get(key, key) for a in aliases})
        object.__setattr__(self, "_reverse", reverse)

    def display(self, class_id: int | None, name: str, language: str) -> str:
        """The name a person reading ``language`` sees for the model's class ``class_id`` named ``name``
        (``class_id`` None: a name without its box, as in a class filter)."""
        entry = self.tables.get(language, {}).get(class_key(name))
        if entry:
            return entry[0]
        if language == COCO_LANGUAGE and _is_coco(class_id, name):
            return COCO_RU[class_key(name)][0]
        return name

    def labels(self, names: Mapping[int, str], language: str) -> dict[int, str]:
        """Every class of a model (``{id: name}``, as ultralytics gives them) to its shown name."""
        return {i: self.display(i, n, language) for i, n in names.items()}

    def model_name(self, written: str) -> str:
        """A class name as a person wrote it, in any language, to the model's name; unknown: unchanged.

        The model decides in the end whether it knows the name (the worker answers with its own list).
        """
        return self._reverse.get(lookup_key(written), written)

    def model_names(self, written: Iterable[str]) -> list[str]:
        return [self.model_name(w) for w in written]

    def aliases(self) -> dict[str, str]:
        """Every accepted name in another language (as :func:`lookup_key` writes it) to the model's name."""
        return dict(self._reverse)


def _is_coco(class_id: int | None, name: str) -> bool:
    if class_id is None:
        return class_key(name) in COCO_RU
    return 0 <= class_id < len(COCO_CLASSES) and COCO_CLASSES[class_id] == name


def _entry(value: object, where: str) -> tuple[str, ...]:
    aliases = [value] if isinstance(value, str) else value
    if not isinstance(aliases, list) or not aliases:
        raise ClassNamesError(f"{where}: expected a name or a non-empty list of names")
    for alias in aliases:
        if not isinstance(alias, str) or not class_key(alias) or len(alias) > MAX_CLASS_NAME:
            raise ClassNamesError(f"{where}: {str(alias)[:MAX_CLASS_NAME]!r} is not a class name")
    return tuple(a.strip() for a in aliases)


def parse_class_names(raw: object, source: str = "the translation file") -> ClassNames:
    """A decoded translation file (``{language: {model name: name or [names]}}``) to ClassNames."""
    if not isinstance(raw, dict):
        raise ClassNamesError(f"{source}: expected an object of languages, e.g. {{\"ru\": {{\"dog\": \"собака\"}}}}")
    tables: dict[str, dict[str, tuple[str, ...]]] = {}
    originals: dict[str, str] = {}
    for language, table in raw.items():
        if not isinstance(language, str) or not language.isalpha() or not isinstance(table, dict):
            raise ClassNamesError(f"{source}: {language!r} must be a language code holding an object of names")
        for model_name, value in table.items():
            where = f"{source}: {language}.{model_name}"
            if not class_key(str(model_name)):
                raise ClassNamesError(f"{where}: empty class name")
            tables.setdefault(language.lower(), {})[class_key(model_name)] = _entry(value, where)
            originals[class_key(model_name)] = model_name
    return ClassNames(tables, originals)


def load_class_names(path: str | Path | None) -> ClassNames:
    """The translation file at ``path`` (None or empty: the built-in COCO table only).

    Raises ClassNamesError with one line saying what is wrong: read once at start, a bad file stops it.
    """
    if not path:
        return ClassNames()
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ClassNamesError(f"{file}: larger than {MAX_FILE_BYTES} bytes; not a class name table")
        raw = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClassNamesError(f"{file}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassNamesError(f"{file}: not valid UTF-8 JSON ({exc})") from None
    return parse_class_names(raw, str(file))
