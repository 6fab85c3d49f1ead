"""Which Parquet parts of an index folder belong to the version its manifest names.

A build writes `part-NNNNNN.parquet`: each is committed as it lands (a resumed build reuses it).
`index add` writes `part-NNNNNN.vV.parquet`, which belongs to version V: it stays invisible to
readers (catalog SQL, the background sample, `read_catalog`) until manifest.json says version V or
later, so a reader never sees rows of an add before its manifest swap. `index compact` writes a
part's filtered copy under the same number and its new version: from that version on it replaces
the older file of that number (the latest committed version of each number is read). A part of a
version the manifest never reached is left by a killed writer; the next writer deletes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_PART = re.compile(r"^part-(\d+)(?:\.v(\d+))?\.parquet$")
PART_GLOB = "part-*.parquet"
MANIFEST_FILE = "manifest.json"


def part_number(path: str | Path) -> int | None:
    m = _PART.match(Path(path).name)
    return int(m.group(1)) if m else None


def part_version(path: str | Path) -> int | None:
    """The version an update's part belongs to; None for a build's part (always committed)."""
    m = _PART.match(Path(path).name)
    return int(m.group(2)) if m and m.group(2) else None


def versioned_part_name(number: int, version: int) -> str:
    return f"part-{number:06d}.v{version}.parquet"


def manifest_version(root: str | Path) -> int | None:
    """The committed version of index folder `root`; None before its build finished."""
    try:
        return int(json.loads((Path(root) / MANIFEST_FILE).read_text()).get("version", 1))
    except (OSError, ValueError):
        return None


def _committed(path: Path, version: int | None) -> bool:
    v = part_version(path)
    return v is None or (version is not None and v <= version)


def committed_parts(folder: str | Path, version: int | None = None) -> list[Path]:
    """The parts of `folder` (an index's catalog/ or embeddings/) that `version` reads, in
    position order: of each number, the file of the latest version not after `version` (a
    build's part counts as version 0). `version` defaults to the one manifest.json names now."""
    folder = Path(folder)
    if version is None:
        version = manifest_version(folder.parent)
    latest: dict[int, Path] = {}
    for p in folder.glob(PART_GLOB):
        number = part_number(p)
        if number is None or not _committed(p, version):
            continue
        if number not in latest or (part_version(p) or 0) > (part_version(latest[number]) or 0):
            latest[number] = p
    return [latest[n] for n in sorted(latest)]


def uncommitted_parts(root: str | Path, version: int | None = None) -> list[Path]:
    """Parts of versions later than the committed one: what a killed `index add` left behind."""
    root = Path(root)
    if version is None:
        version = manifest_version(root)
    return sorted(p for sub in ("catalog", "embeddings") for p in (root / sub).glob(PART_GLOB)
                  if part_number(p) is not None and not _committed(p, version))


def remove_uncommitted_parts(root: str | Path, version: int) -> int:
    """Delete the parts no committed version reads (call under the index lock)."""
    stale = uncommitted_parts(root, version)
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def superseded_parts(root: str | Path, versions: tuple[int, ...]) -> list[Path]:
    """Committed parts that none of `versions` reads: replaced by a compaction before them."""
    root = Path(root)
    out = []
    for sub in ("catalog", "embeddings"):
        read = {p for v in versions for p in committed_parts(root / sub, v)}
        out += [p for p in (root / sub).glob(PART_GLOB) if part_number(p) is not None
                and _committed(p, max(versions)) and p not in read]
    return sorted(out)
