"""`make bench`: end-to-end embedding throughput next to the bare model forward, in one run.

End to end = files on disk -> decoded, resized, embedded, written as Parquet parts, FAISS index
and manifest (the whole `build_index`, model load included), with Ray already started so its
fixed start-up cost is reported separately. The embedding stage alone (threaded decoding +
forward, model loaded) is the steady-state rate a long build approaches. Bare forward = the same
model on ready-made uint8 batches of the same size, both as one process with torch's default
threads and as one one-thread process per core (how the build runs on CPUs,
`pipelines.embed_job`); the build's ratio is reported against each.

    python -m copytrace.benchmarks.throughput [--images DIR] [--count 2000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from copytrace.descriptors.embed import Embedder, auto_decode_processes, granted_cores
from copytrace.descriptors.model import load_descriptor
from copytrace.pipelines.build import build_index
from copytrace.pipelines.ray_runtime import ensure_ray
from copytrace.pipelines.tcmalloc import tcmalloc_active

BUILD_TARGET = 0.85  # issue 11: on CPU, the whole build at >= 0.85 of the bare forward rate


def _default_images(count: int, folder: Path) -> Path:
    """Dev photos when present, else scikit-image's photos re-encoded to `count` distinct files."""
    dev = Path(os.environ.get("COPYTRACE_DEV_DATA") or "../shared/data") / "photos"
    if dev.is_dir():  # the ImageNet sample first, then Caltech-101
        files = sorted(p for p in (dev / "imagenet-sample").glob("*") if p.is_file())
        files += sorted(p for p in (dev / "caltech101").rglob("*") if p.is_file())
        for i, f in enumerate(files[:count]):
            shutil.copy(f, folder / f"{i:05d}{f.suffix}")
        return folder
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field"]
    photos = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in names]
    for i in range(count):
        img = photos[i % len(photos)].rotate(i % 7, expand=False)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85 + i % 10)
        (folder / f"img{i:05d}.jpg").write_bytes(buf.getvalue())
    return folder


def bare_forward(model: str, batch_size: int, count: int) -> float:
    embedder = Embedder(load_descriptor(model))
    size = embedder.image_size
    batch = np.random.default_rng(0).integers(0, 255, (batch_size, size, size, 3), np.uint8)
    embedder.embed_pixels(batch)  # warm-up
    n, t = 0, time.perf_counter()
    while n < count:
        embedder.embed_pixels(batch)
        n += batch_size
    return n / (time.perf_counter() - t)


def _bare_one_thread(args: tuple[str, int, int]) -> float:
    torch.set_num_threads(1)
    return bare_forward(*args)


def bare_forward_per_core(model: str, batch_size: int, count: int, cores: int) -> float:
    """Summed rate of `cores` one-thread processes running the bare forward at once."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(cores, mp_context=get_context("forkserver")) as pool:
        return sum(pool.map(_bare_one_thread, [(model, batch_size, count // cores)] * cores))


def decode_and_embed(images: Path, model: str, batch_size: int,
                     decode_processes: int | None = None) -> float:
    """Steady-state rate of the embedding stage alone (decode + forward), model loaded."""
    from copytrace.descriptors.embed import embed_files

    files = sorted(str(p) for p in images.rglob("*") if p.is_file())
    embedder = Embedder(load_descriptor(model))
    embedder.embed_pixels(np.zeros((batch_size, embedder.image_size, embedder.image_size, 3),
                                   np.uint8))
    t = time.perf_counter()
    n = sum(len(batch) for batch in embed_files(files, embedder, batch_size=batch_size,
                                                decode_processes=decode_processes))
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder of images (default: dev photos)")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="copytrace-bench-"))
    try:
        if args.images is None:
            (work / "images").mkdir()
        images = args.images or _default_images(args.count, work / "images")
        n_files = sum(1 for p in images.rglob("*") if p.is_file())
        t = time.perf_counter()
        ensure_ray()
        ray_start = time.perf_counter() - t
        results = {}
        for label, use_ray in (("pipeline (Ray job)", True), ("pipeline (in-process)", False)):
            index = work / f"index-{use_ray}"
            t = time.perf_counter()
            report = build_index(images, index, model=args.model, batch_size=args.batch_size,
                                 use_ray=use_ray, show_progress=False)
            results[label] = report.indexed / (time.perf_counter() - t)
        stage = decode_and_embed(images, args.model, args.batch_size)
        results["embedding stage (in-process)"] = stage
        procs = max(2, auto_decode_processes())
        results[f"embedding stage ({procs} decode processes)"] = decode_and_embed(
            images, args.model, args.batch_size, decode_processes=procs)
        forward = bare_forward(args.model, args.batch_size, n_files)
        cores = granted_cores()
        per_core = bare_forward_per_core(args.model, args.batch_size, n_files, cores)
        report = {
            "images": n_files, "batch_size": args.batch_size, "model": args.model,
            "tcmalloc": tcmalloc_active(), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "ray_start_seconds": round(ray_start, 1),
            "bare_forward_img_per_s": round(forward, 1),
            f"bare_forward_{cores}x1_thread_img_per_s": round(per_core, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            **{f"{k}_img_per_s": round(v, 1) for k, v in results.items()},
            **{f"{k}_ratio_to_forward": round(v / forward, 3) for k, v in results.items()},
            **{f"{k}_ratio_to_faster_forward": round(v / max(forward, per_core), 3)
               for k, v in results.items()},
        }
        print(json.dumps(report, indent=2))
        print(f"\n{'path':<30}{'img/s':>8}{'ratio':>8}")
        print(f"{'bare model forward':<30}{forward:>8.1f}{1.0:>8.2f}")
        print(f"{f'bare forward, {cores} x 1 thread':<30}{per_core:>8.1f}{per_core / forward:>8.2f}")
        for k, v in results.items():
            print(f"{k:<30}{v:>8.1f}{v / forward:>8.2f}")
        print("(whole-build rates include model load, Parquet, FAISS and manifest)")
        for k in ("pipeline (in-process)", "pipeline (Ray job)"):
            ratio = results[k] / forward
            best = results[k] / max(forward, per_core)
            print(f"target: {k} >= {BUILD_TARGET:.2f} of bare forward: {ratio:.2f} "
                  f"{'met' if ratio >= BUILD_TARGET else 'NOT met'} ({best:.2f} of the faster "
                  f"bare forward)")
        print(f"(tcmalloc {'on' if tcmalloc_active() else 'off'}; Ray start-up "
              f"{ray_start:.1f}s not included; load average at the end "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
