"""copytrace.util: the ground floor every other floor uses: atomic writes, progress, the listing
rule, worker guards, tcmalloc. Imports nothing from copytrace.

Modules:
    atomic.py        Atomic file writes
    lazy_exports.py  Lazy package front doors
    listing.py       Which files are images, and how a listing names them
    progress.py      A rich progress bar on stderr that callers drive with `advance(n)`
    tcmalloc.py      Preload tcmalloc for torch work
    worker_guard.py  Worker processes of copytrace's local pools (decode, embed, verify) end with
                     their parent [tests: test_worker_guard.py]

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util.lazy_exports import lazy_api

_EXPORTS = {
    "IMAGE_SUFFIXES": "listing",
    "ListingError": "listing",
    "exit_with_parent": "worker_guard",
    "is_image_name": "listing",
    "is_listing": "listing",
    "lazy_api": "lazy_exports",
    "listing_paths": "listing",
    "preload_env": "tcmalloc",
    "progress_bar": "progress",
    "reexec_with_tcmalloc": "tcmalloc",
    "tcmalloc_active": "tcmalloc",
    "write_bytes_atomic": "atomic",
    "write_file_atomic": "atomic",
    "write_json_atomic": "atomic",
    "write_parquet_atomic": "atomic",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
