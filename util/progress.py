"""A rich progress bar on stderr that callers drive with `advance(n)`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(label: str, total: int, *, enabled: bool = True, transient: bool = False
                 ) -> Iterator[Callable[[int], None]]:
    """The one progress bar: `with progress_bar("embedding", n) as advance: ... advance(k)`;
    `transient` clears it when done; disabled, `advance` does nothing."""
    if not enabled:
        yield lambda n: None
        return
    console = Console(stderr=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=transient) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)
