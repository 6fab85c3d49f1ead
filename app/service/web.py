"""The analyst's web page on `copytrace serve`: the page and its assets, the login form, catalog
thumbnails by image id, and the localized edits of a query against one reference.

    GET  /                          the query page (drop images; gallery of matches per query)
    GET  /index                     the index page (model, size, FAISS spec, version, tuning)
    GET  /docs, GET /openapi.json   the JSON API's OpenAPI document, and a page that reads it
    GET  /static/{name}             the page's own assets (shipped in the package; no CDN)
    GET  /login, POST /login        the token form; sets an HttpOnly, SameSite=Strict cookie
    GET  /v1/images/{id}            a catalog image's size and thumbnail URL
    GET  /v1/images/{id}/thumb      its JPEG thumbnail, resized here and cached
    POST /v1/localize?reference_id= the query's edits against that reference, with an overlay
    GET  /v1/overlays/{key}.png     an overlay made by /v1/localize (kept for the last few)

With a token every one of these but the login form needs it (the cookie or the bearer header);
a page request without it gets the login form with status 401, and nothing else is served. Model
and keypoint work runs on the batcher's worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from copytrace.app.service.auth import COOKIE, same_token, token_ok
from copytrace.app.service.batcher import Batcher, QueueFull
from copytrace.app.service.config import ServiceConfig
from copytrace.app.service.schemas import ImageOut, LocalizeOut, documented
from copytrace.app.service.thumbs import ThumbnailCache
from copytrace.app.service.uploads import read_body
from copytrace.descriptors import DecodeError
from copytrace.matching import Match
from copytrace.pipelines import QueryEngine

STATIC = "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
LOGIN_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store"}
OVERLAYS_KEPT = 64


class LocalizeFailed(Exception):
    """The pair could not be registered or localized."""


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every shipped asset, read once: name -> (bytes, media type). Requests pick from this
    dict by name; no request path ever reaches the filesystem."""
    root = resources.files("copytrace.app.service").joinpath(STATIC)
    return {f.name: (f.read_bytes(), MEDIA_TYPES[Path(f.name).suffix])
            for f in root.iterdir() if Path(f.name).suffix in MEDIA_TYPES}


class Overlays:
    """The last few overlay PNGs, under unguessable keys."""

    def __init__(self, kept: int = OVERLAYS_KEPT) -> None:
        self.kept = kept
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, png: bytes) -> str:
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._items[key] = png
            while len(self._items) > self.kept:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._items.get(key)


def parse_homography(text: str | None) -> list[list[float]] | None:
    """'h00,h01,...,h22' (a query match's `homography`, row by row) -> 3 x 3; None if absent."""
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError("homography: 9 comma-separated numbers") from None
    if len(values) != 9 or not all(math.isfinite(v) for v in values):
        raise ValueError("homography: 9 comma-separated finite numbers")
    return [values[0:3], values[3:6], values[6:9]]


def localize_upload(engine: QueryEngine, data: bytes, *, reference_id: str, query_id: str,
                    homography: list[list[float]] | None = None) -> tuple[dict, bytes]:
    """The query's edits against one catalog image: the localization JSON and the overlay PNG
    (`QueryEngine.localize_top`, the code path of `copytrace query --localize`; registration
    starts from `homography`, the query's match evidence, else the pair is verified first).
    `KeyError`: not a catalog id; `DecodeError`: not an image; `LocalizeFailed`: no
    registration."""
    image = engine.decode(data, query_id=query_id)
    evidence = {"homography": homography} if homography is not None else {}
    with tempfile.TemporaryDirectory(prefix="copytrace-localize-") as tmp:
        outcomes = engine.localize_top([image], [[Match(reference_id, 1.0, 0.0, evidence)]], tmp,
                                       overlay=True)
        if not outcomes:
            raise KeyError(reference_id)
        outcome = outcomes[0]
        if outcome.error or outcome.json is None or outcome.overlay is None:
            raise LocalizeFailed(outcome.error or "no localization")
        found = json.loads(Path(outcome.json).read_text())
        png = Path(outcome.overlay).read_bytes()
    found.pop("original", None)  # a server path: never sent
    found.pop("query", None)
    return {"query_id": query_id, "reference_id": reference_id, **found}, png


def add_web(app: FastAPI, engine: QueryEngine, batcher: Callable[[], Batcher], *,
            config: ServiceConfig, authorized: Callable[[Request], None]) -> None:
    """The page, its assets, login, thumbnails and localization, on `app`."""
    files = static_files()
    thumbs = ThumbnailCache(lambda i: engine.reference_uris([i]).get(i))
    overlays = Overlays()
    guard = [Depends(authorized)]

    def asset(name: str, csp: str | None = None, status: int = 200) -> Response:
        body, media = files[name]
        headers = {**SAFE_HEADERS, **({"Content-Security-Policy": csp} if csp else {})}
        return Response(body, status, media_type=media, headers=headers)

    def page(request: Request, name: str) -> Response:
        if not token_ok(request, config.token):
            return asset("login.html", LOGIN_CSP, 401)
        return asset(name, PAGE_CSP)

    @app.get("/", include_in_schema=False)
    async def query_page(request: Request) -> Response:
        return page(request, "index.html")

    @app.get("/index", include_in_schema=False)
    async def index_page(request: Request) -> Response:
        return page(request, "index-page.html")

    @app.get("/docs", include_in_schema=False)
    async def docs_page(request: Request) -> Response:
        return page(request, "docs.html")

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi() -> dict:
        return app.openapi()

    @app.get("/static/{name}", include_in_schema=False, dependencies=guard)
    async def static(name: str) -> Response:
        if name not in files or name == "login.html":
            raise HTTPException(404, "no such asset")
        return asset(name, PAGE_CSP)

    @app.get("/login", include_in_schema=False)
    async def login_form() -> Response:
        return asset("login.html", LOGIN_CSP)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await read_body(request, 4096)).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        if config.token is None:
            return RedirectResponse("/", 303)
        if not same_token(given, config.token):
            return HTMLResponse(files["login.html"][0].replace(b"<!--error-->", WRONG), 401,
                                headers={**SAFE_HEADERS, "Content-Security-Policy": LOGIN_CSP})
        out = RedirectResponse("/", 303)
        out.set_cookie(COOKIE, given, httponly=True, samesite="strict",
                       secure=request.url.scheme == "https", path="/")
        return out

    @app.post("/logout", include_in_schema=False)
    async def logout() -> Response:
        out = RedirectResponse("/login", 303)
        out.delete_cookie(COOKIE, path="/")
        return out

    @app.get("/v1/images/{image_id:path}/thumb", dependencies=guard,
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}},
                                                 401: {"description": "no token"},
                                                 404: {"description": "not a catalog image id"}})
    async def thumbnail(image_id: str, size: int = Query(320, ge=16, le=640)) -> Response:
        """A catalog image's thumbnail (JPEG, longest side 160, 320 or 640 px): by catalog
        image id only."""
        thumb = await _thumb(thumbs, image_id, size)
        return Response(thumb.jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    @app.get("/v1/images/{image_id:path}", dependencies=guard,
             responses=documented(ImageOut, 401, 404))
    async def image_info(image_id: str) -> dict:
        """A catalog image's size (the page scales match boxes by it) and thumbnail URL."""
        thumb = await _thumb(thumbs, image_id, 320)
        return {"image_id": image_id, "width": thumb.width, "height": thumb.height,
                "thumbnail": f"/v1/images/{image_id}/thumb"}

    @app.post("/v1/localize", dependencies=guard, responses=documented(LocalizeOut, 400, 401, 404,
                                                                       422, 503))
    async def localize(request: Request, reference_id: str = Query(..., min_length=1),
                       query_id: str = "query", homography: str | None = None) -> dict:
        """The edits of the uploaded image (the body, as for /v1/query) against one catalog
        image: numbered regions with their kinds, and an overlay picture (original | copy |
        difference) at the returned `overlay` URL. `homography`: the match's query -> reference
        homography from /v1/query, 9 comma-separated numbers row by row (saves verifying the
        pair again)."""
        try:
            given = parse_homography(homography)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        data = await read_body(request, config.max_upload_bytes)
        if not data:
            raise HTTPException(400, "empty request body: send the image bytes as the body")
        try:
            future = batcher().call(lambda e: localize_upload(
                e, data, reference_id=reference_id, query_id=query_id, homography=given))
        except QueueFull as exc:
            raise HTTPException(503, f"busy ({exc}): retry later",
                                headers={"Retry-After": "1"}) from None
        try:
            found, png = await asyncio.wait_for(asyncio.wrap_future(future),
                                                config.request_timeout)
        except TimeoutError:
            future.cancel()
            raise HTTPException(503, "localization timed out: retry later") from None
        except KeyError:
            raise HTTPException(404, f"no image '{reference_id}' in the catalog") from None
        except DecodeError as exc:
            raise HTTPException(400, f"cannot decode the uploaded image: {exc}") from None
        except LocalizeFailed as exc:
            raise HTTPException(422, f"cannot localize against '{reference_id}': {exc}") from None
        return {**found, "overlay": f"/v1/overlays/{overlays.put(png)}.png"}

    @app.get("/v1/overlays/{key}.png", dependencies=guard, response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def overlay(key: str) -> Response:
        """An overlay made by a recent /v1/localize (the last 64 are kept)."""
        png = overlays.get(key)
        if png is None:
            raise HTTPException(404, "no such overlay (only the most recent are kept)")
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})


WRONG = b'<p class="error" role="alert">Wrong token.</p>'


async def _thumb(thumbs: ThumbnailCache, image_id: str, size: int):  # noqa: ANN202
    try:
        return await asyncio.to_thread(thumbs.get, image_id, size)
    except KeyError:
        raise HTTPException(404, "no image with this id in the catalog") from None
    except DecodeError as exc:
        raise HTTPException(404, f"the catalog image cannot be read now: {exc}") from None
