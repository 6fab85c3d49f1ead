"""Named moments at which a crash test can hold a writer, so `kill -9` lands there every time.

`COPYTRACE_HOLD_AT=manifest-swap:30` makes a writer sleep 30 s just before it swaps the
manifest (its new files written, nothing committed): the commit window of an `index add` or
`remove` is otherwise a few milliseconds, which a test polling from outside hits only by luck.
Unset (always, outside tests), a hold point costs one environment lookup.
"""

from __future__ import annotations

import os
import time

ENV = "COPYTRACE_HOLD_AT"


def hold(moment: str) -> None:
    """Sleep here when `COPYTRACE_HOLD_AT` names this moment (`name:seconds`, default 60 s)."""
    name, _, seconds = os.environ.get(ENV, "").partition(":")
    if name == moment:
        time.sleep(float(seconds or 60))
