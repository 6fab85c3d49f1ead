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
from rich.table import Table


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

    @property
    def title(self) -> str:
        return self.header or self.key


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def rows_table(rows: Sequence[dict], columns: Sequence[Column], *, title: str | None = None) -> Table:
    """A compact rich table (no vertical rules) whose id columns keep their full width."""
    table = Table(box=box.SIMPLE_HEAD, title=title, pad_edge=False, collapse_padding=True)
    for c in columns:
        longest = max([len(c.title), *(len(_cell(r.get(c.key))) for r in rows)])
        table.add_column(c.title, justify="right" if c.numeric else "left",
                         no_wrap=c.is_id or c.numeric, overflow="fold",
                         min_width=longest if (c.is_id or c.numeric) else None)
    for r in rows:
        table.add_row(*(_cell(r.get(c.key)) for c in columns))
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
               title: str | None = None) -> None:
    """Print `rows` as a table, CSV (the table's columns) or JSON (`json_payload` when given:
    the full records with their evidence, else the rows)."""
    console = console or Console()
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.JSON:
        text = json.dumps(list(rows) if json_payload is None else json_payload, default=str)
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    elif fmt is OutputFormat.CSV:
        console.print(rows_csv(rows, columns), end="", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(rows_table(rows, columns, title=title))
