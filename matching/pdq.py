"""PDQ perceptual hashes: compute, hex I/O (ThreatExchange style) and Hamming range joins.

Trust-and-safety teams exchange PDQ hash lists as 64-character hex strings and call two images a
match at Hamming distance <= 31 (of 256 bits). Joins run on FAISS binary indexes in query chunks,
so no N x N distance matrix is ever held in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import faiss
import numpy as np
import pdqhash

MATCH_DISTANCE = 31
"""ThreatExchange's PDQ match threshold (Hamming distance, inclusive)."""

PDQ_BYTES = 32
HASH_MAX_SIDE = 512
"""PDQ resamples to 64 x 64 anyway; hashing a <= 512 px copy is 5-10x faster, same bits +- noise."""

_HEX = re.compile(r"\b[0-9a-fA-F]{64}\b")


@dataclass(frozen=True)
class HashPair:
    a: int  # row in the first hash array
    b: int  # row in the second (or the same) array
    distance: int


def pdq_hash(pixels: np.ndarray) -> tuple[bytes, int]:
    """(32-byte PDQ hash, quality 0-100) of RGB uint8 pixels."""
    h, w = pixels.shape[:2]
    scale = HASH_MAX_SIDE / max(h, w)
    if scale < 1:
        pixels = cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))),
                            interpolation=cv2.INTER_AREA)
    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return pack_bits(bits), int(quality)


def pack_bits(bits: np.ndarray) -> bytes:
    """pdqhash's 256 bits (most significant first) as the 32 bytes whose hex is the
    ThreatExchange string."""
    return np.packbits(np.asarray(bits).astype(np.uint8)).tobytes()


def to_hex(code: bytes) -> str:
    return code.hex()


def from_hex(text: str) -> bytes:
    code = bytes.fromhex(text.strip())
    if len(code) != PDQ_BYTES:
        raise ValueError(f"not a PDQ hash (64 hex characters): '{text[:70]}'")
    return code


def read_hash_list(path: str | Path) -> tuple[list[bytes], list[str]]:
    """Hashes and labels from a hash list: one hash per line, as plain hex or as a CSV/TSV row
    holding a 64-hex field (the other fields, if any, become the label). Headers are skipped."""
    codes, labels = [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        found = _HEX.search(line)
        if not found:
            continue
        rest = (line[: found.start()] + line[found.end():]).strip(" ,;\t")
        codes.append(from_hex(found.group()))
        labels.append(rest or f"line {n}")
    if not codes:
        raise ValueError(f"no PDQ hashes (64 hex characters per line) in '{path}'")
    return codes, labels


def as_matrix(codes: list[bytes]) -> np.ndarray:
    """N x 32 uint8, the layout FAISS binary indexes take."""
    if not codes:
        return np.zeros((0, PDQ_BYTES), np.uint8)
    return np.frombuffer(b"".join(codes), np.uint8).reshape(-1, PDQ_BYTES)


def range_pairs(queries: np.ndarray, database: np.ndarray, *, max_distance: int = MATCH_DISTANCE,
                chunk: int = 4096, self_join: bool = False) -> Iterator[HashPair]:
    """Every (query row, database row) within `max_distance` bits, searched `chunk` queries at a
    time. With `self_join` (queries is database) each unordered pair comes once, a < b."""
    if not len(queries) or not len(database):
        return
    index = faiss.IndexBinaryFlat(PDQ_BYTES * 8)
    index.add(np.ascontiguousarray(database))
    for start in range(0, len(queries), chunk):
        lims, dist, labels = index.range_search(
            np.ascontiguousarray(queries[start : start + chunk]), max_distance + 1)
        for i in range(len(lims) - 1):
            q = start + i
            for d, j in zip(dist[lims[i] : lims[i + 1]], labels[lims[i] : lims[i + 1]],
                            strict=True):
                if self_join and j <= q:
                    continue
                yield HashPair(q, int(j), int(d))
