"""A real multi-node Ray cluster on this machine: a head node with no CPUs (so the work lands on
the workers, as on a production head) and two one-CPU worker nodes, each its own raylet. The
CLI joins it with --ray-address; a worker node is SIGKILLed (raylet and workers) mid-job.

- index build / index add: the node goes right after a chunk it ran was done; the job
  finishes and the index equals a clean in-process build (ids and their order, catalog rows,
  vectors to 1e-5, no duplicates).
- every worker node lost mid-build: one error line, the committed chunks kept; the same
  command resumes once nodes are back, and equals the clean build.
- query --distributed: shard actors of a lost node are loaded again on the survivors (same top
  k as in-process), also when the node dies during their first load; shards that cannot be
  loaded again fail the search, named.
- the head node lost with the workers (the driver's connection to the cluster gone) mid-build:
  one error line within ~20 s (Ray alone: 60 s, then its own line), the committed chunks kept,
  and the same build resumes in-process to the clean build.
- the dedup self-join on actors: a lost node's blocks run again; same neighbours as in-process.

`pytest -s` prints the lines the issue's closing note quotes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from polling import wait_for

from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.embeddings import read_embeddings
from copytrace.indexing.fingerprint import fingerprint

from photos import PHOTO_NAMES, jpeg_bytes, photo

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
       "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "400", "COPYTRACE_LOG": "INFO"}
CHUNK = 2  # images per chunk: 12 chunks of the 24 photos over two one-CPU workers
DONE = re.compile(r"(chunk|block) (\S+) done by Ray worker (\d+) on node ([0-9a-f]+)")
LOST = re.compile(r"lost Ray worker (\d+) on node (\S+): (.+) back in the queue \((.*)\)")

pytestmark = pytest.mark.slow


def say(line: str) -> None:
    print(f"[cluster] {line}", flush=True)


def process_tree(pids: list[int]) -> list[int]:
    """`pids` and all their descendants, from /proc (no psutil: Ray no longer brings it)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process just ended
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def kill_trees(pids: list[int]) -> int:
    """SIGKILL the processes and their descendants at once; how many there were."""
    procs = process_tree(pids)
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(procs)


class RayCluster:
    """`ray.cluster_utils.Cluster`: real raylets on this machine, added and killed at will."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        # node deaths noticed in ~3 s instead of Ray's default ~15-30 s (health checks)
        checks = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                  "health_check_failure_threshold": 3}
        self.cluster = Cluster(initialize_head=True,
                               head_node_args={"num_cpus": 0, "include_dashboard": False,
                                               "_system_config": checks})
        # Cluster records itself as this machine's "current" Ray (/tmp/ray/ray_current_cluster),
        # where any plain `ray.init()` on the machine would then join it: forget it at once
        from ray._private.utils import get_ray_address_file

        Path(get_ray_address_file(None)).unlink(missing_ok=True)
        self.head = self.cluster.head_node.node_id
        self.address = self.cluster.address
        self.workers(2)

    def workers(self, n: int) -> list[str]:
        """Top up to `n` live worker nodes; their node ids."""
        while len(self.cluster.worker_nodes) < n:
            self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        return sorted(node.node_id for node in self.cluster.worker_nodes)

    def kill(self, *node_ids: str) -> int:
        """SIGKILL worker nodes' processes all at once (raylet, its actors and agents), as when
        their machines die: a raylet killed alone leaves its actors answering for seconds.
        Returns how many processes were killed."""
        nodes = [n for n in self.cluster.worker_nodes if n.node_id in node_ids]
        assert len(nodes) == len(node_ids)
        killed = kill_trees([p.pid for node in nodes for _, p in node.live_processes()])
        for node in nodes:
            self.cluster.remove_node(node, allow_graceful=False)
        return killed

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def cluster():
    import ray

    from copytrace.pipelines.ray_runtime import ensure_ray

    was_local = ray.is_initialized()
    if was_local:  # this module's driver joins the cluster instead of the session's local Ray
        ray.shutdown()
    start = time.monotonic()
    c = RayCluster()
    say(f"started head node {c.head[:12]} (0 CPUs) and worker nodes "
        f"{', '.join(w[:12] for w in c.workers(2))} (1 CPU each) at {c.address} in "
        f"{time.monotonic() - start:.1f} s")
    yield c
    ray.shutdown()
    c.shutdown()
    if was_local:
        ensure_ray()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """24 photos: the 12 scikit-image photos in base/, the same photos mirrored in new/."""
    root = tmp_path_factory.mktemp("cluster-images")
    for folder in ("base", "new"):
        (root / folder).mkdir()
    for name in PHOTO_NAMES:
        im = Image.fromarray(photo(name))
        im.thumbnail((384, 384))
        (root / "base" / f"{name}.jpg").write_bytes(jpeg_bytes(im, 90))
        (root / "new" / f"{name}-mirror.jpg").write_bytes(
            jpeg_bytes(im.transpose(Image.FLIP_LEFT_RIGHT), 90))
    return root


@pytest.fixture(scope="module")
def clean(images, tmp_path_factory) -> Path:
    """The clean in-process build of all 24 (the index every cluster job must equal)."""
    from copytrace.pipelines.build import build_index

    index = tmp_path_factory.mktemp("clean") / "idx"
    build_index(images, index, chunk_size=CHUNK, use_ray=False, show_progress=False)
    return index


class Job:
    """The CLI in a subprocess; its log lines (stderr) read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([BIN, *args], env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.started = time.monotonic()
        self.seconds = 0.0
        self.lines: list[str] = []
        self.out: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(stream, sink), daemon=True)
                        for stream, sink in ((self.proc.stderr, self.lines),
                                             (self.proc.stdout, self.out))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, sink: list[str]) -> None:  # noqa: ANN001 - a text pipe
        for line in stream:
            sink.append(line.rstrip())

    def first(self, pattern: re.Pattern) -> re.Match | None:
        return next((m for line in list(self.lines) if (m := pattern.search(line))), None)

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        self.seconds = time.monotonic() - self.started
        return self.proc.returncode, "\n".join(self.out)


def parts(index: Path) -> int:
    return len(list((index / "catalog").glob("part-*.parquet")))


def vectors_by_id(index: Path) -> dict[str, np.ndarray]:
    ids, vectors = read_embeddings(index / "embeddings")
    assert len(ids) == len(set(ids)), "duplicate ids in the embeddings"
    return dict(zip(ids, vectors, strict=True))


def compare(index: Path, clean: Path) -> str:
    """Same ids, catalog rows and vectors (to 1e-5) as the clean build; a one-line summary."""
    got, want = vectors_by_id(index), vectors_by_id(clean)
    assert sorted(got) == sorted(want)
    diff = max(float(np.abs(got[i] - want[i]).max()) for i in want)
    assert diff < 1e-5, diff
    keys = ["image_id", "uri", "sha256", "status", "error", "width", "height"]
    rows = {tuple(r[k] for k in keys) for r in read_catalog(index / "catalog").to_pylist()}
    assert rows == {tuple(r[k] for k in keys) for r in read_catalog(clean / "catalog").to_pylist()}
    return (f"{len(got)} ids equal to the clean in-process build, no duplicates, catalog rows "
            f"equal, max |vector difference| {diff:.1e}")


def lost_lines(job: Job) -> list[re.Match]:
    return [m for line in job.lines if (m := LOST.search(line))]


def finished_after_requeue(job: Job, victim: str, what: str) -> str:
    """The job's output, once it exited 0 with the victim node's chunks back in the queue."""
    rc, out = job.finish()
    assert rc == 0, "\n".join(job.lines)
    lost = lost_lines(job)
    assert lost and lost[0].group(2) == victim and lost[0].group(3).startswith("chunks"), job.lines
    say(f"{what}: driver: 'lost Ray worker {lost[0].group(1)} on node {victim[:12]}: "
        f"{lost[0].group(3)} back in the queue ({lost[0].group(4)[:60]}...)'; exit {rc} after "
        f"{job.seconds:.0f} s: {out.strip()}")
    return out


def test_build_survives_losing_a_worker_node(cluster, images, clean, tmp_path):
    nodes = cluster.workers(2)
    index = tmp_path / "idx"
    job = Job("index", "build", str(images), "--index", str(index), "--chunk-size", str(CHUNK),
              "--ray-address", cluster.address, "-q")
    assert wait_for(lambda: parts(index) >= 1 and job.first(DONE), job.proc, timeout=240), \
        "\n".join(job.lines)
    done = job.first(DONE)
    victim = done.group(4)
    assert victim in nodes
    committed = parts(index)
    killed = cluster.kill(victim)
    say(f"build: killed worker node {victim[:12]} ({killed} processes, Ray worker "
        f"{done.group(3)}) after chunk "
        f"{done.group(2)} was done and {committed} of 12 chunks were committed")
    finished_after_requeue(job, victim, "build")
    assert fingerprint(index).positions == fingerprint(clean).positions  # ids in the same order
    say(f"build: {compare(index, clean)}; FAISS positions in the same order")


def test_add_survives_losing_a_worker_node(cluster, images, clean, tmp_path):
    from copytrace.pipelines.build import build_index

    nodes = cluster.workers(2)
    index = tmp_path / "idx"
    build_index(images / "base", index, chunk_size=CHUNK, use_ray=False, show_progress=False)
    job = Job("index", "add", str(images / "new"), "--index", str(index), "--chunk-size", "1",
              "--ray-address", cluster.address, "-q")
    assert wait_for(lambda: job.first(DONE), job.proc, timeout=240), "\n".join(job.lines)
    done = job.first(DONE)
    victim = done.group(4)
    assert victim in nodes
    killed = cluster.kill(victim)
    say(f"add: killed worker node {victim[:12]} ({killed} processes, Ray worker "
        f"{done.group(3)}) after chunk "
        f"{done.group(2)} of 12 was done")
    out = finished_after_requeue(job, victim, "add")
    assert "version 2, 12 added, 24 live" in out
    say(f"add: base (12, in-process) + add (12, cluster): {compare(index, clean)}")


def test_distributed_search_survives_losing_a_node(cluster, tmp_path, caplog):
    """Four shards on four actors spread over the nodes; a worker node holding some dies, with
    one shard file gone (a node-local disk): the search fails naming exactly that shard (the
    others are already back); with the file back, the next search equals the in-process one."""
    from small_index import DIMS, small_index

    from copytrace.indexing.store import CopyIndex
    from copytrace.pipelines.ray_runtime import ensure_ray
    from copytrace.pipelines.shard_search import ShardsUnavailableError, open_distributed

    caplog.set_level(logging.INFO, logger="copytrace.pipelines.shard_search")
    workers = cluster.workers(2)
    ensure_ray(cluster.address)
    vectors = small_index(tmp_path / "idx", 1000, shard_size=250, spec="Flat")
    rng = np.random.default_rng(22)
    queries = vectors[rng.choice(1000, 30, replace=False)] + 0.2 * rng.normal(size=(30, DIMS))
    want = [[(n.image_id, n.score) for n in row] for row in
            CopyIndex.open(tmp_path / "idx").search(queries, 10)]
    remote = open_distributed(tmp_path / "idx", actors=4, ray_address=cluster.address)
    shards = remote.faiss_index
    try:
        def same_as_in_process() -> bool:
            got = [[(n.image_id, n.score) for n in row] for row in remote.search(queries, 10)]
            return ([[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
                    and np.allclose([[s for _, s in r] for r in got],
                                    [[s for _, s in r] for r in want], atol=1e-5))

        assert same_as_in_process()
        placed = shards.nodes()
        say("search: 4 shards on 4 actors over nodes " + ", ".join(
            n[:12] + (" (head)" if n == cluster.head else "") for n in placed))
        victim = max(workers, key=placed.count)
        held = [i for i, n in enumerate(placed) if n == victim]
        assert held, f"SPREAD left no shard actor on a worker node: {placed}"
        gone = [Path(p) for p in shards.groups[held[0]]]
        kept = [Path(p).name for i in held[1:] for p in shards.groups[i]]
        for p in gone:
            p.rename(p.with_name(p.name + ".gone"))
        killed = cluster.kill(victim)
        say(f"search: killed worker node {victim[:12]} ({killed} processes) holding shards "
            f"{', '.join(p.name for p in gone)} (file gone with the node)"
            f"{' and ' + ', '.join(kept) if kept else ''}")
        with pytest.raises(ShardsUnavailableError) as failed:
            remote.search(queries, 10)
        message = str(failed.value)
        assert all(p.name in message for p in gone) and not any(k in message for k in kept)
        say(f"search: the next search raised ShardsUnavailableError: {message[:150]}...")
        for p in gone:
            p.with_name(p.name + ".gone").rename(p)
        assert same_as_in_process()
        assert victim not in shards.nodes()
        reloaded = [r.getMessage() for r in caplog.records if "loaded again" in r.getMessage()]
        assert len(reloaded) == len(held)
        say(f"search: with the file back the next search reloaded it ('{reloaded[-1][:60]}...') "
            "and equals the in-process top 10 for 30 queries")
    finally:
        shards.close()


def fifo_reader(fifo: Path) -> int | None:
    """The other process that has `fifo` open (a shard actor blocked reading it), from /proc."""
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) == str(fifo) and fd.parent.parent.name != str(os.getpid()):
                return int(fd.parent.parent.name)
    return None


def test_distributed_search_survives_losing_a_node_during_the_first_load(cluster, tmp_path,
                                                                         caplog):
    """Each shard file is a named pipe, so every shard actor is held in its first load, reading
    (as from a stalled shared filesystem) until the test feeds it. A worker node holding one of
    them dies there: its shards are loaded in a new actor on a surviving node, and the opened
    index answers as in-process. Before the fix the load raised ActorDiedError."""
    from small_index import DIMS, small_index

    from copytrace.indexing.store import CopyIndex
    from copytrace.pipelines.ray_runtime import ensure_ray
    from copytrace.pipelines.shard_search import open_distributed

    caplog.set_level(logging.INFO, logger="copytrace.pipelines.shard_search")
    workers = cluster.workers(2)
    ensure_ray(cluster.address)
    root = tmp_path / "idx"
    vectors = small_index(root, 1000, shard_size=250, spec="Flat")
    rng = np.random.default_rng(23)
    queries = vectors[rng.choice(1000, 30, replace=False)] + 0.2 * rng.normal(size=(30, DIMS))
    want = [[(n.image_id, n.score) for n in row] for row in CopyIndex.open(root).search(queries, 10)]
    shards = sorted(root.glob("faiss/shard-*.faiss"))
    for path in shards:
        path.rename(path.with_name(path.name + ".real"))
        os.mkfifo(path)
    opened: dict = {}

    def load() -> None:
        try:
            opened["index"] = open_distributed(root, actors=4, ray_address=cluster.address)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            opened["error"] = exc

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    writers: dict[Path, int] = {}
    deadline = time.monotonic() + 120
    while len(writers) < len(shards) and time.monotonic() < deadline and loader.is_alive():
        for path in shards:
            if path not in writers:
                with contextlib.suppress(OSError):  # ENXIO: its actor has not opened it yet
                    writers[path] = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        time.sleep(0.05)
    assert len(writers) == len(shards), opened
    readers: dict[Path, int | None] = {}
    for path in shards:  # its reader's open() returns once a writer is there
        until = time.monotonic() + 30
        while (pid := fifo_reader(path)) is None and time.monotonic() < until:
            time.sleep(0.1)
        readers[path] = pid
    node_of = {pid: w.node_id for w in cluster.cluster.worker_nodes
               for pid in process_tree([p.pid for _, p in w.live_processes()])}
    held = {path: node_of.get(pid or 0, cluster.head) for path, pid in readers.items()}
    victim = max(workers, key=list(held.values()).count)
    lost = [p for p, n in held.items() if n == victim]
    assert lost, f"SPREAD left no shard actor on a worker node: {held}"
    for path in lost:  # the file is whole again for the actor that loads it next
        path.with_name(path.name + ".real").replace(path)
    killed = cluster.kill(victim)
    say(f"first load: 4 shard actors held reading their shards on nodes "
        f"{', '.join(n[:12] + (' (head)' if n == cluster.head else '') for n in held.values())}; "
        f"killed worker node {victim[:12]} ({killed} processes) while it loaded "
        f"{', '.join(p.name for p in lost)}")
    for path, fd in writers.items():
        if path not in lost:
            os.set_blocking(fd, True)
            os.write(fd, path.with_name(path.name + ".real").read_bytes())
        os.close(fd)
        if path not in lost:
            path.with_name(path.name + ".real").replace(path)
    loader.join(timeout=120)
    assert not loader.is_alive(), "the load hangs"
    assert "index" in opened, opened.get("error")
    remote = opened["index"]
    try:
        again = [r.getMessage() for r in caplog.records
                 if "loading them again" in r.getMessage()]
        assert len(again) == len(lost) and all(p.name in " ".join(again) for p in lost), again
        got = [[(n.image_id, n.score) for n in row] for row in remote.search(queries, 10)]
        assert [[i for i, _ in r] for r in got] == [[i for i, _ in r] for r in want]
        assert np.allclose([[s for _, s in r] for r in got], [[s for _, s in r] for r in want],
                           atol=1e-5)
        assert victim not in remote.faiss_index.nodes()
        say(f"first load: driver: '{again[0][:110]}...'; the index opened on nodes "
            f"{', '.join(n[:12] for n in remote.faiss_index.nodes())} and equals the "
            "in-process top 10 for 30 queries")
    finally:
        remote.faiss_index.close()


def test_dedup_self_join_survives_losing_a_node(cluster, clean, caplog):
    from copytrace.pipelines.dedup import neighbours_on_ray
    from copytrace.pipelines.dedup.candidates import descriptor_candidates, pair_key
    from copytrace.pipelines.engine import QueryEngine, match_config
    from copytrace.pipelines.ray_runtime import ensure_ray

    caplog.set_level(logging.INFO, logger="copytrace.pipelines.ray_runtime")
    cluster.workers(2)
    ensure_ray(cluster.address)
    engine = QueryEngine.open(clean, config=match_config(k=5, expand=False, verify=False),
                              keypoint_cache=False)
    uris = {r["image_id"]: r["uri"] for r in engine.index.catalog().to_pylist()}
    inline: dict = {}
    descriptor_candidates(engine, inline, uris=uris, k=5, min_score=0.3, crops=True)
    got: dict = {}
    victim = None
    for n in neighbours_on_ray(clean, k=5, min_score=0.3, crops=True, uris=uris,
                               ray_address=cluster.address, rows_per_item=2):
        if victim is None:
            done = next(m for r in caplog.records if (m := DONE.search(r.getMessage())))
            victim = done.group(4)
            killed = cluster.kill(victim)
            say(f"dedup: killed worker node {victim[:12]} ({killed} processes) after block "
                f"{done.group(2)} was done")
        key = pair_key(n.query, n.reference)
        got[key] = max(got.get(key, 0.0), n.similarity)
    lost = [m for r in caplog.records if (m := LOST.search(r.getMessage()))]
    assert lost and lost[0].group(2) == victim and lost[0].group(3).startswith("blocks")
    assert set(got) == set(inline) and len(got) >= 12
    for key, c in inline.items():
        assert got[key] == pytest.approx(c.similarity, abs=1e-4)
    say(f"dedup: driver: 'lost Ray worker {lost[0].group(1)}: {lost[0].group(3)} back in the "
        f"queue'; {len(got)} candidate pairs, equal to the in-process self-join")


def stopped_with_one_line(job: Job, rc: int, index: Path) -> str:
    """A build that lost its cluster: exit 2, one `error:` line telling to rerun, no manifest,
    and some but not all chunks committed. Returns the line."""
    errors = [line for line in job.lines if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1, "\n".join(job.lines)
    assert "rerun the same command to resume" in errors[0]
    assert not (index / "manifest.json").exists()
    assert 1 <= parts(index) < 12
    return errors[0]


def resume_in_process(images: Path, index: Path):  # noqa: ANN201 - a BuildReport
    """The same build again without Ray: it resumes every committed chunk and finishes."""
    from copytrace.pipelines.build import build_index

    saved = parts(index)
    report = build_index(images, index, chunk_size=CHUNK, use_ray=False, show_progress=False)
    assert report.resumed_chunks == saved and report.indexed == 24
    return report


def test_losing_every_worker_node_stops_with_one_line_and_resumes(cluster, images, clean,
                                                                   tmp_path):

    cluster.workers(2)
    index = tmp_path / "idx"
    args = ["index", "build", str(images), "--index", str(index), "--chunk-size", str(CHUNK),
            "--ray-address", cluster.address, "-q"]
    job = Job(*args)
    assert wait_for(lambda: parts(index) >= 1, job.proc, timeout=240), "\n".join(job.lines)
    killed = cluster.kill(*cluster.workers(2))
    say(f"all lost: killed both worker nodes ({killed} processes) after {parts(index)} of 12 "
        "chunks were committed")
    rc, _ = job.finish()
    error = stopped_with_one_line(job, rc, index)
    assert re.search(r"all \d Ray workers were lost", error)
    say(f"all lost: exit {rc}, {error}")

    report = resume_in_process(images, index)
    say(f"all lost: the committed chunks kept; the same build again (in-process) resumed "
        f"{report.resumed_chunks} of {report.chunks} chunks; {compare(index, clean)}")


def test_losing_the_head_node_stops_the_build_with_one_line_and_it_resumes(cluster, images,
                                                                           clean, tmp_path):
    """Last in this module (it ends the cluster): the head node (GCS) and the worker nodes go
    at once after the first committed chunk, as when the driver loses its connection to the
    cluster. Ray alone would block the driver for 60 s and then end it with a line of its own;
    the job stops with one error line instead, and the same build completes in-process."""
    import ray


    ray.shutdown()  # this process leaves the cluster: only the CLI job is connected to it
    cluster.workers(2)
    index = tmp_path / "idx"
    job = Job("index", "build", str(images), "--index", str(index), "--chunk-size", str(CHUNK),
              "--ray-address", cluster.address, "-q")
    assert wait_for(lambda: parts(index) >= 1, job.proc, timeout=240), "\n".join(job.lines)
    committed = parts(index)
    head = cluster.cluster.head_node
    killed = kill_trees([p.pid for node in [head, *cluster.cluster.worker_nodes]
                         for _, p in node.live_processes()])
    lost_at = time.monotonic()
    say(f"head lost: killed the head node {cluster.head[:12]} and both worker nodes ({killed} "
        f"processes) after {committed} of 12 chunks were committed")
    rc, _ = job.finish(timeout=120)
    stopped = time.monotonic() - lost_at
    error = stopped_with_one_line(job, rc, index)
    assert "lost the Ray cluster's head node" in error, error
    assert not any("Traceback" in line for line in job.lines), "\n".join(job.lines)
    assert stopped < 45  # Ray alone: 60 s, then its own line
    say(f"head lost: exit {rc} {stopped:.0f} s after the loss, {error}")

    report = resume_in_process(images, index)
    assert fingerprint(index).positions == fingerprint(clean).positions
    say(f"head lost: the same build again (in-process) resumed {report.resumed_chunks} of "
        f"{report.chunks} chunks; {compare(index, clean)}; FAISS positions in the same order")
