"""Start or join Ray, and run work items on a pool of Ray actors that survives losing nodes.

Node loss: Ray's own actor restarts (`max_restarts`) need a free slot to restart into, and a
cluster whose every CPU already holds one of our actors has none, so the restart, and the tasks
retried on it, would wait for ever. Instead a lost actor's in-flight items go back to the front
of the queue for the surviving actors; a replacement actor starts only where the cluster has
room for one (a node that joined, a freed slot), a bounded number of times, and each item may be
lost a bounded number of times. When no actor is left and none can start, the job stops with
one `WorkersLostError` line; what it had already handed back is the caller's to keep.

Head loss: a driver that joined a cluster watches its head (the GCS port) from a thread. Ray
itself terminates a driver whose GCS stays unreachable for 60 s, with a line of its own, and
until then every call that needs the head blocks. Here a head unanswered for
`HEAD_LOST_AFTER_S` stops the pool with `WorkersLostError` (what it handed back is kept, no
further call to the head) after leaving the lost cluster (`ray.shutdown`), so the process lives
on, e.g. to build in-process; a driver blocked in such a call meanwhile is ended after
`HEAD_EXIT_AFTER_S` with one `error:` line and exit status 2, as after kill -9 but said.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from copytrace.util.tcmalloc import preload_env

log = logging.getLogger(__name__)

HEAD_LOST_AFTER_S = 10.0  # a joined cluster's head (GCS) unreachable this long counts as lost
HEAD_EXIT_AFTER_S = 25.0  # ... and this long ends the process (Ray's own limit is 60 s)


class WorkersLostError(RuntimeError):
    """A Ray job lost its workers and cannot go on (the nodes that could run them are gone).

    `reason` is the message without the progress; `finished` of `total` items were handed back.
    """

    def __init__(self, reason: str, *, finished: int = 0, total: int = 0,
                 what: str = "item") -> None:
        super().__init__(f"{reason}; {finished} of {total} {what}s were finished"
                         if total else reason)
        self.reason, self.finished, self.total = reason, finished, total


@dataclass(frozen=True)
class RetryPolicy:
    """How much node loss a pool job absorbs before it gives up."""

    max_attempts: int = 3  # times one item may be lost with its worker (each in flight counts)
    max_replacements: int | None = None  # actors started for lost ones (None: the pool's size)
    in_flight_per_worker: int = 2  # items queued on each actor, so none waits for work
    start_timeout_s: float = 600.0  # an actor not placed (and initialized) by then is given up
    poll_s: float = 1.0  # how often the pool looks for room to start a replacement


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Idempotent; `address` like 'ray://head:10001' or 'auto' (or $RAY_ADDRESS) joins an
    existing cluster; without one, a new local Ray starts even when `ray start` runs on this
    machine (plain `ray.init()` would join that instance, and refuse `num_cpus`)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # A local raylet starts its workers 15 nice levels below the driver (19 under `nice -n 10`):
    # our workers ARE the job, and on a shared box such workers got a tenth of the CPU the same
    # work got in this process (make bench: 1.2 against 12.2 img/s). Same niceness as the driver.
    os.environ.setdefault("RAY_worker_niceness", "0")
    env_vars = {"HF_HUB_OFFLINE": "1", **preload_env()}
    kwargs: dict = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": env_vars},
    }
    if address:
        ray.init(address=address, **kwargs)
        _quiet_cluster_events()
        if not address.startswith("ray://"):  # Ray Client: no GCS port here; its own retries
            _HeadWatch.start(ray.get_runtime_context().gcs_address)
        log.info("joined Ray cluster at %s (%d nodes alive)", address, alive_nodes())
    else:
        _HeadWatch.stop()  # a cluster joined before in this process is no longer ours
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
        log.info("started local Ray")


def _quiet_cluster_events() -> None:
    """Ray prints cluster events ('(raylet) Raylet is terminated ...') on the driver's stdout,
    into `--json` output; our own log names the lost node. Only a private switch turns it off,
    hence the guard."""
    import ray

    worker = getattr(getattr(ray, "_private", None), "worker", None)
    if hasattr(worker, "_worker_logs_enabled"):
        worker._worker_logs_enabled = False


class _HeadWatch:
    """Probes the joined cluster's GCS port once a second from a daemon thread; `lost` says
    why once it has not answered for `HEAD_LOST_AFTER_S` (until then None). A GCS that does not
    answer TCP from the driver at the start (or Ray Client, `ray://`) is not watched."""

    lost: str | None = None
    _address = ""

    @classmethod
    def start(cls, gcs_address: str) -> None:
        if not gcs_address or not _answers(gcs_address):  # cannot be watched from here
            log.info("not watching the Ray head: its GCS at %s does not answer TCP from here",
                     gcs_address)
            cls.stop()
            return
        cls.lost, cls._address = None, gcs_address
        threading.Thread(target=cls._watch, args=(gcs_address,), name="ray-head-watch",
                         daemon=True).start()

    @classmethod
    def stop(cls) -> None:
        cls.lost, cls._address = None, ""  # its thread ends within 1 s

    @classmethod
    def _watch(cls, gcs_address: str) -> None:
        import ray

        answered = time.monotonic()
        while cls._address == gcs_address and ray.is_initialized():
            try:
                _connect(gcs_address)
                answered = time.monotonic()
            except OSError as exc:
                silent = time.monotonic() - answered
                if silent >= HEAD_LOST_AFTER_S and cls.lost is None:
                    cls.lose(exc)
                if silent >= HEAD_EXIT_AFTER_S:
                    cls._exit(silent)
            time.sleep(1.0)

    @classmethod
    def lose(cls, exc: OSError) -> None:
        cls.lost = (f"lost the Ray cluster's head node: its GCS at {cls._address} has not "
                    f"answered for {HEAD_LOST_AFTER_S:.0f} s ({exc})")
        log.info("%s", cls.lost)

    @classmethod
    def _exit(cls, silent: float) -> None:
        """The main thread is stuck in a call to the dead head (or in Ray's shutdown): end the
        process before Ray does, with one line saying what happened and what to do."""
        sys.stderr.write(
            f"error: {cls.lost or 'lost the Ray head node'}; stopped after {silent:.0f} s "
            "without it: rerun the same command once the cluster is back, or without "
            "--ray-address (an index build resumes from its saved chunks)\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(2)


def _connect(address: str) -> None:
    """One TCP connection to host:port, closed at once; OSError when it does not answer."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2.0):
        pass


def _answers(address: str) -> bool:
    try:
        _connect(address)
    except (OSError, ValueError):
        return False
    return True


def head_answers() -> bool:
    """Before a call that needs a joined cluster's head: False once it is lost, after waiting up
    to `HEAD_LOST_AFTER_S` for it to answer (True at once without a cluster)."""
    if _HeadWatch.lost or not _HeadWatch._address:
        return _HeadWatch.lost is None
    first = time.monotonic()
    while _HeadWatch.lost is None:
        try:
            _connect(_HeadWatch._address)
            return True
        except OSError as exc:
            if time.monotonic() - first >= HEAD_LOST_AFTER_S:
                _HeadWatch.lose(exc)
            time.sleep(0.5)
    return False


def head_lost() -> str | None:
    """Why the joined cluster's head counts as lost, or None (also without a cluster)."""
    return _HeadWatch.lost


def leave_lost_cluster(error: WorkersLostError) -> WorkersLostError:
    """Disconnect from a cluster whose head is lost (Ray would end this process 60 s after the
    loss, the watch at `HEAD_EXIT_AFTER_S`), so the caller can report `error` and go on."""
    import ray

    log.info("leaving the Ray cluster at %s", _HeadWatch._address)
    _HeadWatch.stop()  # no last-resort exit while leaving (Ray's own 60 s limit stays)
    ray.shutdown()  # took ~5 s with the head gone
    return error


def alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def cluster_workers() -> int:
    """One embedding worker per node (each worker uses all the cores of its node)."""
    return max(1, alive_nodes())


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    """CPUs Ray grants across the cluster (one one-thread embedding actor each on CPU nodes)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def node_id() -> str:
    """The Ray node this process runs on: what a pool actor's `ready()` returns."""
    import ray

    return ray.get_runtime_context().get_node_id()


def lost_worker_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for work lost with its process or node (not errors raised by our code)."""
    from ray import exceptions as rex

    return (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
            rex.LocalRayletDiedError, rex.ActorUnschedulableError)


@dataclass(eq=False)
class _Slot:
    handle: Any
    number: int
    started: float
    node: str = ""  # set once the actor answered ready()
    busy: dict = field(default_factory=dict)  # in-flight ObjectRef -> item key


def run_on_actors(items: Sequence[tuple[Hashable, tuple]], start: Callable[[], Any], *,
                  workers: int, needs: dict[str, float], method: str = "run",
                  what: str = "chunk", policy: RetryPolicy | None = None
                  ) -> Iterator[tuple[Hashable, Any]]:
    """Run `actor.<method>(*args)` for each (key, args) on `workers` actors made by `start()`;
    yields (key, result) in completion order, each key exactly once.

    An actor must answer `ready()` (with `node_id()`) before it is given work; `needs` are the
    resources one actor takes (e.g. {"CPU": 1}), checked before a replacement is started.
    """
    pool = _Pool(start, needs, policy or RetryPolicy(), what, method, len(items))
    return pool.run(items, workers)


class _Pool:
    def __init__(self, start: Callable[[], Any], needs: dict[str, float], policy: RetryPolicy,
                 what: str, method: str, total: int) -> None:
        self.start, self.needs, self.policy = start, needs, policy
        self.what, self.method, self.total = what, method, total
        self.live: list[_Slot] = []
        self.starting: dict = {}  # ready() ObjectRef -> slot
        self.running: dict = {}  # item ObjectRef -> slot
        self.todo: deque = deque()
        self.args: dict = {}
        self.attempts: Counter = Counter()
        self.done: set = set()
        self.started = self.lost = 0
        self.replacements_left = 0
        self.last_error = ""
        self.last_room_check = 0.0
        self.head_gone = False

    def run(self, items: Sequence[tuple[Hashable, tuple]], workers: int
            ) -> Iterator[tuple[Hashable, Any]]:
        import ray

        self.todo.extend(key for key, _ in items)
        self.args = dict(items)
        self.target = max(1, workers)
        self.replacements_left = (self.target if self.policy.max_replacements is None
                                  else self.policy.max_replacements)
        for _ in range(self.target):
            self._start_actor()
        try:
            while self.todo or self.running:
                if lost := head_lost():  # every further call to the head would block
                    self.head_gone = True
                    raise leave_lost_cluster(self._error(lost))
                self._assign()
                self._replace_if_room()
                self._check_stuck()
                ready, _ = ray.wait([*self.running, *self.starting], num_returns=1,
                                    timeout=self.policy.poll_s)
                for ref in ready:
                    if ref in self.starting:
                        self._on_ready(ref)
                    else:
                        yield from self._on_result(ref)
        finally:
            for slot in [*self.live, *self.starting.values()]:
                if not self.head_gone:  # ray.kill goes through the head: it would block
                    kill_actor(slot.handle)

    def _start_actor(self) -> None:
        self.started += 1
        slot = _Slot(self.start(), self.started, time.monotonic())
        self.starting[slot.handle.ready.remote()] = slot

    def _on_ready(self, ref) -> None:  # noqa: ANN001 - a Ray ObjectRef
        import ray

        slot = self.starting.pop(ref)
        try:
            slot.node = ray.get(ref)
        except lost_worker_errors() as exc:
            if _is_creation_failure(exc):
                raise  # our actor's __init__ raised: a bug or a bad setting, not a node loss
            self._lose(slot, exc)
            return
        self.live.append(slot)
        log.info("Ray worker %d ready on node %s", slot.number, slot.node)

    def _on_result(self, ref) -> Iterator[tuple[Hashable, Any]]:  # noqa: ANN001
        import ray
        from ray.exceptions import ObjectLostError

        slot = self.running.pop(ref)
        key = slot.busy.pop(ref)
        try:
            value = ray.get(ref)
        except ObjectLostError as exc:  # the result was on a node that is gone: redo that item
            self._requeue([key], exc)
            return
        except lost_worker_errors() as exc:
            slot.busy[ref] = key
            self._lose(slot, exc)
            return
        if key in self.done:
            return
        self.done.add(key)
        log.info("%s %s done by Ray worker %d on node %s (%d of %d)", self.what, key,
                 slot.number, slot.node, len(self.done), self.total)
        yield key, value

    def _assign(self) -> None:
        for slot in self.live:
            while self.todo and len(slot.busy) < self.policy.in_flight_per_worker:
                key = self.todo.popleft()
                ref = getattr(slot.handle, self.method).remote(*self.args[key])
                slot.busy[ref] = key
                self.running[ref] = slot

    def _require_head(self) -> None:
        """Calls to a lost head block (until Ray ends the process): stop first, and say so."""
        if not head_answers():
            self.head_gone = True
            raise leave_lost_cluster(self._error(head_lost() or "lost the Ray cluster's head node"))

    def _lose(self, slot: _Slot, exc: BaseException) -> None:
        self._require_head()  # a node lost with the head: no replacement can start
        if slot in self.live:
            self.live.remove(slot)
        keys = []
        for ref, key in slot.busy.items():
            self.running.pop(ref, None)
            keys.append(key)
        slot.busy.clear()
        kill_actor(slot.handle)
        self.lost += 1
        self.last_error = error_line(exc)
        log.warning("lost Ray worker %d on node %s: %s back in the queue (%s)", slot.number,
                    slot.node or "(not placed yet)",
                    f"{self.what}s {', '.join(map(str, keys))}" if keys else f"no {self.what}s",
                    self.last_error)
        self._requeue(keys, exc)

    def _requeue(self, keys: list, exc: BaseException) -> None:
        for key in keys:
            self.attempts[key] += 1
            if self.attempts[key] >= self.policy.max_attempts:
                raise self._error(f"{self.what} {key} was lost with its Ray worker "
                                  f"{self.attempts[key]} times (last: {type(exc).__name__})")
        self.todo.extendleft(reversed(keys))
        if not self.live and not self.starting and not self._replace_if_room(force=True):
            raise self._error(f"all {self.started} Ray workers were lost (last: "
                              f"{type(exc).__name__}) and no live node has room for another "
                              f"({_needs(self.needs)})")

    def _error(self, reason: str) -> WorkersLostError:
        return WorkersLostError(reason, finished=len(self.done), total=self.total, what=self.what)

    def _replace_if_room(self, force: bool = False) -> bool:
        """Start one replacement when the pool is short, budget is left and a node has room."""
        now = time.monotonic()
        short = len(self.live) + len(self.starting) < self.target
        if not short or self.starting or self.replacements_left <= 0:
            return False
        if not force and now - self.last_room_check < self.policy.poll_s:
            return False
        self.last_room_check = now
        self._require_head()
        if not _has_room(self.needs):
            return False
        self.replacements_left -= 1
        self._start_actor()
        log.warning("starting replacement Ray worker %d (%d more allowed)", self.started,
                    self.replacements_left)
        return True

    def _check_stuck(self) -> None:
        """Actors that never get placed (no node has room) must not hold the job for ever."""
        if self.live or not self.starting:
            return
        oldest = min(s.started for s in self.starting.values())
        if time.monotonic() - oldest > self.policy.start_timeout_s:
            raise self._error(f"no Ray worker could start within "
                              f"{self.policy.start_timeout_s:.0f} s (each needs "
                              f"{_needs(self.needs)}; last loss: {self.last_error or 'none'})")


def _has_room(needs: dict[str, float]) -> bool:
    """Free resources for one more actor, and a live node big enough to hold it (the free
    count can still include a node that just died)."""
    import ray

    def fits(resources: dict) -> bool:
        return all(resources.get(name, 0.0) >= amount for name, amount in needs.items())

    return (fits(ray.available_resources())
            and any(n.get("Alive") and fits(n.get("Resources", {})) for n in ray.nodes()))


def _is_creation_failure(exc: BaseException) -> bool:
    """ActorDiedError because the actor's constructor raised (not because its node died)."""
    return bool(getattr(exc, "actor_init_failed", False))


def kill_actor(handle: Any) -> None:
    """Kill a Ray actor for good; quiet when it (or its node) is already gone."""
    import ray

    try:
        ray.kill(handle, no_restart=True)
    except Exception as exc:  # noqa: BLE001 - already dead, or its node is gone
        log.debug("ray.kill: %s", exc)


def error_line(exc: BaseException) -> str:
    """A Ray error in one short line (its messages run to many)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def _needs(needs: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in needs.items())
