"""PDQ hash lists: hex I/O (ThreatExchange style) and Hamming range joins (hashes are computed
by `descriptors.pdq`).

Trust-and-safety teams exchange PDQ hash lists as 64-character hex strings and call two images a
match at Hamming distance <= 31 (of 256 bits). Joins run on FAISS binary indexes in query chunks,
so no N x N distance matrix is ever held in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from copytrace.descriptors.pdq import PDQ_BYTES

MATCH_DISTANCE = 31
"""ThreatExchange's PDQ match threshold (Hamming distance, inclusive)."""

_HEX = re.compile(r"\b[0-9a-fA-F]{64}\b")


@dataclass(frozen=True)
class HashPair:
    a: int  # row in the first hash array
    b: int  # row in the second (or the same) array
    distance: int


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
