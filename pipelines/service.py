"""`copytrace serve`: query-by-image over HTTP, with the index and model loaded once.

    copytrace serve --index idx/ --port 8080
    curl --data-binary @suspicious.jpg 'http://127.0.0.1:8080/v1/query?k=5'

Endpoints: `GET /v1/health`, `GET /v1/index` (the manifest), `POST /v1/query` (the image bytes as
the request body; JSON answer with the same fields as `copytrace query --json`). A bad image is
a 400 with a one-line reason; requests are served one model call at a time (the model uses all
cores), queued by the server.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request

from copytrace.pipelines.query import QueryEngine

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 50 * 2**20


def create_app(index: str | Path, *, model: str | None = None, device: str = "auto") -> FastAPI:
    """A FastAPI app serving one index; the engine is opened here, once."""
    engine = QueryEngine.open(index, model=model, device=device)
    lock = threading.Lock()
    app = FastAPI(title="copytrace", version="1",
                  description="Find the originals an image was copied or edited from.")

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok", "images": len(engine.index), "model": engine.descriptor.model_id}

    @app.get("/v1/index")
    def index_info() -> dict:
        return asdict(engine.index.manifest)

    @app.post("/v1/query")
    async def query_image(request: Request, k: int = Query(10, ge=1, le=1000),
                          verify: bool = True, query_id: str = "query") -> dict:
        data = await request.body()
        if not data:
            raise HTTPException(400, "empty request body: send the image bytes as the body")
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"image larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
        with lock:
            result = engine.query_bytes(data, query_id=query_id, k=k, verify=verify)
        if result.error:
            raise HTTPException(400, f"cannot decode the uploaded image: {result.error}")
        return result.as_json()

    return app


def serve(index: str | Path, *, host: str = "127.0.0.1", port: int = 8080,
          model: str | None = None, device: str = "auto") -> None:
    import uvicorn

    uvicorn.run(create_app(index, model=model, device=device), host=host, port=port,
                log_level="warning")
