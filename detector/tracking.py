"""Objects followed across a clip's frames: one id per physical object, and what the clip held over time.

The tracker is ByteTrack as supervision ships it (``supervision.ByteTrack``, numpy and scipy only), one per
class: the last supervision release that has it (0.30) is also the first that no longer pulls ``opencv-python`` beside
the headless build. ultralytics' own ByteTrack would import torch into every worker (measured: +620 MB RSS
on a worker of 270 MB), and supervision's successor package ``trackers`` requires ``opencv-python``. All of
it sits behind :class:`Tracker`, so another library is one class away.

Tracking is online and deterministic: the ids at frame ``t`` depend only on the detections of frames up to
``t``. So a clip cut into spans (one queue job each) replays the detections of the spans before it and gets
the same ids as one pass over the whole clip, with no tracker state to keep anywhere but those detections.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detector.params import DetectParams
from detector.result import Box

# ByteTrack's second association uses boxes down to this confidence (its own constant) to keep a track
# alive through a weak frame (motion blur, partial occlusion); detection on frames runs down to it.
TRACK_FLOOR = 0.1
# A track lost this long (no box matched it) ends; an object back after that is a new one.
LOST_SECONDS = 2.0
# A new track needs this many frames in a row before it gets an id: a one-frame false positive is no object.
# Clips of fewer sampled frames than CONFIRM_MIN_FRAMES take every track at once.
CONFIRM_FRAMES = 2
CONFIRM_MIN_FRAMES = 6
# ByteTrack starts a track from a box 0.1 above its activation threshold: the activation is set that much
# below the chat's threshold, so a track starts from any box the chat's threshold shows.
START_MARGIN = 0.1
# Track ids drawn and listed as ``#3``.
ID_PREFIX = "#"


@dataclass(frozen=True)
class TrackedBox:
    """A box of one frame and the track it belongs to."""

    track_id: int
    box: Box


@dataclass(frozen=True)
class Track:
    """One physical object over the clip: its class (the one its boxes gave the most confidence to), when it
    was first and last seen, its best confidence."""

    id: int
    class_id: int
    class_name: str
    first_seen_s: float
    last_seen_s: float
    confidence: float
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tracker:
    """ByteTrack over a clip's frames, one :meth:`update` per sampled frame, in order; one ByteTrack per class,
    so an object never turns into another of another class (a triangle that leaves, and a circle that comes
    in on its path a moment later, are two objects)."""

    def __init__(self, fps: float, threshold: float, frames: int) -> None:
        self.fps = fps
        self.threshold = threshold
        self.confirm = CONFIRM_FRAMES if frames >= CONFIRM_MIN_FRAMES else 1
        self._by_class: dict[int, Any] = {}
        self._ids: dict[tuple[int, int], int] = {}

    def _new(self) -> Any:
        from supervision import ByteTrack

        with warnings.catch_warnings():
            # supervision announces that ByteTrack moves to its ``trackers`` package (see the module's docstring).
            warnings.simplefilter("ignore")
            return ByteTrack(track_activation_threshold=max(TRACK_FLOOR, self.threshold - START_MARGIN),
                             lost_track_buffer=max(1, round(LOST_SECONDS * 30)), frame_rate=self.fps,
                             minimum_consecutive_frames=self.confirm)

    def update(self, boxes: Sequence[Box]) -> list[TrackedBox]:
        """The boxes of the next frame that belong to a track, with the track's id (unique over every class;
        a box that starts no track and continues none is left out)."""
        for box in boxes:
            if box.class_id not in self._by_class:
                self._by_class[box.class_id] = self._new()
        out = []
        for class_id, tracker in sorted(self._by_class.items()):
            own = [b for b in boxes if b.class_id == class_id]  # every tracker steps each frame: lost ones age
            for track_id, box in _step(tracker, own):
                key = (class_id, track_id)
                if key not in self._ids:
                    self._ids[key] = len(self._ids) + 1
                out.append(TrackedBox(self._ids[key], box))
        return out


def _step(tracker: Any, boxes: Sequence[Box]) -> list[tuple[int, Box]]:
    """One frame through one ByteTrack: (its track id, box) for each box it matched to a track."""
    from supervision import Detections

    if boxes:
        found = Detections(xyxy=np.array([b.xyxy for b in boxes], dtype=np.float32),
                           confidence=np.array([b.confidence for b in boxes], dtype=np.float32),
                           class_id=np.array([b.class_id for b in boxes], dtype=int),
                           data={"index": np.arange(len(boxes))})
    else:
        found = Detections.empty()
    tracked = tracker.update_with_detections(found)
    if tracked.tracker_id is None or not len(tracked):
        return []
    return [(int(track_id), boxes[int(i)]) for track_id, i in zip(tracked.tracker_id, tracked.data["index"],
                                                                    strict=True)]


class ClipTracker:
    """A clip's tracking so far, advanced frame by frame: per frame, the boxes shown — those of tracks that
    have had a box passing the chat's thresholds and class filter by then, each with its track's number.
    Tracks are numbered 1, 2, ... in the order they are first shown, so the numbers have no gaps.

    ``total``: the clip's sampled frames (a one-frame false positive is no object only in a clip long enough
    to tell). Kept in a worker's memory between the spans of a clip it runs; a worker that has not seen the
    spans before replays their detections (:meth:`advance`), with the same result."""

    def __init__(self, fps: float, params: DetectParams, total: int) -> None:
        self.params = params
        self._tracker = Tracker(fps, params.threshold, total)
        self._numbers: dict[int, int] = {}
        self.shown: list[list[TrackedBox]] = []

    @property
    def frames(self) -> int:
        """How many frames it has tracked."""
        return len(self.shown)

    def advance(self, frames: Sequence[Sequence[Box]]) -> list[list[TrackedBox]]:
        """Track the next frames (every box detected down to :data:`TRACK_FLOOR`); their boxes shown."""
        out = []
        for boxes in frames:
            shown = []
            for tb in self._tracker.update([b for b in boxes if self.params.wants(b.class_name)]):
                if tb.track_id not in self._numbers and self.params.keeps(tb.box.class_name, tb.box.confidence):
                    self._numbers[tb.track_id] = len(self._numbers) + 1
                if tb.track_id in self._numbers:
                    shown.append(TrackedBox(self._numbers[tb.track_id], tb.box))
            out.append(shown)
        self.shown += out
        return out


def track_frames(frames: Sequence[Sequence[Box]], fps: float, params: DetectParams) -> list[list[TrackedBox]]:
    """A whole clip's frames tracked in one pass (:class:`ClipTracker`): the boxes shown per frame."""
    return ClipTracker(fps, params, len(frames)).advance(frames)


@dataclass(frozen=True)
class ClipSummary:
    """What a clip held: its tracks (those whose best box passes the chat's thresholds), and its busiest
    moment (the most of them on screen at once)."""

    tracks: tuple[Track, ...]
    duration: float
    frames: int
    fps: float
    busiest_time: float
    busiest_count: int

    def counts(self) -> dict[str, int]:
        """Unique tracks per class name, most first (ties by name)."""
        counts: dict[str, int] = {}
        for track in self.tracks:
            counts[track.class_name] = counts.get(track.class_name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration, 3), "frames": self.frames, "fps": round(self.fps, 3),
            "tracks": [t.to_dict() for t in self.tracks], "counts": self.counts(),
            "busiest": {"time_s": round(self.busiest_time, 3), "objects": self.busiest_count},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSummary:
        busiest = data.get("busiest") or {}
        return cls(tuple(Track(**t) for t in data.get("tracks", [])), float(data.get("duration_s", 0.0)),
                   int(data.get("frames", 0)), float(data.get("fps", 0.0)), float(busiest.get("time_s", 0.0)),
                   int(busiest.get("objects", 0)))


def summarize(tracked: Sequence[Sequence[TrackedBox]], times: Sequence[float], duration: float, fps: float,
              ) -> ClipSummary:
    """The tracks of a whole clip (from :func:`track_frames`: the boxes shown) and its busiest moment."""
    seen: dict[int, list[tuple[float, Box]]] = {}
    for t, boxes in zip(times, tracked, strict=True):
        for tb in boxes:
            seen.setdefault(tb.track_id, []).append((t, tb.box))
    tracks = []
    for track_id, path in sorted(seen.items()):
        weight: dict[tuple[int, str], float] = {}
        for _, box in path:
            key = (box.class_id, box.class_name)
            weight[key] = weight.get(key, 0.0) + box.confidence
        class_id, class_name = max(weight, key=lambda k: (weight[k], -k[0]))
        best = max(b.confidence for _, b in path if b.class_id == class_id)
        tracks.append(Track(track_id, class_id, class_name, round(path[0][0], 3), round(path[-1][0], 3),
                            round(best, 4), len(path)))
    busiest_time, busiest_count = 0.0, 0
    for t, on_screen in zip(times, tracked, strict=True):
        if len(on_screen) > busiest_count:
            busiest_time, busiest_count = t, len(on_screen)
    return ClipSummary(tuple(tracks), duration, len(times), fps, busiest_time, busiest_count)
