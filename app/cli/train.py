"""`copytrace train` and `copytrace models`: the descriptor models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from copytrace.app.cli.root import app, out
from copytrace.descriptors.training import TrainConfig

RECIPE_DEFAULTS = TrainConfig()  # `copytrace train` help shows these


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
    from copytrace.descriptors.training import config_from_flags, train

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


@app.command("models")
def models_cmd() -> None:
    """List the descriptors this install can use without any download."""
    from copytrace.descriptors import IMAGENET_MODEL_NAME, default_model_name, shipped_models

    default = default_model_name()
    for name in [IMAGENET_MODEL_NAME, *shipped_models()]:
        out.print(f"{name}{'  (default)' if name == default else ''}")


