"""A catalog as a ThreatExchange hash bank: one `<signal type> <hash>` line per image, the
format of python-threatexchange's `local_file` exchange (and of HMA's bank imports), plus a CSV
beside it that maps each hash back to its catalog image id.

Descriptor hashes are the index's own stored vectors (no image is decoded again); PDQ hashes come
from the catalog when the index was built with --pdq (else its files are hashed). Only images
the committed index searches are listed: removed ones are left out.
"""

from __future__ import annotations

import csv
import io
from enum import Enum
from pathlib import Path

import numpy as np

from copytrace.app.threatexchange.codec import SIGNAL_NAME, encode_vector, model_key
from copytrace.indexing import (
    IndexLayout,
    Manifest,
    read_catalog,
    read_embeddings,
    read_tombstones,
)
from copytrace.pipelines import hash_images
from copytrace.util import write_bytes_atomic

PDQ_NAME = "pdq"  # python-threatexchange's name for its PDQ signal type


class BankSignal(str, Enum):
    COPYTRACE = SIGNAL_NAME
    PDQ = PDQ_NAME


def _searchable(root: Path) -> set[str]:
    layout = IndexLayout(root)
    manifest = Manifest.read(layout.manifest)
    catalog = read_catalog(layout.catalog_dir)
    ok = {i for i, s in zip(catalog.column("image_id").to_pylist(),
                            catalog.column("status").to_pylist(), strict=True) if s == "ok"}
    return ok - read_tombstones(layout, manifest)


def _descriptor_rows(root: Path, keep: set[str]) -> list[tuple[str, str]]:
    key = model_key(Manifest.read(IndexLayout(root).manifest).model.sha256)
    ids, vectors = read_embeddings(IndexLayout(root).embeddings_dir)
    return [(i, encode_vector(v, key)) for i, v in zip(ids, vectors, strict=True) if i in keep]


def _pdq_rows(root: Path, keep: set[str]) -> list[tuple[str, str]]:
    hashes = hash_images(root)
    return [(i, np.asarray(code, np.uint8).tobytes().hex())
            for i, code in zip(hashes.ids, hashes.pdq, strict=True) if i in keep]


def write_bank(index: str | Path, out: str | Path, *,
               signals: tuple[BankSignal, ...] = (BankSignal.COPYTRACE, BankSignal.PDQ)) -> int:
    """Write the bank file `out` and `out`.ids.csv; returns the number of hashes written."""
    root = Path(index)
    if not IndexLayout(root).manifest.exists():
        raise FileNotFoundError(f"'{root}' is not a copytrace index (no manifest)")
    keep = _searchable(root)
    rows: list[tuple[str, str, str]] = []
    for signal in signals:
        found = _descriptor_rows(root, keep) if signal is BankSignal.COPYTRACE else _pdq_rows(root, keep)
        rows += [(image_id, signal.value, h) for image_id, h in found]
    write_bytes_atomic(out, "".join(f"{s} {h}\n" for _, s, h in rows).encode())
    ids = io.StringIO()
    writer = csv.writer(ids, lineterminator="\n")
    writer.writerow(("image_id", "signal_type", "hash"))
    writer.writerows(rows)
    write_bytes_atomic(f"{out}.ids.csv", ids.getvalue().encode())
    return len(rows)
