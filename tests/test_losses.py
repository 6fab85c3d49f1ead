"""Losses of the copy-descriptor training: each term rewards what it claims to."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from copytrace.descriptors.training.losses import (
    LossConfig,
    copy_descriptor_loss,
    info_nce,
    koleo,
    norm_ratio,
    positive_mask,
)


def _two_views(n: int, dims: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = F.normalize(torch.randn(n, dims, generator=g), dim=1)
    views = base.repeat_interleave(2, dim=0) + noise * torch.randn(2 * n, dims, generator=g)
    ids = torch.arange(n).repeat_interleave(2)
    return F.normalize(views, dim=1), F.one_hot(ids, n).float()


def test_positive_mask_counts_any_overlap_and_excludes_self() -> None:
    comp = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0.3, 0.7], [0, 0, 1.0]])
    mask = positive_mask(comp)
    assert not mask.diagonal().any()
    assert mask[0, 1] and mask[1, 0]
    assert mask[2, 3] and mask[3, 4]  # the mixed view is a positive of both its sources
    assert not mask[2, 4] and not mask[0, 2]


def test_info_nce_prefers_aligned_views() -> None:
    aligned, comp = _two_views(16, 32, noise=0.05)
    scrambled, _ = _two_views(16, 32, noise=5.0)
    pos = positive_mask(comp)
    good, bad = info_nce(aligned, pos), info_nce(scrambled, pos)
    assert good < 0.1 < bad
    chance = info_nce(scrambled, pos, temperature=1e6)  # all similarities equal
    assert chance == pytest.approx(math.log(2 * 16 - 1), rel=1e-3)


def test_koleo_penalises_collapse() -> None:
    spread, comp = _two_views(16, 32, noise=0.01)
    g = torch.Generator().manual_seed(1)
    collapsed = F.normalize(torch.ones(32, 32) + 0.01 * torch.randn(32, 32, generator=g), dim=1)
    pos = positive_mask(comp)
    assert koleo(collapsed, pos) > koleo(spread, pos) + 1.0


def test_norm_ratio_is_a_hinge_on_edited_norms() -> None:
    pooled = torch.tensor([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    clean, edited = torch.tensor([0, 2]), torch.tensor([1, 3])
    assert norm_ratio(pooled, clean, edited) == pytest.approx((0.0 + 2.0) / 2)
    assert norm_ratio(pooled, clean[:0], edited[:0]) == 0


def test_total_loss_is_finite_and_differentiable() -> None:
    pooled = torch.randn(8, 16, requires_grad=True)
    comp = F.one_hot(torch.arange(4).repeat_interleave(2), 4).float()
    parts = copy_descriptor_loss(pooled, comp, config=LossConfig(koleo_weight=30.0))
    parts.total.backward()
    assert torch.isfinite(parts.total) and torch.isfinite(pooled.grad).all()
    assert parts.total.item() == pytest.approx(parts.info_nce.item() + 30 * parts.koleo.item(),
                                               rel=1e-5)
