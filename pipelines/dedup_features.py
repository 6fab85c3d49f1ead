"""Per-image dedup features (PDQ hash + template thumbnail), computed once and kept with the index.

The PDQ hash is the catalog's own when the index was built with `--pdq` (only the thumbnail is
computed then); both come from the pixels `descriptors.pdq` defines the hash on.

Stored as `dedup-features.parquet` beside the catalog (falls back to the audit folder when the
index is read-only), so a second audit or an incremental `--against` run re-reads them. A stored
row is reused only while the catalog records the same file bytes (sha256) for its image id: an id
whose file was replaced (removed and added again) is hashed anew, never judged by the old file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from copytrace.descriptors.decode import DecodeError, read_bytes
from copytrace.descriptors.pdq import PDQ_BYTES, hash_pixels_of, pdq_hash
from copytrace.indexing.atomic import write_parquet_atomic
from copytrace.matching.templates import THUMB, thumbnail
from copytrace.pipelines.progress import progress_bar

log = logging.getLogger(__name__)

FEATURES_FILE = "dedup-features.parquet"
FEATURES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("pdq", pa.binary(PDQ_BYTES)),  # null when the image could not be decoded
    ("pdq_quality", pa.int32()),
    ("thumb", pa.binary(THUMB * THUMB)),  # THUMB x THUMB grey, for template learning
    ("sha256", pa.string()),  # of the file the row was computed from (null: unknown, recompute)
])


@dataclass(frozen=True)
class ImageFeatures:
    ids: list[str]
    pdq: np.ndarray  # N x 32 uint8
    quality: np.ndarray  # N int32
    thumbs: np.ndarray  # N x THUMB x THUMB uint8

    def rows(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.ids)}


def _one(uri: str, known: tuple[bytes, int] | None) -> tuple[bytes, int, bytes] | None:
    """(PDQ, quality, thumbnail) of a file, from the pixels PDQ is defined on; `known`: the
    catalog's PDQ of the file, not computed again."""
    try:
        pixels = hash_pixels_of(read_bytes(uri))
    except (DecodeError, OSError) as exc:
        log.warning("dedup features: cannot decode '%s': %s (skipped)", uri, exc)
        return None
    code, quality = known if known is not None else pdq_hash(pixels)
    return code, quality, thumbnail(pixels).tobytes()


def catalog_pdq(catalog: pa.Table) -> dict[str, tuple[bytes, int]]:
    """The PDQ hashes a catalog holds (built with `--pdq`), by image id."""
    if "pdq" not in catalog.column_names:
        return {}
    have = catalog.filter(catalog.column("pdq").is_valid())
    return {i: (c, q) for i, c, q in zip(have.column("image_id").to_pylist(),
                                         have.column("pdq").to_pylist(),
                                         have.column("pdq_quality").to_pylist(), strict=True)}


def compute_features(sources: list[tuple[str, str]], *, show_progress: bool = False,
                     threads: int = 2, sha256: Mapping[str, str] | None = None,
                     pdq: Mapping[str, tuple[bytes, int]] | None = None) -> pa.Table:
    """FEATURES_SCHEMA rows for (image_id, uri) pairs; decoding and hashing on threads.
    `sha256`: the catalog's file digests by image id, recorded with the rows; `pdq`: hashes the
    catalog already holds (only the thumbnail is computed for those)."""
    sha256, pdq = sha256 or {}, pdq or {}
    rows = []
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            progress_bar("hashing", total=len(sources), enabled=show_progress) as advance:
        got_all = pool.map(_one, [u for _, u in sources], [pdq.get(i) for i, _ in sources])
        for (image_id, _), got in zip(sources, got_all, strict=True):
            code, quality, thumb = got if got is not None else (None, None, None)
            rows.append({"image_id": image_id, "pdq": code, "pdq_quality": quality,
                         "thumb": thumb, "sha256": sha256.get(image_id)})
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


def catalog_digests(catalog: pa.Table) -> dict[str, str]:
    """sha256 of each catalog row's file, by image id (what `catalog_features` keys rows on)."""
    return dict(zip(catalog.column("image_id").to_pylist(), catalog.column("sha256").to_pylist(),
                    strict=True))


def _stored(path: Path) -> pa.Table:
    """A stored features file; one written before rows carried their sha256 reads as unknown."""
    table = pq.read_table(path)
    if "sha256" not in table.column_names:
        table = table.append_column("sha256", pa.nulls(table.num_rows, pa.string()))
    return table.select(FEATURES_SCHEMA.names).cast(FEATURES_SCHEMA)


def catalog_features(index: str | Path, sources: list[tuple[str, str]], *,
                     sha256: Mapping[str, str], fallback_dir: str | Path,
                     pdq: Mapping[str, tuple[bytes, int]] | None = None,
                     show_progress: bool = False) -> ImageFeatures:
    """Features of every (image_id, uri) of an index, computing only those not stored yet for
    the file the catalog records now (`sha256`: digest by image id; `pdq`: the catalog's hashes,
    `catalog_pdq`, reused)."""
    stored_at = [Path(index) / FEATURES_FILE, Path(fallback_dir) / FEATURES_FILE]
    known = FEATURES_SCHEMA.empty_table()
    for path in stored_at:
        if path.exists():
            known = _stored(path)
            break
    current = {i: d for i, d in zip(known.column("image_id").to_pylist(),
                                    known.column("sha256").to_pylist(), strict=True)
               if d is not None and d == sha256.get(i)}
    todo = [s for s in sources if s[0] not in current]
    if todo:
        fresh = pc.is_in(known.column("image_id"), value_set=pa.array(sorted(current), pa.string()))
        known = pa.concat_tables([known.filter(fresh),
                                  compute_features(todo, show_progress=show_progress,
                                                   sha256=sha256, pdq=pdq)])
        for path in stored_at:
            try:
                write_parquet_atomic(path, known)
                break
            except OSError as exc:
                log.info("cannot store dedup features in '%s' (%s)", path.parent, exc)
    wanted = {s[0] for s in sources}
    return as_features(known.filter(pc.is_in(known.column("image_id"),
                                                     value_set=pa.array(sorted(wanted)))))
