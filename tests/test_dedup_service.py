"""The HTTP service, on real photos with a real index and a real server (dedup: test_dedup.py)."""

from __future__ import annotations

import random
import shutil
import socket
import threading
import time

import httpx
import pytest
from PIL import Image

from copytrace.descriptors.augment import random_copy
from copytrace.pipelines.build import build_index

from photos import jpeg_bytes, photo


@pytest.fixture(scope="module")
def dup_index(tmp_path_factory, photos_dir):
    """Photos plus an exact byte copy of one and an edited copy of another."""
    folder = tmp_path_factory.mktemp("dups")
    for p in photos_dir.iterdir():
        shutil.copy(p, folder / p.name)
    shutil.copy(photos_dir / "coffee.jpg", folder / "coffee-again.jpg")
    copy, _ = random_copy(Image.fromarray(photo("astronaut")), random.Random(0),
                          allowed=["crop", "text"], min_edits=2, max_edits=2)
    (folder / "astronaut-edited.jpg").write_bytes(jpeg_bytes(copy, 85))
    index = tmp_path_factory.mktemp("dupidx") / "index"
    build_index(folder, index, use_ray=False, show_progress=False)
    return index


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(dup_index):
    import uvicorn

    from copytrace.app.service.app import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(dup_index), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started and time.time() < deadline:
        time.sleep(0.1)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_http_query_finds_the_original(server):
    copy, _ = random_copy(Image.fromarray(photo("chelsea")), random.Random(1),
                          allowed=["crop", "text"], min_edits=2, max_edits=2)
    with httpx.Client(timeout=120) as client:
        assert client.get(f"{server}/v1/health").json()["status"] == "ok"
        r = client.post(f"{server}/v1/query", params={"k": 3, "verify": "full"},
                        content=jpeg_bytes(copy, 85))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["matches"][0]["reference_id"] == "chelsea"
        assert body["matches"][0]["score"] >= 0.5 and "inliers" in body["matches"][0]
        assert len(body["matches"]) == 3
        bad = client.post(f"{server}/v1/query", content=b"definitely not an image")
        assert bad.status_code == 415 and "cannot decode" in bad.json()["detail"]
        assert client.post(f"{server}/v1/query", content=b"").status_code == 400
        info = client.get(f"{server}/v1/index").json()
        assert info["counts"]["indexed"] == 14
