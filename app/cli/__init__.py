from copytrace.app.cli.commands import main

__all__ = ["main"]
