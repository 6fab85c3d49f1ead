"""`copytrace query`, `localize` and `localize-batch`: find the originals, show the edits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from copytrace.app.cli.output import (
    HASH_MATCH_COLUMNS,
    QUERY_COLUMNS,
    OutputFormat,
    print_rows,
    query_rows,
)
from copytrace.app.cli.root import CacheDir, CommandError, Quiet, RayAddress, app, err, out


@app.command("query")
def query_cmd(
    query_path: Annotated[Path, typer.Argument(help="An image, a folder of images, or a listing.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Candidates per query.")] = 10,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the ISC2021 CSV "
                                                "(query_id,reference_id,score).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table (80 columns; "
                                              "boxes and homography in json), json (every "
                                              "match with its evidence) or csv.")]
    = OutputFormat.TABLE,
    model: Annotated[str | None, typer.Option(help="Override the index's model (must be the "
                                                   "same weights).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model forward.")] = 32,
    device: Annotated[str, typer.Option(help="'auto' (GPU if present), 'cpu' or 'cuda'.")]
    = "auto",
    ray: Annotated[bool | None, typer.Option("--ray/--no-ray", help="Default: Ray for "
                                             "large batches, in-process otherwise.")] = None,
    ray_address: RayAddress = None,
    quiet: Quiet = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the top candidates "
                                         "with local features and geometry (inliers, "
                                         "homography, matched boxes).")] = True,
    verify_k: Annotated[int | None, typer.Option(help="Candidates verified and re-ranked per "
                                                 "query (default: -k, at least 10, and 20 for "
                                                 "a query none of whose first 10 the global "
                                                 "score accepts).")] = None,
    full_verify: Annotated[bool, typer.Option("--full-verify", help="Verify every top "
                                              "candidate (default: only those the calibrated "
                                              "global score leaves undecided).")] = False,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Normalize "
                                            "similarities against the index's background "
                                            "set.")] = True,
    expand: Annotated[bool, typer.Option("--expand/--no-expand", help="Also search crops of "
                                         "the query (finds images pasted into it).")] = True,
    second_pass: Annotated[bool, typer.Option("--second-pass/--no-second-pass", help="For "
                                              "queries with nothing confident, also search "
                                              "the query turned 90/180/270 degrees and its "
                                              "small framed regions (screenshots, small "
                                              "pastes); about 2x the time per query on a "
                                              "large catalog.")] = True,
    background: Annotated[Path | None, typer.Option(help="Images known NOT to be originals of "
                                                    "the queries: embedded once and stored with "
                                                    "the index for score normalization "
                                                    "(default: a catalog sample).")] = None,
    localize: Annotated[Path | None, typer.Option("--localize", help="Folder for edit masks, "
                                                  "overlays and region JSON of each query vs "
                                                  "its top match (when it is a copy).")] = None,
    root: Annotated[Path | None, typer.Option(help="Refuse queries (and paths in a listing) "
                                              "outside this folder.")] = None,
    cache_dir: CacheDir = None,
    distributed: Annotated[bool, typer.Option("--distributed", help="Hold the FAISS shards in "
                                              "Ray actors (on --ray-address, else local Ray) "
                                              "and merge their top k.")] = False,
    shard_actors: Annotated[int, typer.Option(min=1, help="Ray actors holding shards, with "
                                              "--distributed.")] = 2,
    match_hashes: Annotated[Path | None, typer.Option(
        "--match-hashes", help="PDQ hash list (one 64-hex hash per line, CSV ok; "
        "ThreatExchange style): also report each query within Hamming distance 31 of a listed "
        "hash, as a second table ('hash_matches' of each query with --format json; on stderr "
        "with --format csv or --output).")] = None,
    adapter: Annotated[str, typer.Option("--adapter", help="Query adapters of the index "
                                         "searched as extra views: 'all' (default), 'none' "
                                         "(plain views only) or NAME[,NAME] ('copytrace "
                                         "adapt').")] = "all",
) -> None:
    """Find the originals of each query image; score in [0, 1], >= 0.5 means a copy."""
    from copytrace.pipelines import query_index

    if match_hashes is not None:
        from copytrace.matching import read_hash_list

        read_hash_list(match_hashes)  # a bad list fails now, not after the queries
    run = query_index(query_path, index, k=k, output=output, model=model,
                      batch_size=batch_size, device=device, use_ray=ray,
                      ray_address=ray_address, show_progress=not quiet and len(sys.argv) > 0,
                      verify=("full" if full_verify else True) if verify else False,
                      verify_k=verify_k, normalize=normalize, expand=expand,
                      second_pass=second_pass,
                      background=background, root=root, cache_dir=cache_dir,
                      shard_actors=shard_actors if distributed else 0, localize=localize,
                      adapters=adapter)
    results = run.results
    _fail_without_queries(query_path, results)
    for r in results:
        if r.error:
            err.print(f"[red]cannot decode[/red] '{r.uri}': {r.error} (skipped)")
    if localize is not None:
        for o in run.localized:
            err.print(f"{o.query_id} vs {o.reference_id}: " + (
                f"[red]not localized[/red]: {o.error}" if o.error else
                f"{o.regions} edited region(s), edited score {o.edited:.2f}, mask {o.mask}"))
    fmt = OutputFormat.JSON if as_json else fmt
    listed = _hash_list_rows(query_path, match_hashes, quiet=quiet)
    if output is not None:
        out.print(f"wrote {sum(len(r.matches) for r in results)} predictions for "
                  f"{len(results)} queries to {output}")
    else:
        payload = [r.as_json() | ({} if listed is None else {"hash_matches": [
            h for h in listed if h["query_id"] == r.query_id]}) for r in results]
        print_rows(query_rows(results), QUERY_COLUMNS, fmt, console=out, json_payload=payload,
                   group="query_id")
    if listed is not None and (output is not None or fmt is not OutputFormat.JSON):
        print_rows(listed, HASH_MATCH_COLUMNS, OutputFormat.TABLE,
                   console=out if output is None and fmt is OutputFormat.TABLE else err,
                   title=f"hash list matches ({len({h['query_id'] for h in listed})} of "
                         f"{len(results)} queries)", group="query_id")


def _hash_list_rows(query_path: Path, hash_list: Path | None, *, quiet: bool) -> list[dict] | None:
    """The queries' PDQ matches in a hash list (None without a list)."""
    if hash_list is None:
        return None
    from copytrace.pipelines import hash_images, match_hash_list

    hashes = hash_images(query_path, show_progress=not quiet)
    table = match_hash_list(hashes.ids, hashes.pdq, hash_list)
    return [{"query_id": r.pop("image_id"), **r} for r in table.to_pylist()]


def _fail_without_queries(query_path: Path, results: list) -> None:
    """No readable query at all is an error (exit 2), not an empty table."""
    if not results:
        raise CommandError(f"no images found in '{query_path}'")
    if all(r.error for r in results):
        if len(results) == 1:
            raise CommandError(f"cannot read query '{results[0].uri}': {results[0].error}")
        raise CommandError(f"none of the {len(results)} queries in '{query_path}' could be read "
                           f"(e.g. '{results[0].uri}': {results[0].error})")


@app.command("localize")
def localize_cmd(
    query: Annotated[Path, typer.Argument(help="The copy (query image).")],
    original: Annotated[Path, typer.Argument(help="Its matched original.")],
    mask: Annotated[Path | None, typer.Option("--mask", help="Write a query-sized PNG, 255 on "
                                              "edits (give at least one of --mask, --overlay, "
                                              "--json).")] = None,
    overlay: Annotated[Path | None, typer.Option("--overlay", help="Write original | query | "
                                                 "heatmap as a PNG.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write regions and scores as "
                                                  "JSON.")] = None,
    max_side: Annotated[int, typer.Option(help="Analysis resolution (query's longer side).")] = 1024,
    assume_copy: Annotated[bool, typer.Option("--assume-copy", help="The pair is known to be a "
                                              "copy: always write a mask (best-guess registration, "
                                              "low confidence, when nothing else lines them up).")]
    = False,
) -> None:
    """Show where QUERY was edited relative to ORIGINAL (spliced, removed, moved, added)."""
    from copytrace.pipelines import localize_copy as localize

    r = localize(query, original, mask=mask, overlay=overlay, json_out=json_out, max_side=max_side,
                 assume_copy=assume_copy)
    edits = r.edit_regions
    kinds = ", ".join(f"{x.kind} {x.confidence:.2f}" for x in edits)
    out.print(f"edited {r.edited:.3f}: {len(edits)} edit region(s) over {r.edited_fraction:.2%} of the "
              f"query{f' ({kinds})' if kinds else ''}, added content {r.added_fraction:.2%}; registered by "
              f"{r.registration.method} (confidence {r.registration.confidence:.2f})"
              + "".join(f"; {name} {path}" for name, path in
                        (("mask", mask), ("overlay", overlay), ("json", json_out)) if path))


@app.command("localize-batch")
def localize_batch_cmd(
    predictions: Annotated[Path, typer.Option(help="CSV query_id,reference_id,score.")],
    queries: Annotated[Path, typer.Option(help="Query folder or listing (ids = file stems).")],
    out: Annotated[Path, typer.Option(help="Output folder (masks, JSON, localize.csv).")],
    references: Annotated[Path | None, typer.Option(help="Reference folder or listing.")] = None,
    index: Annotated[Path | None, typer.Option("--index", "-i", help="Resolve reference ids "
                                               "through this index's catalog.")] = None,
    top: Annotated[int, typer.Option(help="Pairs per query, best score first (0: all).")] = 1,
    min_score: Annotated[float | None, typer.Option(help="Skip predictions below this.")] = None,
    overlay: Annotated[bool, typer.Option(help="Also write overlays.")] = False,
    max_side: Annotated[int, typer.Option(help="Analysis resolution (query's longer side).")] = 1024,
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="Run as a Ray job.")] = True,
    ray_address: RayAddress = None,
) -> None:
    """Localize the edits of each predicted (query, reference) pair."""
    from copytrace.pipelines import localize_batch

    r = localize_batch(predictions, queries=queries, references=references, index=index, out=out,
                       top=top or None, min_score=min_score, overlay=overlay, max_side=max_side,
                       use_ray=ray, ray_address=ray_address)
    typer.echo(f"localized {r.done} of {r.pairs} pairs ({r.failed} failed, {r.edited} with edits); "
              f"summary {r.summary}")


