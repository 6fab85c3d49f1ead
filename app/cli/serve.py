"""`copytrace serve`: query-by-image over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from copytrace.app.cli.root import CacheDir, app, err


@app.command("serve")
def serve_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to serve.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    model: Annotated[str | None, typer.Option(help="Override the index's model (must be the "
                                                   "same weights).")] = None,
    device: Annotated[str, typer.Option(help="'auto' (GPU if present), 'cpu' or 'cuda'.")]
    = "auto",
    token: Annotated[str | None, typer.Option(envvar="COPYTRACE_TOKEN", help="Require "
                                              "the token (all but /v1/health): 'Authorization: "
                                              "Bearer TOKEN', or the web page's login form.")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Refuse larger uploads (413).")] = 50,
    timeout: Annotated[float, typer.Option(help="Seconds per request, queue wait included "
                                           "(then 503).")] = 30,
    cache_dir: CacheDir = None,
    prepare: Annotated[bool, typer.Option(help="Detect every reference's keypoints into the "
                                          "keypoint cache before taking traffic.")] = False,
    verify_workers: Annotated[bool, typer.Option(
        "--verify-workers/--verify-inline", help="Verify keypoints on a pool of worker processes "
                                                 "(one per core) instead of in the service "
                                                 "process.")] = False,
) -> None:
    """Serve query-by-image over HTTP: POST the image bytes to /v1/query?k=10, or open the web
    page at / in a browser (API documentation at /docs).

    Example: curl --data-binary @photo.jpg 'http://127.0.0.1:8080/v1/query?k=5'
    """
    from copytrace.app.service import serve

    serve(index, host=host, port=port, model=model, device=device, token=token,
          max_upload_mb=max_upload_mb, timeout=timeout, cache_dir=cache_dir, prepare=prepare,
          verify_backend="processes" if verify_workers else "inline",
          on_ready=lambda: err.print(f"serving '{index}' on http://{host}:{port} (web page at /, API at /docs"
                                     f"{', bearer token required' if token else ''})"))


