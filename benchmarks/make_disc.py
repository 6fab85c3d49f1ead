"""`copytrace bench make-disc`: a reproducible DISC2021-style benchmark from a folder of photos.

Of the selected photos, a share become references and get edited copies as queries (positives);
the rest get edited copies that match nothing in the references (negatives), and also serve as
backgrounds and overlays for image-in-image edits. With a groups file (UKBench), one view per
group is added as a reference and the other views become queries that must NOT match: another
photo of the same object is not a copy. Names are opaque (Q000123, R000045); `sources.csv` keeps
the provenance of every file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from copytrace.descriptors import DecodeError, EditContext, decode_file, random_copy
from copytrace.indexing import scan_folder
from copytrace.util import write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscBenchmark:
    out: Path
    references: int
    positive_queries: int
    negative_queries: int
    hard_negative_queries: int
    seed: int


HARD_NEGATIVE_MARK = "hard-negative-of:"  # `edits` of a hard-negative query in sources.csv


def hard_negative_sources(folder: str | Path) -> dict[str, Path]:
    """Hard-negative query id -> the photo it was made from, read from sources.csv."""
    with open(Path(folder) / "sources.csv", newline="") as fh:
        return {row["id"]: Path(row["source"]) for row in csv.DictReader(fh)
                if row.get("edits", "").startswith(HARD_NEGATIVE_MARK)}


def load_photo(path: str | Path, max_side: int) -> Image.Image | None:
    """The photo shrunk to fit `max_side`, or None (logged) when it cannot be decoded."""
    try:
        pixels = decode_file(path).pixels
    except DecodeError as exc:
        log.warning("cannot decode '%s': %s (skipped)", path, exc)
        return None
    img = Image.fromarray(pixels)
    img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _csv(rows: list[tuple], header: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _read_groups(path: Path) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            groups[row["group"]].append(path.parent / row["file"])
    return {g: sorted(files) for g, files in groups.items()}


def make_disc(
    images: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    skip: int = 0,
    limit: int | None = None,
    reference_fraction: float = 0.75,
    copies_per_reference: int = 1,
    hard_negatives: str | Path | None = None,
    strength: float = 1.0,
    max_side: int = 1024,
) -> DiscBenchmark:
    """Write `out/references/`, `out/queries/`, `out/gt.csv`, `out/sources.csv`, `out/benchmark.json`.

    `skip`/`limit` select a slice of the photos sorted by path (e.g. the last 300 of a folder
    whose first 700 trained the descriptor).
    """
    out = Path(out)
    files = [s.uri for s in scan_folder(Path(images))]
    files = files[skip : skip + limit if limit is not None else None]
    if len(files) < 2:
        raise ValueError(f"need at least 2 photos in '{images}' after skip/limit, found {len(files)}")
    rng = random.Random(seed)
    order = files[:]
    rng.shuffle(order)
    n_ref = max(1, min(len(order) - 1, round(len(order) * reference_fraction)))
    ref_files, neg_files = order[:n_ref], order[n_ref:]
    neg_images = {p: img for p in neg_files if (img := load_photo(p, max_side)) is not None}
    context = EditContext(others=list(neg_images.values()), strength=strength)

    references: list[tuple[str, bytes, str]] = []  # (id, data, source)
    queries: list[tuple[bytes, str, str, str]] = []  # (data, reference id or "", source, edits)
    for path in ref_files:
        img = load_photo(path, max_side)
        if img is None:
            continue
        rid = f"R{len(references):06d}"
        references.append((rid, jpeg_bytes(img, 95), path))
        for _ in range(copies_per_reference):
            copy, recipe = random_copy(img, rng, context=context)
            queries.append((jpeg_bytes(copy), rid, path, "+".join(recipe.edits)))
    for path, img in neg_images.items():
        copy, recipe = random_copy(img, rng, context=context)
        queries.append((jpeg_bytes(copy), "", path, "+".join(recipe.edits)))
    hard = 0
    if hard_negatives:
        for _, group in sorted(_read_groups(Path(hard_negatives)).items()):
            first = load_photo(str(group[0]), max_side)
            if first is None:
                continue
            rid = f"R{len(references):06d}"
            references.append((rid, jpeg_bytes(first, 95), str(group[0])))
            for other in group[1:]:
                img = load_photo(str(other), max_side)
                if img is not None:
                    queries.append((jpeg_bytes(img), "", str(other), f"{HARD_NEGATIVE_MARK}{rid}"))
                    hard += 1

    rng.shuffle(queries)
    for rid, data, _ in references:
        write_bytes_atomic(out / "references" / f"{rid}.jpg", data)
    gt_rows, source_rows = [], [(rid, "reference", src, "") for rid, _, src in references]
    for i, (data, rid, src, edits) in enumerate(queries):
        qid = f"Q{i:06d}"
        write_bytes_atomic(out / "queries" / f"{qid}.jpg", data)
        gt_rows.append((qid, rid))
        source_rows.append((qid, "query", src, edits))
    write_bytes_atomic(out / "gt.csv", _csv(gt_rows, ("query_id", "reference_id")))
    write_bytes_atomic(out / "sources.csv", _csv(source_rows, ("id", "role", "source", "edits")))
    positives = sum(1 for _, rid in gt_rows if rid)
    summary = DiscBenchmark(out, len(references), positives, len(queries) - positives - hard, hard,
                            seed)
    write_json_atomic(out / "benchmark.json", {
        **asdict(summary), "out": str(out), "images": str(images), "skip": skip, "limit": limit,
        "reference_fraction": reference_fraction, "strength": strength,
        "hard_negatives": str(hard_negatives) if hard_negatives else None})
    return summary


def load_benchmark_info(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "benchmark.json").read_text())
