"""The `copytrace` entry point: assembles the command tree and turns every failure into one line.

Importing this costs only typer and rich: each command imports its job when it runs, and the
tcmalloc re-exec happens before anything heavy is imported. Evaluation and benchmark commands
(`copytrace eval`, `copytrace bench`) plug in through the `copytrace.commands` entry-point
group, so the CLI never imports `copytrace.benchmarks`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from importlib.metadata import entry_points

import typer
from rich.logging import RichHandler

from copytrace.app.cli.root import CommandError, app, err

# Each module registers its commands on import; this order is the order of `copytrace --help`.
COMMAND_MODULES = ("query", "adapt", "train", "dedup", "serve", "index")
for _name in COMMAND_MODULES:
    importlib.import_module(f"copytrace.app.cli.{_name}")


def _load_plugins() -> None:
    for ep in entry_points(group="copytrace.commands"):
        try:
            app.add_typer(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            logging.getLogger(__name__).warning("command group '%s' unavailable: %s", ep.name, exc)


_load_plugins()


# Errors whose message is the whole story (exit 2). Checked only against the modules a command
# has already imported: an exception cannot be a BuildError unless pipelines.build is loaded,
# and importing it just to check would load torch on every failed `index info`.
_KNOWN_ERRORS = (("copytrace.descriptors.decode", "DecodeError"),
                 ("copytrace.indexing.lock", "IndexLockedError"),
                 ("copytrace.indexing.sources", "SourceError"),
                 ("copytrace.pipelines.build", "BuildError"),
                 ("copytrace.pipelines.ray_runtime", "WorkersLostError"))

# Commands that run the model or verification: only they are worth the tcmalloc re-exec.
MODEL_COMMANDS = frozenset({"query", "localize", "localize-batch", "train", "dedup", "serve",
                            "eval", "bench", "adapt", "index build", "index add",
                            "index prepare-keypoints"})


def _known_errors() -> tuple[type[BaseException], ...]:
    loaded = tuple(getattr(sys.modules[m], name) for m, name in _KNOWN_ERRORS if m in sys.modules)
    return (CommandError, *loaded, OSError, ValueError)


def runs_a_model(argv: list[str]) -> bool:
    """Whether `copytrace ARGV` runs a model (help and catalog look-ups do not)."""
    if "--help" in argv or "-h" in argv:
        return False
    words = [a for a in argv if not a.startswith("-")][:2]
    return bool(words) and (words[0] in MODEL_COMMANDS or " ".join(words) in MODEL_COMMANDS)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """click's usage errors (typer >= 0.2x vendors click: its classes derive TyperException)."""
    import click

    return (click.ClickException, getattr(typer, "TyperException", click.ClickException))


def _debug_requested() -> bool:
    """`--debug` anywhere on the command line (or COPYTRACE_DEBUG=1): show full tracebacks."""
    if "--debug" in sys.argv[1:]:
        os.environ["COPYTRACE_DEBUG"] = "1"  # survives the tcmalloc re-exec
        sys.argv[1:] = [a for a in sys.argv[1:] if a != "--debug"]
    return os.environ.get("COPYTRACE_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False,
              soft_wrap=True)
    raise SystemExit(code)


def main() -> None:
    """Every failure is one line on stderr and a non-zero exit; `--debug` shows the traceback."""
    from copytrace.util import reexec_with_tcmalloc

    debug = _debug_requested()
    if runs_a_model(sys.argv[1:]):
        reexec_with_tcmalloc()
    logging.basicConfig(level=os.environ.get("COPYTRACE_LOG", "WARNING").upper(),
                        format="%(message)s", handlers=[RichHandler(console=err, show_path=False)])
    try:
        code = app(standalone_mode=False)
    except _usage_errors() as exc:  # bad flags and values, e.g. -k 0
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
            raise SystemExit(2) from None
        _fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted", 130)
    except _known_errors() as exc:
        if debug:
            raise
        _fail(str(exc) or type(exc).__name__, 2)
    except Exception as exc:  # noqa: BLE001 - a bug still reaches the user as one line
        if debug:
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
