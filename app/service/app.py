"""`copytrace serve`: query-by-image over HTTP, with the index and model loaded once.

    copytrace serve --index idx/ --port 8080 [--token SECRET]
    curl --data-binary @suspicious.jpg 'http://127.0.0.1:8080/v1/query?k=5'

Endpoints: `GET /v1/health` (never needs the token), `GET /v1/index` (the manifest),
`POST /v1/query` (the image bytes as the body; the JSON of `copytrace query --json`), `GET
/metrics` (Prometheus: requests, latency, queue depth); the web page at `/` and its endpoints
(`web.py`); the OpenAPI document at `/openapi.json`, browsable at `/docs`.

Handlers never run model or keypoint work on the event loop: they stream the body (refusing it
with 413 as soon as it passes the size limit, or at once from its Content-Length), then hand it to
a micro-batching worker (`batcher.py`) and await the answer. So health answers while
queries run, concurrent uploads share one model forward, a full queue or a slow query answers
503, a non-image 415, a corrupt image 400, and no request gets a 500. Binds 127.0.0.1 unless told
otherwise; with a token (`--token` or COPYTRACE_TOKEN), every endpoint but health and the login
form needs `Authorization: Bearer TOKEN` or the login form's cookie. On SIGTERM/Ctrl-C,
requests in flight are finished first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)

from copytrace.app.service.auth import bearer_guard
from copytrace.app.service.batcher import Batcher, QueueFull
from copytrace.app.service.config import TOKEN_ENV, ServiceConfig
from copytrace.app.service.metrics import Metrics, count_requests
from copytrace.app.service.schemas import HealthOut, IndexOut, QueryOut, documented
from copytrace.app.service.uploads import read_body
from copytrace.app.service.web import add_web
from copytrace.pipelines import QueryEngine, VerifyBackend, VerifyMode

log = logging.getLogger(__name__)

DESCRIPTION = ("Find the originals an image was copied or edited from. The web page is at "
               "[/](/); every JSON answer below is also what `copytrace query --json` prints.")
NOT_AN_IMAGE = "not a recognised image format"
TEXT_TYPES = ("text/", "application/json", "application/xml", "multipart/")


def _reject(status: int, detail: str) -> HTTPException:
    return HTTPException(status, detail)


def create_app(index: str | Path, *, model: str | None = None, device: str = "auto",
               config: ServiceConfig | None = None,
               verify_backend: VerifyBackend | str = VerifyBackend.INLINE,
               cache_dir: str | Path | None = None, prepare: bool = False) -> FastAPI:
    """A FastAPI app serving one index; the engine is opened here, once (`cache_dir`: where the
    caches go when the index folder is read-only; `prepare`: every reference's keypoints into
    the keypoint cache before the first request, and a process pool backend's workers started)."""
    config = config or ServiceConfig(token=os.environ.get(TOKEN_ENV) or None)
    engine = QueryEngine.open(index, model=model, device=device, verify_backend=verify_backend,
                              cache_dir=cache_dir)
    engine.background(engine.config)  # load now, not on the first request
    if prepare:
        failed = engine.prepare_references()
        log.warning("reference keypoints prepared (%d unreadable)", failed)
        engine.verifier.start()
    batcher: Batcher | None = None
    metrics = Metrics(lambda: batcher.depth if batcher else 0)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal batcher
        batcher = Batcher(engine, max_queue=config.max_queue, max_batch=config.max_batch,
                          wait_s=config.batch_wait)
        yield
        await asyncio.to_thread(batcher.stop)  # requests already accepted are answered first
        engine.close()

    # FastAPI's own /docs loads Swagger UI from a CDN and serves without the token: web.py
    # serves the OpenAPI document behind the token and a page of its own that reads it.
    app = FastAPI(title="copytrace", version="1", lifespan=lifespan, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url=None)

    authorized = bearer_guard(config.token)
    count_requests(app, metrics)

    @app.get("/v1/health", responses=documented(HealthOut))
    async def health() -> dict:
        return {"status": "ok", "images": len(engine.index), "model": engine.descriptor.model_id,
                "queue": batcher.depth if batcher else 0}

    @app.get("/v1/index", dependencies=[Depends(authorized)], responses=documented(IndexOut, 401))
    async def index_info() -> dict:
        """The index manifest: model, FAISS spec and tuning, counts, version."""
        return asdict(engine.index.manifest)

    @app.get("/metrics", dependencies=[Depends(authorized)])
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/query", dependencies=[Depends(authorized)],
              responses=documented(QueryOut, 400, 401, 413, 415, 503),
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def query_image(request: Request, k: int = Query(10, ge=1, le=1000),
                          verify: str = "banded", query_id: str = "query",
                          second_pass: bool = True) -> dict:
        """The image bytes as the body; its top `k` candidate originals, best first.

        `verify`: banded (default; keypoints only where the global score is undecided), full,
        or off. For backward compatibility `verify=true` means banded and `false` off.
        `second_pass=false`: no turned, small-region or tile views for unsure queries (faster,
        but a turned copy or a photo shown small in a screenshot can be missed), as
        `copytrace query --no-second-pass`."""
        started = time.monotonic()
        try:
            mode = _verify_param(verify)
        except ValueError:
            raise _reject(400, f"verify must be banded, full or off, not '{verify}'") from None
        kind = request.headers.get("content-type", "").lower()
        if kind.startswith(TEXT_TYPES):
            raise _reject(415, f"expected image bytes, got Content-Type '{kind}'")
        data = await read_body(request, config.max_upload_bytes)
        if not data:
            raise _reject(400, "empty request body: send the image bytes as the body")
        try:
            future = batcher.submit(data, query_id=query_id, k=k, verify=mode,
                                    second_pass=second_pass)
        except QueueFull as exc:
            raise HTTPException(503, f"busy ({exc}): retry later",
                                headers={"Retry-After": "1"}) from None
        left = config.request_timeout - (time.monotonic() - started)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), max(0.001, left))
        except TimeoutError:
            future.cancel()
            raise HTTPException(503, f"query timed out after {config.request_timeout:g} s: "
                                "retry later", headers={"Retry-After": "1"}) from None
        except Exception as exc:  # noqa: BLE001 - the engine failed on this batch
            raise HTTPException(503, f"query failed: {exc}") from None
        if result.error:
            status = 415 if NOT_AN_IMAGE in result.error else 400
            raise _reject(status, f"cannot decode the uploaded image: {result.error}")
        return result.as_json()

    add_web(app, engine, lambda: batcher, config=config, authorized=authorized)
    return app


def _verify_param(value: str) -> VerifyMode:
    return {"true": VerifyMode.BANDED, "false": VerifyMode.OFF}.get(value.lower(),
                                                                     VerifyMode(value))


def serve(index: str | Path, *, host: str = "127.0.0.1", port: int = 8080,
          model: str | None = None, device: str = "auto", token: str | None = None,
          max_upload_mb: float = 50, timeout: float = 30.0,
          cache_dir: str | Path | None = None, prepare: bool = False,
          verify_backend: VerifyBackend | str = VerifyBackend.INLINE,
          on_ready: Callable[[], None] | None = None) -> None:
    """Run the service until SIGTERM / Ctrl-C; in-flight requests are finished first, and a
    SIGTERM shutdown returns normally (exit status 0). `on_ready` is called once the index and
    model are open, just before the server binds (a refused model never announces anything)."""
    import uvicorn

    config = ServiceConfig(max_upload_bytes=int(max_upload_mb * 2**20), request_timeout=timeout,
                           token=token or os.environ.get(TOKEN_ENV) or None)
    app = create_app(index, model=model, device=device, config=config, cache_dir=cache_dir,
                     prepare=prepare, verify_backend=verify_backend)
    if on_ready is not None:
        on_ready()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=int(timeout) + 5))
    # uvicorn re-raises a SIGTERM it shut down on once it restored the handler it found; the
    # default one would then kill the process (-15) after the clean shutdown. This one asks the
    # server to stop (also in the instant before uvicorn installs its own) and lets run() return.
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
