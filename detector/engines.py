"""The engines: one compiled model each, a letterboxed image in, its raw outputs out; the backend and precision.

Running an export (see :mod:`detector.export_cache`) needs neither torch nor ultralytics: OpenVINO or ONNX
Runtime runs the model once per photo. PyTorch runs behind the same interface (:class:`TorchEngine`), so
every backend shares one pre- and post-processing (:mod:`detector.processing`).
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from detector.export_cache import EXPORTED_BACKENDS, Export, ExportError
from detector.processing import PAD_VALUE, Shape, canvases

log = logging.getLogger(__name__)

# What ``auto`` picks on a CPU, best first: OpenVINO was the fastest on every CPU measured (docs/performance.md).
AUTO_ORDER = ("openvino", "onnx")
# Shapes outside the canvases an OpenVINO engine keeps compiled for direct callers (~30 MB each); the
# Detector never asks for one.
MAX_EXTRA_SHAPES = 4
# Machines whose CPU oneDNN runs channels-last convolutions fastest on (as ultralytics judges it).
X86 = ("x86_64", "AMD64", "i386", "i686")
# Where Linux lists the CPU's features (AMX, AVX512_BF16 decide the precision).
CPUINFO = "/proc/cpuinfo"


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


Outputs = tuple[np.ndarray, ...]


class Engine(Protocol):
    """One compiled model: a letterboxed H×W×3 uint8 BGR image in, the model's output arrays out, in the
    export's order (a detection model has one; a segmentation export adds its mask prototypes). An output
    with image axes (the prototypes) comes channels-last, ``1×H×W×C``: what :func:`detector.masks.polygons`
    reads an object's logits from with one matrix-vector product over its box.

    ``canvases``: the input shapes the engine compiles ahead (:func:`detector.processing.canvases`), which
    the Detector letterboxes every photo into; None when any shape runs as it is, with nothing to compile.
    ``ready()``: those compiled so far. ``prepare(shape)`` compiles one of them ahead (a background thread
    does it after start-up). ``compiles_on_demand``: compiles a photo had to wait for (none once a photo is
    letterboxed into a ready canvas).
    """

    canvases: tuple[Shape, ...] | None
    compiles_on_demand: int

    def ready(self) -> tuple[Shape, ...] | None: ...

    def prepare(self, shape: Shape) -> None: ...

    def __call__(self, image: np.ndarray) -> Outputs: ...


@dataclass(frozen=True)
class Precision:
    """The floating-point precision OpenVINO infers in, and why it was chosen."""

    name: str  # "bf16", "f16" or "f32"
    reason: str


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (``avx512_bf16``, ``amx_bf16``); empty elsewhere."""
    try:
        text = Path(CPUINFO).read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def cpu_name() -> str:
    """The CPU's model name (``AMD EPYC``, ``Intel(R) Xeon(R) ...``), as the OS gives it."""
    try:
        text = Path(CPUINFO).read_text()
    except OSError:
        return platform.processor() or platform.machine()
    line = next((ln for ln in text.splitlines() if ln.startswith("model name")), "")
    return line.partition(":")[2].strip() or platform.machine()


def cpu_summary() -> str:
    """The CPU in one line with what decides inference speed here: ``AMD EPYC, 2 cores: AVX-512,
    AVX512_BF16, no AMX``."""
    import os

    flags = cpu_flags()
    named = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512_BF16", "avx512_bf16"),
                                     ("AVX512_VNNI", "avx512_vnni"), ("AMX", "amx_bf16")) if flag in flags]
    if flags and "amx_bf16" not in flags:
        named.append("no AMX")
    return f"{cpu_name()}, {os.cpu_count()} cores" + (f": {', '.join(named)}" if named else "")


def choose_precision(requested: str = "auto") -> Precision:
    """``auto``: the fastest precision that keeps the model's accuracy on this CPU — bf16 where it computes
    bf16 natively (AMX or AVX512_BF16: 1.6× f32's speed on an AVX512_BF16 CPU for −0.24 mAP50-95 on
    coco128, docs/performance.md), else f32 (bf16 would be emulated, slower than f32). Elsewhere than x86 Linux,
    OpenVINO's own default for the CPU. ``bf16``/``f32`` force one."""
    if requested in ("bf16", "f32"):
        return Precision(requested, "asked for, not auto")
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return Precision("bf16", "auto: the CPU has AMX (native bf16 matrix units)")
    if "avx512_bf16" in flags:
        return Precision("bf16", "auto: the CPU has AVX512_BF16 (native bf16 dot products; no AMX)")
    if "avx2" in flags or "avx512f" in flags:
        return Precision("f32", "auto: the CPU has neither AMX nor AVX512_BF16, so bf16 would be emulated: f32")
    default = _openvino_default_precision()
    return Precision(default, f"auto: OpenVINO's default on this CPU ({default})")


def _openvino_default_precision() -> str:
    if not installed("openvino"):
        return "f32"
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    name = str(hint.to_string() if hasattr(hint, "to_string") else hint)  # an ov.Type: "f32", "bf16"
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(name, name)


class OpenVINOEngine:
    """OpenVINO on the CPU, threads sized to this worker's share of the cores, in ``precision``.

    The export has a dynamic input shape, but a static compile runs ~15 % faster than the dynamic model
    (and needs no per-shape preparation on a photo's path), so each canvas is compiled as a static model:
    the square at once (it holds any photo), the others by :meth:`prepare`. A shape outside the canvases
    is compiled when first run and kept, up to MAX_EXTRA_SHAPES (only direct callers do that: the Detector
    letterboxes into ready canvases).
    """

    def __init__(self, path: Path, threads: int, canvases: Sequence[Shape], precision: str | None = None) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._model = _bgr_u8_model(self._core, path)
        self._config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            # One stream and the latency hint: each worker answers one photo at a time, as fast as it can.
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO pins its threads to cores on its own, and every worker process picks the same first
            # core: two workers on two cores then share one (measured: 15 + 18 img/s instead of 27 + 29).
            # One worker per core is the scaling model, so the OS scheduler places them.
            "ENABLE_CPU_PINNING": False,
        }
        if precision:
            self._config["INFERENCE_PRECISION_HINT"] = precision
        self.canvases: tuple[Shape, ...] | None = tuple(canvases)
        self._requests: dict[Shape, Any] = {}
        self._extra: OrderedDict[Shape, Any] = OrderedDict()
        self._compiling = threading.Lock()
        self.compiles_on_demand = 0
        self.prepare(self.canvases[0])

    def ready(self) -> tuple[Shape, ...]:
        return tuple(s for s in self.canvases or () if s in self._requests)

    def prepare(self, shape: Shape) -> None:
        with self._compiling:
            if shape not in self._requests:
                self._requests[shape] = self._compile(shape)

    def _compile(self, shape: Shape) -> Any:
        """A static model for ``shape``, compiled and run once (its first run allocates its buffers)."""
        model = self._model.clone()
        model.reshape({0: [1, *shape, 3]})
        self.compiled = self._core.compile_model(model, "CPU", self._config)
        request = self.compiled.create_infer_request()
        request.infer({0: np.full((1, *shape, 3), PAD_VALUE, np.uint8)})
        return request

    def _unplanned(self, shape: Shape) -> Any:
        request = self._extra.get(shape)
        if request is None:
            self.compiles_on_demand += 1
            log.info("compiling the OpenVINO model for an unplanned input shape %s", shape)
            with self._compiling:
                request = self._extra[shape] = self._compile(shape)
            if len(self._extra) > MAX_EXTRA_SHAPES:
                self._extra.popitem(last=False)
        self._extra.move_to_end(shape)
        return request

    def __call__(self, image: np.ndarray) -> Outputs:
        shape = (image.shape[0], image.shape[1])
        request = self._requests.get(shape) or self._unplanned(shape)
        return tuple(np.asarray(t) for t in request.infer({0: image[None]}).to_tuple())


def _bgr_u8_model(core: Any, path: Path) -> Any:
    """The exported model taking the letterboxed uint8 BGR image as it is.

    Conversion, channel order and scaling run inside the compiled graph: 5 ms faster per photo than
    preparing a float blob with OpenCV beforehand.
    """
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    model = core.read_model(path)
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ColorFormat.BGR
    )
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    # Mask prototypes come out channels-last, the layout OpenVINO computes them in: no reorder to NCHW after
    # the last convolution (0.7-2 ms a photo on a 640 model), and the layout masks.polygons reads fastest.
    for index, output in enumerate(model.outputs):
        if len(output.get_partial_shape()) == 4:
            ppp.output(index).model().set_layout(ov.Layout("NCHW"))
            ppp.output(index).tensor().set_layout(ov.Layout("NHWC"))
    return ppp.build()


def channels_last(output: np.ndarray) -> np.ndarray:
    """An output with image axes (``1×C×H×W``: mask prototypes) as the engines give it, ``1×H×W×C``;
    any other output as it is."""
    return np.ascontiguousarray(output.transpose(0, 2, 3, 1)) if output.ndim == 4 else output


class AnyShape:
    """For runtimes that run any input shape as it is (ONNX Runtime, PyTorch): no canvases, nothing compiled
    per shape, so nothing for a photo to wait for."""

    canvases: tuple[Shape, ...] | None = None
    compiles_on_demand = 0

    def ready(self) -> tuple[Shape, ...] | None:
        return None

    def prepare(self, shape: Shape) -> None:
        """Nothing to compile ahead."""


class OnnxEngine(AnyShape):
    """ONNX Runtime on the CPU, one session, threads sized to this worker's share of the cores. ORT plans
    each new input shape as it runs it at no measurable cost (docs/performance.md), so photos run at their
    own shape."""

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

    def __call__(self, image: np.ndarray) -> Outputs:
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, swapRB=True)  # float32 1×3×H×W RGB in [0, 1]
        return tuple(channels_last(np.asarray(out)) for out in self._session.run(None, {self._input: blob}))


class TorchEngine(AnyShape):
    """The PyTorch model itself behind the same interface, so all backends share pre- and post-processing
    (and agree to the pixel where their arithmetic does). Runs on any torch device.

    On an x86 CPU the model and its input are channels-last (NHWC), the layout oneDNN's convolutions run
    fastest in, as ultralytics' own predictor does: contiguous NCHW was 1.2× slower here (docs/performance.md).
    """

    def __init__(self, yolo: Any, device: str) -> None:
        import torch

        self._torch = torch
        self._device = torch.device(device)
        model = yolo.model
        if hasattr(model, "end2end"):
            model.end2end = False  # the one-to-many head, as the exports; before fuse(), which may drop it
        self._model = model.fuse(verbose=False).to(self._device).eval()
        self._nhwc = self._device.type == "cpu" and platform.machine() in X86 and torch.backends.mkldnn.is_available()
        if self._nhwc:
            self._model.to(memory_format=torch.channels_last)
        self.stride = int(max(getattr(model, "stride", [32])))

    def _blob(self, image: np.ndarray) -> Any:
        """The letterboxed BGR image as a float 1×3×H×W RGB tensor in [0, 1] (channels-last: no transpose)."""
        torch = self._torch
        if self._nhwc:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            return torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255.0)
        return torch.from_numpy(cv2.dnn.blobFromImage(image, 1 / 255.0, swapRB=True)).to(self._device)

    def __call__(self, image: np.ndarray) -> Outputs:
        with self._torch.inference_mode():
            out = self._model(self._blob(image))
        # A head returns (what an export outputs, raw feature maps); what an export outputs is the decoded
        # candidates, and for a segmentation head a pair: the candidates and the mask prototypes.
        out = out[0] if isinstance(out, (list, tuple)) else out
        tensors = out if isinstance(out, (list, tuple)) else (out,)
        return tuple(np.asarray((t.permute(0, 2, 3, 1) if t.dim() == 4 else t).float().contiguous().cpu().numpy())
                     for t in tensors)


# The tasks whose PyTorch models run behind the shared post-processing (the exports' too).
TORCH_TASKS = ("detect", "segment", "pose")


def torch_engine(yolo: Any, device: str) -> TorchEngine | None:
    """A TorchEngine for a PyTorch detection, segmentation or pose model; None for anything else (an export
    given as weights)."""
    model = getattr(yolo, "model", None)
    if getattr(yolo, "task", None) not in TORCH_TASKS or not hasattr(model, "fuse") or not hasattr(model, "stride"):
        return None
    return TorchEngine(yolo, device)


class WideTorchEngine(AnyShape):
    """A TorchEngine run on more threads than the process's own share, for one call at a time."""

    def __init__(self, engine: TorchEngine, threads: int) -> None:
        self._engine, self.threads = engine, threads

    def __call__(self, image: np.ndarray) -> Outputs:
        torch = self._engine._torch
        own = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._engine(image)
        finally:
            torch.set_num_threads(own)


def wide_threads(engine: Engine, cores: int) -> int:
    """Threads a lone photo runs on when it may take every core of the machine.

    Every core for an export: OpenVINO's and ONNX Runtime's pools share an operator's work out as they go,
    so a thread whose core another process took only slows its own part. PyTorch's OpenMP pool splits each
    operator between its threads up front and waits for the last: when another process holds one of the
    cores, every operator waits for that thread's time slice (measured: a lone photo 5-10× slower than on
    one thread, docs/performance.md). So PyTorch leaves one core to the rest of the machine (the bot,
    Redis, the export running beside it), as ultralytics itself does.
    """
    if isinstance(engine, TorchEngine):
        return max(1, cores - 1)
    return cores


def with_threads(engine: Engine, export: Export | None, threads: int, precision: str | None = None) -> Engine:
    """The same model as ``engine``, run on ``threads`` threads: compiled again for an export (a runtime's
    thread count is fixed when it compiles), the very same PyTorch model otherwise."""
    if export is not None:
        return make_engine(export, threads, precision)
    if isinstance(engine, TorchEngine):
        return WideTorchEngine(engine, threads)
    raise ExportError(f"no engine for {type(engine).__name__} on {threads} threads")


def make_engine(export: Export, threads: int, precision: str | None = None) -> Engine:
    """The engine for an export: OpenVINO with its canvases for the export's size, or ONNX Runtime."""
    if export.backend == "openvino":
        return OpenVINOEngine(export.path, threads, canvases(export.imgsz, export.stride), precision)
    if export.backend == "onnx":
        return OnnxEngine(export.path, threads)
    raise ExportError(f"no engine for backend {export.backend}")
