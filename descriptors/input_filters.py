"""Cheap pixel filters a query adapter may put in front of the model.

Many new tamper patterns are pixel-level (inverted or swapped colours, halftone dots, glitch
bands, heavy noise): the backbone destroys what a map of its descriptor would need, so no
descriptor-space map undoes them. A short chain of fixed filters on the query's model input
(the S x S x 3 uint8 array the model sees) often does: inverting an inversion, blurring dots
back into tones, a vertical median over torn bands. A chain is a string of specs joined by
'|', e.g. 'invert|perm:201|blur:2'; `apply_chain` is pure numpy/OpenCV, deterministic, and
costs far less than the extra forward pass it feeds.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Filter = Callable[[np.ndarray, float], np.ndarray]


def _invert(x: np.ndarray, _: float) -> np.ndarray:
    return 255 - x


def _perm(x: np.ndarray, p: float) -> np.ndarray:
    order = [int(c) for c in f"{int(p):03d}"]
    return np.ascontiguousarray(x[..., order])


def _gray(x: np.ndarray, _: float) -> np.ndarray:
    g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
    return np.repeat(g[..., None], 3, axis=2)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma)


def _median(x: np.ndarray, k: float) -> np.ndarray:
    return cv2.medianBlur(x, int(k))


def _downup(x: np.ndarray, f: float) -> np.ndarray:
    s = x.shape[0]
    small = cv2.resize(x, (max(1, round(s / f)),) * 2, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR)


def _equalize(x: np.ndarray, _: float) -> np.ndarray:
    yuv = cv2.cvtColor(x, cv2.COLOR_RGB2YUV)
    yuv[..., 0] = cv2.equalizeHist(yuv[..., 0])
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)


def _autocontrast(x: np.ndarray, _: float) -> np.ndarray:
    lo, hi = np.percentile(x, (1, 99), axis=(0, 1))
    y = (x.astype(np.float32) - lo) * (255.0 / np.maximum(hi - lo, 1.0))
    return np.clip(y, 0, 255).astype(np.uint8)


def _vmedian(x: np.ndarray, k: float) -> np.ndarray:
    """Median over a vertical window: bands torn sideways vote back to the common column."""
    k = int(k)
    pad = np.pad(x, ((k // 2, k // 2), (0, 0), (0, 0)), mode="edge")
    stack = np.stack([pad[i : i + x.shape[0]] for i in range(k)])
    return np.median(stack, axis=0).astype(np.uint8)


def _trim(x: np.ndarray, f: float) -> np.ndarray:
    """Cut a border of `f` of each side and scale back (frames, gutters)."""
    s = x.shape[0]
    b = round(f * s)
    return cv2.resize(x[b : s - b, b : s - b], (s, s), interpolation=cv2.INTER_LINEAR)


FILTERS: dict[str, Filter] = {
    "invert": _invert, "perm": _perm, "gray": _gray, "blur": _blur, "median": _median,
    "downup": _downup, "equalize": _equalize, "autocontrast": _autocontrast,
    "vmedian": _vmedian, "trim": _trim,
}

LIBRARY: tuple[str, ...] = (
    "invert", "perm:120", "perm:201", "perm:210", "perm:021", "perm:102", "gray",
    "blur:1", "blur:2", "blur:3.5", "median:3", "median:5", "median:9", "downup:3", "downup:6",
    "equalize", "autocontrast", "vmedian:9", "vmedian:25", "trim:0.08", "trim:0.15",
)
"""The single filters `adapt` searches over (and chains of two of them)."""


def parse_chain(chain: str) -> list[tuple[str, float]]:
    """'invert|blur:2' -> [('invert', 0.0), ('blur', 2.0)]; '' is the identity. Raises
    ValueError on an unknown filter (an adapter from a newer copytrace)."""
    out = []
    for spec in filter(None, chain.split("|")):
        name, _, arg = spec.partition(":")
        if name not in FILTERS:
            raise ValueError(f"unknown input filter '{name}' in '{chain}'")
        out.append((name, float(arg or 0)))
    return out


def apply_chain(chain: str, pixels: np.ndarray) -> np.ndarray:
    """The chain applied to N x S x S x 3 (or S x S x 3) uint8 model inputs."""
    steps = parse_chain(chain)
    if pixels.ndim == 4:
        return np.stack([apply_chain(chain, p) for p in pixels]) if steps else pixels
    x = np.ascontiguousarray(pixels)
    for name, arg in steps:
        x = np.ascontiguousarray(FILTERS[name](x, arg))
    return x
