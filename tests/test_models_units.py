"""Several models without processes: DETBOT_MODELS read and refused, which model a worker serves, how
``detbot run`` shares workers out, which model a chat or a command gets, the /model and /classes words, and a
worker that names a model the list lacks."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from bot.classes import ClassIndex
from bot.i18n import catalog
from bot.models import Models
from bot.parsing import UsageError, parse_caption, parse_model
from bot.replies import ModelRow, model_not_running, model_status, no_model
from jobs.models import ModelInfo, ModelSpec, deployment, parse_models
from jobs.settings import QueueSettings, WorkerSettings
from ops.run import split_workers
from tests.conftest import DETBOT, ROOT, detbot_env

SPEC = "detect=yolo26n.pt, segment=/models/yolo26n-seg.pt,pose=yolo26n-pose.pt"


def test_the_list_names_each_model_and_its_queue() -> None:
    specs = deployment(SPEC, "ignored.pt", "detbot")
    assert specs == (ModelSpec("detect", "yolo26n.pt", "detbot"),
                     ModelSpec("segment", "/models/yolo26n-seg.pt", "detbot-segment"),
                     ModelSpec("pose", "yolo26n-pose.pt", "detbot-pose"))
    assert deployment(None, "best.pt", "mine") == (ModelSpec("", "best.pt", "mine"),)


@pytest.mark.parametrize(("text", "problem"), [
    ("detect", "not name=weights"),
    ("detect=", "not name=weights"),
    ("Detect Me=x.pt", "not a model name"),
    ("1st=x.pt", "not a model name"),
    ("help=x.pt", "the bot's own commands"),
    ("a=x.pt,a=y.pt", "listed twice"),
    (" , ", "no model listed"),
])
def test_a_wrong_list_is_refused_saying_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_models(text)
    with pytest.raises(ValueError, match=problem):
        QueueSettings.model_validate({"models": text})


def test_a_worker_serves_one_model_its_weights_and_queue() -> None:
    base = {"models": SPEC, "queue": "detbot"}
    first = WorkerSettings.model_validate(base).serving()
    assert (first.model, first.queue) == ("yolo26n.pt", "detbot")
    seg = WorkerSettings.model_validate({**base, "worker_model": "Segment"}).serving()
    assert (seg.model, seg.queue) == ("/models/yolo26n-seg.pt", "detbot-segment")
    alone = WorkerSettings.model_validate({"model": "best.pt"}).serving()
    assert (alone.model, alone.queue) == ("best.pt", "detbot")
    with pytest.raises(ValueError, match="not in DETBOT_MODELS"):
        WorkerSettings.model_validate({**base, "worker_model": "depth"}).serving()
    with pytest.raises(ValueError, match="DETBOT_MODELS, which is not set"):
        WorkerSettings.model_validate({"worker_model": "segment"}).serving()


def test_a_worker_naming_a_model_the_list_lacks_exits_2_in_one_line() -> None:
    result = subprocess.run([*DETBOT, "worker"], cwd=ROOT, env=detbot_env(DETBOT_MODELS=SPEC,
                            DETBOT_WORKER_MODEL="depth"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "DETBOT_WORKER_MODEL=depth is not in DETBOT_MODELS (it has: detect, segment, pose)" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(("total", "count", "expected"), [
    (2, 1, [2]), (2, 3, [1, 1, 1]), (8, 3, [3, 3, 2]), (4, 2, [2, 2]), (5, 2, [3, 2]), (0, 3, [0, 0, 0]),
])
def test_run_shares_the_workers_out_the_default_first_at_least_one_each(total: int, count: int,
                                                                         expected: list[int]) -> None:
    assert split_workers(total, count) == expected


# -- which model answers (the bot's view, with stand-in clients) -------------------------------------------

class FakeClient:
    """What bot.models asks a queue's client: its published names and task, and its workers' liveness."""

    def __init__(self, spec: ModelSpec, names: list[str] | None, task: str | None) -> None:
        self.spec, self.names, self.task = spec, names, task
        self.info_reads = 0

    def class_names(self) -> list[str] | None:
        return self.names

    def model_info(self) -> ModelInfo | None:
        self.info_reads += 1
        return ModelInfo(self.task, self.spec.weights) if self.task else None


def models_of(spec: str, published: dict[str, tuple[list[str] | None, str | None]]) -> Models:
    clock = [0.0]

    def make(s: ModelSpec) -> Any:
        return FakeClient(s, *published.get(s.name or "", (None, None)))

    return Models(deployment(spec, "one.pt", "detbot"), make, {"человек": "person"}, clock=lambda: clock[0])


def test_a_chat_gets_its_choice_or_the_default_and_commands_their_model() -> None:
    models = models_of("coco=yolo11n.pt,masks=yolo11n-seg.pt", {
        "coco": (["person", "car"], "detect"), "masks": (["person", "dog"], "segment")})
    assert models.for_chat(None).name == "coco"
    assert models.for_chat("masks").name == "masks"
    assert models.for_chat("gone").name == "coco"  # a choice the deployment no longer has
    assert models.commands() == {"detect", "segment", "pose", "coco", "masks"}
    assert models.for_command("masks", None).name == "masks"  # type: ignore[union-attr]
    assert models.for_command("segment", None).name == "masks"  # type: ignore[union-attr]  # by task
    assert models.for_command("detect", "masks").name == "coco"  # type: ignore[union-attr]
    assert models.for_command("pose", None) is None


def test_detect_is_the_chats_model_when_no_model_detects() -> None:
    models = models_of("masks=seg.pt,kp=pose.pt", {"masks": (["person"], "segment"), "kp": (["person"], "pose")})
    assert models.for_command("detect", "kp").name == "kp"  # type: ignore[union-attr]
    assert models.for_command("detect", None).name == "masks"  # type: ignore[union-attr]


def test_one_model_serves_its_own_task_only() -> None:
    seg = models_of("", {"": (["person"], "segment")})
    assert not seg.several
    assert seg.for_command("segment", None) is seg.default
    assert seg.for_command("pose", None) is None
    assert seg.for_command("detect", None) is seg.default  # the group trigger, as always


def test_per_class_thresholds_apply_to_the_models_that_know_the_class() -> None:
    models = models_of("coco=yolo11n.pt,kp=pose.pt", {"coco": (["person", "car"], "detect"),
                                                     "kp": (["person"], "pose")})
    every = models.every_class()
    assert isinstance(every, ClassIndex) and every.names == ["person", "car"]
    assert every.lookup("человек") == "person"
    chat = (("car", 0.6), ("person", 0.5))
    assert models.thresholds_for(models.named("kp"), chat) == (("person", 0.5),)  # type: ignore[arg-type]
    assert models.thresholds_for(models.default, chat) == chat


def test_what_workers_published_is_read_again_only_after_a_while() -> None:
    models = models_of("coco=a.pt,masks=b.pt", {"coco": (["x"], "detect"), "masks": (["x"], "segment")})
    models.task(models.default)
    models.task(models.default)
    assert models.default.client.info_reads == 1  # type: ignore[attr-defined]


# -- what people write and read -----------------------------------------------------------------------------

def test_captions_and_model_arguments() -> None:
    commands = frozenset({"detect", "segment", "pose", "coco"})
    caption = parse_caption("/segment person 0.3", "bot", commands)
    assert caption.command and caption.name == "segment" and caption.args.confidence == 0.3
    assert parse_caption("/coco@bot", "bot", commands).name == "coco"
    assert parse_caption("/segment@other", "bot", commands).other_bot
    assert not parse_caption("/segment", "bot").command  # /detect only when nothing else is served
    assert parse_model([]) is None
    assert parse_model(["reset"]) == "reset"
    assert parse_model(["/Segment"]) == "segment"
    with pytest.raises(UsageError):
        parse_model(["two", "words"])


def test_model_sentences_in_both_languages() -> None:
    en, ru = catalog("en"), catalog("ru")
    rows = [ModelRow("detect", "yolo11n.pt", "detect", True, False, True),
            ModelRow("segment", "yolo11n-seg.pt", "segment", True, True, False),
            ModelRow("pose", "", "", False, False, False)]
    text = model_status(en, rows)
    assert "• detect: yolo11n.pt, detection — default" in text
    assert "▸ segment: yolo11n-seg.pt, segmentation — used in this chat" in text
    assert "• pose: not started yet — no worker running now" in text
    assert "▸ segment: yolo11n-seg.pt, сегментация — используется в этом чате" in model_status(ru, rows)
    assert no_model(en, "pose", ["detect"]) == "This bot has no pose model.\nModels here: detect (/model tells more)."
    assert no_model(ru, "depth", []) == "У этого бота нет модели «depth»."
    assert "/detect" in model_not_running(ru, "pose", "detect")
