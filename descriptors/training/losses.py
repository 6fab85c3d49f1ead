"""Losses for the self-supervised copy descriptor (SSCD, Pizzi et al. 2022; ASL, Wang et al.).

- InfoNCE over repeated augmentations: every view of an image (and every mixed view containing
  it) is a positive, every other view of the batch a negative.
- KoLeo entropy regulariser: pushes each descriptor away from its nearest non-positive
  neighbour, spreading the descriptors over the sphere so that a cosine threshold transfers
  across queries (what µAP measures, beyond ranking).
- ASL-style norm ratio: an edited view's pre-normalisation descriptor should not be larger
  than its clean reference's, so the norm can serve as a copy-confidence signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def positive_mask(composition: torch.Tensor) -> torch.Tensor:
    """V x V bool: views share a source image (any overlap), self excluded."""
    overlap = (composition @ composition.T) > 0
    overlap.fill_diagonal_(False)
    return overlap


def info_nce(embeddings: torch.Tensor, positives: torch.Tensor, *,
             temperature: float = 0.05) -> torch.Tensor:
    """Multi-positive InfoNCE on L2-normalised embeddings (V x D) with a V x V positive mask.

    For each view with at least one positive: mean over its positives of
    -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t)).
    """
    sim = embeddings @ embeddings.T / temperature
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = positives.to(log_prob.dtype)
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    per_view = -(log_prob.masked_fill(~positives, 0.0) * pos).sum(dim=1)[has] / n_pos[has]
    return per_view.mean()


def koleo(embeddings: torch.Tensor, positives: torch.Tensor | None = None, *,
          eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate (negated): -mean log distance to nearest neighbour.

    Positives are excluded from the neighbour search, as in SSCD: views of one image should
    stay together.
    """
    with torch.no_grad():
        sim = embeddings @ embeddings.T
        sim.fill_diagonal_(-2.0)
        if positives is not None:
            sim = sim.masked_fill(positives, -2.0)
        nearest = sim.argmax(dim=1)
    dist = (embeddings - embeddings[nearest]).norm(dim=1)
    return -torch.log(dist + eps).mean()


def norm_ratio(pooled: torch.Tensor, clean: torch.Tensor, edited: torch.Tensor, *,
               margin: float = 0.0) -> torch.Tensor:
    """ASL-style hinge: an edited view's norm should not exceed its clean view's norm.

    pooled: V x D pre-normalisation descriptors; clean/edited: index pairs (same source).
    """
    if clean.numel() == 0:
        return pooled.new_zeros(())
    norms = pooled.norm(dim=1)
    return F.relu(norms[edited] - norms[clean] + margin).mean()


@dataclass(frozen=True)
class LossConfig:
    temperature: float = 0.05
    koleo_weight: float = 30.0
    norm_ratio_weight: float = 0.0


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    info_nce: torch.Tensor
    koleo: torch.Tensor
    norm_ratio: torch.Tensor


def copy_descriptor_loss(
    pooled: torch.Tensor,
    composition: torch.Tensor,
    *,
    config: LossConfig = LossConfig(),
    clean_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LossParts:
    """The full objective from pre-normalisation descriptors and view compositions."""
    emb = F.normalize(pooled.float(), dim=1)
    pos = positive_mask(composition)
    nce = info_nce(emb, pos, temperature=config.temperature)
    kl = koleo(emb, pos) if config.koleo_weight else emb.new_zeros(())
    nr = emb.new_zeros(())
    if config.norm_ratio_weight and clean_pairs is not None:
        nr = norm_ratio(pooled.float(), *clean_pairs)
    total = nce + config.koleo_weight * kl + config.norm_ratio_weight * nr
    return LossParts(total, nce.detach(), kl.detach(), nr.detach())
