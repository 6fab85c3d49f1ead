"""Waiting on a real process in the crash tests: poll for the moment to kill it."""

from __future__ import annotations

import subprocess
import time


def wait_for(condition, proc: subprocess.Popen, timeout: float = 400,
             interval: float = 0.005) -> bool:
    """Poll until `condition()`; False if the command ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(interval)
    raise TimeoutError("the command neither reached the kill point nor ended")
