"""How a detbot process (``detbot worker``, ``detbot bot``) ends once its orderly stop is done."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def end_process(status: int) -> NoReturn:
    """Exit with ``status`` now, without the interpreter's own exit, once everything the process held is
    handed back (a worker's job answered and its records gone, a bot's answers acknowledged or left for
    the next start).

    The interpreter's exit waits for whatever is left: a worker's background export holding the GIL in
    native code, library thread pools joined at exit (a bot's result reader sits in a 2 s blocking read),
    torch and OpenVINO torn down module by module. Measured here: 0.6 s to several seconds, more with a
    larger model (issue 22). Nothing left needs it: the logs are flushed first, Redis keeps all state,
    and a half-made export is a staging folder the next export clears (detector.export_cache).
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said anyway
            stream.flush()
    os._exit(status)
