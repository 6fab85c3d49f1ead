"""Test helper: load a page in headless Chromium and report what a user would see break
(console errors, uncaught exceptions, failed loads, images that did not decode).

Built on the shared DevTools pipe client in `devtools.py`; tests skip when no Chromium is
installed (`make test` installs the Debian package when it runs as root).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools import CHROMIUM, DevTools, console_errors


def chromium() -> str | None:
    return CHROMIUM


@dataclass
class PageCheck:
    title: str = ""
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list[dict] = field(default_factory=list)  # src, complete, naturalWidth per <img>

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not i["complete"] or i["naturalWidth"] == 0]


_IMAGES = ("JSON.stringify([...document.images].map(i => ({src: i.getAttribute('src'), "
           "complete: i.complete, naturalWidth: i.naturalWidth})))")


def check_page(url: str, *, timeout: float = 120) -> PageCheck:
    """Open `url` in a fresh headless Chromium, wait for the load event, collect the problems."""
    if CHROMIUM is None:
        raise FileNotFoundError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="copytrace-chromium-") as profile:
        tools = DevTools(Path(profile))
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                tools.send(f"{domain}.enable", session=session)
            tools.send("Page.navigate", {"url": url}, session=session)
            tools.wait_event("Page.loadEventFired", timeout=timeout)

            def evaluate(expression: str):  # noqa: ANN202
                return tools.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                  session=session)["result"]["value"]

            images, title = json.loads(evaluate(_IMAGES)), evaluate("document.title")
            time.sleep(0.3)  # late console / network events
            tools.send("Runtime.evaluate", {"expression": "0"}, session=session)  # drains them
            return PageCheck(title=title, errors=console_errors(tools.events), images=images)
        finally:
            tools.close()
