"""Accuracy at catalog scale: the dev benchmark's references planted among real distractor photos.

    python -m copytrace.benchmarks.distractor_eval --distractors 50000 --work /tmp/ct-distract

An end-to-end `index build` of the dev benchmark's 350 references plus N distractor files, then
the dev benchmark's 675 queries through the query engine, scored beside the same queries against
the references alone, in each variant (`VARIANTS`: the default pipeline and `--no-verify`, each
with and without the second passes over turned and small-region views; `--variants
default-tiles,...` adds the grid tiles, off by default), with per-family rows
(`edit_families`) and ms per query, the variants interleaved chunk by chunk in one process;
`--hidden` adds the hidden-copies queries (screenshots, small pastes, turned; `hidden_copies`);
their backgrounds and not-indexed photos are ImageNet-sample photos 300-700, which the distractors
below are cut from, so with distractors only their originals' top-10 counts are meaningful (their
"not-indexed" queries and paste backgrounds do have copies in the catalog then).
Distractors are random crops (25-90 % of the area, max side
512, JPEG q80-92) of photos outside the benchmark: Caltech-101 and the first 700 ImageNet-sample
photos. Those are the shipped model's training photos (the only other real photos in the dev
data), so the model has seen them: the drop measured here is a lower bound of the drop on
never-seen distractors.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from copytrace.benchmarks.disc_eval import metrics_table
from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.edit_families import family_dicts, family_table, query_families
from copytrace.benchmarks.make_disc import jpeg_bytes, load_photo
from copytrace.benchmarks.metrics import PredictedMatch, evaluate
from copytrace.matching import MatchConfig
from copytrace.util import write_bytes_atomic, write_json_atomic

SOURCE_IMAGENET = 700  # the first 700 ImageNet-sample photos: not used by the dev benchmark
MAX_SIDE = 512


def distractor_sources(data: Path) -> list[Path]:
    """Photos outside the benchmark, in a fixed order."""
    caltech = sorted(p for p in (data / "photos" / "caltech101").rglob("*") if p.is_file())
    imagenet = sorted((data / "photos" / "imagenet-sample").iterdir())[:SOURCE_IMAGENET]
    return caltech + imagenet


def _random_crop(img: Image.Image, rng: random.Random) -> Image.Image:
    area = rng.uniform(0.25, 0.9)
    aspect = rng.uniform(0.6, 1.6)
    w = min(img.width, max(32, round((area * img.width * img.height * aspect) ** 0.5)))
    h = min(img.height, max(32, round((area * img.width * img.height / aspect) ** 0.5)))
    x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    crop = img.crop((x, y, x + w, y + h))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def _write_crops(task: tuple[Path, list[Path], int]) -> int:
    """All crops of one source photo; files already there are kept (the step is resumable)."""
    source, outs, seed = task
    todo = [o for o in outs if not o.exists()]
    if not todo:
        return 0
    img = load_photo(source, max_side=2 * MAX_SIDE)
    if img is None:
        return 0
    rng = random.Random(seed)
    for out in outs:
        crop = _random_crop(img, rng)
        crop.thumbnail((MAX_SIDE, MAX_SIDE))
        data = jpeg_bytes(crop, quality=rng.randint(80, 92))
        if out in todo:
            write_bytes_atomic(out, data)
    return len(todo)


def make_distractors(data: Path, folder: Path, count: int, *, workers: int = 2) -> list[Path]:
    """`count` crop files, spread evenly over the source photos."""
    sources = distractor_sources(data)
    folder.mkdir(parents=True, exist_ok=True)
    plan: dict[int, list[Path]] = {}
    for i in range(count):
        plan.setdefault(i % len(sources), []).append(folder / f"D{i:07d}.jpg")
    tasks = [(sources[s], outs, s) for s, outs in plan.items()]
    with ProcessPoolExecutor(workers) as pool:
        written = sum(pool.map(_write_crops, tasks, chunksize=64))
    print(f"distractors: {count} files in {folder} ({written} written now)", flush=True)
    return sorted(o for outs in plan.values() for o in outs if o.exists())


def write_listing(path: Path, files: list[Path]) -> Path:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "image_id"])
        out.writerows((str(f), f.stem) for f in files)
    return path


@dataclass(frozen=True)
class Variant:
    """One way of querying: the verification mode and whether the second passes (turned and
    small-region views of unconfident queries) run."""

    verify: str  # a `VerifyMode` value
    second_passes: bool
    tiles: bool = False  # also the grid tiles (`matching.grid_tiles`, off by default): `TILES`


VARIANTS = {
    "default": Variant("banded", True),
    "default-no-second-passes": Variant("banded", False),
    "no-verify": Variant("off", True),
    "no-verify-no-second-passes": Variant("off", False),
    "default-tiles": Variant("banded", True, tiles=True),
    "no-verify-tiles": Variant("off", True, tiles=True),
}
DEFAULT_VARIANTS = ("default", "default-no-second-passes", "no-verify",
                    "no-verify-no-second-passes")
TILES = ((3, 0.4),)  # the grid the tile variants search: 3 x 3 tiles of 0.4 of the query's sides


def variant_config(config: MatchConfig, variant: Variant) -> MatchConfig:
    """The engine's `config` as `variant` queries (tiles added where it has none)."""
    if not variant.second_passes:
        return config.without_second_pass()
    if not variant.tiles or config.expand is None or config.expand.tile_grids:
        return config
    return replace(config, expand=replace(config.expand, tile_grids=TILES))


def query_variants(bench: Path, index: Path, *, variants: dict[str, Variant] | None = None,
                   k: int = 10, chunk: int = 32, warm: bool = True,
                   limit: int | None = None) -> dict[str, dict]:
    """Every query of the DISC-style folder `bench` through one engine in each variant, chunk by
    chunk in turn (load on a shared machine falls on all variants alike): overall metrics, the
    per-family rows (`edit_families`) and ms per query. `warm`: first run the default variant
    once untimed, so every variant reads the reference keypoints it verifies from the cache."""
    from copytrace.pipelines import QueryEngine, QueryTimings

    variants = variants or {n: VARIANTS[n] for n in DEFAULT_VARIANTS}
    gt, queries = read_ground_truth(bench / "gt.csv")
    ids = sorted(queries)[:limit]
    paths = [str(bench / "queries" / f"{q}.jpg") for q in ids]
    fams = {q: f for q, f in query_families(bench).items() if q in set(ids)}
    gt = [g for g in gt if g.query in set(ids)]
    preds: dict[str, list[PredictedMatch]] = {name: [] for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    timings = {name: QueryTimings() for name in variants}
    with QueryEngine.open(index, device="cpu") as engine:
        configs = {name: variant_config(engine.config, v) for name, v in variants.items()}
        if warm:
            for s in range(0, len(paths), chunk):
                engine.query(paths[s : s + chunk], k=k, query_ids=ids[s : s + chunk])
        for s in range(0, len(paths), chunk):
            for name, v in variants.items():
                engine.config = configs[name]
                t = time.perf_counter()
                results = engine.query(paths[s : s + chunk], k=k, verify=v.verify,
                                       query_ids=ids[s : s + chunk], timings=timings[name])
                seconds[name] += time.perf_counter() - t
                preds[name] += [PredictedMatch(r.query_id, m.reference_id, m.score)
                                for r in results for m in r.matches]
    return {name: {"metrics": evaluate(gt, preds[name]),
                   "families": family_table(gt, preds[name], fams),
                   "ms_per_query": round(1000 * seconds[name] / max(1, len(ids)), 1),
                   "views": timings[name].views}
            for name in variants}


def _json(result: dict[str, dict]) -> dict:
    return {name: {**r["metrics"].as_dict(), "ms_per_query": r["ms_per_query"],
                   "views": r["views"], "families": family_dicts(r["families"])}
            for name, r in result.items()}


def family_compare_text(result: dict[str, dict], title: str) -> str:
    """Copies in the top 10 (of the family's copies) and µAP per family, one column per variant."""
    names = list(result)
    rows = {name: {f.family: f for f in r["families"]} for name, r in result.items()}
    lines = [title, f"{'family':<28}" + "".join(f"{n[:24]:>26}" for n in names),
             f"{'':<28}" + f"{'top10/copies   µAP':>26}" * len(names)]
    for family in rows[names[0]]:
        cells = []
        for n in names:
            f = rows[n][family]
            uap = "   n/a" if f.uap is None else f"{f.uap:6.3f}"
            cells.append(f"{f'{f.top10}/{f.copies}':>17} {uap:>8}")
        lines.append(f"{family[:28]:<28}" + "".join(cells))
    lines.append(f"{'ms/query':<28}" + "".join(f"{result[n]['ms_per_query']:>26}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-distract", type=Path)
    parser.add_argument("--distractors", type=int, default=50_000)
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-ray", action="store_true", help="build in-process")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--hidden", action="store_true",
                        help="also the hidden-copies queries (screenshots, small pastes, turned; "
                             "`hidden_copies`) against both catalogs (their backgrounds are among "
                             "the distractor sources: read only the originals' top-10 counts)")
    parser.add_argument("--no-warm", action="store_true",
                        help="time each variant with a cold keypoint cache")
    parser.add_argument("--limit", type=int, help="only the first N queries of each benchmark")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    variants = {n: VARIANTS[n] for n in (v.strip() for v in args.variants.split(",")) if n}
    from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
    from copytrace.benchmarks.hidden_copies import make_hidden
    from copytrace.pipelines import build_index

    data = dev_data_root(args.data)
    work = args.work.resolve()
    bench = ensure_dev_benchmark(data, work)
    benches = {"dev": bench}
    if args.hidden:
        benches["hidden copies"] = make_hidden(data, bench, work / "hidden-copies")
    refs = sorted(p for p in (bench / "references").iterdir() if p.is_file())
    distractors = make_distractors(data, work / "distractors", args.distractors)
    runs = {"references only": refs, f"+ {len(distractors)} distractors": refs + distractors}
    report, tables = {}, []
    for label, files in runs.items():
        run = work / f"run-{len(files)}"
        run.mkdir(exist_ok=True)
        t = time.perf_counter()
        build_index(write_listing(run / "references.csv", files), run / "index",
                    model=args.model, use_ray=not args.no_ray, show_progress=True)
        report[label] = {"catalog": len(files), "build_seconds": round(time.perf_counter() - t)}
        for name, folder in benches.items():
            result = query_variants(folder, run / "index", variants=variants,
                                    warm=not args.no_warm, limit=args.limit)
            report[label][name] = _json(result)
            tables.append(metrics_table({f"{name}, {v}": r["metrics"]
                                         for v, r in result.items()}))
            tables.append(family_compare_text(result, f"{label}, {name} queries"))
            print(json.dumps({label: {name: {v: report[label][name][v]["uAP"]
                                             for v in result}}}), flush=True)
    out = {"benchmark": str(bench), "distractors": len(distractors),
           "load_average": os.getloadavg(), "results": report}
    print(json.dumps(out, indent=2))
    print("\n\n".join(tables))
    if args.json:
        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
