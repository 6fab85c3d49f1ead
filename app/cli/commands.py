"""The `copytrace` command line: a thin layer over the Python API, same names and defaults.

Evaluation and benchmark commands (`copytrace eval`, `copytrace bench`) plug in through the
`copytrace.commands` entry-point group, so this module never imports `copytrace.benchmarks`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from copytrace.app.cli.help import StyledGroup
from copytrace.app.cli.output import (
    HASH_MATCH_COLUMNS,
    QUERY_COLUMNS,
    OutputFormat,
    print_rows,
    query_rows,
)
from copytrace.descriptors.training.config import TrainConfig

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
RECIPE_DEFAULTS = TrainConfig()  # `copytrace train` help shows these


@index_app.command("build")
def index_build(
    images: Annotated[Path, typer.Argument(help="Folder (scanned recursively), one image, or a "
                                                ".parquet/.csv listing with a 'path' column "
                                                "and optional 'image_id'.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to write.")],
    model: Annotated[str, typer.Option(help="Descriptor: 'default', a shipped model name, "
                                            "or a model file.")] = "default",
    batch_size: Annotated[int, typer.Option(help="Images per model forward.")] = 32,
    chunk_size: Annotated[int, typer.Option(help="Images per Parquet part (unit of resume).")] = 512,
    index_spec: Annotated[str, typer.Option(help="FAISS factory string, or 'auto' to choose from "
                                                 "size and --memory-budget.")] = "auto",
    memory_budget: Annotated[str, typer.Option(help="RAM the index may use, e.g. '4GB'.")] = "4GB",
    target_recall: Annotated[float, typer.Option(help="Share of exact search's recall@10 (on "
                                                     "copies of catalog images) the tuned "
                                                     "index must keep.")] = 0.97,
    max_query_ms: Annotated[float | None, typer.Option(help="Query time the tuning must stay "
                                                            "under.")] = None,
    shard_size: Annotated[int, typer.Option(help="Vectors per FAISS shard.")] = 2_000_000,
    device: Annotated[str, typer.Option(help="'auto' (GPU if present), 'cpu', 'cuda'.")] = "auto",
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="Run embedding as a Ray job.")] = True,
    ray_address: RayAddress = None,
    workers: Annotated[int | None, typer.Option(help="Embedding actors (default: one per "
                                                     "node).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing index there first; "
                                                 "without it, an interrupted build resumes.")]
    = False,
    root: Annotated[Path | None, typer.Option(help="Refuse inputs (and paths in a listing) "
                                              "outside this folder.")] = None,
    pdq: Annotated[bool, typer.Option("--pdq/--no-pdq", help="Also store each file's PDQ hash "
                                      "(ThreatExchange's 256-bit perceptual hash) in the catalog's "
                                      "pdq column, for dedup audits, `copytrace hash INDEX` and "
                                      "SQL; later `index add`s hash too. Costs one more decode "
                                      "and ~2.5 ms of hashing per image on the CPU.")] = False,
    quiet: Quiet = False,
) -> None:
    """Embed every image and write catalog, embeddings, FAISS index and manifest.

    Bad files (corrupt, truncated, not an image, too large) never stop the build: each gets
    status 'error' and a reason in the catalog. Rerunning an interrupted build resumes it.
    """
    from copytrace.pipelines.build import build_index

    report = build_index(
        images, index, model=model, batch_size=batch_size, chunk_size=chunk_size,
        index_spec=index_spec, memory_budget=memory_budget, shard_size=shard_size,
        device=device, use_ray=ray, ray_address=ray_address, num_workers=workers,
        overwrite=overwrite, show_progress=not quiet, root=root,
        target_recall=target_recall, max_query_ms=max_query_ms, pdq=pdq,
    )
    out.print(f"[bold]index[/bold] {report.index}: {report.indexed} of {report.inputs} images "
              f"indexed, {report.errors} failed, FAISS {report.index_spec}, "
              f"model {report.model_id}"
              + (f", resumed {report.resumed_chunks} chunks" if report.resumed_chunks else ""))
    for uri, reason in report.error_examples[:10]:
        out.print(f"  [red]error[/red] {uri}: {reason}")
    if report.errors > 10:
        out.print(f"  … {report.errors - 10} more: copytrace index errors {report.index}")


@index_app.command("info")
def index_info(index: Annotated[Path, typer.Argument(help="Index folder.")]) -> None:
    """Show the manifest and the catalog's status counts."""
    from dataclasses import asdict

    from copytrace.indexing.catalog_sql import status_summary
    from copytrace.indexing.manifest import IndexLayout, Manifest

    manifest = Manifest.read(IndexLayout(index).manifest)
    info = asdict(manifest)
    info["status"] = status_summary(index)
    out.print_json(json.dumps(info, default=str))


@index_app.command("errors")
def index_errors(index: Annotated[Path, typer.Argument(help="Index folder.")],
                 limit: Annotated[int, typer.Option(help="Most rows to list.")] = 1000) -> None:
    """List the inputs that could not be indexed and why."""
    from copytrace.indexing.catalog_sql import errors

    t = errors(index, limit=limit)
    for row in t.to_pylist():
        out.print(f"{row['uri']}\t{row['error']}", markup=False, highlight=False)


@index_app.command("add")
def index_add(
    images: Annotated[Path, typer.Argument(help="Folder, image, or .parquet/.csv listing of "
                                                "new images (ids must not be in the index).")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to change.")],
    batch_size: Annotated[int, typer.Option(help="Images per model forward.")] = 32,
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="Embed as a Ray job.")] = False,
    ray_address: RayAddress = None,
    quiet: Quiet = False,
) -> None:
    """Embed new images with the index's model and append them (a new manifest version)."""
    from copytrace.pipelines.index_update import add_images

    r = add_images(images, index, batch_size=batch_size, use_ray=ray, ray_address=ray_address,
                   show_progress=not quiet)
    out.print(f"index {index}: version {r.version}, {r.added} added, {r.live} live, "
              f"{r.shards} shards", markup=False, highlight=False)


@index_app.command("remove")
def index_remove(
    ids: Annotated[list[str], typer.Argument(help="Image ids to remove (or @FILE: one id a "
                                                  "line).")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to change.")],
) -> None:
    """Tombstone images: searches skip them at once; 'index compact' drops them for good."""
    from copytrace.pipelines.index_update import remove_images

    wanted = [line.strip() for i in ids
              for line in (Path(i[1:]).read_text().splitlines() if i.startswith("@") else [i])
              if line.strip()]
    r = remove_images(wanted, index)
    out.print(f"index {index}: version {r.version}, {r.removed} removed, {r.live} live",
              markup=False, highlight=False)


@index_app.command("compact")
def index_compact(index: Annotated[Path, typer.Argument(help="Index folder.")]) -> None:
    """Rewrite the index without removed images (FAISS rebuilt from the embedding parts)."""
    from copytrace.pipelines.index_update import compact_index

    r = compact_index(index)
    out.print(f"index {index}: version {r.version}, {r.removed} dropped, {r.live} live, "
              f"{r.shards} shards", markup=False, highlight=False)


@index_app.command("verify")
def index_verify(index: Annotated[Path, typer.Argument(help="Index folder.")]) -> None:
    """Check that catalog, embeddings, id map and FAISS agree; exit 1 when they do not."""
    from copytrace.pipelines.index_update import verify

    r = verify(index)
    out.print_json(json.dumps({"ok": r.ok, "problems": r.problems, **r.facts}))
    if not r.ok:
        raise typer.Exit(1)


@index_app.command("prepare-keypoints")
def index_prepare_keypoints(
    index: Annotated[Path, typer.Argument(help="Index folder.")],
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")]
    = None,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
) -> None:
    """Detect every reference's keypoints into the keypoint cache now, not on first use."""
    from copytrace.pipelines.engine import prepare_keypoints

    r = prepare_keypoints(index, cache_dir=cache_dir, workers=workers, show_progress=not quiet)
    out.print(f"keypoints of {r.references} references in {r.seconds:.1f} s ({r.unreadable} "
              f"unreadable) in {r.folder}", markup=False, highlight=False)


@index_app.command("relocate")
def index_relocate(index: Annotated[Path, typer.Argument(help="Index folder.")],
                   old: Annotated[str, typer.Argument(help="Folder the images were indexed "
                                                      "under.")],
                   new: Annotated[str, typer.Argument(help="Folder they live under now.")]
                   ) -> None:
    """Re-root a catalog whose images moved: every uri under OLD now points under NEW."""
    from copytrace.indexing.relocate import relocate

    r = relocate(index, old, new)
    out.print(f"relocated {r.relocated} of {r.rows} catalog uris to {Path(new).absolute()}",
              markup=False, highlight=False)
    if r.missing:
        err.print(f"warning: {r.missing} of {r.checked} relocated images checked are not found "
                  f"under {new}", markup=False, highlight=False)


@index_app.command("sql")
def index_sql(index: Annotated[Path, typer.Argument(help="Index folder.")],
              statement: Annotated[str, typer.Argument(help="SQL over views 'catalog' and "
                                                           "'embeddings'.")],
              fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json "
                                                        "or csv.")] = OutputFormat.TABLE) -> None:
    """Run DuckDB SQL over the catalog, e.g. duplicates by sha256."""
    from copytrace.app.cli.output import columns_for
    from copytrace.indexing.catalog_sql import sql

    t = sql(index, statement)
    rows = t.to_pylist()
    print_rows(rows, columns_for(rows, t.column_names), fmt, console=out)


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
    verify_k: Annotated[int | None, typer.Option(help="Candidates verified per query "
                                                 "(default: -k).")] = None,
    full_verify: Annotated[bool, typer.Option("--full-verify", help="Verify every top "
                                              "candidate (default: only those the calibrated "
                                              "global score leaves undecided).")] = False,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Normalize "
                                            "similarities against the index's background "
                                            "set.")] = True,
    expand: Annotated[bool, typer.Option("--expand/--no-expand", help="Also search crops of "
                                         "the query (finds images pasted into it).")] = True,
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
) -> None:
    """Find the originals of each query image; score in [0, 1], >= 0.5 means a copy."""
    from copytrace.pipelines.query import query

    if match_hashes is not None:
        from copytrace.matching.pdq import read_hash_list

        read_hash_list(match_hashes)  # a bad list fails now, not after the queries
    localized: list = []  # localization outcomes (--localize), from the decoded queries
    results = query(query_path, index, k=k, output=output, model=model, batch_size=batch_size,
                    device=device, use_ray=ray, ray_address=ray_address,
                    show_progress=not quiet and len(sys.argv) > 0,
                    verify=("full" if full_verify else True) if verify else False,
                    verify_k=verify_k, normalize=normalize, expand=expand,
                    background=background, root=root, cache_dir=cache_dir,
                    shard_actors=shard_actors if distributed else 0, localize=localize,
                    localized=localized)
    _fail_without_queries(query_path, results)
    for r in results:
        if r.error:
            err.print(f"[red]cannot decode[/red] '{r.uri}': {r.error} (skipped)")
    if localize is not None:
        for o in localized:
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
    from copytrace.pipelines.pdq_hashes import hash_images, match_hash_list

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
    mask: Annotated[Path, typer.Option("--mask", help="Write a query-sized PNG, 255 on edits.")],
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
    from copytrace.pipelines.localize import localize

    r = localize(query, original, mask=mask, overlay=overlay, json_out=json_out, max_side=max_side,
                 assume_copy=assume_copy)
    edits = r.edit_regions
    kinds = ", ".join(f"{x.kind} {x.confidence:.2f}" for x in edits)
    out.print(f"edited {r.edited:.3f}: {len(edits)} edit region(s) over {r.edited_fraction:.2%} of the "
              f"query{f' ({kinds})' if kinds else ''}, added content {r.added_fraction:.2%}; registered by "
              f"{r.registration.method} (confidence {r.registration.confidence:.2f}); mask {mask}")


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
    from copytrace.pipelines.localize import localize_batch

    r = localize_batch(predictions, queries=queries, references=references, index=index, out=out,
                       top=top or None, min_score=min_score, overlay=overlay, max_side=max_side,
                       use_ray=ray, ray_address=ray_address)
    typer.echo(f"localized {r.done} of {r.pairs} pairs ({r.failed} failed, {r.edited} with edits); "
              f"summary {r.summary}")


def _recipe(field: str, text: str) -> str:
    """Help for a recipe flag: what it does and the default when neither card nor flag sets it."""
    return f"{text} (default: {getattr(RECIPE_DEFAULTS, field)})"


@app.command("train")
def train_cmd(
    images: Annotated[list[Path], typer.Option("--images", help="Training images: a folder "
                                               "(scanned recursively), or a .parquet/.csv "
                                               "listing with a 'path' column. Repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, model "
                                      "file <name>.pt and its card <name>.json.")],
    from_card: Annotated[str | None, typer.Option(help="Take the recipe (train_config) from a "
                                                  "model card: a .json card, a model file or a "
                                                  "shipped model name. Flags given override "
                                                  "it.")] = None,
    init: Annotated[str | None, typer.Option(help="Fine-tune from this model: a shipped model "
                                             "name or a model file.")] = None,
    val_benchmark: Annotated[Path | None, typer.Option(help="DISC-style folder (references/, "
                                                       "queries/, gt.csv) for a validation "
                                                       "proxy during training.")] = None,
    limit: Annotated[list[int] | None, typer.Option("--limit", help="Keep the first N files "
                                                    "of the matching --images; 0 = all. "
                                                    "Repeatable.")] = None,
    name: Annotated[str, typer.Option(help="Name of the exported model.")] = "copytrace-sscd",
    backbone: Annotated[str | None, typer.Option(help=_recipe("backbone", "timm backbone."))] = None,
    dims: Annotated[int | None, typer.Option(help=_recipe("dims", "Descriptor dims."))] = None,
    image_size: Annotated[int | None, typer.Option(help=_recipe(
        "image_size", "Training input size (square)."))] = None,
    export_image_size: Annotated[int | None, typer.Option(help=_recipe(
        "export_image_size", "Inference input size of the exported model (None: the training "
        "size)."))] = None,
    imagenet_init: Annotated[bool | None, typer.Option(
        "--imagenet-init/--no-imagenet-init", help=_recipe(
            "imagenet_init", "Start lite0 from the packaged ImageNet weights."))] = None,
    freeze_blocks: Annotated[int | None, typer.Option(help=_recipe(
        "freeze_blocks", "Stem + this many first blocks stay frozen."))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_recipe(
        "batch_size", "Source images per step (x --views)."))] = None,
    views: Annotated[int | None, typer.Option(help=_recipe(
        "views", "Views per source image (positives of each other)."))] = None,
    steps: Annotated[int | None, typer.Option(help=_recipe("steps", "Maximum steps."))] = None,
    max_minutes: Annotated[float | None, typer.Option(help=_recipe(
        "max_minutes", "Wall-clock budget; the cosine LR schedule ends at steps or time."))] = None,
    lr: Annotated[float | None, typer.Option(help=_recipe(
        "lr", "Backbone learning rate (projection 10x)."))] = None,
    weight_decay: Annotated[float | None, typer.Option(help=_recipe(
        "weight_decay", "AdamW weight decay."))] = None,
    warmup_steps: Annotated[int | None, typer.Option(help=_recipe(
        "warmup_steps", "Linear LR warm-up steps."))] = None,
    temperature: Annotated[float | None, typer.Option(help=_recipe(
        "temperature", "InfoNCE temperature."))] = None,
    koleo_weight: Annotated[float | None, typer.Option(help=_recipe(
        "koleo_weight", "KoLeo (spread) regulariser weight."))] = None,
    norm_ratio_weight: Annotated[float | None, typer.Option(help=_recipe(
        "norm_ratio_weight", "ASL norm-ratio term weight (0 = off)."))] = None,
    mix_fraction: Annotated[float | None, typer.Option(help=_recipe(
        "mix_fraction", "Share of views mixed (contrastive mixup/cutmix; 0 = off)."))] = None,
    clean_probability: Annotated[float | None, typer.Option(help=_recipe(
        "clean_probability", "Chance a view is the unedited image (a reference)."))] = None,
    max_strength: Annotated[float | None, typer.Option(help=_recipe(
        "max_strength", "Upper edit strength (1 = DISC-like)."))] = None,
    workers: Annotated[int | None, typer.Option(help=_recipe(
        "workers", "DataLoader worker processes making views."))] = None,
    seed: Annotated[int | None, typer.Option(help=_recipe("seed", "Random seed."))] = None,
    val_every: Annotated[int | None, typer.Option(help=_recipe(
        "val_every", "Steps between validation-proxy runs (0 = end only)."))] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help=_recipe(
        "checkpoint_every", "Steps between checkpoints (the unit of resume)."))] = None,
    cache_views: Annotated[int | None, typer.Option(help=_recipe(
        "cache_views", "Trunk-cached training (fast on CPU): run the frozen stem + "
        "--freeze-blocks blocks once over this many fixed views per image, then train only the "
        "top on the cached maps. 0 = fresh views every step."))] = None,
    group_size: Annotated[int | None, typer.Option(help=_recipe(
        "group_size", "Cached training: runs of this many images from one folder per batch."))
    ] = None,
    siblings: Annotated[bool | None, typer.Option("--siblings/--no-siblings", help=_recipe(
        "siblings", "Cached training: two overlapping windows per photo, trained as negatives "
        "of each other."))] = None,
    batch_augment: Annotated[str | None, typer.Option(help=_recipe(
        "batch_augment", "kornia batch edits on the device: 'auto' (on with a GPU), 'on', "
        "'off'."))] = None,
    view_pipeline: Annotated[str | None, typer.Option(help=_recipe(
        "view_pipeline", "How views are made: 'legacy' (PIL edits on workers), 'fast' (image "
        "cache + cheaper edits on workers), 'split' (fast, with the photometric/geometric edits "
        "on the device), 'auto' (split with a GPU, else fast)."))] = None,
    threads: Annotated[int | None, typer.Option(help="Torch compute threads (1 is fastest on a "
                                                "busy CPU).")] = None,
    accelerator: Annotated[str, typer.Option(help="'auto' (GPU + fp16 mixed precision if "
                                             "present), 'cpu', 'gpu'.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from "
                                         "<out>/checkpoints/last.ckpt.")] = True,
) -> None:
    """Train (or fine-tune) an SSCD-style copy descriptor on your images; CPU or GPU.

    Reproduce the shipped model on your own images:
    copytrace train --from-card copytrace-sscd-lite0 --images DIR --out run/
    """
    from copytrace.descriptors.training.config import config_from_flags
    from copytrace.descriptors.training.trainer import train

    logging.getLogger("copytrace").setLevel(logging.INFO)
    config = config_from_flags(
        from_card, backbone=backbone, dims=dims, image_size=image_size,
        export_image_size=export_image_size, imagenet_init=imagenet_init, init=init,
        freeze_blocks=freeze_blocks, batch_size=batch_size, views=views, steps=steps,
        max_minutes=max_minutes, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        temperature=temperature, koleo_weight=koleo_weight, norm_ratio_weight=norm_ratio_weight,
        mix_fraction=mix_fraction, clean_probability=clean_probability, max_strength=max_strength,
        workers=workers, seed=seed, val_every=val_every, checkpoint_every=checkpoint_every,
        cache_views=cache_views, group_size=group_size, siblings=siblings,
        batch_augment=batch_augment, view_pipeline=view_pipeline)
    limits = [n or None for n in limit] if limit else None
    report = train(images, out, val_benchmark=val_benchmark, limits=limits, name=name,
                   config=config, accelerator=accelerator, resume=resume, threads=threads)
    typer.echo(f"wrote {report.model_file} after {report.steps} steps "
               f"({report.seconds:.0f} s, {report.images_per_second:.1f} img/s); "
               f"card {report.card_file}")


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
    from copytrace.pipelines.dedup.audit import dedup, write_hash_matches

    if keep not in ("largest", "oldest", "first"):
        raise typer.BadParameter("--keep must be largest, oldest or first")
    if match_hashes is not None:
        from copytrace.matching.pdq import read_hash_list

        read_hash_list(match_hashes)  # a bad list fails now, not after the audit
    if against is not None:
        from copytrace.pipelines.dedup.against import dedup_against

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
    from copytrace.pipelines.pdq_hashes import HashFormat, hash_images, hashes_csv

    HashFormat(format)
    hashes = hash_images(images, show_progress=not quiet)
    sys.stdout.write(hashes_csv(hashes))
    for image_id, reason in hashes.failed.items():
        err.print(f"no hash for '{image_id}': {reason} (skipped)", markup=False, highlight=False)


@app.command("sql")
def sql_cmd(audit_dir: Annotated[Path, typer.Argument(help="Dedup audit folder.")],
            statement: Annotated[str, typer.Argument(help="SQL over pairs, clusters, candidates, "
                                                     "hash_matches, catalog, pdq.")]) -> None:
    """DuckDB SQL over a dedup audit and its index's catalog."""
    from copytrace.pipelines.dedup.sql import audit_sql

    t = audit_sql(audit_dir, statement)
    table = Table(*t.column_names)
    for row in t.to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(table)


@app.command("serve")
def serve_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to serve.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    model: Annotated[str | None, typer.Option(help="Override the index's model (must be the "
                                                   "same weights).")] = None,
    device: Annotated[str, typer.Option(help="'auto' (GPU if present), 'cpu' or 'cuda'.")]
    = "auto",
    token: Annotated[str | None, typer.Option(envvar="COPYTRACE_TOKEN", help="Require "
                                              "'Authorization: Bearer TOKEN' (all but "
                                              "/v1/health).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Refuse larger uploads (413).")] = 50,
    timeout: Annotated[float, typer.Option(help="Seconds per request, queue wait included "
                                           "(then 503).")] = 30,
    cache_dir: CacheDir = None,
    prepare: Annotated[bool, typer.Option(help="Detect every reference's keypoints into the "
                                          "keypoint cache before taking traffic.")] = False,
    verify_workers: Annotated[bool, typer.Option(
        "--verify-workers/--verify-inline", help="Verify keypoints on a pool of worker processes "
                                                 "(one per core) instead of in the service "
                                                 "process.")] = False,
) -> None:
    """Serve query-by-image over HTTP: POST the image bytes to /v1/query?k=10.

    Example: curl --data-binary @photo.jpg 'http://127.0.0.1:8080/v1/query?k=5'
    """
    from copytrace.app.service.app import serve

    err.print(f"serving '{index}' on http://{host}:{port} (docs at /docs"
              f"{', bearer token required' if token else ''})")
    serve(index, host=host, port=port, model=model, device=device, token=token,
          max_upload_mb=max_upload_mb, timeout=timeout, cache_dir=cache_dir, prepare=prepare,
          verify_backend="processes" if verify_workers else "inline")


@app.command("models")
def models_cmd() -> None:
    """List the descriptors this install can use without any download."""
    from copytrace.descriptors.model import IMAGENET_MODEL_NAME, default_model_name, shipped_models

    default = default_model_name()
    for name in [IMAGENET_MODEL_NAME, *shipped_models()]:
        out.print(f"{name}{'  (default)' if name == default else ''}")


def _load_plugins() -> None:
    for ep in entry_points(group="copytrace.commands"):
        try:
            app.add_typer(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            logging.getLogger(__name__).warning("command group '%s' unavailable: %s", ep.name, exc)


_load_plugins()


class CommandError(Exception):
    """A command cannot do what was asked; its message is the one line the user sees."""


def _known_errors() -> tuple[type[BaseException], ...]:
    from copytrace.descriptors.decode import DecodeError
    from copytrace.indexing.lock import IndexLockedError
    from copytrace.indexing.sources import SourceError
    from copytrace.pipelines.build import BuildError

    return (CommandError, SourceError, BuildError, IndexLockedError, DecodeError, OSError,
            ValueError)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """click's usage errors (typer >= 0.2x vendors click: its classes derive TyperException)."""
    import click

    return (click.ClickException, getattr(typer, "TyperException", click.ClickException))


def _debug_requested() -> bool:
    """`--debug` anywhere on the command line (or COPYTRACE_DEBUG=1): show full tracebacks."""
    if "--debug" in sys.argv[1:]:
        os.environ["COPYTRACE_DEBUG"] = "1"  # survives the tcmalloc re-exec
        sys.argv[1:] = [a for a in sys.argv[1:] if a != "--debug"]
    return os.environ.get("COPYTRACE_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False,
              soft_wrap=True)
    raise SystemExit(code)


def main() -> None:
    """Every failure is one line on stderr and a non-zero exit; `--debug` shows the traceback."""
    from copytrace.util.tcmalloc import reexec_with_tcmalloc

    debug = _debug_requested()
    reexec_with_tcmalloc()
    logging.basicConfig(level=os.environ.get("COPYTRACE_LOG", "WARNING").upper(),
                        format="%(message)s", handlers=[RichHandler(console=err, show_path=False)])
    try:
        code = app(standalone_mode=False)
    except _usage_errors() as exc:  # bad flags and values, e.g. -k 0
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
            raise SystemExit(2) from None
        _fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted", 130)
    except _known_errors() as exc:
        if debug:
            raise
        _fail(str(exc) or type(exc).__name__, 2)
    except Exception as exc:  # noqa: BLE001 - a bug still reaches the user as one line
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
