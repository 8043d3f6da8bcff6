"""The export cache: the weights exported once to OpenVINO or ONNX, kept on disk and shared by every worker.

The export is made by ultralytics (``YOLO(weights).export``) and kept under a cache folder keyed by the
weights' content hash, the image size, the backend and the library versions, so a restart or a second
worker reuses it. Writers export into a temporary folder and publish it with one atomic ``rename``; a file
lock keeps two workers from exporting the same model at once. Readers check every file's hash against the
entry's manifest, so a partial or damaged entry is exported again rather than loaded.

Reading an entry needs neither torch nor ultralytics; only making one does (see :mod:`detector.engines`
for running it).
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

EXPORTED_BACKENDS = ("onnx", "openvino")
# Bump when the layout of a cache entry or the way it is exported changes: old entries are then ignored.
CACHE_FORMAT = 4
MANIFEST = "detbot-export.json"
# A worker waits this long for another worker's export of the same model, then gives up and runs PyTorch;
# a nano model exports in seconds, a large one in a few minutes on a slow CPU.
EXPORT_LOCK_TIMEOUT = 600.0
# How often a waiting worker retries the lock; short next to an export, long next to a syscall.
LOCK_POLL_INTERVAL = 0.1
# The size ultralytics' own detection models are trained at; used only when a checkpoint does not say.
FALLBACK_IMGSZ = 640
# The tasks detbot serves: a model of another (classify, obb, semantic) is refused with one line.
SERVED_TASKS = ("detect", "segment", "pose")
# COCO's 17 body keypoints joined as ultralytics draws a person (its Annotator's skeleton, 0-based): the
# skeleton of a 17-keypoint model that declares none of its own.
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
COCO_KEYPOINTS = 17

_export_count = 0


class ExportError(Exception):
    """An export could not be made or loaded; the caller falls back to PyTorch."""


def export_count() -> int:
    """How many exports this process has made (not reused from the cache)."""
    return _export_count


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
class ModelTask:
    """What a model does, as its weights say: the task, and for pose the keypoints and how they join."""

    task: str = "detect"
    keypoints: int = 0  # keypoints per object (pose)
    skeleton: tuple[tuple[int, int], ...] | None = None  # pairs of keypoint indexes drawn joined (pose)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "keypoints": self.keypoints,
                "skeleton": [list(p) for p in self.skeleton] if self.skeleton is not None else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelTask:
        skeleton = data.get("skeleton")
        return cls(str(data.get("task") or "detect"), int(data.get("keypoints") or 0),
                   tuple((int(a), int(b)) for a, b in skeleton) if skeleton is not None else None)


def model_task(yolo: Any) -> ModelTask:
    """The task an ultralytics model was trained for (``model.task``; an export keeps it in its metadata), its
    keypoints per object (``kpt_shape``) and their skeleton: the model's own (a ``skeleton`` list of index
    pairs in its architecture YAML, kept in the checkpoint), COCO's for 17 keypoints, else none."""
    task = str(getattr(yolo, "task", None) or "detect")
    model = getattr(yolo, "model", None)
    keypoints, skeleton = 0, None
    if task == "pose":
        # (An exported file given as weights is not loaded until it runs: its keypoints are known from its results.)
        kpt_shape = getattr(model, "kpt_shape", None) or (getattr(model, "yaml", None) or {}).get("kpt_shape")
        keypoints = int(kpt_shape[0]) if kpt_shape else 0
        declared = (getattr(model, "yaml", None) or {}).get("skeleton")
        if declared:
            skeleton = tuple((int(a), int(b)) for a, b in declared if 0 <= a < keypoints and 0 <= b < keypoints)
        elif keypoints == COCO_KEYPOINTS:
            skeleton = COCO_SKELETON
    return ModelTask(task, keypoints, skeleton)


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
    task: ModelTask = ModelTask()


def _manifest_export(entry: Path, manifest: dict[str, Any], reused: bool, seconds: float) -> Export:
    return Export(
        path=entry / manifest["model_file"],
        backend=manifest["backend"],
        names={int(k): str(v) for k, v in manifest["names"].items()},
        imgsz=int(manifest["imgsz"]),
        stride=int(manifest["stride"]),
        reused=reused,
        seconds=seconds,
        task=ModelTask.from_dict(manifest.get("task") or {}),
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


def cached_export(spec: ExportSpec, cache_dir: Path) -> Export | None:
    """The valid cache entry of ``spec`` if there is one, without exporting or waiting on any lock."""
    try:
        key = spec.key(file_sha256(spec.weights))
    except OSError:
        return None
    manifest = read_entry(cache_dir / key)
    return _manifest_export(cache_dir / key, manifest, True, 0.0) if manifest is not None else None


def ensure_export(spec: ExportSpec, cache_dir: Path) -> Export:
    """The cached export of ``spec``, exporting it first when the cache has no valid entry."""
    started = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = file_sha256(spec.weights)
    key = spec.key(digest)
    manifest = read_entry(cache_dir / key)
    reused = manifest is not None
    if manifest is None:  # checked without the lock first: a warm cache never waits on another worker
        manifest, reused = _export_locked(spec, cache_dir, key, digest)
    return _manifest_export(cache_dir / key, manifest, reused, time.perf_counter() - started)


def _export_locked(spec: ExportSpec, cache_dir: Path, key: str, digest: str) -> tuple[dict[str, Any], bool]:
    """Under the entry's lock: the manifest, and whether another worker published the entry meanwhile."""
    with file_lock(cache_dir / f".{key}.lock", EXPORT_LOCK_TIMEOUT) as locked:
        if not locked:
            raise ExportError(f"the export cache entry {key} stayed locked for {EXPORT_LOCK_TIMEOUT:.0f} s")
        manifest = read_entry(cache_dir / key)  # another worker may have published it while this one waited
        if manifest is not None:
            return manifest, True
        _clear_leftovers(cache_dir, key)
        return _publish(spec, cache_dir, key, digest), False


def _clear_leftovers(cache_dir: Path, key: str) -> None:
    """Remove a damaged entry and the staging folders of exporters that died; the caller holds the lock."""
    entry = cache_dir / key
    if entry.exists():
        log.warning("export cache entry %s is incomplete or damaged; exporting it again", key)
        shutil.rmtree(entry, ignore_errors=True)
    for stale in cache_dir.glob(f".{key}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _publish(spec: ExportSpec, cache_dir: Path, key: str, digest: str) -> dict[str, Any]:
    """Export into a staging folder, then rename it to the entry; returns the manifest."""
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        manifest = export_model(spec, staging, digest)
        staging.chmod(0o755)  # mkdtemp makes it private; workers of another user read the cache too
        os.rename(staging, cache_dir / key)  # atomic publish: readers see no entry or a whole one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def checkpoint_imgsz(yolo: Any) -> int | None:
    """The training size stored in the checkpoint or export metadata, if any."""
    for source in (getattr(yolo, "overrides", None), (getattr(yolo, "ckpt", None) or {}).get("train_args")):
        imgsz = (source or {}).get("imgsz")
        if isinstance(imgsz, int):
            return imgsz
        if isinstance(imgsz, (list, tuple)) and imgsz:
            return int(max(imgsz))
    return None


def exported_imgsz(path: Path) -> int | None:
    """The size an ultralytics export was made at, from its metadata (an ONNX file's, an OpenVINO folder's
    ``metadata.yaml``), for an export given as the weights; None when it does not say."""
    import ast

    try:
        if path.suffix == ".onnx":
            import onnxruntime as ort

            meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
            sizes: Any = ast.literal_eval(meta.custom_metadata_map.get("imgsz", "None"))
        else:
            from ultralytics.utils import YAML

            sizes = YAML.load((path if path.is_dir() else path.parent) / "metadata.yaml").get("imgsz")
    except Exception:  # no runtime, no metadata, another layout: the caller's default applies
        return None
    if isinstance(sizes, int):
        return sizes
    return int(max(sizes)) if isinstance(sizes, (list, tuple)) and sizes else None


class _Exported(NamedTuple):
    """What ultralytics made: the file to load and what running it needs."""

    model_file: str
    imgsz: int
    stride: int
    names: dict[int, str]
    task: ModelTask


def export_model(spec: ExportSpec, out: Path, weights_sha256: str) -> dict[str, Any]:
    """Export ``spec`` with ultralytics into the empty folder ``out``; writes and returns the manifest."""
    global _export_count
    made = _export_into(spec, out)
    files = {p.name: file_sha256(p) for p in sorted(out.iterdir()) if p.is_file()}
    manifest = {
        "format": CACHE_FORMAT, "backend": spec.backend, "model_file": made.model_file, "files": files,
        "weights_sha256": weights_sha256, "weights_name": spec.weights.name, "imgsz": made.imgsz,
        "stride": made.stride, "int8": spec.int8, "names": made.names, "task": made.task.to_dict(),
        "versions": runtime_versions(spec.backend),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _export_count += 1
    return manifest


def _export_into(spec: ExportSpec, out: Path) -> _Exported:
    """Run ultralytics' exporter on a copy of the weights and move its model files into ``out``."""
    from detector.runtime import disable_analytics, quiet_ultralytics

    quiet_ultralytics()
    from ultralytics import YOLO

    disable_analytics()
    work = out / "work"
    work.mkdir()
    source = work / "model.pt"  # ultralytics writes its export beside the weights: keep that inside ``out``
    shutil.copyfile(spec.weights, source)
    try:
        yolo = YOLO(str(source))
        task = model_task(yolo)
        if task.task not in SERVED_TASKS:
            raise ExportError(f"{spec.weights.name} is a {task.task} model, not one of {', '.join(SERVED_TASKS)}")
        imgsz = spec.imgsz or checkpoint_imgsz(yolo) or FALLBACK_IMGSZ
        produced = _run_exporter(yolo, spec, imgsz)
        names = {int(k): str(v) for k, v in yolo.names.items()}
        stride = int(max(getattr(yolo.model, "stride", [32])))
        made = _Exported(_collect(produced, out), imgsz, stride, names, task)
    except ExportError:
        raise
    except Exception as exc:  # ultralytics and the exporters raise anything; the caller falls back
        raise ExportError(f"{type(exc).__name__}: {exc}") from exc
    shutil.rmtree(work, ignore_errors=True)
    return made


def _run_exporter(yolo: Any, spec: ExportSpec, imgsz: int) -> Path:
    """``yolo.export`` as ``spec`` asks; the file or folder it produced."""
    kwargs = _export_kwargs(spec, imgsz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        produced = yolo.export(**kwargs)
    if not produced or not Path(str(produced)).exists():
        raise ExportError(f"ultralytics made no {spec.backend} export of {spec.weights.name}")
    return Path(str(produced))


def _export_kwargs(spec: ExportSpec, imgsz: int) -> dict[str, Any]:
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
    return kwargs


def _collect(produced: Path, out: Path) -> str:
    """Move the exported model files into ``out``; returns the name of the file to load."""
    if produced.is_dir():  # OpenVINO: a folder with model.xml, model.bin and metadata.yaml
        for f in produced.iterdir():
            if f.suffix in (".xml", ".bin"):
                shutil.move(str(f), out / f"model{f.suffix}")
        return "model.xml"
    shutil.move(str(produced), out / "model.onnx")
    return "model.onnx"
