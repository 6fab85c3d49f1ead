"""Micro-batching of concurrent query requests into one engine call, on one worker thread.

The HTTP service's handlers only enqueue and await: the event loop never runs model or keypoint
work, so health checks answer while queries run. The worker takes the first waiting request,
gathers whatever else arrives within `wait_s` (up to `max_batch`), and runs them through
`QueryEngine.query` together: one model forward and one FAISS search for the whole batch. The
queue is bounded; a full queue is refused at once (the service answers 503) instead of piling up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from copytrace.matching import QueryResult
from copytrace.pipelines import QueryEngine, VerifyMode

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests are waiting than the service accepts."""


@dataclass
class _Request:
    data: bytes
    query_id: str
    k: int
    verify: VerifyMode
    second_pass: bool = True
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    """Other engine work (the web page's localization) run on the same thread, in turn."""

    fn: Callable[[QueryEngine], Any]
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    """Feeds one `QueryEngine` from a bounded queue on a single worker thread."""

    def __init__(self, engine: QueryEngine, *, max_queue: int = 256, max_batch: int = 16,
                 wait_s: float = 0.005) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="copytrace-batcher", daemon=True)
        self.busy = 0  # requests taken off the queue and being processed
        self.batches = 0
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting or in progress."""
        return self._queue.qsize() + self.busy

    def submit(self, data: bytes, *, query_id: str = "query", k: int = 10,
               verify: VerifyMode = VerifyMode.BANDED, second_pass: bool = True) -> Future:
        """Queue one request; its future gets the `QueryResult` (or the engine's exception)."""
        request = _Request(data, query_id, k, VerifyMode(verify), second_pass)
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests waiting") from None
        return request.future

    def call(self, fn: Callable[[QueryEngine], Any]) -> Future:
        """Queue `fn(engine)` to run on the worker thread (the engine is used by one thread
        only); its future gets the return value or the exception."""
        request = _Call(fn)
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests waiting") from None
        return request.future

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _take_batch(self) -> tuple[list[_Request], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch, stop = [first], False
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            batch, stop = self._take_batch()
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            self.busy = len(live)
            groups: dict[tuple[int, VerifyMode, bool], list[_Request]] = {}
            for r in live:
                if isinstance(r, _Request):
                    groups.setdefault((r.k, r.verify, r.second_pass), []).append(r)
            for (k, verify, second_pass), requests in groups.items():
                self._answer(requests, k, verify, second_pass)
            for c in live:
                if isinstance(c, _Call):
                    self._run_call(c)
            self.busy = 0
            self.batches += bool(live)
            if stop:
                return

    def _run_call(self, call: _Call) -> None:
        try:
            call.future.set_result(call.fn(self.engine))
        except Exception as exc:  # noqa: BLE001 - the handler turns it into a clear answer
            call.future.set_exception(exc)

    def _answer(self, requests: list[_Request], k: int, verify: VerifyMode,
                second_pass: bool) -> None:
        try:
            results: list[QueryResult] = self.engine.query(
                [r.data for r in requests], k=k, verify=verify, second_pass=second_pass,
                query_ids=[r.query_id for r in requests])
        except Exception as exc:  # noqa: BLE001 - the handler turns it into a clear answer
            log.exception("query batch failed")
            for r in requests:
                r.future.set_exception(exc)
            return
        for r, result in zip(requests, results, strict=True):
            r.future.set_result(result)
