"""Preload tcmalloc for torch work: on this class of CPU it makes inference 1.5-2.5x faster.

The allocator must be in place before the process starts, so the CLI re-executes itself once
with LD_PRELOAD set, and Ray workers get it through their runtime environment.
Set COPYTRACE_NO_TCMALLOC=1 to opt out.
"""

from __future__ import annotations

import glob
import os
import sys

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)


def tcmalloc_path() -> str | None:
    for path in _CANDIDATES:
        if os.path.exists(path):
            return path
    found = glob.glob("/usr/lib*/**/libtcmalloc_minimal.so*", recursive=True)
    return found[0] if found else None


def tcmalloc_active() -> bool:
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def preload_env() -> dict[str, str]:
    """Environment variables that give a child process tcmalloc (empty when unavailable)."""
    if os.environ.get("COPYTRACE_NO_TCMALLOC"):
        return {}
    path = tcmalloc_path()
    if not path:
        return {}
    current = os.environ.get("LD_PRELOAD", "")
    return {"LD_PRELOAD": path if not current else f"{path}:{current}"}


def reexec_with_tcmalloc() -> None:
    """Replace this process with itself under tcmalloc, once; no-op when not possible."""
    if tcmalloc_active() or os.environ.get("COPYTRACE_NO_TCMALLOC"):
        return
    env = preload_env()
    if not env or not sys.argv or not os.path.exists(sys.argv[0]):
        return
    os.environ.update(env)
    os.execv(sys.executable, [sys.executable, *sys.argv])
