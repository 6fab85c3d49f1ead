"""Batch copy edits on tensors (kornia): extra augmentation that runs where the model runs.

The PIL edits of `augment.py` (overlays, image-in-image, text, emoji) run on DataLoader workers
and are the bulk of a copy's variety; on a GPU the workers become the bottleneck, so the cheap
photometric and geometric edits are redrawn here on the whole batch, on the device, for the
edited views only (clean views stay references). On by default with a GPU, off on CPU, where
it costs model time and the workers already keep up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchAugmentConfig:
    probability: float = 0.5  # per edit and view
    strength: float = 1.0


def make_batch_augment(config: BatchAugmentConfig = BatchAugmentConfig()) -> torch.nn.Module:
    """A kornia pipeline on N x 3 x S x S float images in [0, 1]; output has the same shape."""
    import kornia.augmentation as K

    p, s = config.probability, config.strength
    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=p * 0.5),
        K.RandomPerspective(distortion_scale=0.3 * s, p=p * 0.4),
        K.RandomRotation(degrees=20.0 * s, p=p * 0.3),
        K.ColorJiggle(0.4 * s, 0.4 * s, 0.4 * s, 0.1 * s, p=p),
        K.RandomGrayscale(p=p * 0.2),
        K.RandomGaussianBlur((5, 5), (0.1, 2.0 * s), p=p * 0.3),
        K.RandomGaussianNoise(std=0.04 * s, p=p * 0.2),
        K.RandomPosterize(bits=4, p=p * 0.1),
        data_keys=["input"],
    )


def augment_edited(images: torch.Tensor, clean: torch.Tensor, augment: torch.nn.Module
                   ) -> torch.Tensor:
    """Apply `augment` to the views that are not clean references; result clamped to [0, 1]."""
    edited = ~clean.to(images.device)
    if not bool(edited.any()):
        return images
    out = images.clone()
    out[edited] = augment(images[edited]).clamp_(0.0, 1.0).to(images.dtype)
    return out


# --- split view pipeline: the deferred copy edits (train_deferred) applied on the device ---

def apply_deferred(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Apply each view's recorded edits (`train_deferred.DeferredRecord` rows) to the batch.

    images: N x 3 x S x S float in [0, 1], each the squashed square of its final worker image;
    rows: N x ROW. Slots run in recipe order; within a slot, views of one edit kind run together.
    """
    from copytrace.descriptors.training.deferred import DEFERRED, KIND, MAX_DEFERRED, SLOT

    x = images.float().clone()
    rows = rows.to(device=x.device, dtype=torch.float32)
    kinds_cpu = rows[:, : MAX_DEFERRED * SLOT : SLOT].round().long().cpu()  # one host sync
    wh = rows[:, -2:].clone()  # size of the (virtual) full-resolution image, changed by warps
    with torch.autocast(x.device.type, enabled=False):  # augmentation maths stays fp32
        for slot in range(MAX_DEFERRED):
            params = rows[:, slot * SLOT + 1 : (slot + 1) * SLOT]
            for name in DEFERRED:
                idx = (kinds_cpu[:, slot] == KIND[name]).nonzero().flatten()
                if len(idx):
                    idx = idx.to(x.device)
                    x[idx], wh[idx] = _DEVICE_EDITS[name](x[idx], params[idx], wh[idx])
    return x.clamp_(0.0, 1.0).to(images.dtype)


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _flip(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mirror = p[:, 0] > 0.5
    return torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x.flip(-2)), wh


def _grayscale(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    return _luma(x).expand_as(x).clone(), wh


def _colour(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's brightness, contrast (around the mean grey), saturation, then a hue rotation."""
    from kornia.color import hsv_to_rgb, rgb_to_hsv

    b, c, sat, hue = (p[:, i].view(-1, 1, 1, 1) for i in range(4))
    x = (x * b).clamp(0, 1)
    mean = _luma(x).mean(dim=(2, 3), keepdim=True)
    x = (mean + c * (x - mean)).clamp(0, 1)
    gray = _luma(x)
    x = (gray + sat * (x - gray)).clamp(0, 1)
    turn = (hue >= 0).flatten()
    if turn.any():
        hsv = rgb_to_hsv(x[turn])
        shift = hue[turn].view(-1, 1, 1) / 256.0 * 2 * torch.pi
        hsv[:, 0] = torch.remainder(hsv[:, 0] + shift, 2 * torch.pi)
        x[turn] = hsv_to_rgb(hsv).clamp(0, 1)
    return x, wh


def _gauss(sigma: float, device: torch.device) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-3)) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blur of radius (fraction x long side) on the full image = an anisotropic blur
    of its squashed square."""
    size = x.shape[-1]
    out = torch.empty_like(x)
    pc, whc = p.cpu(), wh.cpu()
    for i in range(len(x)):
        w, h = float(whc[i, 0]), float(whc[i, 1])
        radius = float(pc[i, 0]) * max(w, h)
        kx, ky = _gauss(radius * size / w, x.device), _gauss(radius * size / h, x.device)
        v = F.pad(x[i : i + 1], (len(kx) // 2,) * 2 + (len(ky) // 2,) * 2, mode="replicate")
        v = F.conv2d(v, kx.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        out[i] = F.conv2d(v, ky.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
    return out, wh


def _noise(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise drawn at the full image's resolution, then squashed like the image was."""
    size = x.shape[-1]
    out = torch.empty_like(x)
    pc, whc = p.cpu(), wh.cpu()
    for i in range(len(x)):
        w, h = (min(2048, max(1, round(float(v)))) for v in whc[i])
        g = torch.Generator(device=x.device).manual_seed(int(pc[i, 1]))
        n = torch.randn(1, 3, h, w, generator=g, device=x.device) * (float(pc[i, 0]) / 255.0)
        n = F.interpolate(n, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out[i] = (x[i] + n[0]).clamp(0, 1)
    return out, wh


def _jpeg(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG at the full image's scale: views are grouped by long side (16-px steps), resized to
    that square and coded together (per-view quality); only the coding error is squashed back
    and added (the resize round trip itself would blur). Coding the square itself would make
    the 8 x 8 blocks far coarser than on the image the worker holds."""
    from kornia.enhance import jpeg_codec_differentiable

    size = x.shape[-1]
    out = torch.empty_like(x)
    side = (wh.max(dim=1).values / 16).round().clamp(min=1).long() * 16
    for s in side.unique().tolist():
        idx = (side == s).nonzero().flatten()
        v = x[idx].float()
        if s != size:
            v = F.interpolate(v, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        error = jpeg_codec_differentiable(v.clamp(0, 1), p[idx, 0].float()) - v
        if s != size:
            error = F.interpolate(error, size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)
        out[idx] = (x[idx].float() + error).to(x.dtype)
    return out, wh


def _resample(v: torch.Tensor, h: int, w: int, size: int) -> torch.Tensor:
    small = F.interpolate(v, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def _pixelize(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of the full image (nearest-neighbour up to its size), then squashed like it."""
    size = x.shape[-1]
    out = torch.empty_like(x)
    pc, whc = p.cpu(), wh.cpu()
    for i in range(len(x)):
        f = float(pc[i, 0])
        w, h = (min(2048, max(1, round(float(v)))) for v in whc[i])
        small = F.interpolate(x[i : i + 1], size=(max(4, round(h * f)), max(4, round(w * f))),
                              mode="bilinear", antialias=True, align_corners=False)
        full = F.interpolate(small, size=(h, w), mode="nearest")
        out[i] = F.interpolate(full, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0]
    return out, wh


def _rescale(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    size = x.shape[-1]
    out, new = torch.empty_like(x), wh.clone()
    pc, whc = p.cpu(), wh.cpu()
    for i in range(len(x)):
        nw = max(16, round(float(whc[i, 0]) * float(pc[i, 0])))
        nh = max(16, round(float(whc[i, 1]) * float(pc[i, 1])))
        out[i] = _resample(x[i : i + 1], nh, nw, size)[0] if nw < size or nh < size \
            else x[i]  # enlarging, then squashing to the square, keeps the square's pixels
        new[i, 0], new[i, 1] = nw, nh
    return out, new


def _warp(x: torch.Tensor, m: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Sample x at m @ (output pixel centre) in square pixel units; outside -> fill (0-255)."""
    n, _, size, _ = x.shape
    c = torch.arange(size, device=x.device, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).view(1, -1, 3)
    src = pts @ m.transpose(1, 2)
    src = src[..., :2] / src[..., 2:].clamp(min=1e-8)
    grid = (src / size * 2 - 1).view(n, size, size, 2)
    xin = torch.cat([x.float(), torch.ones_like(x[:, :1]).float()], dim=1)
    out = F.grid_sample(xin, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = out[:, 3:]
    bg = (fill / 255.0).view(n, 3, 1, 1)
    return (out[:, :3] + (1 - inside) * bg).to(x.dtype)


def _rotate(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's rotate (counter-clockwise, optional expand, fill colour) of the full image, on its
    squashed square: output square -> canvas pixels -> inverse rotation -> input square."""
    size = x.shape[-1]
    out, new = torch.empty_like(x), wh.clone()
    right = torch.isin(p[:, 0], torch.tensor([90.0, 180.0, 270.0], device=x.device))
    angles = p[:, 0].cpu()
    for i in right.nonzero().flatten().tolist():
        k = round(float(angles[i]) / 90)
        out[i] = torch.rot90(x[i], k, dims=(-2, -1))
        if k % 2:
            new[i] = wh[i].flip(0)
    rest = (~right).nonzero().flatten()
    if len(rest):
        a = torch.deg2rad(p[rest, 0])
        cos, sin = torch.cos(a), torch.sin(a)
        w, h = wh[rest, 0], wh[rest, 1]
        expand = p[rest, 1] > 0.5
        sw, sh = (w * cos.abs() + h * sin.abs()) / 2, (w * sin.abs() + h * cos.abs()) / 2
        cw = torch.where(expand, torch.ceil(w / 2 + sw) - torch.floor(w / 2 - sw), w)
        ch = torch.where(expand, torch.ceil(h / 2 + sh) - torch.floor(h / 2 - sh), h)
        m = torch.zeros(len(rest), 3, 3, device=x.device)
        # q = R^T (p - c') + c with p = s * (cw, ch) / S, then back to square units
        m[:, 0, 0], m[:, 0, 1] = cos * cw / size * size / w, -sin * ch / size * size / w
        m[:, 1, 0], m[:, 1, 1] = sin * cw / size * size / h, cos * ch / size * size / h
        m[:, 0, 2] = (-cos * cw / 2 + sin * ch / 2 + w / 2) * size / w
        m[:, 1, 2] = (-sin * cw / 2 - cos * ch / 2 + h / 2) * size / h
        m[:, 2, 2] = 1.0
        out[rest] = _warp(x[rest], m, p[rest, 2:5])
        new[rest, 0], new[rest, 1] = cw, ch
    return out, new


def _perspective(x: torch.Tensor, p: torch.Tensor, wh: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The corner insets are fractions of width/height, so the homography of the squashed
    square is the same fractions of S (independent of the aspect ratio)."""
    from kornia.geometry.transform import get_perspective_transform

    size = float(x.shape[-1])
    c = p[:, :8] * size
    src = torch.stack([torch.stack([c[:, 0], c[:, 1]], -1),
                       torch.stack([size - c[:, 2], c[:, 3]], -1),
                       torch.stack([size - c[:, 4], size - c[:, 5]], -1),
                       torch.stack([c[:, 6], size - c[:, 7]], -1)], dim=1)
    dst = torch.tensor([[0, 0], [size, 0], [size, size], [0, size]], device=x.device,
                       dtype=torch.float32).expand(len(x), 4, 2)
    m = get_perspective_transform(dst, src)  # output -> input
    return _warp(x, m, p[:, 8:11]), wh


_DEVICE_EDITS = {
    "flip": _flip, "grayscale": _grayscale, "colour": _colour, "blur": _blur, "noise": _noise,
    "jpeg": _jpeg, "pixelize": _pixelize, "rescale": _rescale, "rotate": _rotate,
    "perspective": _perspective,
}
