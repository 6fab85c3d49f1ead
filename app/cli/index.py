"""`copytrace index ...`: build, add, remove, compact, verify, inspect and query an index's catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from copytrace.app.cli.output import OutputFormat, print_table
from copytrace.app.cli.root import CacheDir, Quiet, RayAddress, err, index_app, out


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
    from copytrace.pipelines import build_index

    report = build_index(
        images, index, model=model, batch_size=batch_size, chunk_size=chunk_size,
        index_spec=index_spec, memory_budget=memory_budget, shard_size=shard_size,
        device=device, use_ray=ray, ray_address=ray_address, num_workers=workers,
        overwrite=overwrite, show_progress=not quiet, root=root,
        target_recall=target_recall, max_query_ms=max_query_ms, pdq=pdq,
    )
    out.print(f"[bold]index[/bold] {report.index}: {report.indexed} of {report.inputs} images "
              f"indexed, {report.errors} failed, FAISS {report.index_spec}, "
              f"model {report.model_id}" + _resume_note(report))
    for uri, reason in report.error_examples[:10]:
        out.print(f"  [red]error[/red] {uri}: {reason}")
    if report.errors > 10:
        out.print(f"  … {report.errors - 10} more: copytrace index errors {report.index}")


def _resume_note(report) -> str:  # noqa: ANN001 - a pipelines BuildReport
    if report.up_to_date:
        return " (already up to date: nothing new to embed)"
    if report.resumed_chunks:
        return (f" (resumed an interrupted build: {report.resumed_chunks} of {report.chunks} "
                "chunks were already done)")
    return ""


@index_app.command("info")
def index_info(index: Annotated[Path, typer.Argument(help="Index folder.")]) -> None:
    """Show the manifest and the catalog's status counts."""
    from dataclasses import asdict

    from copytrace.indexing import IndexLayout, Manifest, adapter_cards, status_summary

    manifest = Manifest.read(IndexLayout(index).manifest)
    info = asdict(manifest)
    info["status"] = status_summary(index)
    info["adapters"] = [asdict(c) for c in adapter_cards(index, manifest)]
    out.print_json(json.dumps(info, default=str))


@index_app.command("errors")
def index_errors(index: Annotated[Path, typer.Argument(help="Index folder.")],
                 limit: Annotated[int, typer.Option(help="Most rows to list.")] = 1000) -> None:
    """List the inputs that could not be indexed and why."""
    from copytrace.indexing import catalog_errors as errors
    from copytrace.indexing import status_summary

    t = errors(index, limit=limit)
    for row in t.to_pylist():
        out.print(f"{row['uri']}\t{row['error']}", markup=False, highlight=False)
    if not t.num_rows:
        err.print(f"0 errors in {sum(status_summary(index).values())} inputs")


@index_app.command("add")
def index_add(
    images: Annotated[Path, typer.Argument(help="Folder, image, or .parquet/.csv listing of "
                                                "new images (ids must not be in the index).")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to change.")],
    batch_size: Annotated[int, typer.Option(help="Images per model forward.")] = 32,
    chunk_size: Annotated[int, typer.Option(help="Images per unit of work (on Ray: spread over "
                                                 "the workers).")] = 512,
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="Embed as a Ray job.")] = False,
    ray_address: RayAddress = None,
    quiet: Quiet = False,
) -> None:
    """Embed new images with the index's model and append them (a new manifest version)."""
    from copytrace.pipelines import add_images

    r = add_images(images, index, batch_size=batch_size, use_ray=ray or bool(ray_address),
                   ray_address=ray_address, chunk_size=chunk_size, show_progress=not quiet)
    out.print(f"index {index}: version {r.version}, {r.added} added, {r.live} live, "
              f"{r.shards} shards", markup=False, highlight=False)


@index_app.command("remove")
def index_remove(
    ids: Annotated[list[str], typer.Argument(help="Image ids to remove (or @FILE: one id a "
                                                  "line).")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to change.")],
) -> None:
    """Tombstone images: searches skip them at once; 'index compact' drops them for good."""
    from copytrace.pipelines import remove_images

    wanted = [line.strip() for i in ids
              for line in (Path(i[1:]).read_text().splitlines() if i.startswith("@") else [i])
              if line.strip()]
    r = remove_images(wanted, index)
    out.print(f"index {index}: version {r.version}, {r.removed} removed, {r.live} live",
              markup=False, highlight=False)


@index_app.command("adapter-remove")
def index_adapter_remove(
    name: Annotated[str, typer.Argument(help="Adapter name (see 'index info').")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to change.")],
) -> None:
    """Drop a query adapter ('copytrace adapt') from the index (a new manifest version)."""
    from copytrace.indexing import remove_adapter

    version = remove_adapter(index, name)
    out.print(f"index {index}: version {version}, adapter '{name}' removed", markup=False,
              highlight=False)


@index_app.command("compact")
def index_compact(index: Annotated[Path, typer.Argument(help="Index folder.")]) -> None:
    """Rewrite the index without removed images (FAISS rebuilt from the embedding parts)."""
    from copytrace.pipelines import compact_index

    r = compact_index(index)
    out.print(f"index {index}: version {r.version}, {r.removed} dropped, {r.live} live, "
              f"{r.shards} shards", markup=False, highlight=False)


@index_app.command("verify")
def index_verify(index: Annotated[Path, typer.Argument(help="Index folder.")]) -> None:
    """Check that catalog, embeddings, id map and FAISS agree; exit 1 when they do not."""
    from copytrace.pipelines import verify_index as verify

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
    from copytrace.pipelines import prepare_keypoints

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
    from copytrace.indexing import relocate_index as relocate

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
    from copytrace.indexing import index_sql as sql

    print_table(sql(index, statement), fmt, console=out)


