"""Which files are images, and how a listing names them: one rule for indexing and training.

A listing is a Parquet or CSV file with a path column (`path`, `uri`, `filepath` or `file`)
and an optional id column (`image_id` or `id`); relative paths are relative to the listing.
"""

from __future__ import annotations

import csv
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".pgm",
     ".ppm", ".pbm", ".pnm"}
)
LISTING_SUFFIXES = frozenset({".parquet", ".csv"})
PATH_COLUMNS = ("path", "uri", "filepath", "file")
ID_COLUMNS = ("image_id", "id")


class ListingError(ValueError):
    """A listing cannot be read, or lacks the columns it needs."""


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_listing(path: str | Path) -> bool:
    return Path(path).suffix.lower() in LISTING_SUFFIXES


def read_listing_rows(listing: Path) -> list[dict]:
    """Every row of a Parquet or CSV listing, as dicts (CSV values as strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if listing.suffix.lower() == ".parquet":
            return pq.read_table(listing).to_pylist()
        with open(listing, newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, pa.ArrowException, csv.Error, UnicodeDecodeError) as exc:
        raise ListingError(f"cannot read listing '{listing}': {exc}") from None


def path_column(listing: Path, columns: list[str] | set[str]) -> str:
    """The listing's path column, or a ListingError naming the columns it has."""
    found = next((c for c in PATH_COLUMNS if c in columns), None)
    if found is None:
        raise ListingError(f"listing '{listing}' needs a 'path' or 'uri' column; has "
                           f"{sorted(columns)}")
    return found


def listing_paths(listing: Path) -> list[Path]:
    """The paths a listing names, in its row order; relative ones joined to its folder."""
    rows = read_listing_rows(listing)
    if not rows:
        return []
    column = path_column(listing, set(rows[0]))
    paths = [Path(str(r[column])) for r in rows if r[column]]
    return [p if p.is_absolute() else listing.parent / p for p in paths]
