"""The descriptor as a signal string: `<model key>.<base64 of the float16 vector>`.

ThreatExchange signals are strings (PDQ: 64 hex digits). A descriptor is only comparable with
one from the same weights, so the string starts with the model's key (the first 12 hex digits
of its sha256, as in the index's model id) and a hash from other weights never matches. float16
keeps cosine similarities to about 1e-3 at half the size of float32 (256 dims: 684 characters).
"""

from __future__ import annotations

import base64
import binascii
import re

import numpy as np

SIGNAL_NAME = "copytrace"
_FORMAT = re.compile(r"^([0-9a-f]{12})\.([A-Za-z0-9+/]+={0,2})$")


def encode_vector(vector: np.ndarray, model_key: str) -> str:
    """A unit vector as a signal string."""
    v = np.asarray(vector, np.float32).ravel()
    v = v / max(float(np.linalg.norm(v)), 1e-12)
    return f"{model_key}.{base64.b64encode(v.astype('<f2').tobytes()).decode('ascii')}"


def decode_hash(signal: str) -> tuple[str, np.ndarray]:
    """(model key, unit float32 vector) of a signal string; ValueError if it is not one."""
    m = _FORMAT.match(signal.strip())
    if m is None:
        raise ValueError("not a copytrace signal: expected '<12 hex digits>.<base64>'")
    try:
        raw = base64.b64decode(m.group(2), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not a copytrace signal: {exc}") from None
    if len(raw) < 2 or len(raw) % 2:
        raise ValueError("not a copytrace signal: the vector has an odd number of bytes")
    v = np.frombuffer(raw, "<f2").astype(np.float32)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(v).all() or norm == 0:
        raise ValueError("not a copytrace signal: the vector is not finite and non-zero")
    return m.group(1), v / norm


def model_key(sha256: str) -> str:
    return sha256[:12].lower()
