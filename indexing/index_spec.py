"""Choose a FAISS index from the catalog size and a memory budget.

Small catalogs get exact search (Flat): below ~200k vectors it is fast enough and never loses a
match. Larger ones get IVF; the vectors stay uncompressed (IVF,Flat) while they fit the budget,
otherwise they are product-quantised with fast-scan PQ (after a PCA reduction for wide
descriptors). All specs use inner product on unit
vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAT_MAX_VECTORS = 200_000
MIN_TRAIN_POINTS_PER_LIST = 39
PQ_MAX_DIMS = 256
"""Wider descriptors are PCA-rotated and reduced to this before PQ: PQ with hundreds of
sub-quantizers trains for many minutes and, measured on real 1280-d descriptors, lost recall."""


@dataclass(frozen=True)
class IndexChoice:
    spec: str  # a faiss.index_factory string
    nprobe: int | None  # for IVF specs
    needs_training: bool
    estimated_bytes: int
    reason: str


def _nlist(n: int) -> int:
    target = 4 * math.sqrt(n)
    nlist = 2 ** max(4, round(math.log2(target)))
    while nlist > 16 and n < nlist * MIN_TRAIN_POINTS_PER_LIST:
        nlist //= 2
    return nlist


def _pq_m(dims: int, n: int, budget: int) -> int:
    """Fast-scan PQ codes take m/2 bytes: the largest m (<= 128, dividing dims) that fits."""
    for m in (128, 64, 32, 16, 8):
        if m <= dims and dims % m == 0 and n * (m // 2 + 8) <= budget * 0.8:
            return m
    return 8


def choose_index(n: int, dims: int, memory_budget: int) -> IndexChoice:
    flat_bytes = n * dims * 4
    if n <= FLAT_MAX_VECTORS and flat_bytes <= memory_budget:
        return IndexChoice("Flat", None, False, flat_bytes,
                           f"{n} vectors: exact search is fast enough and fits the budget")
    nlist = _nlist(n)
    nprobe = max(8, min(256, nlist // 32))
    if flat_bytes * 1.1 <= memory_budget:
        return IndexChoice(f"IVF{nlist},Flat", nprobe, True, int(flat_bytes * 1.1),
                           f"{n} vectors: inverted lists over uncompressed vectors fit the budget")
    reduced = min(dims, PQ_MAX_DIMS)
    prefix = f"PCAR{reduced}," if reduced < dims else ""
    m = _pq_m(reduced, n, memory_budget)
    code_bytes = n * (m // 2 + 8)
    return IndexChoice(f"{prefix}IVF{nlist},PQ{m}x4fs", nprobe, True, code_bytes,
                       f"{n} vectors x {dims} floats exceed the budget: "
                       f"{'PCA to ' + str(reduced) + ' dims, ' if prefix else ''}fast-scan PQ{m}")
