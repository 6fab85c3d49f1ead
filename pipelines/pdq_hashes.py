"""`copytrace hash` and `--match-hashes`: PDQ hash lists in and out (ThreatExchange style).

Out: CSV `pdq_hex,image_id,quality`, the hex first so `cut -d, -f1` gives a plain hash list.
In: any list with one 64-hex hash per line (see matching.pdq.read_hash_list).
"""

from __future__ import annotations

import csv
import io
from enum import Enum
from pathlib import Path

import pyarrow as pa

from copytrace.indexing.sources import list_sources
from copytrace.matching.pdq import MATCH_DISTANCE, as_matrix, range_pairs, read_hash_list, to_hex
from copytrace.pipelines.dedup_features import ImageFeatures, as_features, compute_features

HASH_MATCH_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("list_hash", pa.string()),
    ("list_label", pa.string()),
    ("distance", pa.int32()),
])


class HashFormat(str, Enum):
    PDQ_HEX = "pdq-hex"


def hash_images(images: str | Path, *, show_progress: bool = False) -> tuple[ImageFeatures,
                                                                             dict[str, str]]:
    """PDQ features of a folder/file/listing, and a one-line reason per undecodable input."""
    sources = list_sources(images, all_files=True)
    table = compute_features([(s.image_id, s.uri) for s in sources], show_progress=show_progress)
    bad = table.filter(table.column("pdq").is_null()).column("image_id").to_pylist()
    return as_features(table), {b: "cannot decode" for b in bad}


def hashes_csv(features: ImageFeatures) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("pdq_hex", "image_id", "quality"))
    for image_id, code, quality in zip(features.ids, features.pdq, features.quality, strict=True):
        writer.writerow((to_hex(code.tobytes()), image_id, int(quality)))
    return buf.getvalue()


def match_hash_list(features: ImageFeatures, hash_list: str | Path, *,
                    max_distance: int = MATCH_DISTANCE) -> pa.Table:
    """Every (image, listed hash) pair within `max_distance` bits (ThreatExchange: 31)."""
    codes, labels = read_hash_list(hash_list)
    rows = [{"image_id": features.ids[p.a], "list_hash": to_hex(codes[p.b]),
             "list_label": labels[p.b], "distance": p.distance}
            for p in range_pairs(features.pdq, as_matrix(codes), max_distance=max_distance)]
    rows.sort(key=lambda r: (r["distance"], r["image_id"], r["list_hash"]))
    return pa.Table.from_pylist(rows, schema=HASH_MATCH_SCHEMA)
