"""`--format table|json|csv`: tables fit 80 columns and never cut an id; CSV and JSON carry it all."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from copytrace.app.cli.output import QUERY_COLUMNS, print_rows, query_rows, rows_table
from copytrace.matching.results import Match, QueryResult

LONG = "query_identifier_kept_whole"


def _results() -> list[QueryResult]:
    ev = {"inliers": 212, "query_box": [1, 2, 300, 400], "homography": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    return [QueryResult(LONG, f"{LONG}.jpg", [Match("n03063599_coffee_mug", 0.9871, 0.8123, ev),
                                               Match("n07920052_espresso", 0.0312, 0.4011, {})]),
            QueryResult("Q00002", "Q00002.jpg", [Match("R000017", 0.5, 0.61, {"inliers": 31})])]


def _render(fmt: str, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    results = _results()
    print_rows(query_rows(results), QUERY_COLUMNS, fmt, console=console,
               json_payload=[r.as_json() for r in results], group="query_id")
    return console.export_text()


def test_table_fits_80_columns_without_cutting_ids():
    text = _render("table")
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert LONG in text and "n03063599_coffee_mug" in text and "…" not in text
    assert "similarity" not in text  # the optional column gave way to the ids
    assert text.count(LONG) == 1  # a query's id is printed once for its run of matches
    row = next(line for line in lines if "R000017" in line).split()
    assert row == ["Q00002", "1", "R000017", "0.5000", "yes", "31"]  # 0.5 is a copy
    wide = _render("table", width=140)
    assert "similarity" in wide and "0.8123" in wide


def test_ids_too_long_for_any_table_fold_instead_of_being_cut():
    huge = "q" * 50 + "_end"
    results = [QueryResult(huge, "x.jpg", [Match("r" * 40 + "_end", 0.9, 0.9, {})])]
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    print_rows(query_rows(results), QUERY_COLUMNS, "table", console=console)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    lines = text.splitlines()
    head = lines[0]
    ref = head.index("reference")
    body = [line for line in lines[2:] if line.strip()]
    assert "".join(line[:head.index("rank")].strip() for line in body) == huge  # folded, every character
    assert "".join(line[ref:].split()[0] for line in body) == "r" * 40 + "_end"
    assert "0.9000" in text and "yes" in text  # the numbers keep their columns


def test_csv_and_json_keep_every_column():
    rows = list(csv.DictReader(io.StringIO(_render("csv"))))
    assert [r["query_id"] for r in rows] == [LONG, LONG, "Q00002"]
    assert rows[0]["similarity"] == "0.8123" and rows[1]["copy"] == "no"
    data = json.loads(_render("json"))
    assert data[0]["matches"][0]["homography"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError):
        print_rows([], QUERY_COLUMNS, "xml")
    assert rows_table([], QUERY_COLUMNS).row_count == 0


@pytest.mark.slow
def test_query_command_at_80_columns(tmp_path, photos_dir):
    from copytrace.pipelines.build import build_index

    index = tmp_path / "index"
    build_index(photos_dir, index, use_ray=False, show_progress=False)
    queries = tmp_path / "q"
    queries.mkdir()
    shutil.copy(photos_dir / "coffee.jpg", queries / f"{LONG}.jpg")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    cmd = [str(Path(sys.executable).parent / "copytrace"), "query", str(queries), "--index", str(index),
           "-k", "3", "-q", "--no-ray"]
    table = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert table.returncode == 0, table.stderr
    assert max(map(len, table.stdout.splitlines())) <= 80 and LONG in table.stdout
    assert next(ln for ln in table.stdout.splitlines() if LONG in ln).split()[1:3] == ["1", "coffee"]
    rows = list(csv.DictReader(io.StringIO(subprocess.run(
        [*cmd, "--format", "csv"], capture_output=True, text=True, env=env, timeout=600).stdout)))
    assert len(rows) == 3 and rows[0]["reference_id"] == "coffee" and rows[0]["copy"] == "yes"


def test_sql_columns_keep_ids_whole_and_align_numbers():
    from copytrace.app.cli.output import columns_for

    rows = [{"image_id": "n01440764_tench", "uri": "/data/photos/long_folder/tench/a.jpg", "width": 500,
             "note": "a free text column " * 3}]
    cols = {c.key: c for c in columns_for(rows, list(rows[0]))}
    assert cols["image_id"].is_id and cols["uri"].is_id and cols["width"].numeric
    assert not cols["note"].is_id and not cols["note"].numeric
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    print_rows(rows, list(cols.values()), "table", console=console)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and rows[0]["uri"] in text and "…" not in text
