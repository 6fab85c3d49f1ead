"""Per-image dedup features (PDQ hash + template thumbnail), computed once and kept with the index.

Stored as `dedup-features.parquet` beside the catalog (falls back to the audit folder when the
index is read-only), so a second audit or an incremental `--against` run re-reads them.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from copytrace.descriptors.decode import DecodeError, decode_file
from copytrace.indexing.atomic import write_parquet_atomic
from copytrace.matching.pdq import PDQ_BYTES, pdq_hash
from copytrace.matching.templates import THUMB, thumbnail
from copytrace.pipelines.progress import progress_bar

log = logging.getLogger(__name__)

FEATURES_FILE = "dedup-features.parquet"
FEATURES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("pdq", pa.binary(PDQ_BYTES)),  # null when the image could not be decoded
    ("pdq_quality", pa.int32()),
    ("thumb", pa.binary(THUMB * THUMB)),  # THUMB x THUMB grey, for template learning
])


@dataclass(frozen=True)
class ImageFeatures:
    ids: list[str]
    pdq: np.ndarray  # N x 32 uint8
    quality: np.ndarray  # N int32
    thumbs: np.ndarray  # N x THUMB x THUMB uint8

    def rows(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.ids)}


def _one(uri: str) -> tuple[bytes, int, bytes] | None:
    try:
        pixels = decode_file(uri).pixels
    except (DecodeError, OSError) as exc:
        log.warning("dedup features: cannot decode '%s': %s (skipped)", uri, exc)
        return None
    code, quality = pdq_hash(pixels)
    return code, quality, thumbnail(pixels).tobytes()


def compute_features(sources: list[tuple[str, str]], *, show_progress: bool = False,
                     threads: int = 2) -> pa.Table:
    """FEATURES_SCHEMA rows for (image_id, uri) pairs; decoding and hashing on threads."""
    rows = []
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            progress_bar("hashing", total=len(sources), enabled=show_progress) as advance:
        for (image_id, _), got in zip(sources, pool.map(_one, [u for _, u in sources]),
                                      strict=True):
            code, quality, thumb = got if got is not None else (None, None, None)
            rows.append({"image_id": image_id, "pdq": code, "pdq_quality": quality,
                         "thumb": thumb})
            advance(1)
    return pa.Table.from_pylist(rows, schema=FEATURES_SCHEMA)


def as_features(table: pa.Table) -> ImageFeatures:
    ok = table.filter(table.column("pdq").is_valid())
    n = ok.num_rows
    pdq = b"".join(ok.column("pdq").to_pylist())
    thumbs = b"".join(ok.column("thumb").to_pylist())
    return ImageFeatures(ok.column("image_id").to_pylist(),
                         np.frombuffer(pdq, np.uint8).reshape(n, PDQ_BYTES),
                         np.asarray(ok.column("pdq_quality").to_pylist(), np.int32),
                         np.frombuffer(thumbs, np.uint8).reshape(n, THUMB, THUMB))


def catalog_features(index: str | Path, sources: list[tuple[str, str]], *,
                     fallback_dir: str | Path, show_progress: bool = False) -> ImageFeatures:
    """Features of every (image_id, uri) of an index, computing only those not stored yet."""
    stored_at = [Path(index) / FEATURES_FILE, Path(fallback_dir) / FEATURES_FILE]
    known = FEATURES_SCHEMA.empty_table()
    for path in stored_at:
        if path.exists():
            known = pq.read_table(path, schema=FEATURES_SCHEMA)
            break
    have = set(known.column("image_id").to_pylist())
    todo = [s for s in sources if s[0] not in have]
    if todo:
        known = pa.concat_tables([known, compute_features(todo, show_progress=show_progress)])
        for path in stored_at:
            try:
                write_parquet_atomic(path, known)
                break
            except OSError as exc:
                log.info("cannot store dedup features in '%s' (%s)", path.parent, exc)
    wanted = {s[0] for s in sources}
    return as_features(known.filter(pc.is_in(known.column("image_id"),
                                                     value_set=pa.array(sorted(wanted)))))
