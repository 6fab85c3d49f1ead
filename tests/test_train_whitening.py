"""Learned whitening: directions that copy edits move are suppressed; the result loads as a model."""

from __future__ import annotations

import numpy as np
import torch

from copytrace.descriptors.model import (
    CopyDescriptor,
    DescriptorConfig,
    load_descriptor_file,
    save_descriptor,
)
from copytrace.descriptors.training.whitening import PairFeatures, learn_whitening, with_projection


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_whitening_suppresses_edit_directions() -> None:
    rng = np.random.default_rng(0)
    n, c = 400, 16
    identity = rng.normal(0, 1, (n, c))
    identity[:, :4] *= 0.1  # small identity signal in dims 0-3 ...
    edit_a, edit_b = rng.normal(0, 3, (n, 4)), rng.normal(0, 3, (n, 4))
    a, b = identity.copy(), identity.copy()
    a[:, :4] += edit_a  # ... which copy edits swamp
    b[:, :4] += edit_b
    weight, bias = learn_whitening(PairFeatures(a, b, 0.0), dims=8)
    wa, wb = a @ weight.T + bias, b @ weight.T + bias
    neg = np.roll(b, 1, axis=0)
    wneg = neg @ weight.T + bias
    raw_gap = _cos(a, b).mean() - _cos(a, neg).mean()
    white_gap = _cos(wa, wb).mean() - _cos(wa, wneg).mean()
    assert white_gap > raw_gap + 0.3
    assert np.abs(weight[:, :4]).max() < np.abs(weight[:, 4:]).max()


def test_whitened_model_exports_and_reloads(tmp_path) -> None:
    model = CopyDescriptor(DescriptorConfig(image_size=32)).eval()
    c = model.backbone.num_features
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(8, c)).astype(np.float32), np.zeros(8, np.float32)
    whitened = with_projection(model, weight, bias, image_size=48)
    save_descriptor(whitened, tmp_path / "w.pt", name="w")
    loaded = load_descriptor_file(tmp_path / "w.pt")
    assert loaded.config.dims == 8 and loaded.config.image_size == 48
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), whitened(x))
        feats = model.pool(model.backbone.forward_features((x - 0.5) / 0.5)).numpy()
    expect = torch.nn.functional.normalize(torch.from_numpy(feats @ weight.T + bias), dim=1)
    assert torch.allclose(loaded.model(x).detach(), expect, atol=1e-4)
