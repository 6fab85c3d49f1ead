"""Worker processes of copytrace's local pools (decode, embed, verify) end with their parent.

An idle pool worker waits on its task queue; when the parent is killed without running its
clean-up (SIGTERM from a scheduler, an OOM kill) the worker is not told, and keeps its model or
keypoint cache: two verify workers of a killed run were found 33 minutes later, and forkserver
workers outlive a SIGTERM-killed parent every time (tests/test_worker_guard.py). Every pool
initializer calls `exit_with_parent` first; a daemon thread waits on the parent's sentinel (a
pipe that closes when the parent ends, for spawn and forkserver workers alike) and exits.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait


def exit_with_parent() -> None:
    """In a pool worker: exit as soon as the process that started the pool is gone."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:  # the main process, or not a pool worker
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
