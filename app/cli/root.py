"""The `copytrace` command tree's two groups, and what every command module shares: the
consoles, common options and the one-line error type."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from copytrace.app.cli.help import StyledGroup

os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(
    help="copytrace: find the originals an image was copied or edited from, at catalog scale.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=StyledGroup,  # PATH/INT metavars, no <bool>, two-column help below 110 columns
)
index_app = typer.Typer(help="Build and inspect indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")

out = Console()
err = Console(stderr=True)

RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", "--address",
                 help="Join a running Ray cluster (e.g. 'auto' or 'ray://head:10001'). "
                      "Default: start an embedded local Ray."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
CacheDir = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Writable folder for the query caches (keypoints, background sample): "
                        "nothing is then written next to the index, which may be read-only.")]


class CommandError(Exception):
    """A command cannot do what was asked; its message is the one line the user sees."""
