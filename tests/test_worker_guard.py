"""Pool workers end with their parent: a driver killed without its clean-up (SIGTERM from a
scheduler) must not leave idle workers holding models or keypoint caches. Real processes.

The forkserver case (the decode and embedding pools' kind) fails without
`util.worker_guard`. The verify pool's spawn workers were found orphaned after a real
`query_latency` run was killed, but this small driver does not reproduce that without the guard;
it is kept as the shipped pool's regression check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

DRIVER = textwrap.dedent("""
    import multiprocessing, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from copytrace.util.worker_guard import exit_with_parent
    from copytrace.matching.verify import VerifyConfig
    from copytrace.pipelines.verify_pool import VerifyBackend, Verifier

    if __name__ == "__main__":
        if sys.argv[1] == "verifier":
            Verifier(VerifyConfig(), backend=VerifyBackend.PROCESSES, workers=2).start()
        else:  # the decode / embedding pools' kind: forkserver workers
            pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"),
                                       initializer=exit_with_parent)
            list(pool.map(time.sleep, [0.2, 0.2]))
        print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("pool", ["verifier", "forkserver"])
def test_pool_workers_exit_when_their_driver_is_killed(pool, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), pool], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) >= 2 and all(_alive(p) for p in workers)
    proc.send_signal(signal.SIGTERM)  # no clean-up runs in the driver
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert left == [], f"workers outlived their driver: {left}"
