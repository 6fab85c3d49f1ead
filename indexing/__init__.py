"""copytrace.indexing: vectors -> an index folder: Parquet catalog and embeddings, sharded FAISS
chosen by size and memory budget, manifest, versioned updates, DuckDB SQL.

Modules:
    adapters.py      Query adapters stored in an index folder [tests: test_adapt.py]
    budget.py        Human memory budgets ('4GB', '512MiB') as bytes, autofaiss style [tests:
                     test_indexing.py]
    catalog.py       The image catalog [tests: test_build_query.py, test_catalog_pdq.py,
                     test_reliability.py, ...]
    catalog_sql.py   SQL over an index's catalog with DuckDB [tests: test_build_query.py,
                     test_catalog_pdq.py, test_reliability_updates.py]
    embeddings.py    Embedding shards [tests: test_ondisk.py, test_updates.py]
    fingerprint.py   What an index folder holds, as digests two folders can be compared by [tests:
                     test_reliability_crash.py, test_reliability_updates.py]
    hold_points.py   Named moments at which a crash test can hold a writer, so `kill -9` lands there
                     every time [tests: test_reliability_updates.py]
    index_spec.py    Choose a FAISS index from the catalog size, the descriptor width and a memory
                     budget [tests: test_indexing.py, test_ondisk.py]
    lock.py          One writer per index folder [tests: test_reliability.py,
                     test_reliability_cli.py, test_updates.py]
    manifest.py      The index folder [tests: test_build_query.py, test_catalog_pdq.py,
                     test_index_tuning.py, ...]
    ondisk.py        One on-disk inverted-list file per index: shards merged under their one coarse
                     quantizer [tests: test_ondisk.py, test_shard_search.py]
    parts.py         Which Parquet parts of an index folder belong to the version its manifest names
                     [tests: test_reliability_updates.py]
    relocate.py      `copytrace index relocate IDX OLD NEW` [tests: test_reliability.py]
    shards.py        FAISS shards [tests: test_indexing.py, test_ondisk.py, test_updates.py]
    sources.py       What to index [tests: test_embed_workers.py, test_indexing.py,
                     test_reliability.py, ...]
    store.py         An index opened for search [tests: test_build_query.py, test_index_tuning.py,
                     test_shard_search.py, ...]
    tuning.py        Tune an approximate index's search parameters on copy queries, against exact
                     search [tests: test_indexing.py]
    updates.py       Change an index in place [tests: test_shard_search.py, test_updates.py]
    verify.py        `copytrace index verify` [tests: test_updates.py]

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "AdapterCard": "adapters",
    "AdapterError": "adapters",
    "ImageSource": "sources",
    "IndexLayout": "manifest",
    "IndexLockedError": "lock",
    "Manifest": "manifest",
    "ShardedIndex": "shards",
    "Storage": "index_spec",
    "build_shards": "shards",
    "SourceError": "sources",
    "adapter_cards": "adapters",
    "catalog_errors": "catalog_sql:errors",
    "choose_index": "index_spec",
    "exact_top_k": "tuning",
    "index_bytes": "shards",
    "index_fingerprint": "fingerprint:fingerprint",
    "index_sql": "catalog_sql:sql",
    "load_adapters": "adapters",
    "leftovers": "fingerprint",
    "list_sources": "sources",
    "lists_path": "ondisk",
    "manifest_version": "parts",
    "nlist_for": "index_spec",
    "parse_size": "budget",
    "read_catalog": "catalog",
    "read_embeddings": "embeddings",
    "read_tombstones": "updates",
    "recall_at_k": "tuning",
    "relocate_index": "relocate:relocate",
    "remove_adapter": "adapters",
    "scan_folder": "sources",
    "status_summary": "catalog_sql",
    "train_template": "shards",
    "tune_search": "tuning",
    "uncommitted_parts": "parts",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
