"""Generalized-mean pooling: the pooling SSCD uses, between average (p=1) and max (p→∞)."""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    """GeM over the spatial dimensions of an N x C x H x W feature map."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.2f}"
