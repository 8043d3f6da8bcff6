"""Fast CPU backends: export the weights once to OpenVINO or ONNX, cache the export on disk, run it lean.

The export is made by ultralytics (``YOLO(weights).export``) and kept under a cache folder keyed by the
weights' content hash, the image size, the backend and the library versions, so a restart or a second
worker reuses it. Writers export into a temporary folder and publish it with one atomic ``rename``; a file
lock keeps two workers from exporting the same model at once. Readers check every file's hash against the
entry's manifest, so a partial or damaged entry is exported again rather than loaded.

Running an export needs neither torch nor ultralytics: the image is letterboxed with OpenCV, the model
runs once, and its raw candidates go through one NumPy post-processing shared by every backend (PyTorch
included, see :class:`TorchEngine`): ultralytics' class-aware NMS, with each kept box replaced by the
score-weighted mean of the candidates it suppressed ("merge NMS"). Merging makes the answer a smooth
function of the scores: with plain NMS a bf16 rounding difference (OpenVINO on CPUs with AVX512-BF16) can
let a neighbouring candidate win and move a box by several pixels; merged, the backends agree.
The head used is the one-to-many head plus NMS, as ultralytics' own ``predict`` does by default.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

EXPORTED_BACKENDS = ("onnx", "openvino")
# What ``auto`` picks on a CPU, best first: OpenVINO was the fastest on every CPU measured (docs/performance.md).
AUTO_ORDER = ("openvino", "onnx")
# Bump when the layout of a cache entry or the way it is exported changes: old entries are then ignored.
CACHE_FORMAT = 3
MANIFEST = "detbot-export.json"
# A worker waits this long for another worker's export of the same model, then gives up and runs PyTorch;
# a nano model exports in seconds, a large one in a few minutes on a slow CPU.
EXPORT_LOCK_TIMEOUT = 600.0
# How often a waiting worker retries the lock; short next to an export, long next to a syscall.
LOCK_POLL_INTERVAL = 0.1
# The size ultralytics' own detection models are trained at; used only when a checkpoint does not say.
FALLBACK_IMGSZ = 640
# Grey of ultralytics' letterbox padding: the exported model was trained with it.
PAD_VALUE = 114
# ultralytics' NMS IoU for detection (its ``iou`` default); only for heads that are not end-to-end.
NMS_IOU = 0.7
# ultralytics hands at most this many candidates to NMS; more is only noise from a bad threshold.
MAX_NMS_CANDIDATES = 30_000
# Class offset for class-aware NMS in one pass: boxes of different classes never overlap.
NMS_CLASS_OFFSET = 7680.0
# Input shapes kept compiled per OpenVINO worker (~0.5 s to compile one, ~10 MB each): square, 4:3 and 3:4
# photos and a few more; a rarer shape evicts the least recently used.
MAX_COMPILED_SHAPES = 8

_export_count = 0


class ExportError(Exception):
    """An export could not be made or loaded; the caller falls back to PyTorch."""


def export_count() -> int:
    """How many exports this process has made (not reused from the cache)."""
    return _export_count


def installed(backend: str) -> bool:
    """Whether the runtime a backend needs can be imported here."""
    module = {"onnx": "onnxruntime", "openvino": "openvino", "torch": "torch"}.get(backend)
    return module is not None and importlib.util.find_spec(module) is not None


def resolve_backend(requested: str, device: str) -> str:
    """``auto``: OpenVINO on CPU when installed, else ONNX Runtime, else PyTorch; PyTorch on a GPU."""
    if requested == "auto":
        if device != "cpu":
            return "torch"
        return next((b for b in AUTO_ORDER if installed(b)), "torch")
    if requested in EXPORTED_BACKENDS and not installed(requested):
        log.warning("backend %s requested but its runtime is not installed; using torch", requested)
        return "torch"
    return requested


def default_export_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "detbot" / "exports"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def runtime_versions(backend: str) -> dict[str, str]:
    """What an export depends on: a new version of any of these may export or read differently."""
    runtime = {"onnx": "onnxruntime", "openvino": "openvino"}[backend]
    ultralytics = _version("ultralytics")
    if ultralytics == "none":  # the headless build ships under its own distribution name
        ultralytics = _version("ultralytics-opencv-headless")
    return {"ultralytics": ultralytics, "torch": _version("torch"), runtime: _version(runtime)}


@dataclass(frozen=True)
class ExportSpec:
    """What to export: the weights (by content), the backend, the size and the precision."""

    weights: Path
    backend: str
    imgsz: int | None = None
    int8: bool = False
    # INT8 only: a YOLO dataset YAML whose images calibrate the quantisation.
    calibration: str | None = None

    def key(self, weights_sha256: str) -> str:
        inputs = [CACHE_FORMAT, runtime_versions(self.backend), self.calibration if self.int8 else None]
        tag = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:8]
        size = str(self.imgsz) if self.imgsz else "model"
        return f"{weights_sha256[:20]}-{self.backend}-{size}{'-int8' if self.int8 else ''}-{tag}"


@dataclass(frozen=True)
class Export:
    """A usable cache entry: the model file and what is needed to run it without ultralytics."""

    path: Path
    backend: str
    names: dict[int, str]
    imgsz: int
    stride: int
    reused: bool
    seconds: float


def _manifest_export(entry: Path, manifest: dict[str, Any], reused: bool, seconds: float) -> Export:
    return Export(
        path=entry / manifest["model_file"],
        backend=manifest["backend"],
        names={int(k): str(v) for k, v in manifest["names"].items()},
        imgsz=int(manifest["imgsz"]),
        stride=int(manifest["stride"]),
        reused=reused,
        seconds=seconds,
    )


def read_entry(entry: Path) -> dict[str, Any] | None:
    """The entry's manifest if the entry is complete and every file matches its hash; else None."""
    try:
        manifest: dict[str, Any] = json.loads((entry / MANIFEST).read_text())
        files: dict[str, str] = manifest["files"]
        if manifest.get("format") != CACHE_FORMAT or manifest["model_file"] not in files:
            return None
        for name, sha in files.items():
            if file_sha256(entry / name) != sha:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest


@contextlib.contextmanager
def file_lock(path: Path, timeout: float) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``; yields False when it could not be had within ``timeout``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(LOCK_POLL_INTERVAL)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def ensure_export(spec: ExportSpec, cache_dir: Path) -> Export:
    """The cached export of ``spec``, exporting it first when the cache has no valid entry."""
    started = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = file_sha256(spec.weights)
    key = spec.key(digest)
    entry = cache_dir / key
    manifest = read_entry(entry)
    if manifest is not None:
        return _manifest_export(entry, manifest, True, time.perf_counter() - started)
    with file_lock(cache_dir / f".{key}.lock", EXPORT_LOCK_TIMEOUT) as locked:
        if not locked:
            raise ExportError(f"the export cache entry {key} stayed locked for {EXPORT_LOCK_TIMEOUT:.0f} s")
        manifest = read_entry(entry)  # another worker may have published it while this one waited
        if manifest is not None:
            return _manifest_export(entry, manifest, True, time.perf_counter() - started)
        if entry.exists():
            log.warning("export cache entry %s is incomplete or damaged; exporting it again", key)
            shutil.rmtree(entry, ignore_errors=True)
        for stale in cache_dir.glob(f".{key}.*"):  # left by an exporter that died; we hold the lock
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
        try:
            manifest = export_model(spec, staging, digest)
            staging.chmod(0o755)  # mkdtemp makes it private; workers of another user read the cache too
            os.rename(staging, entry)  # atomic publish: readers see no entry or a whole one
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _manifest_export(entry, manifest, False, time.perf_counter() - started)


def checkpoint_imgsz(yolo: Any) -> int | None:
    """The training size stored in the checkpoint or export metadata, if any."""
    for source in (getattr(yolo, "overrides", None), (getattr(yolo, "ckpt", None) or {}).get("train_args")):
        imgsz = (source or {}).get("imgsz")
        if isinstance(imgsz, int):
            return imgsz
        if isinstance(imgsz, (list, tuple)) and imgsz:
            return int(max(imgsz))
    return None


def export_model(spec: ExportSpec, out: Path, weights_sha256: str) -> dict[str, Any]:
    """Export ``spec`` with ultralytics into the empty folder ``out``; writes and returns the manifest."""
    global _export_count
    from detector.runtime import disable_analytics, quiet_ultralytics

    quiet_ultralytics()
    from ultralytics import YOLO

    disable_analytics()
    work = out / "work"
    work.mkdir()
    source = work / "model.pt"  # ultralytics writes its export beside the weights: keep that inside ``out``
    shutil.copyfile(spec.weights, source)
    try:
        yolo = YOLO(str(source), task="detect")
        if yolo.task != "detect":
            raise ExportError(f"{spec.weights.name} is a {yolo.task} model, not a detection model")
        imgsz = spec.imgsz or checkpoint_imgsz(yolo) or FALLBACK_IMGSZ
        kwargs: dict[str, Any] = {
            "format": spec.backend, "imgsz": imgsz, "half": False, "int8": spec.int8, "device": "cpu",
            # Dynamic height and width: each photo runs at its own letterboxed shape, not a padded square.
            "dynamic": True, "simplify": True, "verbose": False,
            # The raw one-to-many head (ultralytics' default for predict too); NMS is ours, in postprocess.
            "nms": None,
        }
        if spec.int8:
            if not spec.calibration:
                raise ExportError("INT8 needs calibration images: set DETBOT_INT8_DATA to a YOLO dataset YAML")
            if spec.backend == "openvino" and importlib.util.find_spec("nncf") is None:
                raise ExportError("INT8 with OpenVINO needs the nncf package (pip install nncf)")
            kwargs["data"] = spec.calibration
            logging.getLogger("nncf").setLevel(logging.WARNING)  # one INFO line per layer otherwise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            produced = yolo.export(**kwargs)
        if not produced or not Path(str(produced)).exists():
            raise ExportError(f"ultralytics made no {spec.backend} export of {spec.weights.name}")
        names = {int(k): str(v) for k, v in yolo.names.items()}
        stride = int(max(getattr(yolo.model, "stride", [32])))
        model_file = _collect(Path(str(produced)), out)
    except ExportError:
        raise
    except Exception as exc:  # ultralytics and the exporters raise anything; the caller falls back
        raise ExportError(f"{type(exc).__name__}: {exc}") from exc
    shutil.rmtree(work, ignore_errors=True)
    files = {p.name: file_sha256(p) for p in sorted(out.iterdir()) if p.is_file()}
    manifest = {
        "format": CACHE_FORMAT, "backend": spec.backend, "model_file": model_file, "files": files,
        "weights_sha256": weights_sha256, "weights_name": spec.weights.name, "imgsz": imgsz,
        "stride": stride, "int8": spec.int8, "names": names,
        "versions": runtime_versions(spec.backend),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _export_count += 1
    return manifest


def _collect(produced: Path, out: Path) -> str:
    """Move the exported model files into ``out``; returns the name of the file to load."""
    if produced.is_dir():  # OpenVINO: a folder with model.xml, model.bin and metadata.yaml
        for f in produced.iterdir():
            if f.suffix in (".xml", ".bin"):
                shutil.move(str(f), out / f"model{f.suffix}")
        return "model.xml"
    shutil.move(str(produced), out / "model.onnx")
    return "model.onnx"


# --- running an export ---------------------------------------------------------------------------------


class Engine(Protocol):
    """One compiled model: a letterboxed H×W×3 uint8 BGR image in, the raw output array out."""

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


class OpenVINOEngine:
    """OpenVINO on the CPU, threads sized to this worker's share of the cores.

    The export has a dynamic input shape; each letterboxed shape actually seen is compiled as a static model
    (a sixth faster than running the dynamic one) and kept, up to MAX_COMPILED_SHAPES. Photos come in a
    handful of aspect ratios, so after the first few answers every photo finds its shape compiled.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        self._core = ov.Core()
        # The uint8 BGR image goes in as it is: conversion, channel order and scaling run inside the
        # compiled graph, 5 ms faster per photo than preparing a float blob with OpenCV beforehand.
        ppp = PrePostProcessor(self._core.read_model(path))
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
            ColorFormat.BGR
        )
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
        self._model = ppp.build()
        self._config = {
            "INFERENCE_NUM_THREADS": threads,
            # One stream and the latency hint: each worker answers one photo at a time, as fast as it can.
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO pins its threads to cores on its own, and every worker process picks the same first
            # core: two workers on two cores then share one (measured: 15 + 18 img/s instead of 27 + 29).
            # One worker per core is the scaling model, so the OS scheduler places them.
            "ENABLE_CPU_PINNING": False,
        }
        self._requests: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def _request(self, shape: tuple[int, ...]) -> Any:
        request = self._requests.get(shape)
        if request is None:
            model = self._model.clone()
            model.reshape({0: list(shape)})
            self.compiled = self._core.compile_model(model, "CPU", self._config)
            request = self._requests[shape] = self.compiled.create_infer_request()
            if len(self._requests) > MAX_COMPILED_SHAPES:
                self._requests.popitem(last=False)
        self._requests.move_to_end(shape)
        return request

    def __call__(self, image: np.ndarray) -> np.ndarray:
        batch = image[None]
        result = self._request(tuple(batch.shape)).infer({0: batch})
        return np.asarray(result[0])


class OnnxEngine:
    """ONNX Runtime on the CPU, one session, threads sized to this worker's share of the cores."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ORT's pool threads spin after each run by default, burning the core a neighbouring worker is
        # inferring on (measured: 2 workers at 15 img/s instead of 29 once a session had 2 threads).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: ORT's warnings are about graph details, not our input
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, image: np.ndarray) -> np.ndarray:
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, swapRB=True)  # float32 1×3×H×W RGB in [0, 1]
        return np.asarray(self._session.run(None, {self._input: blob})[0])


class TorchEngine:
    """The PyTorch model itself behind the same interface, so all backends share pre- and post-processing
    (and agree to the pixel where their arithmetic does). Runs on any torch device."""

    def __init__(self, yolo: Any, device: str) -> None:
        import torch

        self._torch = torch
        self._device = torch.device(device)
        model = yolo.model
        if hasattr(model, "end2end"):
            model.end2end = False  # the one-to-many head, as the exports; before fuse(), which may drop it
        self._model = model.fuse(verbose=False).to(self._device).eval()
        self.stride = int(max(getattr(model, "stride", [32])))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        blob = self._torch.from_numpy(cv2.dnn.blobFromImage(image, 1 / 255.0, swapRB=True)).to(self._device)
        with self._torch.inference_mode():
            out = self._model(blob)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return np.asarray(out.float().cpu().numpy())


def torch_engine(yolo: Any, device: str) -> TorchEngine | None:
    """A TorchEngine for a PyTorch detection model; None for anything else (an export given as weights)."""
    model = getattr(yolo, "model", None)
    if getattr(yolo, "task", None) != "detect" or not hasattr(model, "fuse") or not hasattr(model, "stride"):
        return None
    return TorchEngine(yolo, device)


class WideTorchEngine:
    """A TorchEngine run on more threads than the process's own share, for one call at a time."""

    def __init__(self, engine: TorchEngine, threads: int) -> None:
        self._engine, self.threads = engine, threads

    def __call__(self, image: np.ndarray) -> np.ndarray:
        torch = self._engine._torch
        own = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._engine(image)
        finally:
            torch.set_num_threads(own)


def with_threads(engine: Engine, export: Export | None, threads: int) -> Engine:
    """The same model as ``engine``, run on ``threads`` threads: compiled again for an export (a runtime's
    thread count is fixed when it compiles), the very same PyTorch model otherwise."""
    if export is not None:
        return make_engine(export, threads)
    if isinstance(engine, TorchEngine):
        return WideTorchEngine(engine, threads)
    raise ExportError(f"no engine for {type(engine).__name__} on {threads} threads")


def make_engine(export: Export, threads: int) -> Engine:
    if export.backend == "openvino":
        return OpenVINOEngine(export.path, threads)
    if export.backend == "onnx":
        return OnnxEngine(export.path, threads)
    raise ExportError(f"no engine for backend {export.backend}")


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: scale, then padding on the left and top."""

    gain: float
    pad_x: int
    pad_y: int


def letterbox(image: np.ndarray, imgsz: int, stride: int, rect: bool) -> tuple[np.ndarray, Letterbox]:
    """ultralytics' letterbox (same rounding): the resized, padded uint8 BGR image and the geometry.

    ``rect``: pad only to a multiple of the stride (what ultralytics does for PyTorch models) instead of to
    a full square, which saves up to half the compute on photos that are not square.
    """
    h, w = image.shape[:2]
    gain = min(imgsz / h, imgsz / w)
    new_w, new_h = max(round(w * gain), 1), max(round(h * gain), 1)
    dw, dh = imgsz - new_w, imgsz - new_h
    if rect:
        dw, dh = dw % stride, dh % stride
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        pad = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=pad)
    return np.ascontiguousarray(image), Letterbox(gain, left, top)


def merge_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS on xyxy boxes sorted by descending score, as ultralytics/torchvision do it; returns the
    kept indices and, for each, the score-weighted mean box of it and the candidates it suppressed."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.arange(len(boxes))
    keep, merged = [], []
    while order.size:
        i, rest = order[0], order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9) > iou
        group = np.concatenate([[i], rest[overlap]])
        weights = scores[group, None]
        keep.append(i)
        merged.append((boxes[group] * weights).sum(axis=0) / weights.sum())
        order = rest[~overlap]
    return np.asarray(keep, dtype=np.int64), np.asarray(merged, dtype=np.float32).reshape(-1, 4)


def decode_raw(output: np.ndarray, confidence: float) -> np.ndarray:
    """A raw head's ``1×(4+nc)×N`` output (xywh, class scores) to ``K×6`` rows (x1, y1, x2, y2, conf,
    class) after merge NMS, best first."""
    pred = output[0]
    scores = pred[4:].max(axis=0)  # along the contiguous axis: a fraction of a millisecond for 80×8400
    keep = scores > confidence
    if not keep.any():
        return np.zeros((0, 6), np.float32)
    cand = pred[:, keep].T
    conf, cls = scores[keep], cand[:, 4:].argmax(axis=1)
    xy, wh = cand[:, :2], cand[:, 2:4] / 2
    rows = np.concatenate([xy - wh, xy + wh, conf[:, None], cls[:, None].astype(np.float32)], axis=1)
    rows = rows[np.argsort(-conf, kind="stable")][:MAX_NMS_CANDIDATES]
    kept, merged = merge_nms(rows[:, :4] + rows[:, 5:6] * NMS_CLASS_OFFSET, rows[:, 4], NMS_IOU)
    out = rows[kept]
    out[:, :4] = merged - out[:, 5:6] * NMS_CLASS_OFFSET
    return out


def postprocess(
    output: np.ndarray,
    geometry: Letterbox,
    shape: tuple[int, int],
    thresholds: np.ndarray,
    max_det: int,
) -> np.ndarray:
    """Raw model output to ``K×6`` rows in pixels of the original image, best first, at most ``max_det``:
    the boxes whose confidence reaches their class's threshold (``thresholds[class id]``; +inf: left out)."""
    rows = decode_raw(output, float(thresholds.min()))
    rows = rows[rows[:, 4] >= thresholds[rows[:, 5].astype(np.int64)]]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det].astype(np.float32)
    h, w = shape
    rows[:, [0, 2]] = np.clip((rows[:, [0, 2]] - geometry.pad_x) / geometry.gain, 0, w)
    rows[:, [1, 3]] = np.clip((rows[:, [1, 3]] - geometry.pad_y) / geometry.gain, 0, h)
    return rows
