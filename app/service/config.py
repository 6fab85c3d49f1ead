"""The HTTP service's limits, and where its bearer token comes from."""

from __future__ import annotations

from dataclasses import dataclass

TOKEN_ENV = "COPYTRACE_TOKEN"


@dataclass(frozen=True)
class ServiceConfig:
    """Limits of the HTTP service."""

    max_upload_bytes: int = 50 * 2**20
    request_timeout: float = 30.0  # seconds from arrival to answer, queue wait included
    max_queue: int = 256  # requests waiting for the engine before new ones get 503
    max_batch: int = 16  # requests answered by one engine call
    batch_wait: float = 0.005  # seconds the worker waits for more requests to batch
    token: str | None = None  # bearer token; None: no authentication
