"""One writer per index folder: a lock file holding the owner's PID, released by the kernel.

The lock is an `flock` on `<index>/.lock`, so it dies with its process (kill -9 included): a
lock file whose flock is free is stale, whatever PID it names, and is taken over with a log line.
A second writer while the first is alive is refused with a message naming the owner.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from copytrace.indexing.sources import NoImagesError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class IndexLockedError(RuntimeError):
    """Another live process is writing this index folder."""


def _owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def index_lock(root: str | Path, *, purpose: str = "write") -> Iterator[Path]:
    """Hold the write lock of index folder `root` (created if missing) for the `with` body."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            raise IndexLockedError(
                f"index '{root}' is being written by process {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')} ({owner.get('purpose', 'write')} since "
                f"{owner.get('since', '?')}): wait for it to finish, or stop it first"
            ) from None
        stale = _owner(fd)
        if stale.get("pid"):
            alive = stale.get("host") == socket.gethostname() and _pid_alive(int(stale["pid"]))
            log.warning("index '%s': taking over a stale lock of process %s (%s)", root,
                        stale["pid"], "PID now reused" if alive else "no longer running")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # an empty lock file is a released lock, not a stale one
    finally:
        os.close(fd)


def remove_temp_files(root: str | Path) -> int:
    """Delete the `.NAME.tmp-PID` files an interrupted atomic write leaves (call under the lock)."""
    removed = 0
    for tmp in Path(root).rglob(".*.tmp-*"):
        try:
            tmp.unlink()
            removed += 1
        except OSError as exc:
            log.warning("cannot remove temp file '%s': %s", tmp, exc)
    return removed


def clear_folder(root: str | Path) -> None:
    """Empty an index folder for `--overwrite`, keeping the lock file the caller holds."""
    for child in Path(root).iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


F = TypeVar("F", bound=Callable)


def writes_index(arg: str = "index") -> Callable[[F], F]:
    """Decorate a job that writes the index folder named by its argument `arg`: it runs under
    the folder's lock, after the temp files of interrupted writers are removed. When it fails in
    a folder it created, before writing anything or finding nothing to index, the folder is
    removed again (no half-built index)."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            root = Path(signature.bind(*args, **kwargs).arguments[arg])
            created = not root.exists()
            try:
                with index_lock(root, purpose=fn.__name__):
                    remove_temp_files(root)
                    return fn(*args, **kwargs)
            except IndexLockedError:
                raise  # the folder is the other writer's
            except Exception as exc:
                empty = root.is_dir() and {p.name for p in root.iterdir()} <= {LOCK_FILE}
                if created and (empty or isinstance(exc, NoImagesError)):
                    shutil.rmtree(root, ignore_errors=True)
                raise

        return wrapper  # type: ignore[return-value]

    return decorate
