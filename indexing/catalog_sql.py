"""SQL over an index's catalog with DuckDB: status summaries, error listings, audits.

Views: `catalog` (one row per input) and `embeddings` (image_id, embedding).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from copytrace.indexing.manifest import IndexLayout
from copytrace.indexing.parts import committed_parts, manifest_version


class CatalogSQLError(ValueError):
    """A statement DuckDB refused (syntax, unknown column, ...); the message is one line."""


def connect(index_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """Views over the parts of the committed version only: the rows of an `index add` appear
    with its manifest swap, never before (`indexing.parts`)."""
    layout = IndexLayout(Path(index_dir))
    if not layout.catalog_dir.is_dir():
        raise FileNotFoundError(f"'{index_dir}' is not a copytrace index (no catalog/ folder)")
    version = manifest_version(layout.root)
    con = duckdb.connect()
    for view, folder in (("catalog", layout.catalog_dir), ("embeddings", layout.embeddings_dir)):
        parts = committed_parts(folder, version)
        if parts:
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in parts)
            # union_by_name: parts written before a column existed (catalog `pdq`) read as null
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{files}], "
                        "union_by_name = true)")
    return con


def sql(index_dir: str | Path, statement: str) -> pa.Table:
    """Run one statement over the views; DuckDB's errors come back as `CatalogSQLError`."""
    with connect(index_dir) as con:
        return run_statement(con, statement)


def run_statement(con: duckdb.DuckDBPyConnection, statement: str) -> pa.Table:
    """One statement on an open connection; DuckDB's errors become a one-line `CatalogSQLError`."""
    try:
        result = con.sql(statement)
        return result.to_arrow_table() if result is not None else pa.table({})
    except duckdb.Error as exc:
        first = " ".join(str(exc).split("\n")[:1]).strip()
        raise CatalogSQLError(f"SQL error: {first}") from None


def status_summary(index_dir: str | Path) -> dict[str, int]:
    t = sql(index_dir, "SELECT status, count(*) AS n FROM catalog GROUP BY status ORDER BY status")
    return dict(zip(t.column("status").to_pylist(), t.column("n").to_pylist(), strict=True))


def errors(index_dir: str | Path, limit: int = 1000) -> pa.Table:
    return sql(index_dir, "SELECT image_id, uri, error FROM catalog WHERE status = 'error' "
                          f"ORDER BY image_id LIMIT {int(limit)}")
