"""`--help` at 80 columns: every command's help fits, cuts nothing, documents every option, and
names values PATH / INT / TEXT (no `<bool>` after a flag)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from copytrace.app.cli import app


def _commands(command, path=()):  # noqa: ANN001, ANN202
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


def test_every_help_page_fits_80_columns_and_cuts_nothing():
    runner = CliRunner()
    paths = [p for p, _ in _commands(typer.main.get_command(app))]
    assert ("query",) in paths and ("eval", "disc") in paths and ("index", "build") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        too_long = [line for line in text.splitlines() if len(line) > 80]
        assert not too_long, (path, too_long)
        assert "…" not in text and "<bool>" not in text, (path, text)
        options = text.partition("Options:")[2]  # (typer shows an argument's type as <path>)
        assert not re.search(r"<(path|int|str|float)>", options), (path, text)


def test_every_option_has_help():
    missing = []
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if param.param_type_name == "option" and not (param.help or "").strip():
                missing.append(f"copytrace {' '.join(path)} {param.opts[0]}")
    assert not missing, "options without help:\n" + "\n".join(missing)


def test_query_help_from_the_real_command():
    env = {**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([str(Path(sys.executable).parent / "copytrace"), "query", "--help"],
                         capture_output=True, text=True, env=env, timeout=300).stdout
    assert max(map(len, out.splitlines())) <= 80
    for expected in ("-i, --index PATH", "-k INT", "--ray / --no-ray", "-f, --format table|json|csv",
                     "[default: 10"):
        assert expected in out, expected
    assert re.search(r"^  --json\s+Same as --format json", out, re.M)  # a flag takes no value


def test_command_lists_show_whole_summaries():
    from copytrace.app.cli.help import summary

    assert summary("Run DuckDB SQL over the catalog, e.g. duplicates by sha256.\n\nMore.") == \
        "Run DuckDB SQL over the catalog, e.g. duplicates by sha256"
    assert summary("Find the originals; score in [0, 1]. Second.") == "Find the originals"
    text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"}).output
    assert "query           Find the originals of each query image" in text
    assert "..." not in text.partition("Commands:")[2]  # click would cut summaries with '...'
