"""Group duplicate pairs into clusters (connected components, union-find) and pick the image
of each cluster to keep."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

T = TypeVar("T", str, int)


def connected_groups(pairs: Iterable[tuple[T, T]]) -> list[list[T]]:
    """Each group sorted, groups ordered by size (largest first), then by first member. Members
    are any sortable keys: image ids here, fragment labels in `edit_objects`."""
    parent: dict[T, T] = {}

    def find(x: T) -> T:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[T, list[T]] = defaultdict(list)
    for x in parent:
        groups[find(x)].append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


class KeepPolicy(str, Enum):
    """Which image of a duplicate cluster is its representative (the one to keep)."""

    LARGEST = "largest"  # most content (dedup: not frame or template), then pixels, then bytes
    OLDEST = "oldest"  # earliest capture date (EXIF) or file time
    FIRST = "first"  # first in catalog order


@dataclass(frozen=True)
class ImageFacts:
    """What a keep policy looks at; `order` is the catalog position."""

    pixels: int
    num_bytes: int
    taken: float  # seconds since the epoch; +inf when unknown
    order: int


def representative(members: Sequence[str], facts: dict[str, ImageFacts], policy: KeepPolicy) -> str:
    """The member the policy keeps; ties fall back to catalog order, then image id."""
    def key(m: str) -> tuple:
        f = facts.get(m, ImageFacts(0, 0, float("inf"), 1 << 62))
        if policy is KeepPolicy.LARGEST:
            return (-f.pixels, -f.num_bytes, f.order, m)
        if policy is KeepPolicy.OLDEST:
            return (f.taken, f.order, m)
        return (f.order, m)

    return min(members, key=key)
