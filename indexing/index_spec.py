"""Choose a FAISS index from the catalog size, the descriptor width and a memory budget.

Small catalogs get exact search (Flat): below ~200k vectors it is fast enough and never loses a
match. Larger ones get IVF (with an HNSW coarse quantizer once there are too many lists to scan
the centroids exhaustively, FAISS's advice from 10M up); the vectors stay uncompressed (IVF,Flat)
while they fit the budget. Otherwise they are product-quantised with fast-scan PQ (after a PCA
reduction for wide descriptors) and the PQ shortlist is re-ranked with scalar-quantised copies of
the vectors (`Refine(SQ8|SQ6|SQ4)`), the most precise ones that still fit: PQ alone ranks the
true original of a copy well enough to shortlist it, not always well enough to put it in the top
10. When even the smallest such pair (PQ64 + 4-bit re-ranking codes) exceeds the budget, the index
goes to disk instead of losing more precision: IVF over 8-bit scalar codes whose inverted lists
stay in the shard files and are memory-mapped at search (`Storage.ONDISK`), so RAM holds the
centroids and a search reads only the lists it probes. All specs use inner product on unit
vectors, i.e. cosine similarity. The search parameters (nprobe, re-ranking depth) are then tuned
on copy queries (`indexing.tuning`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

FLAT_MAX_VECTORS = 200_000
MIN_TRAIN_POINTS_PER_LIST = 39
HNSW_QUANTIZER_MIN_LISTS = 16_384
PQ_MAX_DIMS = 256
"""Wider descriptors are PCA-rotated and reduced to this before PQ: PQ with hundreds of
sub-quantizers trains for many minutes and, measured on real 1280-d descriptors, lost recall."""
BUDGET_SHARE = 0.95  # leave room for centroids, block padding and the process itself
ID_BYTES = 8  # IVF lists store one int64 id per vector
REFINE_BITS = (8, 6, 4)  # scalar quantizers tried for re-ranking, most precise first
PQ_M = (64, 32, 16, 8)
ONDISK_CODE = "SQ8"  # one byte per dimension: near-exact ranking, read list by list from disk
ONDISK_SHARD_SHARE = 0.5  # a shard being built holds its codes in RAM: at most this much budget


class Storage(str, Enum):
    """Where an index's inverted lists live while it serves queries."""

    MEMORY = "memory"  # the whole shard is read into RAM
    ONDISK = "ondisk"  # inverted lists memory-mapped from the shard files (IVF specs only)


@dataclass(frozen=True)
class IndexChoice:
    spec: str  # a faiss.index_factory string
    nprobe: int | None  # for IVF specs; a starting point, tuning refines it
    needs_training: bool
    estimated_bytes: int
    reason: str
    k_factor: int | None = None  # re-ranking depth (x k) for Refine specs
    storage: Storage = Storage.MEMORY
    disk_bytes: int = 0  # the shard files' size, when it differs from the RAM estimate
    max_shard_size: int | None = None  # vectors per shard that keep a shard's build in budget


def nlist_for(n: int) -> int:
    """About 4 sqrt(n) lists (a power of two), with enough training points per list."""
    target = 4 * math.sqrt(n)
    nlist = 2 ** max(4, round(math.log2(target)))
    while nlist > 16 and n < nlist * MIN_TRAIN_POINTS_PER_LIST:
        nlist //= 2
    return nlist


def _ivf(nlist: int) -> str:
    return f"IVF{nlist}_HNSW32" if nlist >= HNSW_QUANTIZER_MIN_LISTS else f"IVF{nlist}"


def bytes_per_vector(dims: int, pq_m: int, refine_bits: int | None) -> float:
    refine = 0 if refine_bits is None else dims * refine_bits / 8
    return pq_m / 2 + refine + ID_BYTES


def _ranking_pairs(n: int, dims: int, budget: int) -> list[tuple[int, int]]:
    """(PQ sub-quantizers, refine bits) pairs that rank well enough and fit, most precise first."""
    # PQ decides whether the original makes the shortlist at all, so its bytes come first:
    # measured at 1M x 256-d, PQ32 + SQ6 lost 7 % of exact recall even scanning every list.
    fits = [(m, bits) for m in (128, *PQ_M) for bits in REFINE_BITS
            if m <= dims and dims % m == 0 and m >= 16 and (bits >= 6 or m >= 64)
            and n * bytes_per_vector(dims, m, bits) <= budget * BUDGET_SHARE]
    return fits


def _compressed(n: int, dims: int, budget: int) -> tuple[int, int | None]:
    """(PQ sub-quantizers, refine bits or None): the most precise pair that fits the budget."""
    fits = _ranking_pairs(n, dims, budget)
    if fits:
        return fits[0]
    for m in (128, *PQ_M):
        if m <= dims and dims % m == 0 and n * bytes_per_vector(dims, m, None) <= budget * BUDGET_SHARE:
            return m, None
    return 8, None


def _ondisk(n: int, dims: int, reduced: int, prefix: str, ivf: str, nlist: int, nprobe: int,
            budget: int) -> IndexChoice:
    per_vector = reduced + ID_BYTES  # SQ8 code + id, in the inverted lists on disk
    resident = nlist * reduced * 4 * 2  # centroids (and the HNSW graph over them, roughly)
    shard = max(10_000, int(budget * ONDISK_SHARD_SHARE / per_vector))
    smallest = int(n * bytes_per_vector(reduced, 64, 4)) if reduced % 64 == 0 else 0
    return IndexChoice(
        f"{prefix}{ivf},{ONDISK_CODE}", nprobe, True, resident,
        f"{n} vectors x {dims} floats need {smallest / 1e9:.2f} GB in RAM even as PQ64 with 4-bit "
        f"re-ranking codes, over the {budget / 1e9:.2f} GB budget: 8-bit scalar codes in "
        f"inverted lists on disk (memory-mapped; a search reads only the lists it probes)",
        storage=Storage.ONDISK, disk_bytes=n * per_vector, max_shard_size=shard)


def choose_index(n: int, dims: int, memory_budget: int, *, allow_ondisk: bool = True) -> IndexChoice:
    """The index for `n` vectors of `dims` floats within `memory_budget` bytes of RAM; with
    `allow_ondisk`, inverted lists go to disk rather than below PQ64 + 4-bit re-ranking."""
    flat_bytes = n * dims * 4
    if n <= FLAT_MAX_VECTORS and flat_bytes <= memory_budget:
        return IndexChoice("Flat", None, False, flat_bytes,
                           f"{n} vectors: exact search is fast enough and fits the budget")
    nlist = nlist_for(n)
    nprobe = max(8, min(256, nlist // 32))
    ivf = _ivf(nlist)
    if (flat_bytes + n * ID_BYTES) <= memory_budget * BUDGET_SHARE:
        return IndexChoice(f"{ivf},Flat", nprobe, True, flat_bytes + n * ID_BYTES,
                           f"{n} vectors: inverted lists over uncompressed vectors fit the budget")
    reduced = min(dims, PQ_MAX_DIMS)
    prefix = f"PCAR{reduced}," if reduced < dims else ""
    if allow_ondisk and not _ranking_pairs(n, reduced, memory_budget):
        return _ondisk(n, dims, reduced, prefix, ivf, nlist, nprobe, memory_budget)
    m, bits = _compressed(n, reduced, memory_budget)
    refine = f",Refine(SQ{bits})" if bits else ""
    estimated = int(n * bytes_per_vector(reduced, m, bits))
    how = f"fast-scan PQ{m}" + (f" re-ranked with {bits}-bit scalar codes" if bits else "")
    return IndexChoice(f"{prefix}{ivf},PQ{m}x4fs{refine}", nprobe, True, estimated,
                       f"{n} vectors x {dims} floats exceed the budget: "
                       f"{'PCA to ' + str(reduced) + ' dims, ' if prefix else ''}{how}",
                       k_factor=8 if bits else None)
