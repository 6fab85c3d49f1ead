"""Prometheus metrics of the service: requests by endpoint and status, latency, queue depth;
and the middleware that counts every request (and turns an unexpected error into a 503, never a
500 with a traceback)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("copytrace_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("copytrace_request_seconds", "Request latency by endpoint",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.queue = Gauge("copytrace_queue_depth", "Queries waiting or in progress",
                           registry=self.registry)
        self.queue.set_function(depth)


def count_requests(app: FastAPI, metrics: Metrics) -> None:
    """Install the middleware that records every request in `metrics`."""

    @app.middleware("http")
    async def count(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        t = time.perf_counter()
        endpoint = request.url.path if request.url.path.startswith(("/v1/", "/metrics")) \
            else "other"
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - never a 500 with a traceback
            log.exception("unexpected error on %s", request.url.path)
            response = JSONResponse({"detail": "internal error: try again"}, status_code=503)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t)
        return response
