"""Accuracy at catalog scale: the dev benchmark's references planted among real distractor photos.

    python -m copytrace.benchmarks.distractor_eval --distractors 50000 --work /tmp/ct-distract

An end-to-end `index build` of the dev benchmark's 350 references plus N distractor files, then
the dev benchmark's 675 queries through the default (banded) pipeline, scored beside the same
queries against the references alone. Distractors are random crops (25-90 % of the area, max side
512, JPEG q80-92) of photos outside the benchmark: Caltech-101 and the first 700 ImageNet-sample
photos. Those are the shipped model's training photos (the only other real photos in the dev
data), so the model has seen them: the drop measured here is a lower bound of the drop on
never-seen distractors.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from copytrace.benchmarks.make_disc import jpeg_bytes, load_photo
from copytrace.util import write_bytes_atomic

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-distract", type=Path)
    parser.add_argument("--distractors", type=int, default=50_000)
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-ray", action="store_true", help="build and query in-process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
    from copytrace.benchmarks.disc_eval import eval_disc, metrics_table

    data = dev_data_root(args.data)
    work = args.work.resolve()
    bench = ensure_dev_benchmark(data, work)
    refs = sorted(p for p in (bench / "references").iterdir() if p.is_file())
    distractors = make_distractors(data, work / "distractors", args.distractors)
    runs = {"references only": refs, f"+ {len(distractors)} distractors": refs + distractors}
    rows, report = {}, {}
    for label, files in runs.items():
        run = work / f"run-{len(files)}"
        run.mkdir(exist_ok=True)
        listing = write_listing(run / "references.csv", files)
        t = time.perf_counter()
        result = eval_disc(bench / "gt.csv", queries=bench / "queries", references=listing,
                           work=run, model=args.model, use_ray=not args.no_ray,
                           show_progress=True)
        rows[label] = result.metrics
        report[label] = {"catalog": len(files), **result.metrics.as_dict(),
                         "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps({label: report[label]}), flush=True)
    out = {"benchmark": str(bench), "distractors": len(distractors), "results": report}
    print(json.dumps(out, indent=2))
    print(metrics_table(rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
