"""A clip's answer, span by span: frames sampled, detected, tracked, drawn with their track ids, encoded.

A clip is cut into spans of a few sampled frames (:meth:`ClipPlan.spans`); each span is decoded, detected,
drawn and encoded on its own (:func:`run_span`), and :func:`finish` tracks the whole clip once more for its
summary and joins the spans' segments into the answer. The queue runs one span per job (``jobs.video``);
``detbot detect CLIP`` and ``detbot bench`` run them one after the other (:func:`annotate_clip`), through the
same functions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from detector import video
from detector.draw import draw_boxes
from detector.params import DetectParams
from detector.render import format_confidence
from detector.result import Box
from detector.tracking import ID_PREFIX, TRACK_FLOOR, ClipSummary, ClipTracker, summarize
from detector.video import SPAN_FRAMES, ClipPlan, ClipReader, SegmentEncoder, VideoLimits, plan


@dataclass
class StageTimes:
    """Milliseconds spent in each stage of the clip's path, summed over frames."""

    decode_ms: float = 0.0
    detect_ms: float = 0.0
    track_ms: float = 0.0
    draw_ms: float = 0.0
    encode_ms: float = 0.0

    def add(self, other: StageTimes) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.detect_ms + self.track_ms + self.draw_ms + self.encode_ms


@dataclass
class SpanResult:
    """One span done: its frames' detections (every class down to the tracking floor), its H.264 segment."""

    detections: list[list[Box]]
    segment: bytes
    times: StageTimes = field(default_factory=StageTimes)


def detection_params(params: DetectParams) -> DetectParams:
    """What the model runs at on a frame: every class down to the tracking floor (or lower, if asked), so the
    tracker can keep an object through a weak frame; the chat's filter and thresholds apply to tracks."""
    return DetectParams(confidence=min(TRACK_FLOOR, params.min_confidence))


def tracker_at(clip: ClipPlan, params: DetectParams, first: int, earlier: Sequence[Sequence[Box]],
               tracker: ClipTracker | None = None) -> ClipTracker:
    """A tracker that has tracked the clip's frames before ``first``: ``tracker`` (one this process kept from
    an earlier span of the clip) advanced with ``earlier`` (the detections of every frame before ``first``),
    or a new one that replays them all."""
    if len(earlier) < first:
        raise ValueError(f"span at frame {first} needs the detections of {first} frames, got {len(earlier)}")
    if tracker is None or tracker.frames > first or tracker.params != params:
        tracker = ClipTracker(clip.rate, params, len(clip.times))
    tracker.advance(earlier[tracker.frames:first])
    return tracker


def reader_at(data: bytes, clip: ClipPlan, limits: VideoLimits, first: int, reader: ClipReader | None = None,
              ) -> ClipReader:
    """A decoder that gives frame ``first`` next: ``reader`` (kept from an earlier span) when it is not past
    it, else a new one that seeks there."""
    if reader is not None and reader.next <= first and reader.size == clip.size:
        return reader
    if reader is not None:
        reader.close()
    return ClipReader(data, clip.info, limits, clip.size, first)


def run_span(detector: Any, data: bytes, clip: ClipPlan, limits: VideoLimits, first: int, count: int,
             params: DetectParams, tracker: ClipTracker, labels: Mapping[int, str] | None = None,
             waiting: int = 0, reader: ClipReader | None = None) -> SpanResult:
    """Frames ``first`` .. ``first + count - 1``: decoded (by ``reader``, a decoder at or before ``first``:
    :func:`reader_at`; by a seek without one), detected, tracked (``tracker`` has tracked every frame before
    ``first``: :func:`tracker_at`), drawn and encoded as one segment. ``detector`` is a
    :class:`detector.model.Detector` (typed loosely: this module must not import it)."""
    if tracker.frames != first:
        raise ValueError(f"span at frame {first} needs a tracker at frame {first}, not {tracker.frames}")
    detector.thresholds(params)  # an unknown class is refused as for a photo
    wide = detection_params(params)
    times = StageTimes()
    images = []
    detections: list[list[Box]] = []
    started = time.perf_counter()
    frames = reader.take(first, count) if reader is not None else video.sample(data, clip.info, limits, first,
                                                                                 count, clip.size)
    for frame in frames:
        decoded = time.perf_counter()
        times.decode_ms += (decoded - started) * 1e3
        detections.append(list(detector.detect(frame.image, wide, waiting=waiting).boxes))
        images.append(frame)
        started = time.perf_counter()
        times.detect_ms += (started - decoded) * 1e3
    t0 = time.perf_counter()
    tracked = tracker.advance(detections)
    t1 = time.perf_counter()
    times.track_ms = (t1 - t0) * 1e3
    encoder = SegmentEncoder(clip.size, clip.rate)
    for frame, shown in zip(images, tracked, strict=True):
        t2 = time.perf_counter()
        drawn = draw_boxes(frame.image, [tb.box for tb in shown], labels,
                           tags=[f"{ID_PREFIX}{tb.track_id}" for tb in shown])
        t3 = time.perf_counter()
        encoder.add(drawn, frame.time)
        times.draw_ms += (t3 - t2) * 1e3
        times.encode_ms += (time.perf_counter() - t3) * 1e3
    t4 = time.perf_counter()
    segment = encoder.finish()
    times.encode_ms += (time.perf_counter() - t4) * 1e3
    return SpanResult(detections, segment, times)


def finish(clip: ClipPlan, tracker: ClipTracker, segments: list[bytes]) -> tuple[ClipSummary, bytes]:
    """The clip's summary (``tracker`` has tracked every frame) and the answer: the segments as one MP4."""
    if tracker.frames != len(clip.times):
        raise ValueError(f"the clip has {len(clip.times)} frames, {tracker.frames} were tracked")
    summary = summarize(tracker.shown, clip.times, clip.info.duration, clip.rate)
    answer = video.join(segments)
    if len(answer) > video.MAX_ANSWER_BYTES:
        raise video.VideoTooLargeError("The annotated video came out larger than Telegram accepts.",
                                       size=len(answer), limit=video.MAX_ANSWER_BYTES)
    return summary, answer


def annotate_clip(detector: Any, data: bytes, params: DetectParams, limits: VideoLimits | None = None, *,
                  note: bool = False, labels: Mapping[int, str] | None = None, span_frames: int = SPAN_FRAMES,
                  ) -> tuple[ClipPlan, ClipSummary, bytes, StageTimes]:
    """A whole clip in this process, span after span: its plan, summary, answer and time per stage."""
    limits = limits or VideoLimits()
    clip = plan(video.probe(data, limits), limits, note)
    tracker = ClipTracker(clip.rate, params, len(clip.times))
    reader = ClipReader(data, clip.info, limits, clip.size)
    segments = []
    times = StageTimes()
    try:
        for first, count in clip.spans(span_frames):
            span = run_span(detector, data, clip, limits, first, count, params, tracker, labels, reader=reader)
            segments.append(span.segment)
            times.add(span.times)
    finally:
        reader.close()
    t0 = time.perf_counter()
    summary, answer = finish(clip, tracker, segments)
    times.encode_ms += (time.perf_counter() - t0) * 1e3
    return clip, summary, answer, times


# Files ``detbot detect`` reads as clips (by name): the rest are images (a GIF too: its first frame).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})


def clip_report(clip: ClipPlan, summary: ClipSummary, params: DetectParams, model: str, times: StageTimes,
                ) -> tuple[str, dict[str, Any]]:
    """A clip's answer as ``detbot detect`` prints it: text (the summary, the busiest moment, one line per
    track) and JSON (``tracks``, ``counts``, the clip's size, length, sampling and time per stage)."""
    counts = summary.counts()
    n = len(summary.tracks)
    at = f"at confidence ≥ {format_confidence(params.threshold)}"
    if n:
        head = f"{n} object{'s' if n != 1 else ''} over {summary.duration:.1f} s {at}: " + \
            ", ".join(f"{name} ×{count}" for name, count in counts.items())
        lines = [head, f"Most at once: {summary.busiest_count} at {summary.busiest_time:.1f} s"]
        lines += [f"{ID_PREFIX}{t.id} {t.class_name}: {t.first_seen_s:.1f}–{t.last_seen_s:.1f} s, best "
                  f"{t.confidence:.2f}" for t in summary.tracks]
    else:
        lines = [f"No objects found over {summary.duration:.1f} s {at}. Try a lower threshold, e.g. 0.15."]
    data = {**summary.to_dict(), "width": clip.info.width, "height": clip.info.height,
            "answer_size": list(clip.size), "confidence": params.threshold,
            "classes": list(params.classes) if params.classes else None, "model": model,
            "timings": {**asdict(times), "total_ms": times.total_ms}}
    return "\n".join(lines), data
