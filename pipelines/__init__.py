"""copytrace.pipelines: the jobs users run, with the same names and arguments as the CLI: index
build / add / remove, query, localize, hashes; on embedded Ray by default or a cluster with
`ray_address`. The dedup audit is the `dedup` sub-package.

A query touches query.py -> engine.py -> verify_pool.py (+ shard_search.py with --distributed,
localize.py with --localize); a build touches build.py -> embed_job.py.

Modules:
    adapt.py         `copytrace adapt`: a query adapter for a new tamper pattern [tests:
                     test_adapt.py]
    build.py         `copytrace index build` [tests: test_build_query.py, test_catalog_pdq.py,
                     test_dedup_against.py, ...]
    embed_job.py     Embed many files in chunks, inline or on Ray actors, yielding one result per
                     chunk [tests: test_embed_workers.py, test_cluster_node_loss.py]
    engine.py        `QueryEngine` [tests: test_dedup.py, test_query_engine.py,
                     test_reliability_updates.py]
    index_update.py  `copytrace index add/remove/compact/verify` [tests: test_catalog_pdq.py,
                     test_reliability_updates.py, test_updates.py]
    localize.py      `copytrace localize` and `copytrace localize-batch` [tests: test_localize.py]
    pdq_hashes.py    `copytrace hash` and `--match-hashes` [tests: test_catalog_pdq.py]
    query.py         `copytrace query` [tests: test_build_query.py, test_matching.py,
                     test_query_engine.py, ...]
    ray_runtime.py   Start or join Ray; run work on actors that survive losing nodes [tests:
                     test_cluster_node_loss.py, test_embed_workers.py]
    shard_search.py  Search an index whose shards live in Ray actors [tests: test_shard_search.py,
                     test_cluster_node_loss.py]
    verify_pool.py   Keypoint verification of many (query, references) jobs [tests:
                     test_query_engine.py, test_worker_guard.py]
    dedup/           sub-package, see its docstring

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "AdaptOptions": "adapt",
    "AdaptReport": "adapt",
    "BuildError": "build",
    "HashFormat": "pdq_hashes",
    "QueryEngine": "engine",
    "QueryRun": "query",
    "QueryTimings": "engine",
    "Verifier": "verify_pool",
    "VerifyBackend": "verify_pool",
    "VerifyJob": "verify_pool",
    "VerifyMode": "engine",
    "WorkersLostError": "ray_runtime",
    "adapt_index": "adapt",
    "add_images": "index_update",
    "build_index": "build",
    "compact_index": "index_update",
    "ensure_ray": "ray_runtime",
    "hash_images": "pdq_hashes",
    "hashes_csv": "pdq_hashes",
    "localize_batch": "localize",
    "localize_copy": "localize:localize",
    "localize_pair": "localize",
    "match_hash_list": "pdq_hashes",
    "prepare_keypoints": "engine",
    "query_index": "query",
    "remove_images": "index_update",
    "verify_index": "index_update:verify",
    "with_adapter_views": "engine",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
