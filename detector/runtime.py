"""Process-wide runtime settings for inference: threads and ultralytics' own behaviour."""

from __future__ import annotations

import contextlib
import os
import sys


def quiet_ultralytics() -> None:
    """Before ultralytics is imported: no usage analytics, no pip installs at run time, no banner noise."""
    # No data about a user's photos leaves the machine, and a worker never pip-installs behind our back.
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "false")


def disable_analytics() -> None:
    """Turn ultralytics' event reporting off for this process (the settings file is left alone)."""
    from ultralytics.utils import events

    events.events.enabled = False


def configure_threads(threads: int | None) -> int:
    """Size OpenCV's and (when loaded) torch's thread pools for this process; returns the thread count used.

    One intra-op pool per process sized to the cores given to it: N worker processes on N cores never
    oversubscribe. OpenCV gets no pool of its own (``setNumThreads(0)``): its threads are what deadlock
    after a fork and what fight the inference runtime for the same cores. torch is not imported here: an
    OpenVINO or ONNX worker never needs it, and the Detector calls this again once it has loaded torch.
    The exported backends take their thread count from the Detector directly.
    """
    import cv2

    n = threads if threads and threads > 0 else 1
    cv2.setNumThreads(0)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        # The inter-op pool can only be sized once per process, before any parallel work has run.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    return n
