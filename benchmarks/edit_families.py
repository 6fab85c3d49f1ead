"""Accuracy per edit family: where a matching change helps and where it hurts.

A DISC-style benchmark made by `make_disc` records each query's edit recipe in `sources.csv`
(`jpeg+crop(0.62)+text`); a query belongs to every family its recipe names. Per family: its
copies retrieved in the top 10, retrieved but scored below the 0.5 decision threshold (a silent
"not a copy"), missed entirely, and µAP / R@P90 / acc@1 over the family's queries (its copies and
its edited non-copies). Hard negatives (another photo of the same object) form their own row:
the share scored >= 0.5 is the other-view false-copy rate.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from copytrace.benchmarks.make_disc import HARD_NEGATIVE_MARK
from copytrace.benchmarks.metrics import GroundTruthMatch, PredictedMatch, evaluate

THRESHOLD = 0.5
OTHER_VIEW = "other view (hard negative)"


def query_families(bench: str | Path) -> dict[str, list[str]]:
    """Query id -> the edit families of its recipe (`other view` for hard negatives)."""
    with open(Path(bench) / "sources.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["role"] == "query"]
    out = {}
    for row in rows:
        edits = row.get("edits", "")
        if edits.startswith(HARD_NEGATIVE_MARK):
            out[row["id"]] = [OTHER_VIEW]
        else:
            out[row["id"]] = sorted({re.sub(r"\(.*", "", e) for e in edits.split("+") if e})
    return out


@dataclass(frozen=True)
class FamilyRow:
    """One edit family's numbers (copies: queries of the family that have an original)."""

    family: str
    queries: int
    copies: int
    top10: int  # copies whose original is among the predictions (top k)
    below_threshold: int  # ... of them scored < 0.5
    missed: int  # copies whose original is not predicted at all
    scored_copy: int  # queries whose best score is >= 0.5 (for other views: false copies)
    uap: float | None
    r_at_p90: float | None
    acc_at_1: float | None


def family_table(gt: list[GroundTruthMatch], preds: list[PredictedMatch],
                 families: dict[str, list[str]]) -> list[FamilyRow]:
    """One row per family (largest first), then `all` over every query."""
    truth = {g.query: g.reference for g in gt if g.reference}
    by_query: dict[str, list[PredictedMatch]] = {}
    for p in preds:
        by_query.setdefault(p.query, []).append(p)
    groups: dict[str, set[str]] = {}
    for q, fams in families.items():
        for f in fams:
            groups.setdefault(f, set()).add(q)
    groups = dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))
    groups["all"] = set(families)
    rows = []
    for family, queries in groups.items():
        copies = [q for q in queries if q in truth]
        found = {q: max((p.score for p in by_query.get(q, []) if p.reference == truth[q]),
                        default=None) for q in copies}
        top10 = [q for q, s in found.items() if s is not None]
        scored = sum(max((p.score for p in by_query.get(q, [])), default=0.0) >= THRESHOLD
                     for q in queries)
        fam_gt = [g for g in gt if g.query in queries and g.reference]
        fam_preds = [p for p in preds if p.query in queries]
        m = evaluate(fam_gt, fam_preds) if fam_gt else None
        rows.append(FamilyRow(family, len(queries), len(copies), len(top10),
                              sum(found[q] < THRESHOLD for q in top10), len(copies) - len(top10),
                              scored, m and m.micro_ap, m and m.recall_at_p90, m and m.acc_at_1))
    return rows


def family_dicts(rows: list[FamilyRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def family_text(rows: list[FamilyRow], title: str = "") -> str:
    """A plain-text table (the JSON carries the same rows)."""
    def f(x: float | None) -> str:
        return "   n/a" if x is None else f"{x:6.3f}"

    lines = [title] if title else []
    lines.append(f"{'family':<28}{'queries':>8}{'copies':>7}{'top10':>6}{'<0.5':>6}{'missed':>7}"
                 f"{'>=0.5':>6}  {'µAP':>6} {'R@P90':>6} {'acc@1':>6}")
    for r in rows:
        lines.append(f"{r.family:<28}{r.queries:>8}{r.copies:>7}{r.top10:>6}"
                     f"{r.below_threshold:>6}{r.missed:>7}{r.scored_copy:>6}  {f(r.uap)} "
                     f"{f(r.r_at_p90)} {f(r.acc_at_1)}")
    return "\n".join(lines)
