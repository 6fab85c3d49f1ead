"""`copytrace eval` and `copytrace bench`: registered through the copytrace.commands entry points."""

from __future__ import annotations

import typer

eval_app = typer.Typer(help="Score predictions (DISC2021 matching track, localization).",
                       no_args_is_help=True)
bench_app = typer.Typer(help="Make benchmark data and measure speed.", no_args_is_help=True)
