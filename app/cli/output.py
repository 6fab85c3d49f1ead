"""Result output for the CLI: one set of rows printed as an 80-column table, JSON or CSV.

Tables keep ids whole (an id column never wraps or shrinks below its longest value); the other
columns give up width first. Long evidence belongs in JSON, not in a table column.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from copytrace.matching import QueryResult


class OutputFormat(str, Enum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


@dataclass(frozen=True)
class Column:
    """One printed column: `key` into each row dict; ids are never wrapped or truncated."""

    key: str
    header: str | None = None
    is_id: bool = False
    numeric: bool = False
    optional: bool = False  # left out of a table that would not fit otherwise (still in CSV/JSON)

    @property
    def title(self) -> str:
        return self.header or self.key


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _longest(rows: Sequence[dict], c: Column) -> int:
    return max([len(c.title), *(len(_cell(r.get(c.key))) for r in rows)])


def _id_widths(rows: Sequence[dict], columns: Sequence[Column], width: int) -> dict[str, int]:
    """Widths for id columns that must fold: what numbers and the text columns' longest words
    leave, shared in proportion to each id's length."""
    ids = {c.key: _longest(rows, c) for c in columns if c.is_id}
    words = [max([len(c.title), *(len(w) for r in rows for w in _cell(r.get(c.key)).split())])
             for c in columns if not c.is_id and not c.numeric]
    fixed = sum(_longest(rows, c) for c in columns if c.numeric) + sum(words) + 2 * (len(columns) - 1)
    room = max(8 * len(ids), width - fixed)
    total = max(1, sum(ids.values()))
    return {k: max(8, n * room // total) for k, n in ids.items()}


def _table(rows: Sequence[dict], columns: Sequence[Column], title: str | None, group: str | None,
           *, id_widths: dict[str, int] | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=title, show_edge=False, pad_edge=False, collapse_padding=True)
    for c in columns:
        longest = _longest(rows, c)
        fixed = (id_widths or {}).get(c.key) if c.is_id else None
        whole = c.numeric or (c.is_id and fixed is None)
        table.add_column(c.title, justify="right" if c.numeric else "left", no_wrap=whole,
                         overflow="fold", min_width=longest if whole else None, width=fixed)
    previous = None
    for r in rows:
        cells = [_cell(r.get(c.key)) for c in columns]
        if group is not None:
            if previous is not None and r.get(group) != previous:
                table.add_section()
            elif previous is not None:  # the group's id is printed once, on its first row
                cells = ["" if c.key == group else v for c, v in zip(columns, cells, strict=True)]
            previous = r.get(group)
        table.add_row(*cells)
    return table


def rows_table(rows: Sequence[dict], columns: Sequence[Column], *, width: int = 80,
               title: str | None = None, group: str | None = None) -> Table:
    """A compact rich table (no vertical rules) whose id columns keep their full width; optional
    columns are left out, last first, until it fits `width`; ids too long for even that fold onto
    more lines (never cut). `group`: a column printed once per run of equal values."""
    columns = list(columns)
    table = _table(rows, columns, title, group)
    console = Console(width=max(width, 1000))

    def too_wide(t: Table) -> bool:
        return Measurement.get(console, console.options, t).minimum > width

    while too_wide(table) and any(c.optional for c in columns):
        columns.pop(max(i for i, c in enumerate(columns) if c.optional))
        table = _table(rows, columns, title, group)
    if too_wide(table):
        return _table(rows, columns, title, group, id_widths=_id_widths(rows, columns, width))
    return table


def rows_csv(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    for r in rows:
        writer.writerow(["" if r.get(c.key) is None else r.get(c.key) for c in columns])
    return buf.getvalue()


def print_rows(rows: Sequence[dict], columns: Sequence[Column], fmt: OutputFormat | str, *,
               console: Console | None = None, json_payload: Any = None,
               title: str | None = None, group: str | None = None) -> None:
    """Print `rows` as a table, CSV (the table's columns) or JSON (`json_payload` when given:
    the full records with their evidence, else the rows)."""
    console = console or Console()
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.JSON:
        text = json.dumps(list(rows) if json_payload is None else json_payload, indent=2, default=str)
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    elif fmt is OutputFormat.CSV:
        console.print(rows_csv(rows, columns), end="", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(rows_table(rows, columns, width=console.width, title=title, group=group))


QUERY_COLUMNS = (Column("query_id", "query", is_id=True), Column("rank", numeric=True),
                 Column("reference_id", "reference", is_id=True), Column("score", numeric=True),
                 Column("copy"), Column("inliers", numeric=True, optional=True),
                 Column("similarity", numeric=True, optional=True))


HASH_MATCH_COLUMNS = (Column("query_id", "query", is_id=True), Column("distance", numeric=True),
                      Column("list_hash", "listed hash", is_id=True), Column("list_label", "label"))
"""`query --match-hashes`: a query within PDQ distance 31 of a listed hash."""


def query_rows(results: Sequence[QueryResult], *, threshold: float = 0.5) -> list[dict]:
    """One row per (query, match): ids, rank, calibrated score, the verdict at `threshold`, and
    the two evidence numbers that fit a table (boxes and homography stay in JSON)."""
    return [{"query_id": r.query_id, "rank": rank, "reference_id": m.reference_id,
             "score": round(m.score, 4), "copy": "yes" if m.score >= threshold else "no",
             "inliers": m.evidence.get("inliers"), "similarity": round(m.similarity, 4)}
            for r in results for rank, m in enumerate(r.matches, 1)]


ID_NAMES = ("uri", "path", "sha256")  # beside any column named *id: never cut


def columns_for(rows: Sequence[dict], names: Sequence[str]) -> list[Column]:
    """Columns for rows of unknown shape (e.g. SQL results): ids kept whole, numbers right-aligned."""
    def numeric(name: str) -> bool:
        values = [r.get(name) for r in rows if r.get(name) is not None]
        return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)

    return [Column(n, is_id=n.lower().endswith("id") or n.lower() in ID_NAMES, numeric=numeric(n))
            for n in names]


def print_table(table, fmt: OutputFormat, *, console: Console) -> None:  # noqa: ANN001 - pyarrow
    """A query result of unknown shape (`index sql`, `copytrace sql`), one rendering for both."""
    rows = table.to_pylist()
    print_rows(rows, columns_for(rows, table.column_names), fmt, console=console)
