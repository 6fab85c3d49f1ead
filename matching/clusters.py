"""Group duplicate pairs into clusters (connected components, union-find)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable


def connected_groups(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Each group sorted, groups ordered by size (largest first), then by first member."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = defaultdict(list)
    for x in parent:
        groups[find(x)].append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
