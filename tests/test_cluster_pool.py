"""The fault-tolerant actor pool's bounds (`ray_runtime.run_on_actors`) on the local Ray: a
worker process that dies mid-item costs a replacement and a retry, an item that kills every
worker that runs it stops the job after `max_attempts`, and an actor whose constructor raises
is a bug that surfaces (not a node loss to retry)."""

from __future__ import annotations

import os
import time

import pytest

from copytrace.pipelines.ray_runtime import RetryPolicy, WorkersLostError, run_on_actors


class _Echo:
    """Squares numbers; an item in `fatal` kills the process the first `times` times."""

    def __init__(self, marks: str, fail_init: bool = False) -> None:
        if fail_init:
            raise ValueError("bad setting")
        self.marks = marks

    def ready(self) -> str:
        from copytrace.pipelines.ray_runtime import node_id

        return node_id()

    def run(self, x: int, times: int) -> int:
        if times:
            mark = os.path.join(self.marks, str(x))
            seen = len(os.listdir(mark)) if os.path.isdir(mark) else 0
            if seen < times:
                os.makedirs(mark, exist_ok=True)
                open(os.path.join(mark, str(seen)), "w").close()
                os._exit(1)  # the worker process dies mid-item, as on a lost node
        time.sleep(0.25)  # long enough for the pool to see the freed CPU and start a replacement
        return x * x


def _run(tmp_path, fatal: dict[int, int], policy: RetryPolicy, fail_init: bool = False):
    import sys

    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests/

    actor = ray.remote(num_cpus=1)(_Echo)
    items = [(x, (x, fatal.get(x, 0))) for x in range(8)]
    return dict(run_on_actors(items, lambda: actor.remote(str(tmp_path), fail_init), workers=2,
                              needs={"CPU": 1}, what="item", policy=policy))


def test_a_dying_worker_costs_a_retry_not_the_job(tmp_path, local_ray, caplog):
    caplog.set_level("INFO", logger="copytrace.pipelines.ray_runtime")
    got = _run(tmp_path, {3: 1, 6: 1}, RetryPolicy(max_attempts=3, poll_s=0.2))
    assert got == {x: x * x for x in range(8)}  # every item once, the lost ones re-run
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lost Ray worker" in m for m in messages) == 2
    assert any("starting replacement Ray worker" in m for m in messages)  # a CPU came free


def test_an_item_that_kills_every_worker_stops_the_job(tmp_path, local_ray):
    # one item in flight per worker: every item in flight on a lost worker counts a loss
    policy = RetryPolicy(max_attempts=2, in_flight_per_worker=1, poll_s=0.2)
    with pytest.raises(WorkersLostError, match="item 5 was lost with its Ray worker 2 times"):
        _run(tmp_path, {5: 9}, policy)


def test_a_failing_constructor_is_not_retried(tmp_path, local_ray):
    from ray.exceptions import RayActorError

    with pytest.raises(RayActorError, match="bad setting"):
        _run(tmp_path, {}, RetryPolicy(), fail_init=True)
