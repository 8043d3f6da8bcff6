"""The deployment's models as the bot sees them (``DETBOT_MODELS``, :mod:`jobs.models`): which one a chat
uses (``/model``), which one a command asks for (``/detect``, ``/segment``, ``/pose``, ``/<name>``), and for
each its queue's client, the class names and task its workers published, and whether one of them is alive.

- A chat's model is its choice, else the default (the first listed). A choice no longer in the list (the
  deployment changed) falls back to the default.
- ``/<name>`` asks for the model of that name; ``/detect``, ``/segment``, ``/pose`` with no model of that name
  ask for the first model whose workers run that task. ``/detect`` is also the group trigger it always was:
  with no detection model it means the chat's own model.
- Class names per model (its workers publish them at start): a filter is checked against the chosen model's;
  a chat's per-class thresholds against every model's (one threshold for ``person`` serves each model that
  knows the class) and applied by those that do.

Reads are blocking (sync redis-py, through the clients): callers on the event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.classes import ClassIndex, PublishedClasses
from detector.params import class_key
from jobs.client import DetectionClient
from jobs.models import TASKS, Liveness, ModelInfo, ModelSpec

# What the workers of a queue run is read again after this long (as the class names are): a worker restarted
# with other weights is seen within a minute, and a busy bot does not read Redis for every caption.
INFO_REFRESH_SECONDS = 60.0
# Before a model's workers published anything it is looked at again sooner: its first worker is starting.
INFO_MISSING_REFRESH_SECONDS = 5.0


@dataclass
class Model:
    """One model of the deployment: its spec, the client of its queue, the class names its workers published."""

    spec: ModelSpec
    client: DetectionClient
    classes: PublishedClasses
    default: bool
    _info: ModelInfo | None = field(default=None, repr=False)
    _info_at: float = field(default=float("-inf"), repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def queue(self) -> str:
        return self.spec.queue


class Models:
    """Every model of the deployment, the default first; each with its own queue client."""

    def __init__(self, specs: Sequence[ModelSpec], make_client: Callable[[ModelSpec], DetectionClient],
                 aliases: dict[str, str], clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.all: list[Model] = []
        for i, spec in enumerate(specs):
            client = make_client(spec)
            self.all.append(Model(spec, client, PublishedClasses(client.class_names, aliases, clock), i == 0))

    @property
    def default(self) -> Model:
        return self.all[0]

    @property
    def several(self) -> bool:
        return len(self.all) > 1

    def named(self, name: str | None) -> Model | None:
        if not name:
            return None
        wanted = name.strip().lower()
        return next((m for m in self.all if m.name and m.name == wanted), None)

    def commands(self) -> frozenset[str]:
        """Every command that asks for a model for one photo: the tasks' and the models' names."""
        return frozenset(TASKS) | {m.name for m in self.all if m.name}

    def for_chat(self, chosen: str | None) -> Model:
        """The chat's model: its choice while the deployment has it, else the default."""
        return self.named(chosen) or self.default

    def for_command(self, command: str, chosen: str | None) -> Model | None:
        """The model ``/<command>`` asks for; None when the deployment has none (``/pose`` without a pose
        model). Blocking: may read what the workers published."""
        named = self.named(command)
        if named is not None:
            return named
        if command in TASKS:
            by_task = next((m for m in self.all if self.task(m) == command), None)
            if by_task is not None:
                return by_task
            if command == "detect":
                return self.for_chat(chosen)  # the group trigger of old: the chat's own model
        return None

    def info(self, model: Model) -> ModelInfo | None:
        """What the model's workers published at start (task, weights), read at most once a minute."""
        every = INFO_REFRESH_SECONDS if model._info is not None else INFO_MISSING_REFRESH_SECONDS
        if self.clock() - model._info_at >= every:
            model._info = model.client.model_info()
            model._info_at = self.clock()
        return model._info

    def task(self, model: Model) -> str | None:
        info = self.info(model)
        return info.task if info else None

    def liveness(self, model: Model) -> Liveness:
        """Whether a worker of the model is alive now, or was a moment ago (never cached: it is what the
        person is told)."""
        return model.client.liveness()

    def class_index(self, model: Model) -> ClassIndex | None:
        """The model's class names as people write them; None before any of its workers started."""
        return model.classes.index()

    def every_class(self) -> ClassIndex | None:
        """Every model's class names together (a chat's per-class thresholds are checked against them);
        None before any worker started."""
        names: list[str] = []
        aliases: dict[str, str] = {}
        for model in self.all:
            index = model.classes.index()
            if index is not None:
                names += [n for n in index.names if n not in names]
                aliases.update(model.classes.aliases)
        return ClassIndex(names, aliases) if names else None

    def thresholds_for(self, model: Model, per_class: tuple[tuple[str, float], ...],
                       ) -> tuple[tuple[str, float], ...]:
        """A chat's per-class thresholds the model applies: those of classes it knows (all of them before
        its workers published their names: the worker then checks)."""
        if not per_class or not self.several:
            return per_class
        index = model.classes.index()
        if index is None:
            return per_class
        known = {class_key(n) for n in index.names}
        return tuple((name, value) for name, value in per_class if class_key(name) in known)
