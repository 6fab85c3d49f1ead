"""`copytrace eval` and `copytrace bench`: registered through the copytrace.commands entry points."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from copytrace.app.cli.output import Column, OutputFormat, print_rows

eval_app = typer.Typer(help="Score predictions (DISC2021 matching track, localization).",
                       no_args_is_help=True)
bench_app = typer.Typer(help="Make benchmark data and measure speed.", no_args_is_help=True)
out = Console()


@eval_app.command("disc")
def eval_disc_cmd(
    ground_truth: Annotated[Path, typer.Option("--ground-truth", "--gt", metavar="CSV",
                                               help="query_id,reference_id (empty reference = "
                                                    "the query is not a copy).")],
    predictions: Annotated[Path | None, typer.Option(metavar="CSV", help="query_id,reference_id,"
                                                     "score to score.")] = None,
    queries: Annotated[Path | None, typer.Option(metavar="PATH", help="Query images: with "
                                                 "--references, index + query + score in one go; "
                                                 "with --predictions, thumbnails for --report.")]
    = None,
    references: Annotated[Path | None, typer.Option(metavar="PATH", help="Reference images.")]
    = None,
    work: Annotated[Path | None, typer.Option(metavar="DIR", help="Folder for the index and "
                                              "predictions (reused when rerun).")] = None,
    k: Annotated[int, typer.Option("-k", metavar="INT", help="Candidates per query.")] = 10,
    model: Annotated[str, typer.Option(metavar="NAME", help="Descriptor for the index: "
                                       "'default', a shipped name or a model file.")] = "default",
    ray_address: Annotated[str | None, typer.Option("--ray-address", metavar="ADDR",
                                                    help="Ray cluster to join (default: "
                                                         "local).")] = None,
    report: Annotated[Path | None, typer.Option(metavar="DIR", help="Write an HTML report: PR "
                                                "curve, score histograms, worst misses and false "
                                                "positives with thumbnails.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="How to print the "
                                              "metrics.")] = OutputFormat.TABLE,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Same as --format json.")]
    = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No progress bars.")]
    = False,
) -> None:
    """DISC2021 matching-track metrics: µAP, recall at precision 0.9, acc@1 (ISC2021 definitions)."""
    from copytrace.benchmarks.disc_eval import eval_disc, metric_rows

    result = eval_disc(ground_truth, predictions=predictions, queries=queries,
                       references=references, work=work, k=k, model=model,
                       ray_address=ray_address, show_progress=not quiet)
    page = None
    if report is not None and result.predictions is not None:
        from copytrace.benchmarks.disc_io import read_predictions
        from copytrace.benchmarks.eval_report import write_disc_report

        page = write_disc_report(report, ground_truth, read_predictions(result.predictions),
                                 queries=queries, references=references)
    fmt = OutputFormat.JSON if as_json else fmt
    payload = {**result.metrics.as_dict(), "predictions_file": str(result.predictions),
               **({"report": str(page)} if page else {})}
    print_rows(*metric_rows({"copytrace": result.metrics}), fmt, console=out, json_payload=payload)
    if fmt is OutputFormat.TABLE:
        from copytrace.benchmarks.eval_report import LEGEND

        out.print("; ".join(f"{k}: {v.split(':')[0]}" for k, v in LEGEND.items()), style="dim",
                  highlight=False)
        if result.index is not None:
            out.print(f"index: {result.index}  predictions: {result.predictions}", highlight=False)
        if page is not None:
            out.print(f"report: {page}", highlight=False)


@eval_app.command("localize")
def eval_localize_report_cmd(
    triples: Annotated[Path, typer.Argument(help="CSV: query (or forged/tampered), original, mask "
                                            "[, kind].")],
    root: Annotated[Path | None, typer.Option(metavar="DIR", help="Paths are relative to this "
                                              "(default: the CSV's folder).")] = None,
    predictions: Annotated[Path | None, typer.Option(metavar="DIR", help="Score these masks (<query "
                                                     "stem>[.mask].png) instead of running "
                                                     "localize.")] = None,
    max_side: Annotated[int, typer.Option(help="Analysis resolution (query's longer side).")] = 1024,
    report: Annotated[Path | None, typer.Option(metavar="DIR", help="Write an HTML report: F1 per "
                                                "kind, overlays of the worst pairs.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="How to print the summary "
                                              "(json adds every image).")] = OutputFormat.TABLE,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Pixel F1, IoU and region hit rate (box IoU >= 0.5) of edit masks, averaged over images."""
    from copytrace.benchmarks.localize_eval import eval_localize, summary_table

    summary, scores = eval_localize(triples, root=root, predictions=predictions, max_side=max_side)
    page = None
    if report is not None:
        from copytrace.benchmarks.localize_report import write_localize_report

        page = write_localize_report(report, triples, scores, root=root, max_side=max_side)
    if as_json or fmt is OutputFormat.JSON:
        typer.echo(json.dumps({"summary": summary.as_dict(), "images": [s.__dict__ for s in scores],
                               **({"report": str(page)} if page else {})}))
        return
    for s in scores:
        if s.error:
            typer.echo(f"failed {s.name}: {s.error}", err=True)
    if fmt is OutputFormat.CSV:
        row = {"method": "copytrace localize", **summary.as_dict()}
        print_rows([row], [Column(k) for k in row], fmt, console=out)
        return
    out.print(summary_table({"copytrace localize": summary}), markup=False, highlight=False)
    if page is not None:
        out.print(f"report: {page}", highlight=False)


@bench_app.command("make-disc")
def make_disc_cmd(
    images: Annotated[Path, typer.Option(help="Folder of photos (sorted by path).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Benchmark folder to write.")],
    seed: Annotated[int, typer.Option(help="Seed of the random edits and splits.")] = 0,
    skip: Annotated[int, typer.Option(help="Skip the first N photos.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use at most N photos.")] = None,
    reference_fraction: Annotated[float, typer.Option(help="Share of photos that become "
                                                      "references; the rest give negatives.")]
    = 0.75,
    hard_negatives: Annotated[Path | None, typer.Option(help="groups CSV (file,group), e.g. "
                                                        "UKBench: other views = hard negatives.")]
    = None,
    strength: Annotated[float, typer.Option(help="Edit strength (1 = DISC-like).")] = 1.0,
) -> None:
    """Make DISC-style queries (edited copies), references and gt.csv, reproducibly."""
    from copytrace.benchmarks.make_disc import make_disc

    summary = make_disc(images, out_dir, seed=seed, skip=skip, limit=limit,
                        reference_fraction=reference_fraction, hard_negatives=hard_negatives,
                        strength=strength)
    out.print_json(json.dumps({k: str(v) if isinstance(v, Path) else v
                               for k, v in asdict(summary).items()}))
