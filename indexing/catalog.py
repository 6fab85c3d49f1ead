"""The image catalog: one row per input, good or bad, so nothing submitted is ever unaccounted for."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from copytrace.descriptors.pdq import PDQ_BYTES
from copytrace.indexing.parts import committed_parts

CATALOG_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("status", pa.string()),  # "ok" | "error"
        ("error", pa.string()),
        # PDQ hash of the file (descriptors.pdq), filled by `index build --pdq`; null in
        # indexes built without it (older parts lack the columns and read as null)
        ("pdq", pa.binary(PDQ_BYTES)),
        ("pdq_quality", pa.int32()),
    ]
)

STATUS_OK = "ok"
STATUS_ERROR = "error"


@dataclass(frozen=True)
class CatalogRow:
    image_id: str
    uri: str
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    format: str | None
    status: str
    error: str | None
    pdq: bytes | None = None
    pdq_quality: int | None = None


def catalog_table(rows: list[CatalogRow]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=CATALOG_SCHEMA)


Hashed = tuple[bytes, int]  # (PDQ hash, quality)


def catalog_pdq(catalog: pa.Table) -> dict[str, Hashed]:
    """The PDQ hashes a catalog table holds (built with `--pdq`; older parts read as null), by
    image id."""
    have = catalog.filter(catalog.column("pdq").is_valid())
    return {i: (c, q) for i, c, q in zip(have.column("image_id").to_pylist(),
                                         have.column("pdq").to_pylist(),
                                         have.column("pdq_quality").to_pylist(), strict=True)}


def read_catalog(folder: str | Path, version: int | None = None) -> pa.Table:
    """The catalog parts of an index folder that `version` (default: the committed one) reads,
    as one table in position order; an unfinished `index add`'s rows are not among them."""
    files = committed_parts(folder, version)
    if not files:
        return CATALOG_SCHEMA.empty_table()
    return ds.dataset([str(f) for f in files], schema=CATALOG_SCHEMA, format="parquet").to_table()
