"""The analyst's web page on a real `copytrace serve` (subprocess, real model, real index of the
scikit-image photos, a token), driven by a real headless Chromium: nothing is served without
the token, the login form lets a person in, an uploaded edited copy finds its original first
with its thumbnail and the localized-edits overlay loaded, and the page logs no errors.

Screenshots go to the test's tmp folder, and also to $COPYTRACE_SHOTS when set.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from devtools import CHROMIUM, DevTools, console_errors
from PIL import Image

from copytrace.pipelines.build import build_index

from photos import jpeg_bytes, photo

TOKEN = "s3cret-token-for-the-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edited_copy(folder: Path) -> Path:
    """The astronaut, cropped, with a patch of another photo pasted in: a copy with one edit."""
    a = photo("astronaut").copy()
    a[60:160, 300:420] = photo("coffee")[100:200, 100:220]
    path = folder / "suspicious-copy.jpg"
    path.write_bytes(jpeg_bytes(a[20:500, 10:490], 85))
    return path


def unrelated_image(folder: Path) -> Path:
    """A made picture (rings on a gradient) that is in no catalog."""
    y, x = np.mgrid[0:360, 0:480]
    rings = (np.sin(np.hypot(x - 200, y - 150) / 9.0) > 0) * 120
    rgb = np.stack([x * 255 // 480, rings + y * 100 // 360, 255 - x * 255 // 480], -1)
    path = folder / "unrelated.png"
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, photos_dir):
    """One real `copytrace serve --token` for the module."""
    root = tmp_path_factory.mktemp("web")
    build_index(photos_dir, root / "index", use_ray=False, show_progress=False)
    port = _free_port()
    env = {**os.environ, "COPYTRACE_TOKEN": TOKEN}
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "copytrace.app.cli", "serve", "--index",
                             str(root / "index"), "--port", str(port), "--timeout", "300"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, (root / "serve.log").read_text()
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.2)
    yield url, root
    proc.terminate()
    proc.wait(timeout=60)
    log.close()


def test_nothing_is_served_without_the_token(server):
    url, _ = server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=60) as c:
        page = c.get("/")
        assert page.status_code == 401 and 'name="token"' in page.text and "query.js" not in page.text
        for path in ("/index", "/docs"):
            assert c.get(path).status_code == 401
        for path in ("/static/query.js", "/static/style.css", "/v1/images/astronaut/thumb",
                     "/v1/images/astronaut", "/v1/index", "/openapi.json", "/metrics"):
            assert c.get(path).status_code == 401, path
        assert c.post("/v1/localize", params={"reference_id": "astronaut"},
                      content=b"x").status_code == 401
        assert c.get("/v1/images/astronaut/thumb", cookies={"copytrace_token": "wrong"}).status_code == 401
        assert c.post("/login", data={"token": "wrong"}).status_code == 401
        assert c.get("/v1/health").status_code == 200

        # With the header: the image by id, resized here; unknown ids and traversal are 404.
        thumb = c.get("/v1/images/astronaut/thumb", params={"size": 160}, headers=auth)
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.content)).size) == 160
        for bad in ("nope", "..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "astronaut.jpg"):
            assert c.get(f"/v1/images/{bad}/thumb", headers=auth).status_code == 404, bad
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20) as s:
        s.sendall(f"GET /v1/images/../../../../etc/passwd/thumb HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
        assert s.recv(4096).split(b"\r\n", 1)[0].split()[1] == b"404"


def test_openapi_documents_the_json_api(server):
    url, _ = server
    spec = httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    query = spec["paths"]["/v1/query"]["post"]
    assert query["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/QueryOut")
    match = spec["components"]["schemas"]["MatchOut"]
    assert {"reference_id", "score", "verified", "decided_by_global_score"} <= set(match["properties"])
    assert match["examples"][0]["reference_id"]
    assert {"/v1/localize", "/v1/index", "/v1/images/{image_id}/thumb"} <= set(spec["paths"])


class Browser:
    """One headless Chromium tab over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        self.tools = DevTools(profile)
        target = self.tools.send("Target.createTarget", {"url": "about:blank"},
                                 timeout=120)["targetId"]
        self.session = self.tools.send("Target.attachToTarget",
                                       {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "DOM"):
            self.send(f"{domain}.enable")
        self.errors: list[str] = []

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self.tools.send(method, params, session=self.session, timeout=timeout)

    def settle(self) -> None:
        """Move what the page reported so far into `errors` and forget the events."""
        self.send("Runtime.evaluate", {"expression": "0"})
        self.errors += console_errors(self.tools.events)
        self.tools.events.clear()

    def goto(self, url: str, width: int = 1280) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
        self.settle()
        self.send("Page.navigate", {"url": url})
        self.tools.wait_event("Page.loadEventFired", timeout=120)

    def js(self, expression: str):  # noqa: ANN201
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise RuntimeError(json.dumps(reply["exceptionDetails"])[:500])
        return reply["result"].get("value")

    def wait(self, expression: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while not self.js(expression):
            assert time.time() < deadline, f"timed out waiting for: {expression}"
            time.sleep(0.2)

    def upload(self, selector: str, *paths: Path) -> None:
        node = self.send("Runtime.evaluate", {"expression": f"document.querySelector('{selector}')"})
        self.send("DOM.setFileInputFiles", {"files": [str(p) for p in paths],
                                            "objectId": node["result"]["objectId"]})

    def screenshot(self, path: Path) -> Path:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        self.tools.close()


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="copytrace-chromium-") as profile:
        b = Browser(Path(profile))
        try:
            yield b
        finally:
            b.close()


def shots_dir(tmp_path: Path) -> list[Path]:
    extra = os.environ.get("COPYTRACE_SHOTS")
    return [tmp_path, *([Path(extra)] if extra else [])]


def save_shot(browser: Browser, tmp_path: Path, name: str) -> None:
    first = browser.screenshot(tmp_path / name)
    for folder in shots_dir(tmp_path)[1:]:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, folder / name)


def login(browser: Browser, url: str) -> None:
    """Through the page's own form, as a person would."""
    browser.goto(f"{url}/")
    assert browser.js("document.title") == "copytrace — sign in"
    assert not browser.js("!!document.querySelector('#files')"), "the page was served without the token"
    browser.settle()
    browser.errors.clear()  # the refused page itself is logged as a failed (401) load
    browser.js(f"document.getElementById('token').value = {json.dumps(TOKEN)}; "
               "document.querySelector('form').submit(); true")
    browser.wait("document.title.startsWith('copytrace — find')")
    browser.wait("document.readyState === 'complete'")


def test_the_page_finds_the_copy_and_shows_its_edits(server, browser, tmp_path):
    url, _ = server
    login(browser, url)
    browser.wait("document.getElementById('summary').textContent.includes('12 images')", 60)
    browser.upload("#files", edited_copy(tmp_path), unrelated_image(tmp_path))
    browser.wait("[...document.querySelectorAll('article.query')].map(q => q.dataset.state).join() "
                 "=== 'done,done'")
    assert browser.js("document.querySelector('#q2 h2').textContent") == "unrelated.png"
    assert browser.js("document.getElementById('q2').dataset.verdict") == "no-copy"
    state = browser.js("""(() => {
        const q = document.getElementById('q1');
        const first = q.querySelector('.match');
        return {verdict: q.dataset.verdict, status: q.querySelector('.status').textContent,
                first: first.querySelector('.ref').textContent,
                firstVerdict: first.querySelector('.verdict').textContent,
                how: first.querySelector('.how').textContent,
                cards: q.querySelectorAll('.match').length,
                queryBox: !!q.querySelector('.query-fig .boxes rect'),
                downloads: [...q.querySelectorAll('a.json')].map(a => a.download)};
    })()""")
    assert state["first"] == "astronaut", state
    assert state["verdict"] == "copy" and state["firstVerdict"] == "copy", state
    assert state["how"].startswith(("verified by keypoints", "decided by the global score")), state
    assert state["cards"] == 5 and state["queryBox"], state
    browser.wait("document.querySelector('.overlay-img')?.complete === true")
    browser.wait("document.querySelectorAll('#q1 .match .boxes rect').length > 0", 30)
    browser.wait("[...document.images].every(i => i.complete)", 30)
    images = browser.js("""[...document.querySelectorAll('#q1 :is(.match .thumb, .overlay-img, .query-img)')]
        .map(i => ({cls: i.className, w: i.naturalWidth, done: i.complete}))""")
    assert browser.js("[...document.images].every(i => i.naturalWidth > 0)"), "an image did not load"
    assert images[0]["cls"] == "query-img" and all(i["done"] and i["w"] > 0 for i in images), images
    overlay = next(i for i in images if i["cls"] == "overlay-img")
    assert overlay["w"] > 600  # original | copy | difference
    regions = browser.js("[...document.querySelectorAll('.regions .region')].map(r => r.textContent)")
    assert any("added" in r for r in regions), regions  # the pasted patch
    save_shot(browser, tmp_path, "query-copy-1280.png")

    browser.goto(f"{url}/", width=390)  # phone width: the same page, one column
    browser.upload("#files", edited_copy(tmp_path))
    browser.wait("document.querySelector('article.query')?.dataset.state === 'done' && "
                 "document.querySelector('.overlay-img')?.complete")
    assert browser.js("document.documentElement.scrollWidth <= 390 + 1"), "horizontal scroll on a phone"
    save_shot(browser, tmp_path, "query-copy-phone.png")

    browser.goto(f"{url}/index")
    browser.wait("document.querySelectorAll('#index .card').length >= 5", 30)
    text = browser.js("document.getElementById('index').textContent")
    assert "copytrace-sscd-lite0" in text and "Flat" in text, text[:500]
    save_shot(browser, tmp_path, "index-page.png")

    browser.goto(f"{url}/docs")
    browser.wait("document.querySelectorAll('#api .op').length >= 5", 30)
    save_shot(browser, tmp_path, "api-docs.png")
    browser.settle()
    assert not browser.errors, browser.errors


def test_the_page_shows_which_photo_was_pasted_into_which(server, browser, tmp_path):
    """A query holding two catalog photos (the astronaut pasted into coffee): both cards say
    copy, with their role next to the verdict (`matching.roles`)."""
    url, _ = server
    login(browser, url)
    composite = Image.fromarray(photo("coffee"))
    composite.paste(Image.fromarray(photo("astronaut")).resize((210, 210)), (330, 100))
    path = tmp_path / "composite.jpg"
    path.write_bytes(jpeg_bytes(composite, 90))
    browser.upload("#files", path)
    browser.wait("document.querySelector('article.query')?.dataset.state === 'done'", 60)
    verdicts = browser.js("""Object.fromEntries([...document.querySelectorAll('.match')].map(m =>
        [m.querySelector('.ref').textContent, m.querySelector('.verdict').textContent]))""")
    assert verdicts["astronaut"] == "copy · inserted", verdicts
    assert verdicts["coffee"] == "copy · background", verdicts
    assert all("·" not in v for k, v in verdicts.items() if k not in ("astronaut", "coffee"))


def test_page_query_matches_the_json_api(server, tmp_path):
    """The page's first call is the JSON API itself: same image, same answer."""
    url, _ = server
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}
    body = edited_copy(tmp_path).read_bytes()
    a = httpx.post(f"{url}/v1/query", params={"k": 5}, content=body, headers=auth, timeout=300).json()
    found = httpx.post(f"{url}/v1/localize", params={"reference_id": a["matches"][0]["reference_id"]},
                       content=body, headers=auth, timeout=300)
    assert found.status_code == 200, found.text
    loc = found.json()
    assert "original" not in loc and "query" not in loc  # no server paths
    png = httpx.get(f"{url}{loc['overlay']}", headers=auth)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert httpx.get(f"{url}/v1/overlays/not-a-key.png", headers=auth).status_code == 404
    unknown = httpx.post(f"{url}/v1/localize", params={"reference_id": "../etc/passwd"},
                         content=body, headers=auth, timeout=300)
    assert unknown.status_code == 404
    bad = httpx.post(f"{url}/v1/localize", params={"reference_id": "astronaut", "homography": "1,2"},
                     content=body, headers=auth, timeout=300)
    assert bad.status_code == 400 and "homography" in bad.text
    assert a["matches"][0]["reference_id"] == "astronaut" and a["matches"][0]["score"] >= 0.5


def test_thumbnail_cache_is_bounded_and_reads_catalog_ids_only(photos_dir):
    from copytrace.app.service.thumbs import ThumbnailCache

    asked: list[str] = []

    def uris(image_id: str) -> str | None:
        asked.append(image_id)
        return str(photos_dir / f"{image_id}.jpg") if image_id in {"astronaut", "coffee", "rocket"} else None

    cache = ThumbnailCache(uris, max_bytes=40_000)
    for name in ("astronaut", "coffee", "rocket", "astronaut"):
        thumb = cache.get(name, 300)  # snaps to 320
        assert max(Image.open(io.BytesIO(thumb.jpeg)).size) == 320
        assert cache.nbytes <= 40_000
    assert (thumb.width, thumb.height) == (512, 512)
    with pytest.raises(KeyError):
        cache.get("../photos/astronaut")
    assert asked[-1] == "../photos/astronaut"  # looked up as an id, never opened as a path
