"""Choose a FAISS index from the catalog size and a memory budget.

Small catalogs get exact search (Flat): below ~200k vectors it is fast enough and never loses a
match. Larger ones get IVF; the vectors stay uncompressed (IVF,Flat) while they fit the budget,
otherwise they are product-quantised with fast-scan PQ. All specs use inner product on unit
vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAT_MAX_VECTORS = 200_000
MIN_TRAIN_POINTS_PER_LIST = 39


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
    """Bytes per vector for PQ x4fs codes: m/2. Take the largest m that divides dims and fits."""
    for m in (dims // 2, dims // 4, dims // 8, dims // 16, dims // 32):
        if m >= 8 and dims % m == 0 and m % 2 == 0 and n * m // 2 <= budget * 0.8:
            return m
    return max(8, dims // 32)


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
    m = _pq_m(dims, n, memory_budget)
    code_bytes = n * (m // 2 + 8)
    return IndexChoice(f"IVF{nlist},PQ{m}x4fs", nprobe, True, code_bytes,
                       f"{n} vectors x {dims} floats exceed the budget: fast-scan PQ{m}")
