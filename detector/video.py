"""Clips in and out through PyAV (FFmpeg): untrusted bytes probed and limited, frames sampled, H.264 back.

- :func:`probe` reads a clip's header only (container, streams, size, duration, frame rate) and refuses what
  is not a video, too long, too large or built to be hostile, before any frame is decoded; the bot runs it
  too (this module never imports OpenCV or torch).
- :func:`sample` decodes the frames of one span of the clip at a sampling rate, scaled to the size the answer
  is drawn at (by FFmpeg's scaler), bounded in decoded frames and in time whatever the container claims.
- :class:`SegmentEncoder` encodes frames to one H.264 segment (an MP4 of its own, starting with a key frame);
  :func:`join` puts segments encoded with the same settings into one MP4 that plays inline in Telegram
  (``faststart``: the index first), without encoding anything again.

Times are seconds from the clip's first frame; frame ``i`` of a sampling at ``fps`` is shown from ``i / fps``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
from collections.abc import Generator, Iterator, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from detector.errors import DetectorError

log = logging.getLogger(__name__)

# Telegram lets a bot download files up to 20 MB (getFile): a longer clip never reaches a worker anyway.
MAX_VIDEO_BYTES = 20 * 1024 * 1024
# Telegram uploads a bot's answer up to 50 MB (sendVideo); the answer is kept well under it by its bitrate.
MAX_ANSWER_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_SAMPLE_FPS = 10.0
# Sampled frames per clip (what is detected, drawn and encoded): a minute at 10 fps.
DEFAULT_MAX_FRAMES = 600
# The largest frame decoded: 4K UHD and a little more. A 20 MB clip of 8K frames would cost gigabytes.
DEFAULT_MAX_PIXELS = 4096 * 2304
# Every frame decoded (not only the sampled ones) is counted: a hostile file of 1-pixel frames at 10,000 fps
# would otherwise keep a worker decoding for minutes. Real clips stay far below 240 frames a second.
MAX_DECODED_FPS = 240
# What the answer is drawn at: at most 720p (the short side) and 1280 px (the long side), even dimensions.
ANSWER_SHORT_SIDE = 720
ANSWER_LONG_SIDE = 1280
# A round video note is square; Telegram shows it at most 640 px across.
NOTE_SIDE = 640
# The containers and codecs detbot decodes: what phones, Telegram and GIF makers produce. Anything else
# (a codec FFmpeg happens to know, a subtitle-only file) is refused before its first frame.
FORMATS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "gif", "avi"})
CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "gif", "mjpeg", "h263"})
# x264: fast enough for a 2-core worker to encode 720p far quicker than real time; the quality (CRF) keeps
# boxes and labels crisp; the rate cap keeps a minute under ~30 MB, far below Telegram's 50 MB.
X264_OPTIONS = {"preset": "superfast", "crf": "25", "maxrate": "4M", "bufsize": "8M", "profile": "high"}
# The answer's frames carry millisecond timestamps: any sampling rate's times are exact enough.
TIME_BASE = Fraction(1, 1000)
# Sampled frames per span (one queue job each): about what one large photo costs a worker (detbot bench
# --video measures both), so a clip holds other chats' photos back no more than a photo would.
SPAN_FRAMES = 4
# A header that FFmpeg cannot read within this many bytes is not a clip (probing stops there).
PROBE_SIZE = 2 * 1024 * 1024
# How long FFmpeg may analyse streams when opening: bounds the work a hostile header can ask for.
ANALYZE_US = 2_000_000


class VideoError(DetectorError):
    """The input could not be used as a video."""

    code = "bad_video"


class NotAVideoError(VideoError):
    """Bytes no supported container or video codec recognises (or a file with no video stream)."""

    code = "not_a_video"


class CorruptVideoError(VideoError):
    """A recognised clip whose data is truncated or damaged (no frame decodes, or the container breaks)."""

    code = "corrupt_video"


class VideoTooLongError(VideoError):
    """A clip longer than the limit, or with more frames than the limit allows."""

    code = "video_too_long"


class VideoTooLargeError(VideoError):
    """Frames larger than the limit, or a file above Telegram's download limit."""

    code = "video_too_large"


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be: checked from its header (:func:`probe`) and again while it is decoded."""

    max_seconds: float = DEFAULT_MAX_SECONDS
    sample_fps: float = DEFAULT_SAMPLE_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = MAX_VIDEO_BYTES

    def sampled_frames(self, seconds: float, source_fps: float = 0.0) -> int:
        """How many frames a clip of ``seconds`` yields at this sampling rate (fewer for a slower clip)."""
        fps = min(self.sample_fps, source_fps) if source_fps > 0 else self.sample_fps
        return max(1, math.ceil(seconds * fps - 1e-6))

    def check_length(self, seconds: float, source_fps: float = 0.0) -> None:
        """Refuse a clip longer than ``max_seconds`` or with more sampled frames than ``max_frames``."""
        if seconds > self.max_seconds + 0.5:  # Telegram rounds durations to whole seconds
            raise VideoTooLongError(f"The video is {seconds:.0f} s long; the limit is {self.max_seconds:.0f} s.",
                                    seconds=round(seconds), limit=round(self.max_seconds))
        frames = self.sampled_frames(min(seconds, self.max_seconds), source_fps)
        if frames > self.max_frames:
            limit = self.max_frames / self.sample_fps
            raise VideoTooLongError(f"The video would take {frames} frames; the limit is {self.max_frames} "
                                    f"({limit:.0f} s at {self.sample_fps:g} frames a second).",
                                    seconds=round(seconds), limit=round(limit))


@dataclass(frozen=True)
class ClipInfo:
    """A clip as its header describes it."""

    width: int
    height: int
    duration: float  # seconds
    fps: float  # the average frame rate (0: unknown)
    codec: str
    container: str
    has_audio: bool

    def sampling(self, sample_fps: float) -> float:
        """The rate frames are taken at: the sampling rate, or the clip's own when that is slower."""
        return min(sample_fps, self.fps) if self.fps > 0 else sample_fps

    def frame_times(self, sample_fps: float) -> list[float]:
        """When each sampled frame is shown, in seconds (at least one frame)."""
        rate = self.sampling(sample_fps)
        return [i / rate for i in range(max(1, math.ceil(self.duration * rate - 1e-6)))]

    def answer_size(self, note: bool = False) -> tuple[int, int]:
        """The annotated clip's size: the clip's own, down-scaled to at most 720p (a note: a square of at most
        640 px), both sides even (H.264's 4:2:0 needs them so)."""
        w, h = self.width, self.height
        if note:
            side = min(NOTE_SIDE, w, h)
            return _even(side), _even(side)
        scale = min(1.0, ANSWER_SHORT_SIDE / min(w, h), ANSWER_LONG_SIDE / max(w, h))
        return _even(w * scale), _even(h * scale)


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _open(data: bytes) -> Any:
    """The container, opened with bounded probing; a file FFmpeg cannot open is not a video."""
    import av

    if not data:
        raise NotAVideoError("The file is empty (0 bytes).")
    try:
        return av.open(io.BytesIO(data), mode="r", options={"probesize": str(PROBE_SIZE),
                                                            "analyzeduration": str(ANALYZE_US)})
    except av.error.InvalidDataError as exc:
        if _looks_like_a_clip(data):  # an MP4 cut before its index, a WebM cut in its header
            raise CorruptVideoError("The video could not be read: it may be damaged or cut off.") from exc
        raise NotAVideoError("The file is not a video detbot can read.") from exc
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise CorruptVideoError("The video could not be read: it may be damaged or cut off.") from exc


def _looks_like_a_clip(data: bytes) -> bool:
    """Whether the bytes start as a container detbot reads does (MP4/MOV, Matroska/WebM, GIF, AVI)."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or data[:4] == b"GIF8" or \
        (data[:4] == b"RIFF" and data[8:12] == b"AVI ")


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return 0.0


def _fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(data: bytes, limits: VideoLimits | None = None) -> ClipInfo:
    """The clip's header, checked: a known container with a video stream of a known codec, frames within the
    pixel limit, a length within the limits. Decodes nothing; costs milliseconds."""
    limits = limits or VideoLimits()
    if len(data) > limits.max_bytes:
        raise VideoTooLargeError(f"The file is {len(data) / 1e6:.0f} MB; the limit is "
                                 f"{limits.max_bytes / 1e6:.0f} MB.", size=len(data), limit=limits.max_bytes)
    with _open(data) as container:
        formats = set(container.format.name.split(","))
        videos = container.streams.video
        if not formats & FORMATS or not videos:
            raise NotAVideoError("The file is not a video detbot can read.", format=container.format.name)
        stream = videos[0]
        codec = stream.codec_context.name if stream.codec_context else ""
        if codec not in CODECS:
            raise NotAVideoError(f"Videos coded as {codec or 'unknown'} are not supported.", codec=codec)
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise CorruptVideoError("The video could not be read: it may be damaged or cut off.")
        if width * height > limits.max_pixels:
            raise VideoTooLargeError(f"The video's frames are {width}×{height}; the limit is "
                                     f"{limits.max_pixels / 1e6:.1f} megapixels.", width=width, height=height)
        info = ClipInfo(width, height, _duration(container, stream), _fps(stream), codec,
                        container.format.name, bool(container.streams.audio))
    limits.check_length(info.duration, info.fps)
    return info


@dataclass(frozen=True)
class ClipPlan:
    """How a clip is answered: its header, the sampling rate and times, the answer's size and kind."""

    info: ClipInfo
    rate: float
    times: tuple[float, ...]
    size: tuple[int, int]
    note: bool = False

    def spans(self, span_frames: int = SPAN_FRAMES) -> list[tuple[int, int]]:
        """``(first frame, frame count)`` of each span, in order."""
        total = len(self.times)
        return [(first, min(span_frames, total - first)) for first in range(0, total, span_frames)]

    def to_dict(self) -> dict[str, Any]:
        return {"info": asdict(self.info), "rate": self.rate, "frames": len(self.times), "size": list(self.size),
                "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipPlan:
        info = ClipInfo(**data["info"])
        rate = float(data["rate"])
        return cls(info, rate, tuple(i / rate for i in range(int(data["frames"]))),
                   (int(data["size"][0]), int(data["size"][1])), bool(data.get("note", False)))


def plan(info: ClipInfo, limits: VideoLimits, note: bool = False) -> ClipPlan:
    """The plan of a probed clip (``note``: a round video note, answered as a square)."""
    return ClipPlan(info, info.sampling(limits.sample_fps), tuple(info.frame_times(limits.sample_fps)),
                    info.answer_size(note), note)


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its index in the sampling, when it is shown, and its pixels (BGR, answer size)."""

    index: int
    time: float
    image: np.ndarray


def sample(data: bytes, info: ClipInfo, limits: VideoLimits, first: int, count: int,
           size: tuple[int, int]) -> Iterator[Frame]:
    """Frames ``first`` .. ``first + count - 1`` of the clip sampled at ``limits.sample_fps``, each the
    clip's latest frame at its time, scaled to ``size`` (width, height).

    Decoding starts at the key frame before the span (a seek). Every decoded frame counts against the
    clip's decoding budget (``MAX_DECODED_FPS`` per second of the clip's allowed length), and a clip that
    turns out longer than the limits raises; one that breaks off holds its last frame to its end."""
    with contextlib.closing(_sampled(data, info, limits, first, size)) as frames:
        for _, frame in zip(range(count), frames, strict=False):
            yield frame


class ClipReader:
    """A clip's decoder kept open between its spans (a worker keeps it): the next span continues where the
    last one ended, instead of seeking back to a key frame and decoding from there again — with a phone's
    key frames seconds apart, that was most of a span's time."""

    def __init__(self, data: bytes, info: ClipInfo, limits: VideoLimits, size: tuple[int, int], first: int = 0,
                 ) -> None:
        self.size = size
        self.next = first  # the sampled frame the reader gives next
        self._frames = _sampled(data, info, limits, first, size)

    def take(self, first: int, count: int) -> Iterator[Frame]:
        """Frames ``first`` .. ``first + count - 1``; ``first`` must not be behind :attr:`next`."""
        if first < self.next:
            raise ValueError(f"the reader is at frame {self.next}, past {first}")
        for frame in self._frames:
            self.next = frame.index + 1
            if frame.index >= first:
                yield frame
            if self.next >= first + count:
                return

    def close(self) -> None:
        self._frames.close()


def _sampled(data: bytes, info: ClipInfo, limits: VideoLimits, first: int, size: tuple[int, int],
             ) -> Generator[Frame, None, None]:
    """Every sampled frame from ``first`` to the clip's end (see :func:`sample`)."""
    import av

    rate = info.sampling(limits.sample_fps)
    wanted = [i / rate for i in range(first, len(info.frame_times(limits.sample_fps)))]
    if not wanted:
        return
    budget = int(MAX_DECODED_FPS * (limits.max_seconds + 1))
    with _open(data) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding keeps up with a 1080p60 clip on 2 cores
        start_pts = _first_pts(stream)
        if wanted[0] > 0 and stream.time_base:
            with contextlib.suppress(av.error.FFmpegError):
                container.seek(start_pts + int(wanted[0] / stream.time_base), stream=stream, backward=True)
        latest: Any = None
        index = 0
        for t, frame in _decoded(container, stream, start_pts, budget, info, limits):
            while index < len(wanted) and t > wanted[index] + 1e-6:
                # The frame on screen at that time is the one before this one (or this one, for the first).
                yield Frame(first + index, wanted[index], latest if latest is not None else _bgr(frame, size))
                index += 1
            if index >= len(wanted):
                return
            latest = _bgr(frame, size)
            if abs(t - wanted[index]) <= 1e-6:
                yield Frame(first + index, wanted[index], latest)
                index += 1
                if index >= len(wanted):
                    return
        if latest is None:
            raise CorruptVideoError("The video could not be read: no frame of it decodes.")
        while index < len(wanted):  # the clip ended (or broke off) early: its last frame stays on screen
            yield Frame(first + index, wanted[index], latest)
            index += 1


# A clip whose packets fail to decode this many times in a row is broken off there (a damaged tail).
MAX_BAD_PACKETS = 25


def _flush(stream: Any) -> list[Any]:
    """The frames the decoder still holds (its threads hold a few) once no packet is left."""
    import av

    try:
        return list(stream.codec_context.decode(None))
    except av.error.FFmpegError:
        return []


def _bgr(frame: Any, size: tuple[int, int]) -> np.ndarray:
    return frame.reformat(width=size[0], height=size[1], format="bgr24").to_ndarray()


def _decoded(container: Any, stream: Any, start_pts: int, budget: int, info: ClipInfo, limits: VideoLimits,
             ) -> Iterator[tuple[float, Any]]:
    """Every frame of the stream from where the container stands, with its time; a packet that does not
    decode is skipped (a damaged stretch), a run of them or a broken container ends the clip there."""
    import av

    decoded = bad = 0
    packets = container.demux(stream)
    ended = False
    while not ended:
        try:
            frames = next(packets).decode()
            bad = 0
        except (StopIteration, av.error.EOFError):
            frames, ended = _flush(stream), True
        except av.error.FFmpegError as exc:
            bad += 1
            if bad < MAX_BAD_PACKETS:
                continue
            log.info("video breaks off after %d frames (%s)", decoded, type(exc).__name__)
            frames, ended = _flush(stream), True
        for frame in frames:
            decoded += 1
            if decoded > budget:
                raise VideoTooLongError("The video has far more frames than its length allows.",
                                        seconds=round(info.duration), limit=round(limits.max_seconds))
            t = _time(frame, stream, start_pts)
            if t > limits.max_seconds + 1:
                raise VideoTooLongError(f"The video is longer than {limits.max_seconds:.0f} s.",
                                        seconds=round(t), limit=round(limits.max_seconds))
            yield t, frame


def _first_pts(stream: Any) -> int:
    return int(stream.start_time) if stream.start_time is not None else 0


def _time(frame: Any, stream: Any, start_pts: int) -> float:
    if frame.pts is None or not stream.time_base:
        return float(frame.time or 0.0)
    return float((frame.pts - start_pts) * stream.time_base)


class SegmentEncoder:
    """H.264 (x264, yuv420p) frames into one MP4 segment. Segments made with the same size and rate have the
    same stream parameters, so :func:`join` puts them together without encoding them again."""

    def __init__(self, size: tuple[int, int], fps: float, threads: int = 0) -> None:
        import av

        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000),
                                                  options=X264_OPTIONS)
        self._stream.width, self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = TIME_BASE
        self._stream.codec_context.thread_count = threads
        self.frames = 0

    def add(self, image: np.ndarray, time_s: float) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = round(time_s / TIME_BASE)
        frame.time_base = TIME_BASE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def finish(self) -> bytes:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self._buffer.getvalue()


def join(segments: list[bytes]) -> bytes:
    """One MP4 of the segments' packets in order (their timestamps are the clip's own), its index first so
    Telegram plays it while it loads."""
    import av

    fd, path = tempfile.mkstemp(suffix=".mp4")  # faststart rewrites the file: it needs a real one
    os.close(fd)
    try:
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            target: Any = None
            for segment in segments:
                with av.open(io.BytesIO(segment), mode="r") as part:
                    source = part.streams.video[0]
                    if target is None:
                        target = out.add_stream_from_template(source)
                    elif bytes(source.codec_context.extradata or b"") != bytes(target.codec_context.extradata or b""):
                        raise RuntimeError("segments were encoded with different stream parameters")
                    for packet in part.demux(source):
                        if packet.dts is None:
                            continue  # the demuxer's flush packet
                        packet.stream = target
                        out.mux(packet)
        with open(path, "rb") as f:
            return f.read()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
