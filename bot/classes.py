"""Class names as people write them: multi-word names, any case, ``_`` or ``-`` for spaces, typos answered
with a suggestion.

The names are the model's own, published in Redis by every worker at start (``jobs.store.class_names``),
so the bot checks a filter before queueing a photo, without knowing which model the workers run.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from detector.params import class_key

# How close a typo must be to a class name to be suggested (difflib's ratio; "dgo" ~ "dog" is 0.67).
SUGGEST_CUTOFF = 0.6
# At most this many suggestions: one is what a person reads; two helps with "car"/"cat" style typos.
MAX_SUGGESTIONS = 2


@dataclass(frozen=True)
class Unknown:
    """A name no class has, and the closest class names, best first."""

    name: str
    suggestions: tuple[str, ...]


class ClassIndex:
    """The model's class names, looked up the way people write them."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._by_key = {class_key(n): n for n in names}
        self._longest = max((len(k.split()) for k in self._by_key), default=1)

    def lookup(self, written: str) -> str | None:
        """The model's name for ``written`` (``Teddy_Bear`` -> ``teddy bear``), or None."""
        return self._by_key.get(class_key(written))

    def suggest(self, written: str) -> tuple[str, ...]:
        found = difflib.get_close_matches(class_key(written), list(self._by_key), MAX_SUGGESTIONS, SUGGEST_CUTOFF)
        return tuple(self._by_key[k] for k in found)

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
