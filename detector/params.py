"""What a person asked for, as one value: :class:`DetectParams`.

The bot builds it from a caption, the chat's settings and the global default; it crosses the queue as a
plain dict (:meth:`DetectParams.to_dict` / :meth:`DetectParams.from_dict`) and the detector applies it.
Validation and the default confidence live here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detector.errors import InvalidConfidenceError, InvalidParamsError
from detector.settings import DEFAULT_CONFIDENCE

# A class filter or per-class list longer than this is a paste accident, not a request.
MAX_CLASSES = 20
# Longest class name accepted from outside (COCO's longest is 14 characters; custom models may be wordier).
MAX_CLASS_NAME = 64
# Thresholds are kept to this many decimals: what people write, and stable as a key and in JSON.
CONFIDENCE_DECIMALS = 4


def class_key(name: str) -> str:
    """How class names are compared: case-insensitive, ``_``/``-`` as spaces (``Teddy_Bear`` = ``teddy bear``)."""
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


def check_confidence(value: object, what: str = "The confidence") -> float:
    """A confidence in (0, 1], rounded; anything else raises InvalidConfidenceError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidConfidenceError(f"{what} must be a number above 0 and at most 1, got {value!r}.")
    rounded = round(float(value), CONFIDENCE_DECIMALS)
    # Checked after rounding: 0.00001 must be refused, not become a threshold of 0 that keeps every box.
    if not 0.0 < rounded <= 1.0:
        raise InvalidConfidenceError(f"{what} must be above 0 and at most 1, got {value}.")
    return rounded


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not class_key(name) or len(name) > MAX_CLASS_NAME:
        raise InvalidParamsError(f"{str(name)[:MAX_CLASS_NAME]!r} is not a class name.")
    return class_key(name)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class DetectParams:
    """The confidence floor, an optional class filter and per-class thresholds; None/empty: not given.

    A value may be partial (a caption that says only ``0.4``); :meth:`over` layers one value over another
    (caption over chat over global default) and :attr:`threshold` applies the default confidence.
    Class names are kept in their compared form (:func:`class_key`).
    """

    confidence: float | None = None
    # Stored as a tuple of compared names; any sequence of names is accepted.
    classes: Sequence[str] | None = None
    # (class, threshold) pairs, sorted by class: a tuple keeps the value hashable and its JSON stable.
    class_confidence: tuple[tuple[str, float], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.confidence is not None:
            object.__setattr__(self, "confidence", check_confidence(self.confidence))
        if self.classes is not None:
            if isinstance(self.classes, str) or not isinstance(self.classes, Iterable):
                raise InvalidParamsError("The class filter must be a list of class names.")
            classes = _unique(_check_name(c) for c in self.classes)
            if len(classes) > MAX_CLASSES:
                raise InvalidParamsError(f"At most {MAX_CLASSES} classes at once, please.")
            object.__setattr__(self, "classes", classes or None)
        per_class = self.class_confidence
        pairs = per_class.items() if isinstance(per_class, Mapping) else per_class
        checked = {_check_name(n): check_confidence(v, f"The confidence for {n}") for n, v in pairs}
        if len(checked) > MAX_CLASSES:
            raise InvalidParamsError(f"At most {MAX_CLASSES} per-class thresholds, please.")
        object.__setattr__(self, "class_confidence", tuple(sorted(checked.items())))

    # -- reading ----------------------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """The floor for every class without a threshold of its own (the global default when not given)."""
        return self.confidence if self.confidence is not None else DEFAULT_CONFIDENCE

    @property
    def per_class(self) -> dict[str, float]:
        return dict(self.class_confidence)

    def threshold_for(self, class_name: str) -> float:
        """The confidence a box of ``class_name`` needs to be shown."""
        return self.per_class.get(class_key(class_name), self.threshold)

    @property
    def min_confidence(self) -> float:
        """The lowest threshold any class has: what the model must be run at to find every wanted box."""
        return min([self.threshold, *(v for _, v in self.class_confidence)])

    def wants(self, class_name: str) -> bool:
        """Whether the class filter (if any) keeps ``class_name``."""
        return self.classes is None or class_key(class_name) in self.classes

    def keeps(self, class_name: str, confidence: float) -> bool:
        """Whether a box of ``class_name`` at ``confidence`` is part of the answer."""
        return self.wants(class_name) and confidence >= self.threshold_for(class_name)

    # -- combining --------------------------------------------------------------------------------------

    def over(self, base: DetectParams) -> DetectParams:
        """This value layered over ``base``: what is given here wins. A confidence given here is for every
        class, so it also replaces ``base``'s per-class thresholds (a caption's ``0.3`` beats a chat's
        ``person 0.6``); per-class thresholds given here are kept, and otherwise both layers' merge."""
        base_per_class = {} if self.confidence is not None else base.per_class
        return DetectParams(
            confidence=self.confidence if self.confidence is not None else base.confidence,
            classes=self.classes if self.classes is not None else base.classes,
            class_confidence=tuple({**base_per_class, **self.per_class}.items()),
        )

    @classmethod
    def layered(cls, *layers: DetectParams | None) -> DetectParams:
        """The first layer wins: ``layered(caption, chat, global_default)``."""
        out = cls()
        for layer in reversed(layers):
            if layer is not None:
                out = layer.over(out)
        return out

    # -- the queue --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "classes": list(self.classes) if self.classes is not None else None,
            "class_confidence": dict(self.class_confidence),
        }

    @classmethod
    def from_dict(cls, raw: object) -> DetectParams:
        """Parameters that crossed Redis: checked like any other input (raises a DetectorError)."""
        if not isinstance(raw, Mapping):
            raise InvalidParamsError("The detection parameters are not a mapping.")
        per_class = raw.get("class_confidence") or {}
        if not isinstance(per_class, Mapping):
            raise InvalidParamsError("Per-class thresholds must map class names to confidences.")
        return cls(raw.get("confidence"), raw.get("classes"), tuple(per_class.items()))
