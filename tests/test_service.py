"""The HTTP service under load and abuse, with a real uvicorn server on loopback and real sockets."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from copytrace.app.service import ServiceConfig, create_app
from copytrace.descriptors.augment import random_copy
from copytrace.pipelines.build import build_index

from photos import PHOTO_NAMES, jpeg_bytes, photo

LIMIT = 2 * 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def index(tmp_path_factory, photos_dir) -> Path:
    root = tmp_path_factory.mktemp("svc") / "index"
    build_index(photos_dir, root, use_ray=False, show_progress=False)
    return root


class _Server:
    def __init__(self, app) -> None:  # noqa: ANN001
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(index):
    config = ServiceConfig(max_upload_bytes=LIMIT, request_timeout=600)  # a busy CI box is slow
    with _Server(create_app(index, config=config)) as url:
        yield url


def _big_copy(name: str = "astronaut", side: int = 2400) -> bytes:
    """A large edited copy: slow to decode and verify."""
    img = Image.fromarray(photo(name)).resize((side, side * 3 // 4), Image.BICUBIC)
    return jpeg_bytes(np.asarray(img)[:, ::-1], 95)


def test_health_answers_while_slow_queries_run(server):
    bodies = [_big_copy(n) for n in ("astronaut", "chelsea", "coffee", "rocket")]
    done: list[float] = []

    def slow(body: bytes) -> int:
        r = httpx.post(f"{server}/v1/query", params={"k": 12, "verify": "full"}, content=body,
                       timeout=300)
        done.append(time.monotonic())
        return r.status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(slow, b) for b in bodies]
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 60
            while client.get(f"{server}/v1/health").json()["queue"] == 0:
                assert time.monotonic() < deadline, "queries never reached the engine"
                time.sleep(0.01)
            latencies = []
            for _ in range(5):
                t = time.monotonic()
                assert client.get(f"{server}/v1/health").status_code == 200
                latencies.append(time.monotonic() - t)
            answered = time.monotonic()
        assert [f.result() for f in futures] == [200] * len(bodies)
    assert max(done) > answered, "the queries finished before health was asked: not a test"
    assert max(latencies) < 0.5, latencies


def test_oversized_upload_is_refused_before_it_is_read_whole(server):
    port = int(server.rsplit(":", 1)[1])
    # Declared too large: refused from the header, after one small piece of the body was sent.
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT * 50}\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode() + b"\xff" * 65536)
        assert s.recv(4096).split(b"\r\n", 1)[0].endswith(b"413 Request Entity Too Large")
    # No length given (chunked): refused once the limit is passed, while the client is still
    # sending (the terminating chunk never comes, so waiting for the whole body would hang).
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"\xff" * 65536
        for _ in range(LIMIT // len(piece) + 2):
            s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        head = s.recv(4096)
    assert head.split(b"\r\n", 1)[0].endswith(b"413 Request Entity Too Large"), head[:200]
    with httpx.Client(timeout=30) as client:  # the server is fine afterwards
        assert client.get(f"{server}/v1/health").status_code == 200


def test_non_images_and_bad_requests_are_4xx_never_500(server):
    data = jpeg_bytes(photo("coins"))
    with httpx.Client(timeout=120) as client:
        def post(content: bytes, **kw) -> httpx.Response:  # noqa: ANN003
            return client.post(f"{server}/v1/query", content=content, **kw)

        assert post(b"hello", headers={"Content-Type": "text/plain"}).status_code == 415
        r = post(b"PK\x03\x04 a zip file, not an image",
                 headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 415 and "not a recognised image format" in r.json()["detail"]
        truncated = post(data[: len(data) // 3])
        assert truncated.status_code == 400 and "truncated" in truncated.json()["detail"]
        assert post(b"").status_code == 400
        assert post(data, params={"verify": "sometimes"}).status_code == 400
        assert post(data, params={"k": 0}).status_code == 422
        ok = post(data, params={"k": 2}, headers={"Content-Type": "image/jpeg"})
        assert ok.status_code == 200 and ok.json()["matches"][0]["reference_id"] == "coins"
        metrics = client.get(f"{server}/metrics").text
    assert 'copytrace_requests_total{endpoint="/v1/query",status="415"}' in metrics
    assert "copytrace_request_seconds_bucket" in metrics and "copytrace_queue_depth" in metrics
    assert 'status="500"' not in metrics


def test_second_pass_switch_reaches_the_engine(server):
    """`second_pass=false` (as `copytrace query --no-second-pass`): the turned astronaut is no
    longer found through its turned view, which the default finds it by (test_rotations)."""
    turned = jpeg_bytes(np.ascontiguousarray(np.rot90(photo("astronaut"), k=1)))

    def views(**params: str) -> dict[str, str]:
        r = httpx.post(f"{server}/v1/query", content=turned, params={"k": 3, **params},
                       timeout=300)
        assert r.status_code == 200, r.text
        return {m["reference_id"]: m["view"] for m in r.json()["matches"]}

    assert views()["astronaut"] == "rot270"
    assert not views(second_pass="false").get("astronaut", "").startswith("rot")
    assert httpx.post(f"{server}/v1/query", content=turned, params={"second_pass": "maybe"},
                      timeout=60).status_code == 422


def test_fifty_concurrent_clients_get_answers_and_no_errors(server):
    rng = random.Random(5)
    names = [PHOTO_NAMES[i % len(PHOTO_NAMES)] for i in range(50)]
    bodies = []
    for name in names:
        copy, _ = random_copy(Image.fromarray(photo(name)), rng, allowed=["crop", "colour", "jpeg"],
                              min_edits=1, max_edits=2)
        bodies.append(jpeg_bytes(copy, 85))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=60)) as c:
            return await asyncio.gather(*[c.post(f"{server}/v1/query", params={"k": 3},
                                                 content=b) for b in bodies])

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses
                                                             if r.status_code != 200][:3]
    tops = [r.json()["matches"][0]["reference_id"] for r in responses]
    assert sum(t == n for t, n in zip(tops, names, strict=True)) >= 45  # random edits


def test_slow_query_times_out_with_503(index):
    app = create_app(index, config=ServiceConfig(request_timeout=0.05))
    with _Server(app) as url, httpx.Client(timeout=60) as client:
        r = client.post(f"{url}/v1/query", params={"verify": "full"}, content=_big_copy())
        assert r.status_code == 503 and "timed out" in r.json()["detail"]
        assert client.get(f"{url}/v1/health").status_code == 200


def test_bearer_token_guards_everything_but_health(index):
    app = create_app(index, config=ServiceConfig(token="s3cret"))
    data = jpeg_bytes(photo("moon"))
    with _Server(app) as url, httpx.Client(timeout=120) as client:
        assert client.get(f"{url}/v1/health").status_code == 200
        assert client.post(f"{url}/v1/query", content=data).status_code == 401
        assert client.get(f"{url}/v1/index").status_code == 401
        assert client.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}
                          ).status_code == 401
        ok = client.post(f"{url}/v1/query", content=data,
                         headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["matches"][0]["reference_id"] == "moon"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (from /proc/net/tcp: hex IP, LISTEN = 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            found.add(socket.inet_ntoa(bytes.fromhex(ip)[::-1]))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_cli_serve_binds_loopback_and_finishes_in_flight_requests_on_sigterm(index):
    port = _free_port()
    env = {**os.environ, "COPYTRACE_TOKEN": ""}
    proc = subprocess.Popen([sys.executable, "-m", "copytrace.app.cli", "serve",
                             "--index", str(index), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
            time.sleep(0.2)
        assert _listening_addresses(port) == {"127.0.0.1"}
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/query",
                                  params={"k": 12, "verify": "full"}, content=_big_copy(),
                                  timeout=300)
            while httpx.get(f"{url}/v1/health", timeout=5).json()["queue"] == 0:
                assert not pending.done()
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            r = pending.result()
        assert r.status_code == 200 and r.json()["matches"][0]["reference_id"] == "astronaut"
        # after the clean shutdown `serve` returns (uvicorn's re-raised SIGTERM is absorbed)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
