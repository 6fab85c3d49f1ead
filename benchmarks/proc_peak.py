"""Wall time and peak memory of a command, read from /proc: the process's own high-water mark
(VmHWM) and the most its whole process tree (worker pools, Ray) held at once.

Not wait4's ru_maxrss: Linux carries the parent's high-water mark across fork and exec into the
child, so every tool read at least this driver's own peak (three peers once read an identical
943 MiB in the dedup benchmark).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time


def status_kib(pid: int, field: str) -> int:
    """A `/proc/PID/status` field in KiB (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def run_measured(cmd: list[str], *, env: dict | None = None, timeout: float = 7200,
                 interval: float = 0.2, stdout: int | None = subprocess.DEVNULL
                 ) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, peak RSS MiB, stderr tail) of `cmd`; the tree is sampled every
    `interval` seconds, the process's own VmHWM is exact."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    tail: list[str] = []
    reader = threading.Thread(target=lambda: tail.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.time() + timeout
    peak_kib = 0
    while True:
        tree = sum(status_kib(p, "VmRSS") for p in descendants(proc.pid))
        peak_kib = max(peak_kib, tree, status_kib(proc.pid, "VmHWM"))
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            proc.kill()
        time.sleep(interval)
    reader.join(timeout=5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t, peak_kib / 1024, "".join(tail[-5:])
