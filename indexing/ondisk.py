"""One on-disk inverted-list file per index: shards merged under their one coarse quantizer.

FAISS's recipe for indexes larger than RAM (`faiss/contrib/ondisk.py`): train one IVF index,
fill copies of it shard by shard with `add_with_ids` (global positions), then merge every
shard's lists into one `OnDiskInvertedLists` file (`.ivfdata`) that the index file names. RAM
then holds the quantizer once (not once per shard), and a probed list is one contiguous run of
the file instead of a piece in every shard. The index file records the lists file by its base
name and is opened from its own folder, so an index folder can be moved (`index relocate`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from copytrace.util.atomic import write_file_atomic

log = logging.getLogger(__name__)

LISTS_SUFFIX = ".ivfdata"


def lists_path(index_path: Path) -> Path:
    """The merged lists file that belongs to the index file `index_path`."""
    return Path(index_path).with_suffix(LISTS_SUFFIX)


def merge_shards(template: faiss.Index, shard_paths: list[Path], index_path: Path) -> int:
    """Merge the lists of `shard_paths` (indexes cloned from `template`, holding global ids)
    into `lists_path(index_path)`, then write the index naming it; returns the vector count.
    The shards are memory-mapped while merging, so RAM holds no list whole."""
    merged: dict[str, faiss.Index] = {}

    def write_lists(tmp: Path) -> None:
        merged["index"] = _merged(template, shard_paths, tmp)

    lists = write_file_atomic(lists_path(index_path), write_lists)
    index = merged["index"]
    _ondisk_lists(index).filename = lists.name  # resolved against the index file's folder
    write_file_atomic(index_path, lambda tmp: faiss.write_index(index, str(tmp)))
    return int(index.ntotal)


def _merged(template: faiss.Index, shard_paths: list[Path], out: Path) -> faiss.Index:
    shards = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in shard_paths]
    index = faiss.clone_index(template)
    ivf = faiss.extract_index_ivf(index)
    if index.ntotal:
        raise ValueError("merge_shards needs an empty trained index as its template")
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(out))
    inputs = faiss.InvertedListsPtrVector()
    for shard in shards:
        inputs.push_back(faiss.extract_index_ivf(shard).invlists)
    total = 0
    if sum(shard.ntotal for shard in shards):  # FAISS cannot map an empty file: leave it empty
        with _c_stdout_to_stderr():  # FAISS printf()s "resizing ..." on stdout, where JSON goes
            total = lists.merge_from_multiple(inputs.data(), inputs.size(), False, False)
    if lists.totsize == 0:
        out.touch()
    index.ntotal = ivf.ntotal = total
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns and frees it
    log.info("merged %d shards' lists (%d vectors) into '%s'", len(shards), total, out)
    del shards
    return index


def map_merged_lists(index: faiss.Index, path: Path) -> bool:
    """Map the lists file of a merged index read with `IO_FLAG_MMAP` (FAISS then skips it),
    read-only, from `path`'s folder; False for any other index (a shard with its own lists)."""
    try:
        lists = _ondisk_lists(index)
    except (RuntimeError, TypeError):
        return False
    if lists is None or lists.ptr is not None or not lists.filename:
        return False  # not on disk, or already mapped: a shard file that holds its own lists
    lists.filename = str(Path(path).parent / Path(lists.filename).name)
    lists.read_only = True
    if lists.totsize:
        lists.do_mmap()
    return True


def is_merged(index: faiss.Index) -> bool:
    """Whether `index` serves its lists from a merged lists file (not from its own file)."""
    try:
        lists = _ondisk_lists(index)
    except (RuntimeError, TypeError):
        return False
    return lists is not None and bool(lists.filename)


def share_quantizer(index: faiss.Index, owner: faiss.Index) -> bool:
    """Let `index` (a shard added beside the merged `owner`, cut from the same trained index)
    search with `owner`'s coarse quantizer and free its own copy: RAM holds one quantizer
    however many shards were added. Checked, not assumed: other centroids keep their own."""
    ivf, src = faiss.extract_index_ivf(index), faiss.extract_index_ivf(owner)
    if (ivf.nlist, ivf.d) != (src.nlist, src.d) or not np.array_equal(
            ivf.quantizer.reconstruct_n(0, ivf.nlist), src.quantizer.reconstruct_n(0, src.nlist)):
        return False
    own, owned = ivf.quantizer, ivf.own_fields
    ivf.quantizer, ivf.own_fields = src.quantizer, False  # `owner` outlives it in ShardedIndex
    if owned:
        own.this.acquire()  # Python now owns the copy, and frees it here
    del own
    return True


def empty_copy(index: faiss.Index) -> faiss.Index:
    """A trained, empty in-RAM index with `index`'s quantizer and codec (a merged index
    cannot be cloned with its on-disk lists)."""
    ivf = faiss.extract_index_ivf(index)
    held, empty = ivf.invlists, faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.invlists = empty  # borrowed while cloning; `empty` keeps it alive
    own, ntotal, outer = ivf.own_invlists, ivf.ntotal, index.ntotal
    ivf.own_invlists, ivf.ntotal, index.ntotal = False, 0, 0
    try:
        out = faiss.clone_index(index)
    finally:
        ivf.invlists, ivf.own_invlists, ivf.ntotal, index.ntotal = held, own, ntotal, outer
    return out


def _ondisk_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


@contextlib.contextmanager
def _c_stdout_to_stderr() -> Iterator[None]:
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
