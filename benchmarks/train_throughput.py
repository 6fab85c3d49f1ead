"""Training throughput: views per CPU-second of each view pipeline, and model steps per second.

The view pipeline is what DataLoader workers run (decode + copy edits + squash to the model
input); each worker is one process on one core, so views per CPU-second of one process is the
per-core rate, and the cores a GPU needs = model views/s / that rate. All pipelines run here in
one process, over the same images, the same seed and view recipe, alternating in rounds so a
busy machine slows them alike. The split pipeline's device stage (the deferred edits applied to
whole batches) is timed on the device present; the image cache's one-off decode is reported
apart from the steady-state rate. The model step is the real training step (forward, loss,
backward, AdamW) of the recipe's model on the device present.

    python -m copytrace.benchmarks.train_throughput [--images DIR] [--count 300]
        [--pipelines legacy,fast,split] [--image-size 224] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from copytrace.descriptors.training import ViewConfig, ViewPipeline, list_images, make_view_dataset

DEFAULT_FOLDERS = ("photos/caltech101", "photos/imagenet-sample")


def sample_files(folders: list[Path], count: int) -> list[Path]:
    """`count` files spread evenly over the sorted listing of each folder (half each)."""
    out: list[Path] = []
    for i, folder in enumerate(folders):
        files = list_images([folder])
        n = count // len(folders) + (1 if i < count % len(folders) else 0)
        step = max(1, len(files) // max(1, n))
        out.extend(files[::step][:n])
    return out


def time_views(dataset, items: list[int]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, views) to make every item's views in this process."""
    c0, w0, views = time.process_time(), time.perf_counter(), 0
    for i in items:
        views += len(dataset[i]["views"])
    return time.process_time() - c0, time.perf_counter() - w0, views


def time_device_stage(dataset, items: list[int], device: torch.device, batch: int = 64
                      ) -> float:
    """Views/s of the split pipeline's device stage (`apply_deferred`) on `device`."""
    from copytrace.descriptors.training import apply_deferred

    xs, rows = [], []
    for i in items[: max(batch // 2, 1) * 4]:
        item = dataset[i]
        xs.append(item["views"])
        rows.append(item["deferred"])
    x = torch.cat(xs).float().div(255).to(device)
    r = torch.cat(rows).to(device)
    apply_deferred(x[:batch], r[:batch])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(x), batch):
        apply_deferred(x[s : s + batch], r[s : s + batch])
    _sync(device)
    return len(x) / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_steps(image_size: int, batch: int, steps: int, device: torch.device,
                freeze_blocks: int) -> dict[str, float]:
    """Real training steps (forward, loss, backward, AdamW) on random views."""
    from copytrace.descriptors.training import TrainConfig, build_module_class

    cfg = TrainConfig(image_size=image_size, batch_size=batch, freeze_blocks=freeze_blocks,
                      warmup_steps=1, batch_augment="off")
    module = build_module_class()(asdict(cfg)).to(device)
    module.model.to(memory_format=torch.channels_last)
    opt = module.configure_optimizers()["optimizer"]
    g = torch.Generator().manual_seed(0)
    data = {"views": torch.randint(0, 255, (batch, 2, 3, image_size, image_size), generator=g,
                                   dtype=torch.uint8).to(device),
            "clean": torch.zeros(batch, 2, dtype=torch.bool, device=device)}
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else _null()
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")

    def step() -> None:
        with amp:
            loss = module.training_step(data, 0)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    return {"batch": batch, "views_per_step": 2 * batch, "steps_per_s": 1 / seconds,
            "views_per_s": 2 * batch / seconds}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run(files: list[Path], *, pipelines: list[ViewPipeline], image_size: int, rounds: int,
        seed: int, cache_root: Path) -> dict:
    cfg = ViewConfig(image_size=image_size)
    torch.set_num_threads(1)
    datasets, cache_seconds = {}, {}
    for p in pipelines:
        t0 = time.perf_counter()
        datasets[p] = make_view_dataset(files, pipeline=p, view_config=cfg, seed=seed,
                                        cache_folder=cache_root / p.value, show_progress=False)
        cache_seconds[p] = time.perf_counter() - t0
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    chunks = [order[r::rounds] for r in range(rounds)]
    totals = {p: [0.0, 0.0, 0] for p in pipelines}
    for chunk in chunks:  # alternate pipelines so machine load hits them alike
        for p in pipelines:
            cpu, wall, views = time_views(datasets[p], chunk)
            totals[p][0] += cpu
            totals[p][1] += wall
            totals[p][2] += views
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = {}
    for p in pipelines:
        cpu, wall, views = totals[p]
        row = {"views": views, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
               "views_per_cpu_s": views / cpu, "cache_build_s": round(cache_seconds[p], 2)}
        if p is ViewPipeline.SPLIT:
            row["device_stage_views_per_s"] = time_device_stage(datasets[p], order, device)
            row["device"] = device.type
        rows[p.value] = row
    base = rows.get(ViewPipeline.LEGACY.value)
    if base:
        for row in rows.values():
            row["speedup_per_core"] = row["views_per_cpu_s"] / base["views_per_cpu_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, action="append", help="Image folder "
                        "(repeatable); default: caltech101 + imagenet-sample of the dev data.")
    parser.add_argument("--count", type=int, default=300, help="Source images (2 views each).")
    parser.add_argument("--pipelines", default="legacy,fast,split")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-batch", type=int, default=None,
                        help="Source images per model step (default 512 on GPU, 8 on CPU).")
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--freeze-blocks", type=int, default=1)
    parser.add_argument("--no-model", action="store_true", help="Skip the model-step timing.")
    parser.add_argument("--json", type=Path, help="Also write the report here.")
    args = parser.parse_args()

    dev = Path(os.environ.get("COPYTRACE_DEV_DATA") or "../shared/data")
    folders = args.images or [dev / f for f in DEFAULT_FOLDERS if (dev / f).is_dir()]
    if not folders:
        raise SystemExit("no images: give --images DIR (dev data not found)")
    files = sample_files(folders, args.count)
    pipelines = [ViewPipeline(p.strip()) for p in args.pipelines.split(",")]
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        rows = run(files, pipelines=pipelines, image_size=args.image_size, rounds=args.rounds,
                   seed=args.seed, cache_root=Path(tmp))
    report = {"images": len(files), "folders": [str(f) for f in folders],
              "image_size": args.image_size, "views_per_image": 2, "pipelines": rows}
    if not args.no_model:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        batch = args.model_batch or (512 if device.type == "cuda" else 8)
        torch.set_num_threads(os.cpu_count() or 1)
        model = model_steps(args.image_size, batch, args.model_steps, device, args.freeze_blocks)
        model["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        for row in rows.values():
            row["cores_to_feed_model"] = model["views_per_s"] / row["views_per_cpu_s"]
        report["model"] = model
    _print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"view pipeline, {report['images']} images x 2 views at "
                        f"{report['image_size']} px, one process (= one core)")
    for col in ("pipeline", "views/CPU-s (per core)", "vs legacy", "CPU s", "cache build s",
                "device stage views/s", "cores to feed model"):
        table.add_column(col, justify="right")
    for name, row in report["pipelines"].items():
        dev = (f"{row['device_stage_views_per_s']:.0f} ({row['device']})"
               if "device_stage_views_per_s" in row else "-")
        table.add_row(name, f"{row['views_per_cpu_s']:.1f}",
                      f"{row.get('speedup_per_core', float('nan')):.2f}x", f"{row['cpu_s']:.1f}",
                      f"{row['cache_build_s']:.1f}", dev,
                      f"{row.get('cores_to_feed_model', float('nan')):.1f}")
    console = Console()
    console.print(table)
    if "model" in report:
        m = report["model"]
        console.print(f"model step ({m['device']}): batch {m['batch']} x 2 views, "
                      f"{m['steps_per_s']:.2f} steps/s = {m['views_per_s']:.0f} views/s")


if __name__ == "__main__":
    main()
