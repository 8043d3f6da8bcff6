"""The Detector: one YOLO model, loaded (or taken from the export cache) and warmed once, used for every image.

On a CPU the model runs as an OpenVINO or ONNX Runtime export (:mod:`detector.export_cache`,
:mod:`detector.engines`) with a lean pre/post-processing path of our own (:mod:`detector.processing`);
PyTorch through ultralytics' predictor is the fallback and the GPU path. Decoding is :mod:`detector.image`'s,
drawing and encoding :mod:`detector.draw`'s.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector import engines, export_cache, masks
from detector.cores import CoreLocks, open_core_locks, usable_cores
from detector.draw import draw_boxes, encode_jpeg
from detector.errors import ModelLoadError, UnknownClassError
from detector.image import ImageInput, decode
from detector.params import DetectParams, class_key
from detector.processing import Letterbox, cover, letterbox, postprocess, rect_shape
from detector.render import select
from detector.result import TASK_POSE, TASK_SEGMENT, Box, Detection, Keypoint, Point, Timings
from detector.runtime import configure_threads, disable_analytics, quiet_ultralytics
from detector.settings import DEFAULT_MAX_DETECTIONS, DEFAULT_MAX_PIXELS, DetectorSettings

log = logging.getLogger(__name__)

# One inference thread per worker process on a CPU: one worker per core then uses every core, none fight.
DEFAULT_CPU_THREADS = 1
# At exit, how long to wait for the canvas being compiled in the background: one compile, a second or two.
PREPARE_JOIN_S = 10.0


def _maybe_gpu() -> bool:
    """Whether a GPU could be there at all, judged without importing torch (a second and 200 MB)."""
    return sys.platform == "darwin" or os.path.exists("/dev/nvidia0") or os.path.exists("/dev/dxg")


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if not _maybe_gpu() and "torch" not in sys.modules:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


@dataclasses.dataclass
class Found:
    """What the model found in one image, best first: ``K×6`` rows (x1, y1, x2, y2, confidence, class) in
    pixels of the image, and per row its outline (segmentation) or its ``nk×3`` keypoints (pose)."""

    rows: np.ndarray
    polygons: list[tuple[Point, ...]] | None = None
    keypoints: np.ndarray | None = None

    def take(self, index: np.ndarray) -> Found:
        polygons = [self.polygons[i] for i in index] if self.polygons is not None else None
        return Found(self.rows[index], polygons, self.keypoints[index] if self.keypoints is not None else None)


def load_yolo(weights: str) -> Any:
    """Load YOLO weights (path or ultralytics name) or fail with one line saying how to fix it. The task
    (detect, segment, pose) is the weights' own: ``model.task``, an export's metadata."""
    quiet_ultralytics()
    from ultralytics import YOLO

    disable_analytics()
    try:
        yolo = YOLO(weights)
    except Exception as exc:  # ultralytics raises anything from FileNotFoundError to ConnectionError
        path = Path(weights)
        if path.exists():
            where = f"the file is not loadable YOLO weights ({type(exc).__name__})"
        elif "/" in weights or path.suffix not in (".pt", ""):
            where = "a file that does not exist"
        else:
            where = "not on disk and could not be downloaded (no internet?)"
        raise ModelLoadError(
            f"Cannot load the YOLO model {weights!r}: {where}. Set DETBOT_MODEL to the path of YOLO weights "
            f"(e.g. DETBOT_MODEL=/models/best.pt) or to an ultralytics model name such as yolo26n.pt."
        ) from exc
    if yolo.task not in export_cache.SERVED_TASKS:
        raise ModelLoadError(
            f"The YOLO model {weights!r} is a {yolo.task} model; detbot serves detection, segmentation (-seg) and "
            f"pose (-pose) models. Set DETBOT_MODEL to one of those, e.g. yolo26n.pt or yolo26n-seg.pt."
        )
    return yolo


def _export_failed(spec: export_cache.ExportSpec, exc: Exception) -> None:
    log.warning("%s backend unavailable for %s, using torch: %s: %s",
                spec.backend, spec.weights.name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")


def _prepare(compiled: Sequence[engines.Engine | None], stop: threading.Event | None = None) -> None:
    """Compile every engine's canvases ahead, the most common photo shapes first, one engine after the
    other for each shape: once done, no photo letterboxed by the Detector ever waits for a compile.
    ``stop``: give up between two compiles (the process is exiting)."""
    ready = [e for e in compiled if e is not None and e.canvases]
    for shape in ready[0].canvases or () if ready else ():
        for engine in ready:
            if stop is not None and stop.is_set():
                return
            engine.prepare(shape)


def _stop_preparing(stop: threading.Event, thread: threading.Thread) -> None:
    """At exit: let the compile in progress finish and start no other. A compile still running in
    OpenVINO while the interpreter tears down aborts the process ("terminate called")."""
    stop.set()
    thread.join(PREPARE_JOIN_S)


class Detector:
    """Loads a YOLO model once and runs it on one image at a time.

    Not thread-safe by design: inference on one model from several threads is a classic crash.
    Calls are serialised with a lock; run one Detector per process (or per thread) to scale.

    ``backend``: ``auto`` (OpenVINO on CPU when installed, else ONNX Runtime, else PyTorch; PyTorch on a GPU),
    ``torch``, ``onnx`` or ``openvino``. An export that fails falls back to PyTorch with one warning.
    ``threads``: inference threads of this process; default one on a CPU (one worker per core).
    ``use_idle_cores``: on a CPU, run an inference on every core of the machine when no other process using
    the same core locks (``cores_dir``, default ``<export_dir>/cores``) has a photo in hand; see
    :mod:`detector.cores`. ``last_threads`` says how many threads the latest inference ran on.
    ``background_export``: when the export cache has no entry for the model yet, start on PyTorch at once and
    make the export in a background thread, then switch to it (``export_done`` is set when that is over,
    switched or not): a cold start answers its first photos in seconds instead of after the export.
    ``precision``: ``auto`` (bf16 on CPUs with AMX or AVX512_BF16, else f32; see
    :func:`detector.engines.choose_precision`), ``bf16`` or ``f32``: how OpenVINO computes. ``precision``
    holds the choice and its reason.

    Input shapes: an OpenVINO engine compiles a few *canvases* (the square and the common photo aspects,
    :func:`detector.processing.canvases`): the square before the first answer, the others in a background
    thread (``prepared`` is set when done). Each photo is letterboxed into the smallest ready canvas that
    holds it, so no photo ever waits for a compile.
    """

    names: dict[int, str]
    imgsz: int
    model_task: export_cache.ModelTask

    def __init__(
        self,
        model: str = "yolo26n.pt",
        *,
        device: str = "auto",
        imgsz: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        warmup: bool = True,
        backend: str = "auto",
        threads: int | None = None,
        export_dir: str | Path | None = None,
        int8: bool = False,
        int8_data: str | None = None,
        use_idle_cores: bool = True,
        cores_dir: str | Path | None = None,
        background_export: bool = False,
        precision: str = "auto",
    ) -> None:
        started = time.perf_counter()
        self.weights = model
        self.device = _resolve_device(device)
        self.max_pixels = max_pixels
        self.max_detections = max_detections
        self.threads = threads or DEFAULT_CPU_THREADS
        self.backend = engines.resolve_backend(backend, self.device)
        self.precision = engines.choose_precision(precision)
        self.export: export_cache.Export | None = None
        self._engine: engines.Engine | None = None
        # The same model compiled for every core of the machine, run when no other worker is busy.
        self._wide_engine: engines.Engine | None = None
        self._wide_threads = self.threads
        self._cores: CoreLocks | None = None
        self.last_threads = self.threads
        # Model runs since start (warm-up included): a re-drawing from kept results never adds one.
        self.model_runs = 0
        self._widen = False
        self._stride = 32
        self._yolo: Any = None
        self._lock = threading.RLock()
        self.export_done = threading.Event()
        self.prepared = threading.Event()
        self._pending: export_cache.ExportSpec | None = None  # exported in the background after start-up
        self._cache = Path(export_dir) if export_dir else export_cache.default_export_dir()
        self._load(imgsz, int8, int8_data, background_export)
        self._ids_by_name = {class_key(v): k for k, v in self.names.items()}
        if use_idle_cores:  # the core locks live beside the export cache, which every local worker shares
            self._share_idle_cores(Path(cores_dir) if cores_dir else self._cache / "cores")
        if warmup:
            self.warmup()
        self.load_seconds = time.perf_counter() - started
        stop = threading.Event()
        preparing = threading.Thread(target=self._prepare_canvases, args=(stop,), daemon=True, name="detbot-compile")
        preparing.start()
        atexit.register(_stop_preparing, stop, preparing)
        if self._pending is None:
            self.export_done.set()
        else:
            threading.Thread(target=self._export_in_background, args=(self._pending,), daemon=True,
                             name="detbot-export").start()

    def _load(self, imgsz: int | None, int8: bool, int8_data: str | None, background: bool) -> None:
        """The exported model when the backend is an export and the weights a ``.pt`` checkpoint (downloaded
        first when named), else PyTorch; an export that fails falls back to PyTorch too. With ``background``
        and no export cached yet, PyTorch now and the export later (:meth:`_export_in_background`)."""
        model = self.weights
        weights_path = Path(model)
        if self.backend != "torch" and not (weights_path.is_file() and weights_path.suffix == ".pt"):
            # A model name to download first, or an export already: ultralytics loads it as it is.
            self._yolo = load_yolo(model)
            weights_path = Path(getattr(self._yolo, "ckpt_path", None) or model)
        if self.backend != "torch" and weights_path.is_file() and weights_path.suffix == ".pt":
            spec = export_cache.ExportSpec(weights_path, self.backend, imgsz, int8, int8_data)
            if background and export_cache.cached_export(spec, self._cache) is None:
                self._pending = spec
            else:
                self._load_export(spec)
        elif self.backend != "torch":
            log.info("%s is not a .pt checkpoint, so it is not exported: PyTorch/ultralytics runs it", model)
        if self.export is None:
            self.backend = "torch"
            self._load_torch(imgsz)

    def _load_export(self, spec: export_cache.ExportSpec) -> None:
        try:
            export = export_cache.ensure_export(spec, self._cache)
            engine = engines.make_engine(export, self.threads, self.precision.name)
        except Exception as exc:  # export and runtimes fail in foreign ways; PyTorch still works
            _export_failed(spec, exc)
            return
        self.export, self._engine, self._stride = export, engine, export.stride
        self._yolo = None  # a model ultralytics downloaded for the export is not needed any more
        how = "reused from" if export.reused else "exported into"
        log.info("%s: %s model %s %s in %.1f s", spec.weights.name, self.backend, how, self._cache, export.seconds)
        self.names = dict(export.names)
        self.imgsz = export.imgsz
        self.model_task = export.task

    def _export_in_background(self, spec: export_cache.ExportSpec) -> None:
        """Export, compile and warm the exported model while PyTorch answers, then switch to it under the
        lock, between two photos. A failure leaves PyTorch in place, as a failed export at start-up does."""
        try:
            export = export_cache.ensure_export(spec, self._cache)
            engine = engines.make_engine(export, self.threads, self.precision.name)
            wide = self._widened(engine, export)
            _prepare([engine, wide])
        except Exception as exc:
            _export_failed(spec, exc)
            self.export_done.set()
            return
        with self._lock:
            self.export, self._engine, self._wide_engine = export, engine, wide
            self._stride, self.imgsz, self.backend = export.stride, export.imgsz, spec.backend
            self._yolo = None
        log.info("%s: switched to the %s model, exported into %s in %.1f s", spec.weights.name, spec.backend,
                 self._cache, export.seconds)
        self.export_done.set()

    def _load_torch(self, imgsz: int | None) -> None:
        if self._yolo is None:
            self._yolo = load_yolo(self.weights)
        if str(self.device) == "cpu":
            configure_threads(self.threads)
        self.names = {int(k): str(v) for k, v in self._yolo.names.items()}
        self.imgsz = (imgsz or export_cache.checkpoint_imgsz(self._yolo)
                      or export_cache.exported_imgsz(Path(self.weights)) or export_cache.FALLBACK_IMGSZ)
        self.model_task = export_cache.model_task(self._yolo)
        engine = engines.torch_engine(self._yolo, self.device)
        if engine is not None:  # else (an exported file given as weights) ultralytics' predictor runs it
            self._engine, self._stride = engine, engine.stride

    def _share_idle_cores(self, folder: Path) -> None:
        cores = usable_cores()
        if self._engine is None or self.device != "cpu" or cores <= self.threads:
            return
        self._cores = open_core_locks(folder, cores)
        self._wide_engine = self._widened(self._engine, self.export)

    def _widened(self, engine: engines.Engine, export: export_cache.Export | None) -> engines.Engine | None:
        """The same model for a lone photo on every idle core (see :func:`detector.engines.wide_threads`);
        None when cores are not shared or that would be no more threads than this worker's own."""
        if self._cores is None:
            return None
        threads = engines.wide_threads(engine, self._cores.cores)
        if threads <= self.threads:
            return None
        self._wide_threads = threads
        return engines.with_threads(engine, export, threads, self.precision.name)

    def _prepare_canvases(self, stop: threading.Event) -> None:
        """The background thread compiling the canvases the engines do not have yet (see :func:`_prepare`)."""
        try:
            _prepare([self._engine, self._wide_engine], stop)
        except Exception:  # a compile failing now would fail on the square too; the square keeps answering
            log.exception("compiling the model's input shapes ahead failed; every photo runs on the square")
        self.prepared.set()

    @classmethod
    def from_settings(
        cls, settings: DetectorSettings, *, warmup: bool = True, background_export: bool = False
    ) -> Detector:
        return cls(
            settings.model,
            device=settings.device,
            imgsz=settings.imgsz,
            max_pixels=settings.max_pixels,
            max_detections=settings.max_detections,
            warmup=warmup,
            backend=settings.backend,
            threads=settings.threads,
            export_dir=settings.export_dir,
            int8=settings.int8,
            int8_data=settings.int8_data,
            use_idle_cores=settings.use_idle_cores,
            background_export=background_export,
            precision=settings.precision,
        )

    @property
    def model_name(self) -> str:
        return Path(self.weights).name

    @property
    def task(self) -> str:
        """``detect``, ``segment`` or ``pose``: what the model does, as its weights say."""
        return self.model_task.task

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...] | None:
        """Pose: the pairs of keypoint indexes drawn joined (see :func:`detector.export_cache.model_task`)."""
        return self.model_task.skeleton

    def warmup(self) -> None:
        """One photo's whole path on a blank image, so the first real photos do not pay for lazy
        initialisation: letterbox, the engines (an exported model's canvases compile on their own), NMS,
        and the label font."""
        side = self.imgsz
        blank = np.full((side, side * 3 // 4, 3), 114, np.uint8)
        self._predict(blank, np.full(len(self.names), 0.5, np.float32), 1)
        self.model_runs = 0  # the warm-up is not an answer
        if self._wide_engine is not None:  # run now too, whether or not the neighbours are busy
            self._letterboxed(self._wide_engine, blank)
        # The label font is opened and its digits rendered now, not on the first photo (~20 ms).
        draw_boxes(np.full((side, side, 3), 114, np.uint8), [Box(0, self.names[0], 0.5, 8, 40, 64, 96)])

    def class_ids(self, names: Sequence[str] | None) -> list[int] | None:
        """Class names (compared as :func:`class_key` does) to ids; an unknown name is an error listing the
        known ones."""
        if not names:
            return None
        unknown = [n for n in names if class_key(n) not in self._ids_by_name]
        if unknown:
            known = sorted(self.names.values())
            raise UnknownClassError(f"Unknown class {', '.join(unknown)}. This model knows: {', '.join(known)}.",
                                    unknown=unknown, known=known)
        return sorted({self._ids_by_name[class_key(n)] for n in names})

    def thresholds(self, params: DetectParams) -> np.ndarray:
        """The confidence each class id needs under ``params``; classes the filter leaves out get +inf."""
        out = np.full(len(self.names), params.threshold, np.float32)
        for name, value in params.class_confidence:
            out[self.class_ids([name])] = value
        wanted = self.class_ids(params.classes)
        if wanted is not None:
            out[np.setdiff1d(np.arange(len(self.names)), wanted)] = np.inf
        return out

    def _predict(self, image: np.ndarray, thresholds: np.ndarray, max_det: int) -> Found:
        """What the model finds in ``image`` (pixels of ``image``), best first: objects at or above their class's
        threshold (``thresholds[class id]``), at most ``max_det``, with their outlines or keypoints."""
        with self._lock:
            self.model_runs += 1
            if self._engine is not None:
                outputs, geometry = self._infer(image)
                return self._found(outputs, geometry, image.shape[:2], thresholds, max_det)
            ids = np.flatnonzero(np.isfinite(thresholds)).tolist()
            result = self._yolo.predict(
                image, conf=float(thresholds.min()), classes=ids, max_det=len(self.names) * max_det,
                imgsz=self.imgsz, device=self.device, verbose=False,
            )[0]
        return _ultralytics_found(result, thresholds, max_det)

    def _found(self, outputs: engines.Outputs, geometry: Letterbox, shape: tuple[int, int], thresholds: np.ndarray,
               max_det: int) -> Found:
        """The shared post-processing of every engine's outputs: merge NMS, then the masks' outlines from the
        prototypes (segmentation) or the keypoints (pose), all in the photo's pixels."""
        keypoints = self.model_task.keypoints if self.task == TASK_POSE else 0
        rows = postprocess(outputs[0], geometry, shape, thresholds, max_det, keypoints)
        if self.task == TASK_SEGMENT and len(outputs) > 1:
            return Found(rows[:, :6], masks.polygons(outputs[1][0], rows[:, 6:], rows[:, :4], geometry))
        if keypoints:
            return Found(rows[:, :6], keypoints=rows[:, 6:6 + 3 * keypoints].reshape(len(rows), keypoints, 3))
        return Found(rows[:, :6])

    def neighbours(self) -> int:
        """Other processes on this machine sharing its cores with this one (0 when cores are not shared)."""
        return self._cores.neighbours() if self._cores is not None else 0

    @contextlib.contextmanager
    def _own_core(self, waiting: int) -> Iterator[None]:
        """One core of the machine held for a whole photo, when cores are shared (see :mod:`detector.cores`);
        the inference may take the idle ones too unless a backlog waits and other workers could use them."""
        self._widen = waiting == 0 or self.neighbours() == 0
        try:
            with self._cores.own() if self._cores is not None else contextlib.nullcontext():
                yield
        finally:
            self._widen = False

    def _infer(self, image: np.ndarray) -> tuple[engines.Outputs, Letterbox]:
        """The model on one image: on every core when the machine is otherwise idle, else on this worker's
        own share (see :mod:`detector.cores`)."""
        assert self._engine is not None
        if self._cores is None or self._wide_engine is None or not self._widen:
            self.last_threads = self.threads
            return self._letterboxed(self._engine, image)
        with self._cores.borrow() as wide:
            self.last_threads = self._wide_threads if wide else self.threads
            return self._letterboxed(self._wide_engine if wide else self._engine, image)

    def _letterboxed(self, engine: engines.Engine, image: np.ndarray) -> tuple[engines.Outputs, Letterbox]:
        """``engine`` on ``image`` letterboxed to its own aspect, or into the smallest canvas the engine has
        compiled that holds it."""
        shape = rect_shape(image.shape[0], image.shape[1], self.imgsz, self._stride)
        fitted, geometry = letterbox(image, self.imgsz, self._stride, canvas=cover(shape, engine.ready()))
        return engine(fitted), geometry

    def _run(
        self, image: ImageInput, params: DetectParams, max_detections: int | None
    ) -> tuple[np.ndarray, Detection]:
        thresholds = self.thresholds(params)
        t0 = time.perf_counter()
        array = decode(image, self.max_pixels)
        t1 = time.perf_counter()
        found = self._predict(array, thresholds, max_detections or self.max_detections)
        t2 = time.perf_counter()
        ids = self.class_ids(params.classes)
        det = Detection(
            boxes=self._boxes(found),
            width=int(array.shape[1]),
            height=int(array.shape[0]),
            confidence=params.threshold,
            classes=tuple(self.names[i] for i in ids) if ids else None,
            model=self.model_name,
            timings=Timings(decode_ms=(t1 - t0) * 1e3, inference_ms=(t2 - t1) * 1e3, threads=self.last_threads),
            class_confidence=params.per_class,
            task=self.task,
            skeleton=self.skeleton,
        )
        return array, det

    def _boxes(self, found: Found) -> tuple[Box, ...]:
        boxes = []
        for i, (x1, y1, x2, y2, p, c) in enumerate(found.rows[:, :6]):
            polygon = found.polygons[i] if found.polygons is not None else None
            keypoints = _keypoints(found.keypoints[i]) if found.keypoints is not None else None
            boxes.append(Box(int(c), self.names[int(c)], round(float(p), 4), round(float(x1), 1), round(float(y1), 1),
                             round(float(x2), 1), round(float(y2), 1), polygon=polygon, keypoints=keypoints))
        return tuple(sorted(boxes, key=lambda b: -b.confidence))

    def detect(
        self,
        image: ImageInput,
        params: DetectParams | None = None,
        *,
        max_detections: int | None = None,
        waiting: int = 0,
    ) -> Detection:
        """Find objects in one image (bytes, path or BGR array), as ``params`` asks (default: every class at
        the default confidence). ``waiting``: photos queued behind this one; with a backlog and other workers
        on this machine, the inference keeps to this process's own share, so they find their cores free
        (otherwise it may take every idle core)."""
        with self._lock, self._own_core(waiting):
            return self._run(image, params or DetectParams(), max_detections)[1]

    def detect_annotated(
        self,
        image: ImageInput,
        params: DetectParams | None = None,
        *,
        max_detections: int | None = None,
        waiting: int = 0,
        labels: Mapping[int, str] | None = None,
    ) -> tuple[Detection, bytes]:
        """Like :meth:`detect`, plus the image with boxes and labels drawn, as JPEG bytes. ``labels``: the
        name drawn for each class id (a person's language, :meth:`ClassNames.labels`); default: the model's."""
        with self._lock, self._own_core(waiting):
            array, det = self._run(image, params or DetectParams(), max_detections)
            t0 = time.perf_counter()
            # The caller's own array is never drawn on; a freshly decoded one is ours to reuse.
            canvas = array.copy() if isinstance(image, np.ndarray) else array
            jpeg = encode_jpeg(draw_boxes(canvas, det.boxes, labels, skeleton=self.skeleton))
            annotate_ms = (time.perf_counter() - t0) * 1e3
        timings = Timings(det.timings.decode_ms, det.timings.inference_ms, annotate_ms, det.timings.threads)
        return dataclasses.replace(det, timings=timings), jpeg


    def detect_adjustable(
        self,
        image: ImageInput,
        params: DetectParams,
        floor: float,
        *,
        waiting: int = 0,
        labels: Mapping[int, str] | None = None,
    ) -> tuple[Detection, bytes, tuple[Box, ...]]:
        """Like :meth:`detect_annotated`, but the model runs once over every class down to ``floor`` (or the
        lowest threshold ``params`` asks, if lower): the answer and its image show what ``params`` asks for,
        and every box down to the floor comes back too, so another threshold or class filter later is a
        re-drawing (:func:`detector.render.select`), never a second run of the model."""
        self.thresholds(params)  # an unknown class is refused exactly as before
        wide = DetectParams(confidence=min(floor, params.min_confidence))
        with self._lock, self._own_core(waiting):
            array, every = self._run(image, wide, None)
            ids = self.class_ids(params.classes)
            det = select(every.boxes, every, params, tuple(self.names[i] for i in ids) if ids else None)
            t0 = time.perf_counter()
            canvas = array.copy() if isinstance(image, np.ndarray) else array
            jpeg = encode_jpeg(draw_boxes(canvas, det.boxes, labels, skeleton=self.skeleton))
            annotate_ms = (time.perf_counter() - t0) * 1e3
        timings = Timings(det.timings.decode_ms, det.timings.inference_ms, annotate_ms, det.timings.threads)
        return dataclasses.replace(det, timings=timings), jpeg, every.boxes


def _keypoints(points: np.ndarray) -> tuple[Keypoint, ...]:
    """A pose's ``nk×3`` keypoints as kept: positions in whole pixels (the model places them to a pixel of its
    input at best), confidences to two decimals — so that an answer's 100 objects of 17 keypoints stay ~22 KB."""
    return tuple((round(float(x)), round(float(y)), round(float(c), 2)) for x, y, c in points)


def _ultralytics_found(result: Any, thresholds: np.ndarray, max_det: int) -> Found:
    """ultralytics' own result (an exported file given as weights runs through its predictor) as
    :class:`Found`, with the same thresholds and cap as the shared post-processing."""
    data = result.boxes.data.cpu().numpy() if result.boxes is not None else np.zeros((0, 6))
    rows = np.asarray(data[:, :6], dtype=np.float32).reshape(-1, 6)
    polygons = keypoints = None
    if getattr(result, "masks", None) is not None:
        polygons = [masks.simplify_outline(np.asarray(xy)) for xy in result.masks.xy]
    if getattr(result, "keypoints", None) is not None:
        keypoints = np.asarray(result.keypoints.data.cpu().numpy(), np.float32)
        if keypoints.shape[-1] == 2:  # a model without visibility: every keypoint is as sure as its box
            keypoints = np.concatenate([keypoints, np.ones((*keypoints.shape[:2], 1), np.float32)], axis=-1)
    found = Found(rows, polygons, keypoints)
    keep = np.flatnonzero(rows[:, 4] >= thresholds[rows[:, 5].astype(np.int64)])[:max_det]
    return found.take(keep)
