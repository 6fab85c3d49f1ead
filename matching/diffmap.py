"""Difference maps between a query and its registered original that ignore redistribution noise.

A copy that travelled through JPEG, resizing and a colour filter differs from its original
everywhere by a little; an edit differs somewhere by a lot. So: normalise the colours
globally (a robust per-channel affine fit over the overlap), blur both images the same way,
and measure two cues at two scales, colour distance (CIE76 in Lab) and structural
dissimilarity (1 - SSIM), each taking the best match within a pixel or two so a residual
sub-pixel misregistration does not light up edges. Each cue is then expressed in units of its
own noise level (median + k * MAD over the overlap, never below an absolute floor), and the
score is the largest of them: >= 1 means "more different than redistribution explains".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DiffConfig:
    blur_sigma: float = 1.0  # both images are blurred by this (pixels) before comparing
    shift_tolerance: int = 1  # best match within +-this many pixels
    ssim_sigma: float = 2.0  # Gaussian window of the local SSIM
    scales: tuple[int, ...] = (1, 2)  # downscale factors
    noise_k: float = 5.0  # threshold = median + noise_k * robust sigma of the cue ...
    colour_floor: float = 10.0  # ... but never below these: Delta E ...
    structure_floor: float = 0.3  # ... and 1 - SSIM


@dataclass(frozen=True)
class DiffMaps:
    score: np.ndarray  # H x W float32, in threshold units (>= 1: edit-level difference)
    colour: np.ndarray  # Delta E at scale 1 (after colour normalisation)
    structure: np.ndarray  # 1 - SSIM at scale 1


def _trimmed_error(pred: np.ndarray, target: np.ndarray, keep: float = 0.8) -> float:
    r = np.abs(pred - target).sum(axis=1)
    return float(np.mean(np.sort(r)[: max(1, int(len(r) * keep))]))


def _fit_affine(x: np.ndarray, y: np.ndarray, *, per_channel: bool) -> np.ndarray:
    """(4 x 3) robust least-squares colour transform; per_channel keeps it diagonal."""
    keep = np.ones(len(x), bool)
    A = np.vstack([np.eye(3), np.zeros((1, 3))])
    for _ in range(3):  # refit without the worst residuals: edits must not bend the fit
        if keep.sum() < 50:
            break
        if per_channel:
            A = np.zeros((4, 3))
            for c in range(3):
                xc = x[keep][:, [c, 3]]
                sol, *_ = np.linalg.lstsq(xc, y[keep][:, c], rcond=None)
                A[c, c], A[3, c] = float(np.clip(sol[0], 0.33, 3.0)), sol[1]
        else:
            A, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
        r = np.abs(y - x @ A).sum(axis=1)
        keep = r <= np.quantile(r, 0.8)
    return A


def _tone_curves(mapped: np.ndarray, y: np.ndarray, bins: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per channel, a monotone curve (knots, values) from median target per quantile bin."""
    curves: list[tuple[np.ndarray, np.ndarray] | None] = []
    edges = np.linspace(0, 1, bins + 1)
    for c in range(3):
        qs = np.quantile(mapped[:, c], edges)
        which = np.clip(np.searchsorted(qs, mapped[:, c], side="right") - 1, 0, bins - 1)
        knots, values = [], []
        for b in range(bins):
            sel = which == b
            if sel.sum() >= 20:
                knots.append(float(np.median(mapped[sel, c])))
                values.append(float(np.median(y[sel, c])))
        if len(knots) < 4:
            curves.append(None)
            continue
        k, v = np.array(knots), np.array(values)
        order = np.argsort(k, kind="stable")
        curves.append((k[order], np.maximum.accumulate(v[order])))
    return curves


def _apply_curves(values: np.ndarray, curves: list) -> np.ndarray:
    """Apply per-channel curves to N x 3 values; outside the knots, shift like the end knots."""
    out = values.copy()
    for c, curve in enumerate(curves):
        if curve is None:
            continue
        k, v = curve
        ch = values[:, c]
        out[:, c] = np.where(ch < k[0], ch + (v[0] - k[0]),
                             np.where(ch > k[-1], ch + (v[-1] - k[-1]), np.interp(ch, k, v)))
    return out


def match_colours(source: np.ndarray, target: np.ndarray, valid: np.ndarray, *,
                  max_samples: int = 50_000, bins: int = 24, seed: int = 0) -> np.ndarray:
    """`source` (float32 RGB 0..1) mapped onto `target`'s colours by a robust global model.

    The simplest model that explains the colours is used: a per-channel affine fit
    (brightness, contrast, white balance); a full 3 x 3 affine (greyscale, saturation) only
    when it cuts the robust error by 30%; then monotone per-channel tone curves (gamma,
    clipping) only when they cut it by another 15%. Richer models are not used by default
    because they also "explain" JPEG's chroma blur and then overshoot on saturated areas. All
    fits drop the worst-fitting 20% (the edits) and are global, so an edit cannot be
    explained away as a colour change.
    """
    idx = np.flatnonzero(valid.ravel())
    if len(idx) < 50:
        return source
    if len(idx) > max_samples:
        idx = np.random.default_rng(seed).choice(idx, max_samples, replace=False)
    x = np.concatenate([source.reshape(-1, 3)[idx].astype(np.float64), np.ones((len(idx), 1))], axis=1)
    y = target.reshape(-1, 3)[idx].astype(np.float64)
    A = _fit_affine(x, y, per_channel=True)
    error = _trimmed_error(x @ A, y)
    full = _fit_affine(x, y, per_channel=False)
    full_error = _trimmed_error(x @ full, y)
    if full_error < 0.7 * error:
        A, error = full, full_error
    mapped = x @ A
    curves = _tone_curves(mapped, y, bins) if bins > 1 else []
    use_curves = bool(curves) and _trimmed_error(_apply_curves(mapped, curves), y) < 0.85 * error
    flat = source.reshape(-1, 3).astype(np.float64) @ A[:3] + A[3]
    if use_curves:
        flat = _apply_curves(flat, curves)
    return np.clip(flat.reshape(source.shape), 0.0, 1.0).astype(np.float32)


def _shifts(t: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-t, t + 1) for dx in range(-t, t + 1)]


def _shifted(padded: np.ndarray, t: int, dy: int, dx: int, h: int, w: int) -> np.ndarray:
    return padded[t + dy:t + dy + h, t + dx:t + dx + w]


def _pad(image: np.ndarray, t: int) -> np.ndarray:
    return cv2.copyMakeBorder(image, t, t, t, t, cv2.BORDER_REPLICATE)


def colour_distance(query_lab: np.ndarray, original_lab: np.ndarray, tolerance: int) -> np.ndarray:
    """Per-pixel Delta E to the closest original pixel within +-tolerance."""
    h, w = query_lab.shape[:2]
    padded = _pad(original_lab, tolerance)
    best = None
    for dy, dx in _shifts(tolerance):
        d = np.sqrt(((query_lab - _shifted(padded, tolerance, dy, dx, h, w)) ** 2).sum(axis=2))
        best = d if best is None else np.minimum(best, d)
    return best


def structure_distance(query_gray: np.ndarray, original_gray: np.ndarray, sigma: float,
                       tolerance: int) -> np.ndarray:
    """1 - local SSIM contrast-structure term (grey, 0..255), best over shifts within +-tolerance.

    SSIM's luminance term is left out: brightness is the colour cue's job, and that term
    is wildly sensitive in near-black areas (a 4-level offset on black reads as a big change).
    """
    c2 = (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), sigma)

    h, w = query_gray.shape
    mu_q = blur(query_gray)
    var_q = blur(query_gray * query_gray) - mu_q * mu_q
    mu_o = blur(original_gray)
    var_o = blur(original_gray * original_gray) - mu_o * mu_o
    t = tolerance
    p_o, p_mu_o, p_var_o = _pad(original_gray, t), _pad(mu_o, t), _pad(var_o, t)
    best = None
    for dy, dx in _shifts(t):
        o = _shifted(p_o, t, dy, dx, h, w)
        m = _shifted(p_mu_o, t, dy, dx, h, w)
        v = _shifted(p_var_o, t, dy, dx, h, w)
        cov = blur(query_gray * o) - mu_q * m
        ssim = (2 * cov + c2) / (var_q + v + c2)
        best = ssim if best is None else np.maximum(best, ssim)
    return np.clip(1.0 - best, 0.0, 2.0)


def _noise_units(d: np.ndarray, valid: np.ndarray, k: float, floor: float) -> np.ndarray:
    v = d[valid] if valid.any() else d.ravel()
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    return d / max(floor, med + k * mad)


def difference_maps(query: np.ndarray, original: np.ndarray, valid: np.ndarray, *,
                    config: DiffConfig = DiffConfig()) -> DiffMaps:
    """Score how much each query pixel differs from the registered original beyond noise.

    `query` and `original` are RGB uint8 of the same size (original already warped into the
    query's frame); `valid` marks the pixels where the original has content.
    """
    q = query.astype(np.float32) / 255.0
    o = match_colours(original.astype(np.float32) / 255.0, q, valid)
    score = np.zeros(query.shape[:2], np.float32)
    colour0 = structure0 = None
    h, w = query.shape[:2]
    for s in config.scales:
        if s > 1:
            size = (max(8, w // s), max(8, h // s))
            qs = cv2.resize(q, size, interpolation=cv2.INTER_AREA)
            os_ = cv2.resize(o, size, interpolation=cv2.INTER_AREA)
            vs = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        else:
            qs, os_, vs = q, o, valid
        if config.blur_sigma > 0:
            qs = cv2.GaussianBlur(qs, (0, 0), config.blur_sigma)
            os_ = cv2.GaussianBlur(os_, (0, 0), config.blur_sigma)
        colour = colour_distance(cv2.cvtColor(qs, cv2.COLOR_RGB2Lab), cv2.cvtColor(os_, cv2.COLOR_RGB2Lab),
                                 config.shift_tolerance)
        structure = structure_distance(cv2.cvtColor(qs, cv2.COLOR_RGB2GRAY) * 255,
                                       cv2.cvtColor(os_, cv2.COLOR_RGB2GRAY) * 255,
                                       config.ssim_sigma, config.shift_tolerance)
        if s == 1:
            colour0, structure0 = colour, structure
        level = np.maximum(_noise_units(colour, vs, config.noise_k, config.colour_floor),
                           _noise_units(structure, vs, config.noise_k, config.structure_floor))
        level[~vs] = 0
        if s > 1:
            level = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)
        score = np.maximum(score, level)
    if colour0 is None:
        colour0 = structure0 = np.zeros_like(score)
    score[~valid] = 0
    return DiffMaps(score=score, colour=colour0, structure=structure0)
