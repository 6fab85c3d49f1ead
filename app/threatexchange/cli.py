"""`copytrace tx bank`: a catalog as a ThreatExchange hash bank. Plugged into the CLI through the
`copytrace.commands` entry-point group; imports nothing heavy until the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

tx_app = typer.Typer(help="copytrace and python-threatexchange / HMA: hash banks.",
                     no_args_is_help=True)


@tx_app.command("bank")
def bank_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bank file to write ('<signal type> "
                                      "<hash>' lines; OUT.ids.csv maps hashes to image ids).")],
    signal: Annotated[list[str] | None, typer.Option(help="copytrace and/or pdq (default: both).")]
    = None,
) -> None:
    """Write the index's images as a hash bank for `threatexchange` (local_file collab) or an
    HMA bank: copytrace descriptor hashes from the stored vectors, PDQ from the catalog."""
    from copytrace.app.threatexchange import BankSignal, write_bank

    try:
        chosen = tuple(BankSignal(s) for s in (signal or [s.value for s in BankSignal]))
    except ValueError:
        raise typer.BadParameter(f"--signal: one of {', '.join(s.value for s in BankSignal)}") from None
    n = write_bank(index, out, signals=chosen)
    typer.echo(f"{n} hashes -> {out} (image ids: {out}.ids.csv)")
