"""Composite images: one catalog photo pasted into another catalog photo.

A copy C made by pasting photo A into photo B verifies as a duplicate of both, and as plain
duplicates the two pairs would merge two different photos (A and B) into one cluster. Their
inliers tell them apart: A's sit inside one region of C, B's all around it. The rule is the query
path's (matching.roles.split_roles on C's side of each pair: the partner covering most of C is
its `background`; one whose inliers occupy a region of C holding almost none of the
background's is `inserted`), and both pairs become composite relations: reported with their
roles (C is the `composite`), never clustered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from copytrace.matching.roles import RoleConfig, split_roles
from copytrace.pipelines.dedup.score import Kind, ScoredPair

COMPOSITE = "composite"
"""The role of the image that holds the other two (`role_a`/`role_b` of its pairs)."""


def composite_side(p: ScoredPair, image: str) -> tuple[np.ndarray, float] | None:
    """`image`'s inlier points (detection scale) and the share of it they cover, for a verified
    pair; None when the pair has no inliers kept (exact, or verified without field points)."""
    v = p.verification
    if v is None or v.field_points is None or not len(v.field_points):
        return None
    if p.query == image:
        return v.field_points[:, :2], float(v.query_coverage)
    return v.field_points[:, 2:], float(v.reference_coverage)


def find_composites(pairs: Sequence[ScoredPair], *, config: RoleConfig | None = None
                    ) -> dict[frozenset, tuple[str, str]]:
    """{pair: (the composite image, the other's role)} over the duplicate `pairs`: every image
    with two or more verified partners is checked as a possible composite of them."""
    by_image: dict[str, list[ScoredPair]] = defaultdict(list)
    for p in pairs:
        if p.kind != Kind.EXACT:
            by_image[p.a].append(p)
            by_image[p.b].append(p)
    linked = {frozenset((p.a, p.b)) for p in pairs}
    found: dict[frozenset, tuple[str, str]] = {}
    for image, mine in sorted(by_image.items()):
        sides = [(p, s) for p in sorted(mine, key=lambda p: (p.a, p.b))
                 if (s := composite_side(p, image)) is not None]
        split = split_roles([s[0] for _, s in sides], [s[1] for _, s in sides],
                            config=config or RoleConfig()) if len(sides) >= 2 else None
        if split is None:
            continue
        back, inserted = split
        # Two DIFFERENT photos make a composite: partners that are duplicates of each other
        # (two copies carrying the same pasted photo) are not one.
        background = sides[back][0].other(image)
        inserted = [j for j in inserted
                    if frozenset((background, sides[j][0].other(image))) not in linked]
        if not inserted:
            continue
        for j, role in [(back, "background")] + [(j, "inserted") for j in inserted]:
            key = frozenset((sides[j][0].a, sides[j][0].b))
            found.setdefault(key, (image, role))
    return found


def with_role(p: ScoredPair, composite: str, role: str) -> ScoredPair:
    """`p` as a composite relation: not a duplicate, roles on both ends."""
    return replace(p, duplicate=False,
                   reason=f"composite: {p.other(composite)} is the {role} of {composite}",
                   role_a=COMPOSITE if p.a == composite else role,
                   role_b=COMPOSITE if p.b == composite else role)


def split_composites(pairs: list[ScoredPair], scored: list[ScoredPair]
                     ) -> tuple[list[ScoredPair], list[ScoredPair], list[ScoredPair]]:
    """(duplicates, composite relations, every scored pair with the composites re-decided)."""
    found = find_composites(pairs)
    if not found:
        return pairs, [], scored
    rel = {k: with_role(p, *found[k]) for p in pairs if (k := frozenset((p.a, p.b))) in found}
    return ([p for p in pairs if frozenset((p.a, p.b)) not in rel], list(rel.values()),
            [rel.get(frozenset((p.a, p.b)), p) for p in scored])
