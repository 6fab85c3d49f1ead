"""Lazy package front doors: a package names its public API without importing it.

`copytrace.matching` and friends list their public names in `__all__`; the module that defines
each name is imported on first access (PEP 562 module `__getattr__`), so importing a package
costs nothing until a name is used, and the CLI starts without torch or faiss.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_api(package: str, exports: Mapping[str, str]
             ) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """(`__all__`, `__getattr__`, `__dir__`) for `package`; `exports` maps each public name to
    its module, relative to the package (`"build_index": "build"`) or `"module:attr"` when the
    public name differs from the defining one."""

    def getattr_(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        module, _, attr = exports[name].partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attr or name)

    def dir_() -> list[str]:
        return sorted(exports)

    return sorted(exports), getattr_, dir_
