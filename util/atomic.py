"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Write to a temp file in the same folder, fsync, rename. An interrupted build leaves only
`.NAME.tmp-PID` files, which the next writer removes (`indexing.lock.remove_temp_files`). A full
disk surfaces as one `DiskFullError` naming the file; the files already renamed are intact.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_LOW_SPACE = 1 << 20  # below this free, a failed write (even one without an errno) is a full disk


class DiskFullError(OSError):
    """No space (or quota, or file-size limit) left for a write; nothing committed was touched."""


def _disk_full(path: Path, exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    try:
        return shutil.disk_usage(path.parent).free < _LOW_SPACE  # e.g. FAISS's fwrite failure
    except OSError:
        return False


def _atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError, pa.ArrowException) as exc:
        if _disk_full(path, exc):
            raise DiskFullError(
                f"disk full while writing '{path}': free some space and rerun the "
                "same command (finished parts are kept)") from None
        raise
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
