"""Reliability benchmark: inject faults into real `copytrace index build` runs and count what
was lost (it must be nothing), plus peak memory and worst time per file on a hostile corpus.

    python -m copytrace.benchmarks.reliability --kills 10 --work /tmp/rel [--skip load]

Faults:
- kill -9 of the whole build session (driver, Ray's raylet/GCS/workers) at random moments,
  then the same command again; the result must equal a clean build (`indexing.fingerprint`).
- disk full (a small tmpfs, root only) at several fill levels; one-line error, resumable.
- 50 clients querying a real `copytrace serve` for 60 s while /v1/health is probed; SIGTERM.
- a hostile input corpus (decompression bombs, 60k x 60k PNG header, 10k-frame GIF, malformed
  EXIF, FIFO, link loops, 1100-deep folders, non-UTF-8 names, a 300 MiB sparse file ...):
  every path gets one catalog row, nothing crashes; peak RSS of the build, slowest decode.
Prints a table and, with --json, one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from copytrace.descriptors import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DecodeError, decode_file
from copytrace.indexing import index_fingerprint as fingerprint
from copytrace.indexing import leftovers, manifest_version, read_catalog, uncommitted_parts
from copytrace.pipelines import add_images, build_index, remove_images

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
       "RAY_USAGE_STATS_ENABLED": "0"}
DEEP = 1100
RETRIES = 3  # kill moments tried per trial while the command keeps finishing before them


@dataclass
class FaultRow:
    fault: str
    injected: int
    lost: int  # runs whose final index differs from a clean build, or left temp files/duplicates
    notes: str = ""
    details: list = field(default_factory=list)


# -- inputs -------------------------------------------------------------------------------

def make_photos(folder: Path, count: int, *, prefix: str = "img", start: int = 0) -> Path:
    """`count` distinct JPEGs from scikit-image's photos (rotated, re-encoded); `start` continues
    the sequence (other rotations) for a second, disjoint set."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "coins",
             "camera"]
    photos = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in names]
    for i in range(start, start + count):
        img = photos[i % len(photos)].rotate(3 * (i // len(photos)), expand=False)
        img.save(folder / f"{prefix}{i:04d}.jpg", quality=85 + i % 10)
    return folder


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def make_hostile(folder: Path, photo: Path) -> int:
    """The bad-input corpus; returns how many paths a folder scan must account for."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(buf, "PNG", optimize=True)  # 400 MP of zeros
    (folder / "bomb-400mp.png").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("L", (12_000, 12_000), 128).save(buf, "PNG")  # 144 MP: under the cap, decoded
    (folder / "big-144mp.png").write_bytes(buf.getvalue())
    (folder / "header-60k.png").write_bytes(_png_header(60_000, 60_000))
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).convert("P")
              for _ in range(10_000)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    (folder / "frames-10k.gif").write_bytes(buf.getvalue())
    broken_exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff\xff\xff"
    Image.open(photo).save(folder / "bad-exif.jpg", exif=broken_exif)
    good = photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "noise.jpg").write_bytes(rng.integers(0, 255, 50_000, np.uint8).tobytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image\n")
    with open(folder / "sparse-300mib.jpg", "wb") as fh:
        fh.truncate(300 * 2**20)
    os.mkfifo(folder / "pipe.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "self-loop.jpg").symlink_to(folder / "self-loop.jpg")
    (folder / "dir-named.png").mkdir()
    shutil.copy(photo, folder / "dir-named.png" / "inside.jpg")
    deep = folder
    for _ in range(DEEP):
        deep = deep / "d"
        os.mkdir(deep)
    shutil.copy(photo, deep / "deepest.jpg")
    (folder / "d" / "loop").symlink_to(folder, target_is_directory=True)
    with open(os.fsencode(str(folder)) + b"/latin1-\xe9.jpg", "wb") as fh:
        fh.write(good)
    return 17


def remove_tree(folder: Path) -> None:
    """rmtree recurses; cut the deep chain from the bottom first."""
    deep = folder / "/".join(["d"] * DEEP)
    while deep != folder and deep.exists():
        for child in deep.iterdir():
            if child.is_symlink() or not child.is_dir():
                child.unlink()
        deep.rmdir()
        deep = deep.parent
    shutil.rmtree(folder, ignore_errors=True)


# -- processes ----------------------------------------------------------------------------

def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`: the build, Ray's raylet, GCS and workers."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def kill_session(proc: subprocess.Popen) -> int:
    """SIGKILL every process of `proc`'s session at once (started with `start_new_session`);
    returns how many were killed."""
    pids = session_pids(proc.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(pids)


def build_cmd(images: Path, index: Path, chunk: int, ray: bool) -> list[str]:
    return [BIN, "index", "build", str(images), "--index", str(index), "--chunk-size",
            str(chunk), "-q", "--ray" if ray else "--no-ray"]


def timed_build(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=3600)
    return time.perf_counter() - t, proc


def phase(index: Path, chunks: int) -> str:
    if (index / "manifest.json").exists():
        return "complete"
    done = len(list((index / "catalog").glob("part-*.parquet"))) if index.exists() else 0
    if done == chunks:
        return "all parts, no manifest (FAISS/ids)"
    return f"{done}/{chunks} parts"


# -- faults -------------------------------------------------------------------------------

def kill_trials(images: Path, work: Path, *, kills: int, chunk: int, seed: int,
                modes: list[bool]) -> FaultRow:
    rng = random.Random(seed)
    durations: dict[bool, float] = {}
    cleans = {}  # the same command run cleanly: Ray's one-thread workers and an inline build
    for ray in sorted(set(modes)):  # agree to ~1e-7, not to the bit
        d, proc = timed_build(build_cmd(images, work / f"timing-{ray}", chunk, ray))
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        durations[ray] = d
        cleans[ray] = fingerprint(work / f"timing-{ray}")
    chunks = -(-cleans[modes[0]].catalog_rows // chunk)
    row = FaultRow("kill -9 of the build's process tree, then rerun", 0, 0)
    for trial in range(kills):
        ray = modes[trial % len(modes)]
        index = work / f"kill-{trial}"
        at = rng.uniform(0.05, 1.0) * durations[ray]
        for _ in range(RETRIES):  # a build that ended before the kill moment injected nothing:
            proc = subprocess.Popen(build_cmd(images, index, chunk, ray), env=ENV,  # aim earlier
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            time.sleep(at)
            ended = proc.poll() is not None
            killed = kill_session(proc)
            state = phase(index, chunks)
            if not ended:
                break
            remove_tree(index)
            at *= rng.uniform(0.05, 0.9)
        _, rerun = timed_build(build_cmd(images, index, chunk, ray))
        ok = (rerun.returncode == 0 and fingerprint(index) == cleans[ray]
              and not leftovers(index))
        row.injected += int(not ended)  # a kill after the build ended injected nothing
        row.lost += 0 if ok else 1
        row.details.append({"trial": trial, "ray": ray, "kill_at_s": round(at, 2),
                            "processes_killed": killed, "state_after_kill": state,
                            "equal_to_clean": ok})
    runs = ", ".join(f"{'ray' if r else 'inline'} {d:.0f} s" for r, d in durations.items())
    row.notes = (f"kill moments uniform over a clean run ({runs}); "
                 f"{cleans[modes[0]].catalog_rows} inputs in {chunks} parts; each compared "
                 "with a clean run of the same command")
    return row


def add_cmd(images: Path, index: Path, ray: bool) -> list[str]:
    return [BIN, "index", "add", str(images), "--index", str(index), "-q",
            "--ray" if ray else "--no-ray"]


def remove_cmd(ids: list[str], index: Path) -> list[str]:
    return [BIN, "index", "remove", *ids, "--index", str(index)]


def update_state(index: Path, proc: subprocess.Popen, committed: int) -> str:
    """Where a killed update stood: not started, uncommitted parts, or committed."""
    if proc.returncode == 0:
        return "finished before the kill"
    version = manifest_version(index)
    if version is not None and version > committed:
        return "manifest swapped"
    if uncommitted_parts(index) or any(index.glob("tombstones.v*.parquet")):
        return "new files written, manifest not swapped"
    return "before any new file"


def _kill_and_rerun(cmd: list[str], template: Path, index: Path, at: float, clean,
                    version: int) -> dict:
    shutil.copytree(template, index)
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(at)
    killed = kill_session(proc)
    state = update_state(index, proc, version - 1)
    _, rerun = timed_build(cmd)
    ok = (rerun.returncode == 0 and fingerprint(index) == clean and not leftovers(index)
          and manifest_version(index) == version)
    return {"kill_at_s": round(at, 2), "processes_killed": killed, "state_after_kill": state,
            "equal_to_clean": ok}


def update_kill_trials(images: Path, new: Path, work: Path, *, kills: int, seed: int,
                       modes: list[bool]) -> list[FaultRow]:
    """kill -9 of `index add` (inline and Ray) and `index remove` at random moments of a clean
    run's duration, then the same command again: equal to the clean add/remove, version included."""
    base, added, removed = work / "upd-base", work / "upd-added", work / "upd-removed"
    build_index(images, base, use_ray=False, show_progress=False)
    shutil.copytree(base, added)
    add_images(new, added, show_progress=False)
    shutil.copytree(added, removed)
    new_ids = sorted(p.stem for p in new.glob("*.jpg"))
    drop = new_ids[::3] + sorted(p.stem for p in images.glob("*.jpg"))[:2]
    remove_images(drop, removed)
    durations, cleans = {}, {}  # clean runs of the same commands (CLI), compared with
    for ray in sorted(set(modes)):
        shutil.copytree(base, work / f"upd-timing-{ray}")
        durations[ray], proc = timed_build(add_cmd(new, work / f"upd-timing-{ray}", ray))
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        cleans[ray] = fingerprint(work / f"upd-timing-{ray}")
    shutil.copytree(added, work / "upd-timing-rm")
    durations["remove"], _ = timed_build(remove_cmd(drop, work / "upd-timing-rm"))
    clean_remove = fingerprint(work / "upd-timing-rm")
    if clean_remove != fingerprint(removed):
        raise RuntimeError("the CLI remove and the in-process remove disagree")
    rng = random.Random(seed)
    add_row = FaultRow("kill -9 of `index add`'s process tree, then rerun", 0, 0)
    remove_row = FaultRow("kill -9 of `index remove`, then rerun", 0, 0)
    for trial in range(kills):
        ray = modes[trial % len(modes)]
        d = _kill_and_rerun(add_cmd(new, work / f"upd-add-{trial}", ray), base,
                            work / f"upd-add-{trial}", rng.uniform(0.05, 1.0) * durations[ray],
                            cleans[ray], 2)
        add_row.details.append({"trial": trial, "ray": ray, **d})
        d = _kill_and_rerun(remove_cmd(drop, work / f"upd-rm-{trial}"), added,
                            work / f"upd-rm-{trial}",
                            rng.uniform(0.05, 1.0) * durations["remove"], clean_remove, 3)
        remove_row.details.append({"trial": trial, **d})
    for row in (add_row, remove_row):
        hit = [d for d in row.details if d["state_after_kill"] != "finished before the kill"]
        row.injected = len(hit)  # a kill after the command ended injected nothing
        row.lost = sum(not d["equal_to_clean"] for d in row.details)
    runs = ", ".join(f"{'ray' if r else 'inline'} {durations[r]:.0f} s" for r in sorted(set(modes)))
    inputs = len(list(new.iterdir()))
    add_row.notes = (f"{inputs} new inputs onto {cleans[modes[0]].catalog_rows - inputs}; kill "
                     f"moments uniform over a clean add ({runs}), compared with it")
    remove_row.notes = (f"{len(drop)} ids; kill moments uniform over a clean remove "
                        f"({durations['remove']:.1f} s)")
    return [add_row, remove_row]


def disk_full_trials(images: Path, work: Path, *, chunk: int) -> FaultRow:
    row = FaultRow("disk full during build (tmpfs), free space, rerun", 0, 0)
    if os.geteuid() != 0:
        row.notes = "skipped: needs root to mount a tmpfs"
        return row
    clean_index = work / "clean-disk"
    build_index(images, clean_index, chunk_size=chunk, use_ray=False, show_progress=False)
    clean = fingerprint(clean_index)
    for room_kib in (16, 48, 96, 128):
        disk = work / f"disk-{room_kib}"
        disk.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                          capture_output=True).returncode != 0:
            row.notes = "skipped: cannot mount tmpfs"
            return row
        try:
            st = os.statvfs(disk)
            (disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - room_kib * 1024))
            index = disk / "idx"
            _, failed = timed_build(build_cmd(images, index, chunk, False))
            lines = [ln for ln in failed.stderr.splitlines() if ln.strip()]
            one_line = (failed.returncode != 0 and len(lines) == 1 and "disk full" in lines[0])
            committed = len(list((index / "catalog").glob("part-*.parquet")))
            (disk / "filler").unlink()
            _, rerun = timed_build(build_cmd(images, index, chunk, False))
            filled = failed.returncode != 0
            ok = ((one_line or not filled) and rerun.returncode == 0
                  and fingerprint(index) == clean and not leftovers(index))
            row.injected += int(filled)  # a build that fit was no fault, but is still compared
            row.lost += 0 if ok else 1
            row.details.append({"free_kib": room_kib, "disk_filled": filled,
                                "exit": failed.returncode,
                                "one_line_error": one_line, "parts_committed": committed,
                                "error": lines[-1] if lines else "", "equal_to_clean": ok})
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    row.notes = "free space left before the build: 16/48/96/128 KiB"
    return row


def hostile_corpus(work: Path, photo: Path) -> tuple[FaultRow, dict]:
    folder = work / "hostile"
    expected = make_hostile(folder, photo)
    index = work / "hostile-idx"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(build_cmd(folder, index, 64, False), env=ENV, capture_output=True,
                          text=True, timeout=3600)
    seconds = time.perf_counter() - t
    peak_mib = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    rows = read_catalog(index / "catalog").to_pylist() if (index / "catalog").exists() else []
    slowest = 0.0
    slowest_name = ""
    for r in rows:
        if "\\x" in r["uri"]:
            continue  # a non-UTF-8 name: recorded, never read
        start = time.perf_counter()
        with contextlib.suppress(DecodeError):
            decode_file(r["uri"], target_size=224)
        took = time.perf_counter() - start
        if took > slowest:
            slowest, slowest_name = took, Path(r["uri"]).name
    lost = int(proc.returncode != 0) + abs(expected - len(rows))
    row = FaultRow("hostile inputs (bombs, 60k PNG header, 10k-frame GIF, bad EXIF, FIFO, "
                   "link loops, 1100-deep folders, non-UTF-8 name, 300 MiB file)", expected, lost,
                   f"{len(rows)} catalog rows for {expected} paths, "
                   f"{sum(r['status'] == 'ok' for r in rows)} ok; build {seconds:.0f} s")
    row.details = [{"name": Path(r["uri"]).name, "status": r["status"], "error": r["error"]}
                   for r in rows]
    stats = {"peak_rss_mib": round(peak_mib), "slowest_decode_s": round(slowest, 3),
             "slowest_file": slowest_name, "build_exit": proc.returncode,
             "caps": {"max_pixels": DEFAULT_MAX_PIXELS, "max_bytes": DEFAULT_MAX_BYTES}}
    remove_tree(folder)
    return row, stats


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_load(images: Path, work: Path, *, clients: int, seconds: float) -> dict:
    """`clients` clients posting queries back to back for `seconds` against a real
    `copytrace serve` process, while a probe asks /v1/health every 50 ms. Then SIGTERM: the
    requests still in flight must be answered (graceful shutdown)."""
    import asyncio
    import statistics

    import httpx

    index = work / "serve-idx"
    build_index(images, index, use_ray=False, show_progress=False)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([BIN, "serve", "--index", str(index), "--port", str(port)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        time.sleep(0.5)
    bodies = [f.read_bytes() for f in sorted(images.glob("*.jpg"))]
    statuses: list[int] = []
    latencies: list[float] = []
    health: list[float] = []

    async def client(c: httpx.AsyncClient, n: int, stop: float) -> None:
        i = n
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                r = await c.post(f"{url}/v1/query", params={"k": 5},
                                 content=bodies[i % len(bodies)])
                statuses.append(r.status_code)
            except httpx.HTTPError:
                statuses.append(-1)
            latencies.append(time.perf_counter() - t)
            i += clients

    async def probe(c: httpx.AsyncClient, stop: float) -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await c.get(f"{url}/v1/health")
            health.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)

    async def run() -> None:
        limits = httpx.Limits(max_connections=clients + 5)
        async with httpx.AsyncClient(timeout=120, limits=limits) as c:
            stop = time.monotonic() + seconds
            await asyncio.gather(probe(c, stop), *[client(c, n, stop) for n in range(clients)])

    asyncio.run(run())
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=120)
    finally:
        kill_session(server)
    ok = statuses.count(200)
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else 0.0

    return {"clients": clients, "seconds": seconds, "requests": len(statuses),
            "ok": ok, "errors": len(statuses) - ok,
            "status_counts": {str(k): statuses.count(k) for k in sorted(set(statuses))},
            "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "health_p50_ms": round(1000 * statistics.median(health), 1) if health else None,
            "health_max_ms": round(1000 * max(health), 1) if health else None,
            "server_exit_after_sigterm": server.returncode}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--modes", default="inline,ray", help="'inline', 'ray' or 'inline,ray' "
                                                          "(alternated over the kills)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/copytrace-reliability"))
    ap.add_argument("--skip", default="", help="comma list of: kill, update, disk, hostile, "
                                               "load")
    ap.add_argument("--update-kills", type=int, default=10, help="kills of `index add` and as "
                                                                 "many of `index remove`")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--load-seconds", type=float, default=60)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.work.exists():
        remove_tree(args.work)
    args.work.mkdir(parents=True)
    images = make_photos(args.work / "images", args.images)
    (images / "notes.txt").write_text("an error row too\n")
    modes = [m.strip() == "ray" for m in args.modes.split(",")]
    rows: list[FaultRow] = []
    stats: dict = {}
    if "kill" not in skip:
        rows.append(kill_trials(images, args.work, kills=args.kills, chunk=args.chunk_size,
                                seed=args.seed, modes=modes))
    if "update" not in skip:
        new = make_photos(args.work / "new-images", max(4, args.images // 3), prefix="new",
                          start=args.images)
        (new / "notes.txt").write_text("an error row of the add\n")
        rows.extend(update_kill_trials(images, new, args.work, kills=args.update_kills,
                                       seed=args.seed, modes=modes))
    if "disk" not in skip:
        rows.append(disk_full_trials(images, args.work, chunk=args.chunk_size))
    if "hostile" not in skip:
        row, stats = hostile_corpus(args.work, images / "img0000.jpg")
        rows.append(row)
    load = (service_load(images, args.work, clients=args.clients, seconds=args.load_seconds)
            if "load" not in skip else {})
    if args.json:
        print(json.dumps({"faults": [asdict(r) for r in rows], "hostile": stats, "load": load},
                         indent=1))
    print(f"\n{'fault':<70} {'injected':>8} {'lost':>5}  notes")
    for r in rows:
        print(f"{r.fault[:70]:<70} {r.injected:>8} {r.lost:>5}  {r.notes}")
    if stats:
        print(f"hostile corpus: peak RSS of the build {stats['peak_rss_mib']} MiB, slowest "
              f"decode {stats['slowest_decode_s']} s ({stats['slowest_file']}); caps: "
              f"{stats['caps']['max_pixels'] / 1e6:.0f} MP, "
              f"{stats['caps']['max_bytes'] / 2**20:.0f} MiB per file")
    if load:
        print(f"service load: {load['clients']} clients for {load['seconds']:.0f} s: "
              f"{load['requests']} requests, {load['errors']} errors {load['status_counts']}, "
              f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms; health p50 "
              f"{load['health_p50_ms']} ms (max {load['health_max_ms']} ms); exit after SIGTERM "
              f"{load['server_exit_after_sigterm']}")
    for r in rows:
        for d in r.details:
            print("  ", json.dumps(d, ensure_ascii=True))


if __name__ == "__main__":
    main()
