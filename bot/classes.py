"""Class names as people write them: multi-word names, any case, ``_`` or ``-`` for spaces, typos answered
with a suggestion.

The names are the model's own, published in Redis by every worker at start (``jobs.store.class_names``),
so the bot checks a filter before queueing a photo, without knowing which model the workers run.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass

from detector.names import ClassNames, lookup_key
from detector.params import DetectParams

# How close a typo must be to a class name to be suggested (difflib's ratio; "dgo" ~ "dog" is 0.67).
SUGGEST_CUTOFF = 0.6
# At most this many suggestions: one is what a person reads; two helps with "car"/"cat" style typos.
MAX_SUGGESTIONS = 2
# The published names are read again after this long: a worker restarted with another model is seen
# within a minute, and a busy bot does not read Redis for every caption.
NAMES_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class Unknown:
    """A name no class has, and the closest class names, best first."""

    name: str
    suggestions: tuple[str, ...]


class ClassIndex:
    """The model's class names, looked up the way people write them."""

    def __init__(self, names: list[str], aliases: dict[str, str] | None = None) -> None:
        """``aliases``: names in other languages (lookup keys) to model names; only those of this model count."""
        self.names = list(names)
        own = {lookup_key(n): n for n in names}
        self._by_key = {k: own[lookup_key(v)] for k, v in (aliases or {}).items() if lookup_key(v) in own}
        self._by_key.update(own)  # the model's own spelling wins over a translation
        self._longest = max((len(k.split()) for k in self._by_key), default=1)

    def lookup(self, written: str) -> str | None:
        """The model's name for ``written`` (``Teddy_Bear`` -> ``teddy bear``, ``собака`` -> ``dog``), or None."""
        return self._by_key.get(lookup_key(written))

    def suggest(self, written: str) -> tuple[str, ...]:
        found = difflib.get_close_matches(lookup_key(written), list(self._by_key), MAX_SUGGESTIONS * 3,
                                          SUGGEST_CUTOFF)
        return tuple(dict.fromkeys(self._by_key[k] for k in found))[:MAX_SUGGESTIONS]

    def resolve(self, words: list[str]) -> tuple[list[str], list[Unknown]]:
        """Words of a filter (already split on spaces and commas) to class names: the longest run of words
        that names a class wins (``cell phone`` before ``cell``); what names nothing is reported once."""
        found: list[str] = []
        unknown: list[Unknown] = []
        i = 0
        while i < len(words):
            for size in range(min(self._longest, len(words) - i), 0, -1):
                name = self.lookup(" ".join(words[i:i + size]))
                if name is not None:
                    found.append(name)
                    i += size
                    break
            else:
                unknown.append(Unknown(words[i], self.suggest(words[i])))
                i += 1
        return list(dict.fromkeys(found)), unknown

    def params(self, asked: DetectParams) -> tuple[DetectParams, list[Unknown]]:
        """``asked`` with every class name (filter and per-class thresholds) as the model writes it, and the
        names no class has. The filter's words are read together (``cell``, ``phone`` -> ``cell phone``)."""
        classes, unknown = self.resolve(list(asked.classes)) if asked.classes else (None, [])
        per_class = []
        for name, value in asked.class_confidence:
            found, missing = self.resolve([name])
            if missing or len(found) != 1:
                unknown.append(Unknown(name, self.suggest(name)))
            else:
                per_class.append((found[0], value))
        return DetectParams(asked.confidence, classes or None, tuple(per_class)), unknown


class PublishedClasses:
    """The class names the queue's workers published, read through ``load`` at most once a minute."""

    def __init__(self, load: Callable[[], list[str] | None], aliases: dict[str, str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.load = load
        self.aliases = aliases
        self.clock = clock
        self._index: ClassIndex | None = None
        self._read_at = float("-inf")

    def index(self) -> ClassIndex | None:
        """None until a worker has started (the worker then checks the names itself). Blocking: Redis."""
        if self.clock() - self._read_at >= NAMES_REFRESH_SECONDS:
            names = self.load()
            self._index = ClassIndex(names, self.aliases) if names else None
            self._read_at = self.clock()
        return self._index


def model_params(index: ClassIndex | None, asked: DetectParams, names: ClassNames,
                 ) -> tuple[DetectParams, list[Unknown]]:
    """The class names of ``asked`` as the model writes them, checked against the names its workers
    published (``index``: multi-word names, either language, a suggestion for a typo). Before any worker
    has published them (``index`` None) the names are only translated, and the worker checks them."""
    if not (asked.classes or asked.class_confidence):
        return asked, []
    if index is not None:
        return index.params(asked)
    classes = names.model_names(asked.classes) if asked.classes else None
    per_class = tuple((names.model_name(name), value) for name, value in asked.class_confidence)
    return DetectParams(asked.confidence, classes, per_class), []
