"""copytrace.app.cli: the `copytrace` command line, a thin layer over the jobs in
`copytrace.pipelines` (same names and defaults). Importing it loads typer and rich only.

Modules:
    main.py    entry point: assembles the tree, one-line errors, tcmalloc re-exec, plugins
    root.py    the root and `index` groups, shared options, consoles, CommandError
    index.py   index build / add / remove / compact / verify / info / errors / sql / relocate /
               adapter-remove
    adapt.py   adapt (a query adapter for a new tamper pattern) [tests: test_adapt.py]
    query.py   query, localize, localize-batch
    dedup.py   dedup, hash, sql (over an audit)
    train.py   train, models
    serve.py   serve (the HTTP service in copytrace.app.service)
    help.py    one help style for every command (metavars, two-column help on narrow terminals)
    output.py  table / JSON / CSV rendering of results (also used by `copytrace eval`)
Tested in tests/test_cli.py, test_cli_help.py, test_output.py, test_reliability_cli.py.
"""

from copytrace.app.cli.main import app, main

__all__ = ["app", "main"]
