"""`copytrace sql AUDIT_DIR "SELECT ..."`: DuckDB over an audit's tables and its index's catalog.

Views: `pairs`, `clusters`, `candidates`, `hash_matches` (when written), `catalog` and
`embeddings` of the audited index, and `pdq` (image_id, pdq_hex, pdq_quality) from the stored
dedup features.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from copytrace.indexing.catalog_sql import connect, run_statement
from copytrace.pipelines.dedup.features import FEATURES_FILE

AUDIT_TABLES = ("pairs", "clusters", "candidates", "hash_matches")


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def audit_connection(audit_dir: str | Path) -> duckdb.DuckDBPyConnection:
    audit = Path(audit_dir)
    meta = audit / "audit.json"
    if not meta.exists():
        raise FileNotFoundError(f"'{audit_dir}' is not a dedup audit folder (no audit.json); "
                                "run copytrace dedup first")
    index = Path(json.loads(meta.read_text())["index"])
    con = connect(index) if index.exists() else duckdb.connect()
    for name in AUDIT_TABLES:
        if (audit / f"{name}.parquet").exists():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM "
                        f"read_parquet('{_quote(audit / (name + '.parquet'))}')")
    for features in (index / FEATURES_FILE, audit / FEATURES_FILE):
        if features.exists():
            con.execute("CREATE VIEW pdq AS SELECT image_id, lower(hex(pdq)) AS pdq_hex, "
                        f"pdq_quality FROM read_parquet('{_quote(features)}')")
            break
    return con


def audit_sql(audit_dir: str | Path, statement: str) -> pa.Table:
    """Run one statement; DuckDB's errors come back as a one-line `CatalogSQLError`."""
    with audit_connection(audit_dir) as con:
        return run_statement(con, statement)
