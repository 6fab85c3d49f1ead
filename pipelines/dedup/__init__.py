"""copytrace.pipelines.dedup: the dataset dedup audit (`copytrace dedup`): candidates, scoring,
bridges, report, SQL, and `--against` an existing index.

Modules:
    against.py       `copytrace dedup NEW_IMAGES --against IDX` [tests: test_dedup.py,
                     test_dedup_against.py]
    audit.py         `copytrace dedup` [tests: test_dedup.py, test_reliability.py]
    bridges.py       Duplicate pairs must agree with their neighbours [tests: test_dedup.py]
    composites.py    One catalog photo pasted into another: composite relations with roles
                     [tests: test_dedup_roles.py]
    candidates.py    Candidate pairs for a dedup audit; the self-join as a Ray job
                     (`neighbours_on_ray`) [tests: test_dedup.py, test_cluster_node_loss.py]
    features.py      Per-image dedup features [tests: test_dedup_features.py]
    report.py        The audit's report.html
    score.py         Score dedup candidates [tests: test_dedup.py]
    sql.py           `copytrace sql AUDIT_DIR "SELECT ..."` [tests: test_dedup.py]

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "ScoreJob": "score",
    "audit_sql": "sql",
    "dedup": "audit",
    "find_composites": "composites",
    "dedup_against": "against",
    "neighbours_on_ray": "candidates",
    "score_jobs": "score",
    "write_hash_matches": "audit",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
