"""Load a page in headless Chromium and report what a user would see break: console errors,
uncaught exceptions, failed loads, images that did not decode.

Talks the DevTools protocol over `--remote-debugging-pipe` (fds 3 and 4), so it needs no
websocket client and no browser driver package. Tests skip when no Chromium is installed
(`apt-get install -y chromium` on Debian).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@dataclass
class PageCheck:
    title: str = ""
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list[dict] = field(default_factory=list)  # src, complete, naturalWidth per <img>

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not i["complete"] or i["naturalWidth"] == 0]


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc, self.w, self.r, self.buf, self.next_id = proc, write_fd, read_fd, b"", 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.wait(lambda m: m.get("id") == self.next_id, timeout)

    def wait(self, done, timeout: float) -> dict:  # noqa: ANN001
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(raw)
                if "method" in m:
                    self.events.append(m)
                if done(m):
                    if "error" in m:
                        raise RuntimeError(f"DevTools error: {m['error']}")
                    return m
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("headless Chromium did not answer in time")
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise RuntimeError("headless Chromium exited")
            self.buf += chunk


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e["method"] == "Runtime.exceptionThrown":
            out.append(p.get("exceptionDetails", {}).get("text", "exception"))
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"{p['entry'].get('text', '')} {p['entry'].get('url', '')}".strip())
    return out


_IMAGES = ("JSON.stringify([...document.images].map(i => ({src: i.getAttribute('src'), "
           "complete: i.complete, naturalWidth: i.naturalWidth})))")


def check_page(url: str, *, timeout: float = 60) -> PageCheck:
    """Open `url` in a fresh headless Chromium, wait for the load event, collect the problems."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def fds() -> None:  # the protocol pipe must be fds 3 (commands in) and 4 (replies out)
        a, b = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    with tempfile.TemporaryDirectory(prefix="copytrace-chromium-") as profile:
        proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--remote-debugging-pipe", f"--user-data-dir={profile}",
                                 "--no-first-run", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                close_fds=False, preexec_fn=fds)
        os.close(to_child_r)
        os.close(from_child_w)
        pipe = _Pipe(proc, to_child_w, from_child_r)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
            session = pipe.send("Target.attachToTarget", {"targetId": target["result"]["targetId"],
                                                          "flatten": True})["result"]["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Page.navigate", {"url": url}, session=session)
            pipe.wait(lambda m: m.get("method") == "Page.loadEventFired", timeout)
            images = pipe.send("Runtime.evaluate", {"expression": _IMAGES, "returnByValue": True},
                               session=session)["result"]["result"]["value"]
            title = pipe.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                              session=session)["result"]["result"]["value"]
            return PageCheck(title=title, errors=_errors(pipe.events), images=json.loads(images))
        finally:
            os.close(to_child_w)
            os.close(from_child_r)
            proc.kill()
            proc.wait(timeout=30)
