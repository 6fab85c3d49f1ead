"""What to index: a folder scanned recursively, or a Parquet/CSV listing of paths.

Image ids are strings the user chooses; by default the file stem (DISC2021's `Q00001.jpg` ->
`Q00001`). When two files share a stem, both get their relative path (without suffix) instead,
so no image is silently dropped.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".pgm",
     ".ppm", ".pbm", ".pnm"}
)
LISTING_SCHEMA = pa.schema([("image_id", pa.string()), ("uri", pa.string())])


class SourceError(ValueError):
    """The input location cannot be listed (missing path, unreadable listing, bad columns)."""


@dataclass(frozen=True)
class ImageSource:
    image_id: str
    uri: str


def _ids_from_paths(paths: list[Path], root: Path | None) -> list[str]:
    stems = Counter(p.stem for p in paths)
    ids = []
    for p in paths:
        if stems[p.stem] == 1:
            ids.append(p.stem)
        else:
            rel = p.relative_to(root) if root else p
            ids.append(rel.with_suffix("").as_posix())
    return ids


def scan_folder(folder: Path, *, all_files: bool = False) -> list[ImageSource]:
    """Files under `folder`, sorted; `all_files` keeps non-image suffixes (they get an error row)."""
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
        and (all_files or p.suffix.lower() in IMAGE_SUFFIXES)
    )
    return [ImageSource(i, str(p)) for i, p in zip(_ids_from_paths(files, folder), files,
                                                     strict=True)]


def read_listing(listing: Path) -> list[ImageSource]:
    """Parquet or CSV with a `path` (or `uri`) column and an optional `image_id`/`id` column."""
    try:
        if listing.suffix.lower() == ".parquet":
            rows = pq.read_table(listing).to_pylist()
        else:
            with open(listing, newline="") as fh:
                rows = list(csv.DictReader(fh))
    except (OSError, pa.ArrowException, csv.Error, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read listing '{listing}': {exc}") from None
    if not rows:
        return []
    cols = set(rows[0])
    path_col = next((c for c in ("path", "uri", "filepath", "file") if c in cols), None)
    if path_col is None:
        raise SourceError(f"listing '{listing}' needs a 'path' or 'uri' column; has {sorted(cols)}")
    id_col = next((c for c in ("image_id", "id") if c in cols), None)
    base = listing.parent
    paths = [Path(r[path_col]) if Path(r[path_col]).is_absolute() else base / r[path_col]
             for r in rows]
    ids = [str(r[id_col]) for r in rows] if id_col else _ids_from_paths(paths, base)
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise SourceError(f"listing '{listing}' repeats image ids, e.g. {dupes[:3]}")
    return [ImageSource(i, str(p)) for i, p in zip(ids, paths, strict=True)]


def list_sources(location: str | Path, *, all_files: bool = False) -> list[ImageSource]:
    """A folder, a single image, or a listing file (.parquet/.csv)."""
    p = Path(location)
    if not p.exists():
        raise SourceError(f"no such file or folder: '{p}'")
    if p.is_dir():
        return scan_folder(p, all_files=all_files)
    if p.suffix.lower() in (".parquet", ".csv"):
        return read_listing(p)
    return [ImageSource(p.stem, str(p))]


def listing_table(sources: list[ImageSource]) -> pa.Table:
    return pa.Table.from_pylist([{"image_id": s.image_id, "uri": s.uri} for s in sources],
                                schema=LISTING_SCHEMA)
