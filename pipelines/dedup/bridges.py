"""Duplicate pairs must agree with their neighbours: a pair that alone joins two groups of
duplicates is kept only when the groups' other members share content too.

Two different photos posted in one screenshot frame, or two edited copies that happen to carry
the same pasted picture, can pass every pairwise check; but each is also a duplicate of its own
original, and those originals do not match. So for a bridge A-B of the duplicate graph (removing
it splits the cluster into two parts of at least two images each) the best other partner C of A
is verified against the best other partner D of B (both directions, geometry plus the content
check): if C and D show no common content, A-B is dropped as inconsistent. A chain of real
copies (photo - screenshot - crop of the screenshot) shares its content end to end and stays.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from copytrace.pipelines.dedup.score import Kind, ScoredPair, ScoreJob, run_jobs

INCONSISTENT = "partners disagree"


def bridges(pairs: Sequence[ScoredPair]) -> list[tuple[ScoredPair, str, str]]:
    """(pair, C, D) for every non-exact pair whose removal leaves both of its ends with another
    duplicate on their own side; C, D: the best-scoring other partner of a and of b."""
    adj: dict[str, dict[str, float]] = defaultdict(dict)
    for p in pairs:
        adj[p.a][p.b] = max(adj[p.a].get(p.b, 0.0), p.score)
        adj[p.b][p.a] = max(adj[p.b].get(p.a, 0.0), p.score)
    out = []
    for p in pairs:
        if p.kind == Kind.EXACT or len(adj[p.a]) < 2 or len(adj[p.b]) < 2:
            continue
        seen, todo = {p.a}, [p.a]
        while todo:  # the part reachable from a without the edge a-b
            x = todo.pop()
            for y in adj[x]:
                if y not in seen and {x, y} != {p.a, p.b}:
                    seen.add(y)
                    todo.append(y)
        if p.b in seen:
            continue
        c = max((n for n in adj[p.a] if n != p.b), key=lambda n: (adj[p.a][n], n))
        d = max((n for n in adj[p.b] if n != p.a), key=lambda n: (adj[p.b][n], n))
        out.append((p, c, d))
    return out


def share_content(links: Sequence[tuple[str, str]], uris: dict[str, str],
                  templates: dict[str, np.ndarray], **score_kwargs) -> set[frozenset]:
    """The (C, D) links whose images verify with agreeing content in either direction."""
    groups: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for c, d in {tuple(sorted(x)) for x in links}:
        groups[c].append((d, uris[d], 0.0))
        groups[d].append((c, uris[c], 0.0))
    jobs = [ScoreJob(q, uris[q], others) for q, others in sorted(groups.items())]
    scored = run_jobs(jobs, templates, label="checking cluster bridges", **score_kwargs)
    return {frozenset((q, o)) for q, o, _, ev in scored
            if ev["check"] is not None and ev["check"].passed}


def drop_inconsistent(pairs: list[ScoredPair], uris: dict[str, str],
                      templates: dict[str, np.ndarray], **score_kwargs
                      ) -> tuple[list[ScoredPair], dict[frozenset, ScoredPair]]:
    """`pairs` less the inconsistent bridges, and those bridges (re-decided: not duplicates,
    reason says which partners disagree) by pair."""
    found = [(p, c, d) for p, c, d in bridges(pairs) if c in uris and d in uris]
    if not found:
        return pairs, {}
    agree = share_content([(c, d) for _, c, d in found], uris, templates, **score_kwargs)
    dropped = {frozenset((p.a, p.b)): replace(p, duplicate=False,
                                              reason=f"{INCONSISTENT}: {c} vs {d}")
               for p, c, d in found if frozenset((c, d)) not in agree}
    return [p for p in pairs if frozenset((p.a, p.b)) not in dropped], dropped
