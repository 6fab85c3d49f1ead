"""FAISS shards: build per shard from the embedding parts, search all and merge by score.

Shards bound the memory of a build (vectors are streamed shard by shard) and let a catalog grow
past one machine's RAM. A trained index (IVF) is trained once and cloned for every shard, so all
shards share one coarse quantizer and scores stay comparable. A shard is filled in batches of
`ADD_BATCH` vectors, so a build holds one shard's codes and one batch, never the catalog.
An on-disk index (`Storage.ONDISK`) is built the same way, then its shards' lists are merged
into one lists file under the one quantizer (`indexing.ondisk`): one index file to search.
On-disk files are opened with their lists memory-mapped (FAISS `IO_FLAG_MMAP`): a search pages
in only the lists it probes. Indexes built before the merge kept each shard's lists (and a copy
of the quantizer) in each shard file; they are read the same way. Search moves in-memory shards
to all GPUs when FAISS sees any.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from copytrace.indexing.index_spec import Storage
from copytrace.indexing.ondisk import (
    is_merged,
    lists_path,
    map_merged_lists,
    merge_shards,
    share_quantizer,
)
from copytrace.util.atomic import write_file_atomic

log = logging.getLogger(__name__)

MAX_TRAIN_POINTS = 500_000
ADD_BATCH = 100_000


def gpu_count() -> int:
    try:
        return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # noqa: BLE001 - a CPU build may not even have the symbol wired
        return 0


def train_template(spec: str, dims: int, train_sample: Callable[[], np.ndarray], *,
                   quantizer: faiss.Index | None = None) -> faiss.Index:
    """An empty index of `spec`, trained when the spec needs it (the sample is read only then).
    A trained coarse `quantizer` (nlist centroids) is used as is: k-means is most of an IVF
    build's training, and indexes of one catalog can share it."""
    index = faiss.index_factory(dims, spec, faiss.METRIC_INNER_PRODUCT)
    if quantizer is not None:
        _set_quantizer(index, quantizer)
    if not index.is_trained:
        sample = train_sample()[:MAX_TRAIN_POINTS]
        log.info("training %s on %d vectors", spec, len(sample))
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def _set_quantizer(index: faiss.Index, quantizer: faiss.Index) -> None:
    ivf = faiss.extract_index_ivf(index)
    if quantizer.ntotal != ivf.nlist or quantizer.d != ivf.d:
        raise ValueError(f"a quantizer of {quantizer.ntotal} {quantizer.d}-d centroids cannot "
                         f"serve an index of {ivf.nlist} lists of {ivf.d}-d vectors")
    own = faiss.clone_index(quantizer)
    own.this.disown()  # the IVF index owns and frees it
    ivf.quantizer = own
    ivf.own_fields = True


def write_shard(template: faiss.Index, vectors: np.ndarray, path: Path) -> int:
    return write_shard_streamed(template, lambda a, b: vectors[a:b], 0, len(vectors), path)


def write_shard_streamed(template: faiss.Index, read_range: Callable[[int, int], np.ndarray],
                         start: int, stop: int, path: Path, *, global_ids: bool = False) -> int:
    """A shard of vectors start..stop, read and added `ADD_BATCH` at a time; with `global_ids`
    its lists hold positions start..stop (to be merged), else 0..stop-start."""
    index = faiss.clone_index(template)
    for a in range(start, stop, ADD_BATCH):
        b = min(stop, a + ADD_BATCH)
        x = np.ascontiguousarray(read_range(a, b), dtype=np.float32)
        if global_ids:
            index.add_with_ids(x, np.arange(a, b, dtype=np.int64))
        else:
            index.add(x)
    write_file_atomic(path, lambda tmp: faiss.write_index(index, str(tmp)))
    return index.ntotal


def read_shard(path: Path, storage: Storage | str = Storage.MEMORY) -> faiss.Index:
    """A shard for search: whole in RAM, or (on-disk) with its inverted lists memory-mapped,
    from its own file or, for a merged index, from the lists file beside it."""
    if Storage(storage) is Storage.ONDISK:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        map_merged_lists(index, path)
        return index
    return faiss.read_index(str(path))


@dataclass
class ShardedIndex:
    """Search over shards as one index; positions are global (shard offset + local id)."""

    shards: list[faiss.Index]
    offsets: list[int]
    nprobe: int | None = None
    k_factor: int | None = None

    @classmethod
    def load(cls, paths: list[Path], *, nprobe: int | None = None, k_factor: int | None = None,
             use_gpu: bool | None = None,
             storage: Storage | str = Storage.MEMORY) -> ShardedIndex:
        shards, offsets, total = [], [], 0
        ondisk = Storage(storage) is Storage.ONDISK
        gpus = gpu_count() if use_gpu in (None, True) and not ondisk else 0
        for path in paths:
            index = read_shard(path, storage)
            if shards and ondisk and is_merged(shards[0]):
                share_quantizer(index, shards[0])  # a shard added after the merge
            set_search_params(index, nprobe=nprobe, k_factor=k_factor)
            if gpus:
                index = faiss.index_cpu_to_all_gpus(index)
            shards.append(index)
            offsets.append(total)
            total += index.ntotal
        out = cls(shards, offsets)
        out.set_search_params(nprobe=nprobe, k_factor=k_factor)
        return out

    def set_search_params(self, *, nprobe: int | None = None, k_factor: int | None = None) -> None:
        """Lists probed per query (IVF) and re-ranking depth (Refine); None keeps the current."""
        for index in self.shards:
            set_search_params(index, nprobe=nprobe, k_factor=k_factor)
        self.nprobe = nprobe if nprobe is not None else self.nprobe
        self.k_factor = k_factor if k_factor is not None else self.k_factor

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, global positions) per query, best first; -1 pads missing results."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        nq = q.shape[0]
        if not self.shards or self.ntotal == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        all_s, all_i = [], []
        for shard, offset in zip(self.shards, self.offsets, strict=True):
            kk = min(k, shard.ntotal)
            s, i = shard.search(q, kk)
            all_s.append(s)
            all_i.append(np.where(i >= 0, i + offset, -1))
        return merge_topk(all_s, all_i, k)


def merge_topk(all_scores: list[np.ndarray], all_ids: list[np.ndarray],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (scores, global ids) into the top k per query, best first, -1 padded."""
    scores = np.concatenate(all_scores, axis=1)
    ids = np.concatenate(all_ids, axis=1)
    scores = np.where(ids >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(scores, order, 1)
    ids = np.take_along_axis(ids, order, 1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores.astype(np.float32), ids.astype(np.int64)


def set_search_params(index: faiss.Index, *, nprobe: int | None = None,
                      k_factor: int | None = None) -> None:
    """Set nprobe (and the HNSW quantizer's efSearch to match) and a Refine index's k_factor."""
    if k_factor is not None:
        refine = _refine(index)
        if refine is not None:
            refine.k_factor = float(k_factor)
    if nprobe is not None and not _is_ivf(index) and gpu_count():
        # a GPU copy: FAISS sets its nprobe through the parameter space
        with contextlib.suppress(AttributeError, RuntimeError):
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    elif nprobe is not None and _is_ivf(index):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = nprobe
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = max(64, 2 * nprobe)


def _refine(index: faiss.Index) -> faiss.IndexRefine | None:
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexRefine) else None


def empty_like(index: faiss.Index) -> faiss.Index:
    """A trained, empty index of the same kind (for a new shard of an existing index)."""
    out = faiss.clone_index(index)
    out.reset()
    return out


def index_bytes(index: faiss.Index) -> int:
    """Size of the serialized index: what a shard costs on disk and, loaded, in RAM (for an
    on-disk shard this reads every list: use the file's size instead)."""
    return int(faiss.serialize_index(index).size)


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def build_shards(
    spec: str,
    dims: int,
    total: int,
    read_range: Callable[[int, int], np.ndarray],
    train_sample: Callable[[], np.ndarray],
    out_dir: Path,
    *,
    shard_size: int,
    version: int | None = None,
    quantizer: faiss.Index | None = None,
    storage: Storage | str = Storage.MEMORY,
) -> list[Path]:
    """Write `ceil(total / shard_size)` shard files; `read_range(a, b)` gives vectors a..b.
    With `version`, file names carry it (an update never overwrites a file a reader may use);
    with a trained `quantizer`, k-means is skipped (`train_template`). On disk, the shards are
    merged into one index file and its lists file (`build_merged`): the one path returned."""
    template = train_template(spec, dims, train_sample, quantizer=quantizer)
    suffix = "" if version is None else f".v{version}"
    if Storage(storage) is Storage.ONDISK:
        return [build_merged(template, total, read_range, out_dir / f"ivf{suffix}.faiss",
                             shard_size=shard_size)]
    paths = []
    for no, start in enumerate(range(0, max(total, 1), shard_size)):
        stop = min(total, start + shard_size)
        path = out_dir / f"shard-{no:04d}{suffix}.faiss"
        write_shard_streamed(template, read_range, start, stop, path)
        log.info("shard %d: vectors %d..%d written", no, start, stop)
        paths.append(path)
    return paths


def build_merged(template: faiss.Index, total: int, read_range: Callable[[int, int], np.ndarray],
                 index_path: Path, *, shard_size: int) -> Path:
    """An on-disk index at `index_path` (+ `ondisk.lists_path`) of vectors 0..total: shards of
    `shard_size` are written with global ids (one in RAM at a time), merged, then deleted; disk
    briefly holds the lists twice."""
    index_path.parent.mkdir(parents=True, exist_ok=True)
    stem = index_path.name.removesuffix(".faiss")
    parts = []
    try:
        for no, start in enumerate(range(0, max(total, 1), shard_size)):
            stop = min(total, start + shard_size)
            # named *.faiss: what a killed build leaves, the next update deletes
            part = index_path.with_name(f"merging-{no:04d}.{stem}.faiss")
            write_shard_streamed(template, read_range, start, stop, part, global_ids=True)
            log.info("shard %d: vectors %d..%d written (to merge)", no, start, stop)
            parts.append(part)
        merge_shards(template, parts, index_path)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    log.info("on-disk index '%s': %d vectors, lists in '%s'", index_path, total,
             lists_path(index_path).name)
    return index_path
