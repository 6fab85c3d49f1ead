"""What to index: a folder scanned recursively, or a Parquet/CSV listing of paths.

Every path is stored absolute and normalised (`/data/imgs/a.jpg`, never `imgs/./a.jpg`), so an
index answers the same from any working directory. Image ids are strings the user chooses; by
default the file stem (DISC2021's `Q00001.jpg` -> `Q00001`). When two files share a stem, both get
their relative path (without suffix) instead, so no image is silently dropped.

A folder scan accounts for everything it meets: broken links, special files, folders it cannot
list and names that are not UTF-8 become sources with an `error` (one catalog row each, never
read); symlinked folders are followed once (loops are cut); depth is unbounded (no recursion).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from copytrace.util.listing import (
    ID_COLUMNS,
    IMAGE_SUFFIXES,
    ListingError,
    is_listing,
    path_column,
    read_listing_rows,
)

LISTING_SCHEMA = pa.schema([("image_id", pa.string()), ("uri", pa.string())])


class SourceError(ValueError):
    """The input location cannot be listed (missing path, unreadable listing, bad columns)."""


class NoImagesError(SourceError):
    """The input holds nothing that could be indexed (no files, or no file decoded)."""


@dataclass(frozen=True)
class ImageSource:
    image_id: str
    uri: str
    error: str | None = None  # known without reading it: the catalog records it as is


def absolute_uri(path: str | Path) -> str:
    """Absolute and lexically normalised (`..` and `.` folded, symlinks kept as the user named
    them), so the same file always has the same uri wherever the command ran."""
    return os.path.abspath(os.fspath(path))


def printable(text: str) -> str:
    """A path string that Arrow and terminals accept: undecodable bytes shown as `\\xNN`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def _ids_from_paths(paths: list[Path], root: Path | None) -> list[str]:
    stems = Counter(p.stem for p in paths)
    ids = []
    for p in paths:
        if stems[p.stem] == 1:
            ids.append(printable(p.stem))
        else:
            rel = p.relative_to(root) if root else p
            ids.append(printable(rel.with_suffix("").as_posix()))
    return ids


def _entry_problem(entry: os.DirEntry) -> str | None:
    """Why a folder entry that is not a directory cannot be an image, or None if it may be."""
    try:
        st = os.stat(entry.path)
    except FileNotFoundError:
        return f"broken symbolic link (target '{printable(os.readlink(entry.path))}' is missing)"
    except OSError as exc:
        return f"cannot open: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (device, pipe or socket)"
    return None


def walk_files(folder: Path) -> tuple[list[Path], dict[Path, str]]:
    """Every non-hidden entry under `folder` that is not a folder, plus a reason for those that
    cannot be read (and for folders that cannot be listed). Iterative: any depth works."""
    files: list[Path] = []
    problems: dict[Path, str] = {}
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            st = os.stat(current)
            if (st.st_dev, st.st_ino) in seen:
                continue  # a symlink loop, or a folder linked twice: list it once
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            problems[current] = f"cannot list folder: {exc.strerror or exc}"
            files.append(current)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(path)
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    problems[path] = "is a directory named like an image (its files are listed)"
                    files.append(path)
                continue
            files.append(path)
            problem = _entry_problem(entry)
            if problem:
                problems[path] = problem
    return files, problems


def scan_folder(folder: Path, *, all_files: bool = False) -> list[ImageSource]:
    """Files under `folder`, sorted; `all_files` keeps non-image suffixes (they get an error row).

    Entries that cannot be images (broken links, special files, unlistable folders, names that
    are not UTF-8) always come back, with their `error`, when their name looks like an image.
    """
    root = Path(absolute_uri(folder))
    found, problems = walk_files(root)
    keep = sorted((p for p in found if all_files or p.suffix.lower() in IMAGE_SUFFIXES
                   or problems.get(p, "").startswith("cannot list folder")),
                  key=lambda p: printable(str(p)))
    sources = []
    for image_id, p in zip(_ids_from_paths(keep, root), keep, strict=True):
        uri = printable(str(p))
        error = problems.get(p)
        if error is None and uri != str(p):
            error = "path is not valid UTF-8 (rename the file to index it)"
        sources.append(ImageSource(image_id, uri, error))
    return sources


def _check_root(paths: list[Path], root: Path, listing: Path) -> None:
    """Refuse a listing that names files outside `root` (symlinks resolved: no escape by link)."""
    real_root = os.path.realpath(root)
    outside = [p for p in paths
               if os.path.commonpath([real_root, os.path.realpath(p)]) != real_root]
    if outside:
        raise SourceError(
            f"listing '{listing}' names {len(outside)} path(s) outside the allowed root "
            f"'{root}', e.g. '{printable(str(outside[0]))}': refused")


def read_listing(listing: Path, *, root: str | Path | None = None) -> list[ImageSource]:
    """Parquet or CSV with a `path` (or `uri`) column and an optional `image_id`/`id` column.

    Relative paths are relative to the listing's folder. With `root`, any path that resolves
    outside it refuses the whole listing.
    """
    try:
        rows = read_listing_rows(listing)
        if not rows:
            return []
        path_col = path_column(listing, set(rows[0]))
    except ListingError as exc:
        raise SourceError(str(exc)) from None
    id_col = next((c for c in ID_COLUMNS if c in rows[0]), None)
    base = Path(absolute_uri(listing.parent))
    if any(not r[path_col] for r in rows):
        raise SourceError(f"listing '{listing}' has rows with an empty '{path_col}'")
    paths = [Path(absolute_uri(base / r[path_col])) for r in rows]
    if root is not None:
        _check_root(paths, Path(absolute_uri(root)), listing)
    ids = [str(r[id_col]) for r in rows] if id_col else _ids_from_paths(paths, base)
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise SourceError(f"listing '{listing}' repeats image ids, e.g. {dupes[:3]}")
    return [ImageSource(i, str(p)) for i, p in zip(ids, paths, strict=True)]


def list_sources(location: str | Path, *, all_files: bool = False,
                 root: str | Path | None = None) -> list[ImageSource]:
    """A folder, a single image, or a listing file (.parquet/.csv); uris come back absolute.

    `root` confines what may be read: the location itself and every path a listing names must
    lie under it.
    """
    p = Path(location)
    if not p.exists() and not p.is_symlink():
        raise SourceError(f"no such file or folder: '{p}'")
    if root is not None and not is_listing(p):
        _check_root([Path(absolute_uri(p))], Path(absolute_uri(root)), p)
    if p.is_dir():
        return scan_folder(p, all_files=all_files)
    if is_listing(p):
        return read_listing(p, root=root)
    uri = printable(absolute_uri(p))
    odd = uri != absolute_uri(p)
    return [ImageSource(printable(p.stem), uri, "path is not valid UTF-8" if odd else None)]


def listing_digest(sources: list[ImageSource]) -> str:
    """What a resumed build must match: ids and uris, in order."""
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.image_id}\t{s.uri}\n".encode())
    return h.hexdigest()


def listing_table(sources: list[ImageSource]) -> pa.Table:
    return pa.Table.from_pylist([{"image_id": s.image_id, "uri": s.uri} for s in sources],
                                schema=LISTING_SCHEMA)
