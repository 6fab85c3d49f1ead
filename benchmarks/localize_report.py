"""`copytrace eval localize --report DIR`: one static HTML page for a localization evaluation.

Scores come from `benchmarks.localize_eval` (defined there once); this page adds pixel F1 per edit
kind (a `kind` column of the triples CSV, else one group) as a bar chart and table, and the
overlays (original | copy | where it was edited) of the worst-scored pairs beside their
ground-truth masks. Local files only, no JS.
"""

from __future__ import annotations

import csv
import html
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from copytrace.benchmarks.eval_report import pyplot
from copytrace.benchmarks.localize_eval import MaskScore, Summary, Triple, read_triples, summarize
from copytrace.util import write_bytes_atomic, write_json_atomic

ALL = "all"


def triple_kinds(triples: str | Path) -> dict[str, str]:
    """Query stem -> the `kind` column of the triples CSV (empty when it has none)."""
    with open(triples, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "kind" not in rows[0]:
        return {}
    qcol = next(c for c in ("query", "forged", "tampered") if c in rows[0])
    return {Path(r[qcol]).stem: r["kind"] or ALL for r in rows}


def per_kind(scores: Sequence[MaskScore], kinds: dict[str, str]) -> dict[str, Summary]:
    groups: dict[str, list[MaskScore]] = defaultdict(list)
    for s in scores:
        groups[kinds.get(s.name, ALL)].append(s)
    out = {k: summarize(v) for k, v in sorted(groups.items())}
    if len(out) > 1:
        out[ALL] = summarize(scores)
    return out


def plot_kind_f1(summaries: dict[str, Summary], path: Path) -> Path:
    plt = pyplot()
    names = list(summaries)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(names)), dpi=100)
    f1 = [summaries[n].f1 for n in names]
    iou = [summaries[n].iou for n in names]
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], f1, height=0.4, label="pixel F1", color="tab:blue")
    ax.barh([i - 0.2 for i in y], iou, height=0.4, label="IoU", color="tab:orange")
    ax.set_yticks(list(y), [f"{n} ({summaries[n].images})" for n in names])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="mean over images", title="Edit masks vs ground truth, per kind")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _worst_rows(worst: Sequence[tuple[MaskScore, Triple]], kinds: dict[str, str], out: Path,
                max_side: int) -> str:
    from copytrace.pipelines import localize_pair

    rows = []
    for s, t in worst:
        o = localize_pair(t.query, t.original, out_dir=out / "overlays", query_id=t.name,
                          reference_id="original", overlay=True, max_side=max_side)
        picture = (f'<img class=overlay src="{Path(o.overlay).relative_to(out).as_posix()}" '
                   f'alt="overlay of {html.escape(t.name)}">' if o.overlay and not o.error
                   else f"<p>not localized: {html.escape(o.error or '')}</p>")
        mask = out / "masks" / f"{len(rows):04d}.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(mask, t.mask.read_bytes())
        rows.append(f"<tr><td>{html.escape(t.name)}<br>{html.escape(kinds.get(t.name, ALL))}<br>"
                    f"F1 {s.f1:.3f}, IoU {s.iou:.3f}, regions found {s.hits}/{s.regions}"
                    f"{'<br>error: ' + html.escape(s.error) if s.error else ''}</td><td>{picture}</td>"
                    f'<td><img class=mask src="masks/{mask.name}" alt="ground truth"></td></tr>')
    return "".join(rows)


def _summary_rows(summaries: dict[str, Summary]) -> str:
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    return "".join(f"<tr><td>{html.escape(k)}</td><td>{s.images}</td><td>{s.failed}</td><td>{f(s.f1)}</td>"
                   f"<td>{f(s.iou)}</td><td>{f(s.region_hit_rate)}</td></tr>" for k, s in summaries.items())


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}img.overlay{max-width:720px;width:100%}img.mask{max-width:200px}"""


def write_localize_report(out_dir: str | Path, triples: str | Path, scores: Sequence[MaskScore], *,
                          root: str | Path | None = None, worst: int = 6, max_side: int = 1024) -> Path:
    """Write `index.html` (+ `kind_f1.png`, `overlays/`, `masks/`, `summary.json`) and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds = triple_kinds(triples)
    summaries = per_kind(scores, kinds)
    plot_kind_f1(summaries, out / "kind_f1.png")
    by_name = {t.name: t for t in read_triples(triples, root=root)}
    ranked = sorted((s for s in scores if s.name in by_name), key=lambda s: (s.error is None, s.f1))
    rows = _worst_rows([(s, by_name[s.name]) for s in ranked[:worst]], kinds, out, max_side)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>copytrace: localization "
            f"evaluation</title><style>{_CSS}</style></head><body><h1>Localization evaluation</h1>"
            f"<p>Triples <code>{html.escape(str(triples))}</code>: {len(scores)} pairs. Pixel F1 and IoU "
            "of the edit mask against the ground truth, averaged over images; a region is found when a "
            "reported box overlaps it with IoU &ge; 0.5.</p><table><tr><th>kind</th><th>images</th>"
            "<th>failed</th><th>pixel F1</th><th>IoU</th><th>region hit rate</th></tr>"
            f"{_summary_rows(summaries)}</table>"
            '<img src="kind_f1.png" alt="pixel F1 and IoU per kind">'
            f"<h2>Worst {min(worst, len(ranked))} pairs (lowest F1; failures first)</h2><table><tr><th>pair"
            "</th><th>original | copy | where it was edited</th><th>ground truth</th></tr>"
            f"{rows}</table></body></html>")
    write_json_atomic(out / "summary.json", {k: s.as_dict() for k, s in summaries.items()})
    return write_bytes_atomic(out / "index.html", page.encode())
