"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Write to a temp file in the same folder, fsync, rename. An interrupted build leaves only
`.tmp-*` files, which the next run ignores and overwrites.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    return write_bytes_atomic(path, text.encode())


def write_parquet_atomic(path: str | Path, table: pa.Table) -> Path:
    return _atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_file_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """For writers that need a path (FAISS, OpenCV): `write(tmp_path)` then rename."""
    return _atomic(path, write)
