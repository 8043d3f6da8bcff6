"""The engines: one compiled model each, a letterboxed image in, the raw head output out; and which backend runs.

Running an export (see :mod:`detector.export_cache`) needs neither torch nor ultralytics: OpenVINO or ONNX
Runtime runs the model once per photo. PyTorch runs behind the same interface (:class:`TorchEngine`), so
every backend shares one pre- and post-processing (:mod:`detector.processing`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from detector.export_cache import EXPORTED_BACKENDS, Export, ExportError

log = logging.getLogger(__name__)

# What ``auto`` picks on a CPU, best first: OpenVINO was the fastest on every CPU measured (docs/performance.md).
AUTO_ORDER = ("openvino", "onnx")
# Input shapes kept compiled per OpenVINO worker (~0.5 s to compile one, ~10 MB each): square, 4:3 and 3:4
# photos and a few more; a rarer shape evicts the least recently used.
MAX_COMPILED_SHAPES = 8


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

        self._core = ov.Core()
        self._model = _bgr_u8_model(self._core, path)
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


def _bgr_u8_model(core: Any, path: Path) -> Any:
    """The exported model taking the letterboxed uint8 BGR image as it is.

    Conversion, channel order and scaling run inside the compiled graph: 5 ms faster per photo than
    preparing a float blob with OpenCV beforehand.
    """
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(core.read_model(path))
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ColorFormat.BGR
    )
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    return ppp.build()


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
