"""`copytrace adapt`: learn a query adapter for a new tamper pattern from a few example pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from copytrace.app.cli.root import Quiet, app, out


@app.command("adapt")
def adapt_cmd(
    pairs: Annotated[Path, typer.Argument(help="CSV/Parquet of example pairs: a 'copy' column "
                                               "(path of a copy showing the new pattern) and an "
                                               "'original' column (its catalog image id or "
                                               "path).")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder (gets the adapter "
                                        "as a new version).")],
    name: Annotated[str, typer.Option("--name", help="Adapter name (replaces one of the same "
                                      "name).")],
    pattern: Annotated[str | None, typer.Option(help="What the pattern is, for the card "
                                                "(default: the name).")] = None,
    replay: Annotated[int, typer.Option(min=0, help="Ordinary copies of other catalog images "
                                        "replayed so other patterns keep working.")] = 256,
    steps: Annotated[int, typer.Option(min=1, help="Training steps (full batch).")] = 300,
    device: Annotated[str, typer.Option(help="Device of the descriptor for the example copies "
                                       "('cpu', 'cuda', 'auto').")] = "cpu",
    filters: Annotated[bool, typer.Option("--filters/--no-filters", help="Search a chain of pixel "
                                          "filters run before the model (one more forward "
                                          "pass per query); off: the descriptor map only.")
                       ] = True,
    allow_worse: Annotated[bool, typer.Option("--allow-worse", help="Save the adapter even when "
                                              "copies of pairs left out of its choice do not "
                                              "gain, or ordinary copies lose.")] = False,
    quiet: Quiet = False,
) -> None:
    """Learn a query-side adapter from PAIRS against the index's stored vectors (no re-indexing);
    queries then also search each query's adapted vector ('query --adapter')."""
    from dataclasses import replace

    from copytrace.descriptors import AdapterConfig
    from copytrace.pipelines import AdaptOptions, adapt_index

    r = adapt_index(pairs, index, name=name, pattern=pattern, device=device,
                    options=replace(AdaptOptions(), replay=replay, filters=filters),
                    config=replace(AdapterConfig(), steps=steps), show_progress=not quiet,
                    allow_worse=allow_worse)
    m = r.card.measured
    out.print(f"index {index}: version {r.version}, adapter '{name}' ({r.card.kind}, filter "
              f"'{r.card.input_filter or 'none'}') from {r.card.pairs} pairs "
              f"({r.card.replay} replayed copies) in {r.card.seconds:.1f} s, "
              f"{r.card.bytes / 1024:.0f} KiB; copies of pairs left out of its choice: top-1 "
              f"{m['held_out_top1_before']:.2f} -> {m['held_out_top1_after']:.2f}, mean "
              f"reciprocal rank {m['held_out_rr_before']:.3f} -> {m['held_out_rr_after']:.3f}; "
              f"replayed copies top-1 {m['replay_top1_before']:.2f} -> "
              f"{m['replay_top1_after']:.2f}",
              markup=False, highlight=False)
