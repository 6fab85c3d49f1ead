"""copytrace.pipelines: the jobs users run, with the same names as the CLI.

    from copytrace.pipelines import build_index, query
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "build_index": "copytrace.pipelines.build",
    "query": "copytrace.pipelines.query",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: `copytrace --help` should not import torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
