"""`copytrace hash` and `--match-hashes`: PDQ hash lists in and out (ThreatExchange style).

Out: CSV `pdq_hex,image_id,quality`, the hex first so `cut -d, -f1` gives a plain hash list.
In: any list with one 64-hex hash per line (see matching.pdq.read_hash_list).
An index built with `--pdq` is listed from its catalog's pdq column without decoding a file.
"""

from __future__ import annotations

import csv
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from copytrace.descriptors.decode import DecodeError
from copytrace.descriptors.pdq import hash_file
from copytrace.indexing.catalog import STATUS_OK, Hashed, catalog_pdq, read_catalog
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.sources import list_sources
from copytrace.matching.pdq import (
    MATCH_DISTANCE,
    as_matrix,
    range_pairs,
    read_hash_list,
    to_hex,
)
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)

HASH_MATCH_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("list_hash", pa.string()),
    ("list_label", pa.string()),
    ("distance", pa.int32()),
])


class HashFormat(str, Enum):
    PDQ_HEX = "pdq-hex"


@dataclass(frozen=True)
class ImageHashes:
    ids: list[str]
    pdq: np.ndarray  # N x 32 uint8
    quality: list[int]
    failed: dict[str, str]  # image id -> why it has no hash (one line)


def _hash_one(uri: str) -> tuple[bytes, int] | str:
    try:
        return hash_file(uri)
    except DecodeError as exc:
        return str(exc)


def hash_sources(sources: list[tuple[str, str]], *, known: dict[str, Hashed] | None = None,
                 threads: int = 2, show_progress: bool = False) -> ImageHashes:
    """PDQ hashes of (image_id, uri) pairs, in order; `known` hashes are not computed again."""
    known = known or {}
    todo = [(i, u) for i, u in sources if i not in known]
    got: dict[str, tuple[bytes, int] | str] = dict(known)
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            progress_bar("hashing", total=len(todo), enabled=show_progress and bool(todo)) as advance:
        for (image_id, _), result in zip(todo, pool.map(_hash_one, [u for _, u in todo]),
                                         strict=True):
            got[image_id] = result
            advance(1)
    ok = [(i, got[i]) for i, _ in sources if not isinstance(got[i], str)]
    return ImageHashes([i for i, _ in ok], as_matrix([h[0] for _, h in ok]),
                       [h[1] for _, h in ok],
                       {i: got[i] for i, _ in sources if isinstance(got[i], str)})


def _index_sources(index: Path) -> tuple[list[tuple[str, str]], dict[str, Hashed]]:
    """The indexed images of an index and the hashes its catalog holds (built with --pdq)."""
    manifest = Manifest.read(IndexLayout(index).manifest)
    catalog = read_catalog(IndexLayout(index).catalog_dir, version=manifest.version)
    catalog = catalog.filter(pc.equal(catalog.column("status"), STATUS_OK))
    sources = list(zip(catalog.column("image_id").to_pylist(), catalog.column("uri").to_pylist(),
                       strict=True))
    return sources, catalog_pdq(catalog)


def hash_images(images: str | Path, *, show_progress: bool = False) -> ImageHashes:
    """PDQ hashes of a folder, file or listing, or of an index's images (from its catalog when
    it was built with --pdq), and a one-line reason per input without one."""
    if IndexLayout(Path(images)).manifest.exists():
        sources, known = _index_sources(Path(images))
        if len(known) < len(sources):
            log.info("'%s' holds no PDQ hash for %d of its images: hashing their files",
                     images, len(sources) - len(known))
        return hash_sources(sources, known=known, show_progress=show_progress)
    sources = list_sources(images, all_files=True)
    failed = {s.image_id: s.error for s in sources if s.error is not None}
    hashes = hash_sources([(s.image_id, s.uri) for s in sources if s.error is None],
                          show_progress=show_progress)
    return ImageHashes(hashes.ids, hashes.pdq, hashes.quality, {**failed, **hashes.failed})


def hashes_csv(hashes: ImageHashes) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("pdq_hex", "image_id", "quality"))
    for image_id, code, quality in zip(hashes.ids, hashes.pdq, hashes.quality, strict=True):
        writer.writerow((to_hex(code.tobytes()), image_id, int(quality)))
    return buf.getvalue()


def match_hash_list(ids: list[str], pdq: np.ndarray, hash_list: str | Path, *,
                    max_distance: int = MATCH_DISTANCE) -> pa.Table:
    """Every (image, listed hash) pair within `max_distance` bits (ThreatExchange: 31); `pdq`
    holds the hashes of `ids`, a row each."""
    codes, labels = read_hash_list(hash_list)
    rows = [{"image_id": ids[p.a], "list_hash": to_hex(codes[p.b]),
             "list_label": labels[p.b], "distance": p.distance}
            for p in range_pairs(pdq, as_matrix(codes), max_distance=max_distance)]
    rows.sort(key=lambda r: (r["distance"], r["image_id"], r["list_hash"]))
    return pa.Table.from_pylist(rows, schema=HASH_MATCH_SCHEMA)
