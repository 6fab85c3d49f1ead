"""`copytrace dedup`, `copytrace hash` and `copytrace sql`: dedup audits, PDQ hashes, SQL over an audit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from copytrace.app.cli.output import OutputFormat, print_table
from copytrace.app.cli.root import Quiet, RayAddress, app, err, out


@app.command("dedup")
def dedup_cmd(
    images_or_index: Annotated[Path, typer.Argument(
        help="Folder of images (indexed into AUDIT_DIR/index first) or an index folder; with "
             "--against, the NEW images to check.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Audit folder: pairs.parquet, "
                                          "clusters.parquet, report.html.")],
    threshold: Annotated[float, typer.Option(help="Calibrated score from which a pair counts as "
                                                  "a duplicate (0.5 = decision point).")] = 0.5,
    keep: Annotated[str, typer.Option(help="Which image of a cluster to keep: largest, oldest "
                                      "or first.")] = "largest",
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours looked at per image.")] = 5,
    against: Annotated[Path | None, typer.Option(help="Index: report which of the new images "
                                                 "duplicate it (the catalog is not re-audited)."
                                                 )] = None,
    match_hashes: Annotated[Path | None, typer.Option(
        help="PDQ hash list (one 64-hex hash per line, CSV ok): write hash_matches.parquet with "
             "every image within Hamming distance 31.")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html.")
                      ] = True,
    ray: Annotated[bool | None, typer.Option("--ray/--no-ray", help="Self-join and verify as "
                                             "Ray tasks (default: for large audits).")] = None,
    ray_address: RayAddress = None,
    quiet: Quiet = False,
) -> None:
    """Dedup audit: exact, PDQ and verified near duplicates as clusters, with an HTML report.

    Evidence must cover the content: pairs that only share a frame, caption band, logo or
    watermark common in the catalog are not duplicates. Query the results with
    `copytrace sql AUDIT_DIR "SELECT ..."`.
    """
    from copytrace.pipelines.dedup import dedup, write_hash_matches

    if keep not in ("largest", "oldest", "first"):
        raise typer.BadParameter("--keep must be largest, oldest or first")
    if match_hashes is not None:
        from copytrace.matching import read_hash_list

        read_hash_list(match_hashes)  # a bad list fails now, not after the audit
    if against is not None:
        from copytrace.pipelines.dedup import dedup_against

        result = dedup_against(images_or_index, against, out_dir, threshold=threshold, keep=keep,
                               k=k, report=report, use_ray=ray, ray_address=ray_address,
                               show_progress=not quiet)
    else:
        result = dedup(images_or_index, out_dir, threshold=threshold, keep=keep, k=k,
                       report=report, use_ray=ray, ray_address=ray_address,
                       show_progress=not quiet)
    c = result.counts
    out.print(f"{result.images} images: {len(result.pairs)} duplicate pairs ({c.get('exact', 0)} "
              f"exact, {c.get('pdq', 0)} PDQ, {c.get('near', 0)} near), {len(result.clusters)} "
              f"clusters, {result.duplicates_to_drop} images to drop; "
              f"{c.get('rejected_template', 0)} pairs rejected as template-only")
    if match_hashes is not None:
        n = write_hash_matches(result, match_hashes)
        out.print(f"{n} images match the hash list ({out_dir / 'hash_matches.parquet'})")
    out.print(f"audit written to {out_dir}" + (f" (open {out_dir / 'report.html'})" if report
                                                else ""))


@app.command("hash")
def hash_cmd(
    images: Annotated[Path, typer.Argument(help="Image, folder or listing to hash, or an index "
                                                "(read from its catalog's pdq column when it "
                                                "was built with --pdq).")],
    format: Annotated[str, typer.Option("--format", help="pdq-hex: CSV pdq_hex,image_id,quality "
                                        "(ThreatExchange-style hex).")] = "pdq-hex",
    quiet: Quiet = False,
) -> None:
    """PDQ hashes of images, as CSV on stdout: copytrace hash IMAGES > hashes.csv"""
    from copytrace.pipelines import HashFormat, hash_images, hashes_csv

    HashFormat(format)
    hashes = hash_images(images, show_progress=not quiet)
    sys.stdout.write(hashes_csv(hashes))
    for image_id, reason in hashes.failed.items():
        err.print(f"no hash for '{image_id}': {reason} (skipped)", markup=False, highlight=False)


@app.command("sql")
def sql_cmd(audit_dir: Annotated[Path, typer.Argument(help="Dedup audit folder.")],
            statement: Annotated[str, typer.Argument(help="SQL over pairs, clusters, candidates, "
                                                     "hash_matches, catalog, pdq.")],
            fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or "
                                                      "csv.")] = OutputFormat.TABLE) -> None:
    """DuckDB SQL over a dedup audit and its index's catalog (printed as `index sql` prints)."""
    from copytrace.pipelines.dedup import audit_sql

    print_table(audit_sql(audit_dir, statement), fmt, console=out)


