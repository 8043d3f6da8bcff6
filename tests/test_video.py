"""Clips in the detector: synthetic shapes that move, enter and leave (known unique counts per class), in MP4,
GIF, WebM and a round note; damaged, cut-off, over-long, oversized and hostile files; spans replayed to the
same ids; ``detbot detect CLIP``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from detector import video
from detector.clip import annotate_clip, run_span, tracker_at
from detector.params import DetectParams
from detector.tracking import ClipTracker
from detector.video import ClipInfo, VideoLimits, plan, probe
from ops.shapes import Mover, encode_clip, make_clip
from tests.conftest import TEST_EXPORT_DIR
from tests.shapes import MODEL_PATH

COUNTS = {"circle": 2, "square": 1, "triangle": 1}


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return encode_clip(make_clip())


@pytest.mark.parametrize("kind", ["mp4", "gif", "webm"])
def test_unique_objects_per_class_are_counted_exactly(detector: Any, kind: str) -> None:
    clip = make_clip()
    assert clip.counts() == COUNTS
    plan_, summary, answer, times = annotate_clip(detector, encode_clip(clip, kind), DetectParams(0.25))
    assert summary.counts() == COUNTS
    assert [t.id for t in summary.tracks] == [1, 2, 3, 4]  # numbered in order of appearance, no gaps
    assert summary.busiest_count == 3
    square = next(t for t in summary.tracks if t.class_name == "square")
    assert 0.7 <= square.first_seen_s <= 1.2  # it enters at 0.8 s
    triangle = next(t for t in summary.tracks if t.class_name == "triangle")
    assert 1.2 <= triangle.last_seen_s <= 1.6  # it leaves at 1.6 s
    info = probe(answer)
    assert (info.codec, info.width, info.height) == ("h264", 320, 240)
    assert abs(info.duration - 3.0) < 0.3 and plan_.rate == 10.0
    assert times.detect_ms > 0 and times.encode_ms > 0


def test_a_class_filter_and_a_higher_threshold_apply_to_tracks(detector: Any, mp4: bytes) -> None:
    _, summary, _, _ = annotate_clip(detector, mp4, DetectParams(0.25, ["circle"]))
    assert summary.counts() == {"circle": 2}
    _, summary, _, _ = annotate_clip(detector, mp4, DetectParams(0.999))
    assert summary.tracks == ()


def test_spans_replayed_anywhere_give_the_same_ids(detector: Any, mp4: bytes) -> None:
    """A span run by a worker that saw none of the clip before replays the detections of the spans before it."""
    params = DetectParams(0.25)
    limits = VideoLimits()
    clip = plan(probe(mp4), limits)
    kept = ClipTracker(clip.rate, params, len(clip.times))
    detections = []
    for first, count in clip.spans(8):
        fresh = tracker_at(clip, params, first, detections)  # a worker without the clip's tracker
        span = run_span(detector, mp4, clip, limits, first, count, params, fresh)
        again = run_span(detector, mp4, clip, limits, first, count, params, tracker_at(clip, params, first,
                                                                                        detections, kept))
        assert span.detections == again.detections
        assert fresh.shown[first:] == kept.shown[first:]
        detections += span.detections
    assert kept.frames == len(clip.times)


def test_a_round_note_is_answered_square_and_big_clips_at_most_720p() -> None:
    note = ClipInfo(480, 480, 10.0, 30.0, "h264", "mp4", False)
    assert note.answer_size(note=True) == (480, 480)
    assert ClipInfo(1080, 1080, 10.0, 30.0, "h264", "mp4", False).answer_size(note=True) == (640, 640)
    assert ClipInfo(1920, 1080, 10.0, 30.0, "h264", "mp4", False).answer_size() == (1280, 720)
    assert ClipInfo(1080, 1920, 10.0, 30.0, "h264", "mp4", False).answer_size() == (720, 1280)
    assert ClipInfo(321, 241, 10.0, 30.0, "h264", "mp4", False).answer_size() == (320, 240)
    # A clip slower than the sampling rate is taken frame by frame.
    assert ClipInfo(320, 240, 2.0, 5.0, "gif", "gif", False).frame_times(10.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0,
                                                                                 1.2, 1.4, 1.6, 1.8]


def test_damaged_cut_off_and_foreign_files(mp4: bytes) -> None:
    with pytest.raises(video.NotAVideoError):
        probe(b"")
    with pytest.raises(video.NotAVideoError):
        probe(b"\x00\x01 not a video" * 100)
    with pytest.raises(video.NotAVideoError):  # an image is not a clip
        probe(Path(__file__).with_name("assets").joinpath("shapes.pt").read_bytes()[:4096])
    with pytest.raises(video.CorruptVideoError):  # MP4's index is at its end: cut, it cannot be read at all
        probe(mp4[: len(mp4) // 2])
    faststart = video.join([mp4])  # index first: a cut clip probes, and its frames break off
    info = probe(faststart)
    cut = faststart[: len(faststart) * 3 // 4]
    frames = list(video.sample(cut, info, VideoLimits(), 0, 30, (320, 240)))
    assert len(frames) == 30  # what decodes, then its last frame held to the clip's end
    assert (frames[-1].image == frames[-2].image).all()
    with pytest.raises(video.CorruptVideoError):
        list(video.sample(faststart[:2000], info, VideoLimits(), 0, 30, (320, 240)))


def test_limits_from_the_header(mp4: bytes) -> None:
    with pytest.raises(video.VideoTooLongError) as long:
        probe(mp4, VideoLimits(max_seconds=2))
    assert long.value.details == {"seconds": 3, "limit": 2}
    with pytest.raises(video.VideoTooLongError):  # 30 frames at 10 fps over a cap of 20
        probe(mp4, VideoLimits(max_frames=20))
    with pytest.raises(video.VideoTooLargeError):
        probe(mp4, VideoLimits(max_pixels=320 * 200))
    with pytest.raises(video.VideoTooLargeError):
        probe(mp4, VideoLimits(max_bytes=1000))
    VideoLimits(max_seconds=60).check_length(60.4)  # Telegram rounds durations to whole seconds


def test_a_clip_of_far_more_frames_than_its_length_allows_is_stopped() -> None:
    """600 frames in 0.6 s (1000 fps): the decoder's budget (240 frames a second of allowed length) ends it."""
    tiny = make_clip(width=64, height=64, seconds=0.6, fps=1000.0,
                     movers=(Mover("square", 20, (20, 30), (44, 30), 0.0, 0.6),))
    data = encode_clip(tiny)
    limits = VideoLimits(max_seconds=1)
    info = probe(data, limits)
    with pytest.raises(video.VideoTooLongError):
        list(video.sample(data, info, limits, 0, len(info.frame_times(limits.sample_fps)), (64, 64)))


def test_detect_cli_reads_clips(tmp_path: Path, mp4: bytes, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from detector.cli import main

    monkeypatch.setenv("DETBOT_EXPORT_DIR", str(TEST_EXPORT_DIR))
    clip = tmp_path / "shapes.mp4"
    clip.write_bytes(mp4)
    assert main([str(clip), "--json", "--out", str(tmp_path / "out"), "--model", str(MODEL_PATH)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == COUNTS
    assert [set(t) >= {"id", "class_name", "first_seen_s", "last_seen_s", "confidence"} for t in data["tracks"]] == \
        [True] * 4
    assert probe((tmp_path / "out" / "shapes.mp4").read_bytes()).codec == "h264"
    assert main([str(clip), "--model", str(MODEL_PATH)]) == 0
    text = capsys.readouterr().out
    assert "4 objects over 3.0 s at confidence ≥ 0.25: circle ×2, square ×1, triangle ×1" in text
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    assert main([str(bad), "--model", str(MODEL_PATH)]) == 2
    assert "bad.mp4: " in capsys.readouterr().err
