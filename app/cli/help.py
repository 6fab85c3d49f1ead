"""One help style for every `copytrace` command: PATH / INT / TEXT metavars instead of typer's
`<path>` / `<int>` / `<str>`, nothing after an on/off flag (typer prints `<bool>`), and on a
terminal narrower than WIDE_HELP columns the two-column help (option, then its wrapped text)
instead of rich's five-column panels, which leave ~17 columns for the text at 80 and cut
option names and defaults.

The top-level group applies it to its whole command tree (plugins included) the first time a
command is looked up, so each command only declares its options and their help.
"""

from __future__ import annotations

import re

from rich.console import Console
from typer.core import TyperGroup

WIDE_HELP = 110  # columns from which typer's rich panels have room for the help text
_NAMES = {"path": "PATH", "int": "INT", "float": "FLOAT", "str": "TEXT", "bool": ""}


def metavar_for(param, ctx) -> str | None:  # noqa: ANN001 - typer's option/argument objects
    """The metavar the house style gives `param`, or None to keep what it declares."""
    if param.metavar is not None or not hasattr(param, "display_type"):
        return None
    if getattr(param, "is_flag", False):
        return ""
    label = param.display_type(ctx).strip("<>").removesuffix(" range")
    repeated = label.startswith("list[")
    label = label.removeprefix("list[").removesuffix("]")
    name = _NAMES.get(label, label)  # choices stay as 'table|json|csv'
    return f"{name}..." if repeated and name else name


def summary(help_text: str) -> str:
    """A command's summary for command lists: its help's first sentence up to a ';' (click would
    cut it with '...' at 80 columns; the two-column help wraps it instead)."""
    first = re.split(r"(?<!e\.g)\.\s|;\s|\n\s*\n", help_text.strip(), maxsplit=1)[0]
    return " ".join(first.split()).rstrip(".")


def style_command(command, ctx, *, plain: bool = False) -> None:  # noqa: ANN001
    """Give every option of `command` (and of its subcommands) the house metavar, in place;
    `plain`: two-column help instead of rich panels."""
    if plain and hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    if getattr(command, "short_help", None) is None and getattr(command, "help", None):
        command.short_help = summary(command.help)
    params = list(command.params)
    help_option = command.get_help_option(ctx) if hasattr(command, "get_help_option") else None
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "param_type_name", "") == "argument":
            if param.metavar is None:  # usage reads `copytrace query [OPTIONS] QUERY_PATH`
                param.metavar = param.name.upper()
            continue
        metavar = metavar_for(param, ctx)
        if metavar is not None:
            param.metavar = metavar
    for sub in getattr(command, "commands", {}).values():
        style_command(sub, ctx, plain=plain)


class StyledGroup(TyperGroup):
    """The top-level `copytrace` group: styles the help of its whole tree once."""

    _styled = False

    def _style(self, ctx) -> None:  # noqa: ANN001
        if not self._styled:
            self._styled = True
            style_command(self, ctx, plain=Console().width < WIDE_HELP)

    def get_command(self, ctx, cmd_name: str):  # noqa: ANN001, ANN201
        self._style(ctx)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx, formatter) -> None:  # noqa: ANN001
        self._style(ctx)
        super().format_help(ctx, formatter)


__all__ = ["StyledGroup", "metavar_for", "style_command", "summary"]
