"""The training recipe (`TrainConfig`) and reading it back from a model card.

Kept free of torch so the CLI can show every recipe field and its default without loading the
trainer. A model card stores the recipe it was trained with under `train_config`; reading that
back (`config_from_card`) is how `copytrace train --from-card` reproduces a shipped model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in checkpoints and the model card."""

    backbone: str = "tf_efficientnet_lite0"
    dims: int = 256
    image_size: int = 160
    export_image_size: int | None = None  # inference resolution of the exported model
    imagenet_init: bool = True  # lite0 only: packaged ImageNet weights; other backbones: random
    init: str | None = None  # fine-tune from this model (shipped name or model file)
    freeze_blocks: int = 3  # stem + this many of the backbone's first blocks stay frozen
    batch_size: int = 32  # source images per step; each gives `views` views
    views: int = 2
    steps: int = 2000
    max_minutes: float | None = None  # wall-clock budget: the schedule ends at steps or time
    lr: float = 2e-4  # backbone; the projection uses 10x
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    temperature: float = 0.05
    koleo_weight: float = 5.0  # SSCD's 30 overpowered InfoNCE at batch 32 x 2 (see README)
    norm_ratio_weight: float = 0.0
    mix_fraction: float = 0.2  # 0 disables contrastive mixup/cutmix
    clean_probability: float = 0.2
    max_strength: float = 1.3
    workers: int = 1
    seed: int = 0
    val_every: int = 250
    checkpoint_every: int = 100
    cache_views: int = 0  # > 0: trunk-cached training on this many fixed views per image
    group_size: int = 1  # cached training: runs of this many same-folder images per batch
    siblings: bool = False  # cached training: two windows per photo, negatives of each other
    batch_augment: str = "auto"  # kornia edits on the batch (live views): auto = on with a GPU
    view_pipeline: str = "auto"  # live views: 'legacy' PIL, 'fast' CPU, 'split' CPU+device; auto


RECIPE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))


def read_card(card: str | Path) -> dict[str, Any]:
    """A model card: a JSON file (`NAME.card.json` or a run's `NAME.json`), a model file, or a
    shipped model's name (its card is read from the package)."""
    path = Path(card)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"model card not found: '{path}'")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"model card '{path}' is not valid JSON: {exc}") from None
    from copytrace.descriptors.model import load_descriptor

    return load_descriptor(card).card


def config_from_card(card: str | Path, **overrides: Any) -> TrainConfig:
    """The recipe stored in `card` (its `train_config`), with `overrides` on top.

    Overrides are the fields a user gave explicitly; None values are ignored so a CLI can pass
    every flag. Unknown card fields (a newer recipe) are skipped with a warning.
    """
    recipe = read_card(card).get("train_config")
    if not isinstance(recipe, dict):
        raise ValueError(f"model card '{card}' has no train_config: it was not trained by "
                         "copytrace train (give the recipe as flags instead)")
    unknown = sorted(set(recipe) - set(RECIPE_FIELDS))
    if unknown:
        log.warning("model card '%s': ignoring unknown recipe fields %s", card, unknown)
    bad = sorted(set(overrides) - set(RECIPE_FIELDS))
    if bad:
        raise ValueError(f"not recipe fields: {bad}")
    known = {k: v for k, v in recipe.items() if k in RECIPE_FIELDS}
    given = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig(**{**known, **given})


def config_from_flags(card: str | Path | None = None, **flags: Any) -> TrainConfig:
    """The recipe a `copytrace train` command line asks for: the card's (if any) or the
    defaults, with every flag that was given (not None) on top."""
    if card is not None:
        return config_from_card(card, **flags)
    bad = sorted(set(flags) - set(RECIPE_FIELDS))
    if bad:
        raise ValueError(f"not recipe fields: {bad}")
    return TrainConfig(**{k: v for k, v in flags.items() if v is not None})
