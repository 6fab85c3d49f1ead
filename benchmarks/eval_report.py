"""`copytrace eval disc --report DIR`: one static HTML page that shows where a run wins and fails.

The page holds the ISC2021 metrics, the precision-recall curve (with the 0.5 decision point and
precision 0.9 marked), the score histograms of true and false pairs, and the worst misses and worst
false positives with thumbnails. Everything is local files beside `index.html` (no CDN, no JS).
"""

from __future__ import annotations

import html
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.metrics import GroundTruthMatch, Metrics, PredictedMatch, evaluate, precision_recall
from copytrace.util import write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

THRESHOLD = 0.5
THUMB_SIDE = 160
LEGEND = {
    "µAP": "micro average precision: every prediction of every query pooled and ranked by score; "
           "the area under that precision-recall curve (1 = all true pairs outscore all false ones)",
    "R@P90": "recall at precision 0.9: the share of true pairs found at the lowest score where "
             "9 in 10 predictions above it are still right",
    "acc@1": "accuracy at 1: the share of copies whose top match is their original",
    "R@10": "recall at 10: the share of copies whose original is anywhere in their top 10",
}


@dataclass(frozen=True)
class Case:
    """One row of a worst-cases table: a query beside the reference it was (or should be) paired with."""

    query: str
    reference: str
    score: float | None  # None: the pair was never predicted
    note: str


def _pairs(gt: Sequence[GroundTruthMatch], predictions: Sequence[PredictedMatch]):
    truth = {(g.query, g.reference) for g in gt}
    labels = np.array([(p.query, p.reference) in truth for p in predictions], dtype=bool)
    scores = np.array([p.score for p in predictions], dtype=np.float64)
    return labels, scores


def worst_misses(gt: Sequence[GroundTruthMatch], predictions: Sequence[PredictedMatch], *,
                 n: int = 10, threshold: float = THRESHOLD) -> list[Case]:
    """True pairs below the threshold, lowest score first (never predicted = lowest)."""
    by_query: dict[str, list[PredictedMatch]] = defaultdict(list)
    for p in predictions:
        by_query[p.query].append(p)
    cases = []
    for g in gt:
        preds = sorted(by_query.get(g.query, []), key=lambda p: -p.score)
        hit = next((p for p in preds if p.reference == g.reference), None)
        if hit is not None and hit.score >= threshold:
            continue
        top = preds[0] if preds else None
        note = "no prediction" if top is None else f"top: {top.reference} ({top.score:.3f})"
        if top is not None and top.reference == g.reference:
            note = f"ranked first, but below {threshold}"
        if hit is None and top is not None:
            note += ", original not among the predictions"
        cases.append(Case(g.query, g.reference, None if hit is None else hit.score, note))
    cases.sort(key=lambda c: -1.0 if c.score is None else c.score)
    return cases[:n]


def worst_false_positives(gt: Sequence[GroundTruthMatch], predictions: Sequence[PredictedMatch], *,
                          n: int = 10, threshold: float = THRESHOLD) -> list[Case]:
    """Predicted pairs that are not true pairs, highest score first (those at or above the
    threshold are wrong 'copy' verdicts)."""
    truth: dict[str, list[str]] = defaultdict(list)
    for g in gt:
        truth[g.query].append(g.reference)
    wrong = sorted((p for p in predictions if p.reference not in truth.get(p.query, [])),
                   key=lambda p: -p.score)
    return [Case(p.query, p.reference, p.score,
                 ("WRONG COPY VERDICT; " if p.score >= threshold else "")
                 + (f"true original: {', '.join(truth[p.query])}" if truth.get(p.query)
                    else "not a copy of anything indexed")) for p in wrong[:n]]


def pyplot():  # noqa: ANN201
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(curves: dict[str, tuple[Sequence[GroundTruthMatch], Sequence[PredictedMatch]]],
                   path: Path, *, threshold: float = THRESHOLD) -> Path:
    """Precision against recall for each method, with its decision point at `threshold`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for i, (name, (gt, preds)) in enumerate(curves.items()):
        labels, scores = _pairs(gt, preds)
        precision, recall, thresholds = precision_recall(labels, scores, len(gt))
        line, = ax.plot(np.r_[0.0, recall], np.r_[1.0, precision], lw=2 if i == 0 else 1.3, label=name,
                        drawstyle="steps-post")
        at = np.flatnonzero(thresholds >= threshold)
        if i == 0 and len(at):
            j = at[-1]
            ax.plot(recall[j], precision[j], "o", color=line.get_color(), ms=8,
                    label=f"{name} at score {threshold}: P {precision[j]:.2f}, R {recall[j]:.2f}")
    ax.axhline(0.9, color="grey", ls="--", lw=1, label="precision 0.9 (R@P90)")
    ax.set(xlabel="recall (share of true pairs found)", ylabel="precision", xlim=(0, 1.02),
           ylim=(0, 1.05), title="Precision-recall over all predictions (µAP = area)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_score_histograms(gt: Sequence[GroundTruthMatch], predictions: Sequence[PredictedMatch],
                          path: Path, *, threshold: float = THRESHOLD) -> Path:
    """Scores of true pairs vs false pairs, with the decision threshold marked."""
    plt = pyplot()
    labels, scores = _pairs(gt, predictions)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    bins = np.linspace(min(0.0, float(scores.min(initial=0))), max(1.0, float(scores.max(initial=1))), 41)
    ax.hist(scores[~labels], bins=bins, alpha=0.6, color="tab:red",
            label=f"false pairs ({int((~labels).sum())})")
    ax.hist(scores[labels], bins=bins, alpha=0.6, color="tab:green",
            label=f"true pairs ({int(labels.sum())})")
    ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold}")
    ax.set(xlabel="calibrated score", ylabel="predicted pairs", title="Score of each predicted pair")
    ax.set_yscale("symlog", linthresh=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _id_paths(location: str | Path | None) -> dict[str, str]:
    if location is None:
        return {}
    from copytrace.indexing import list_sources

    return {s.image_id: s.uri for s in list_sources(location)}


def _thumbnail(source: str, dest: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(source) as img:
            img.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            img = img.convert("RGB")
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            dest.parent.mkdir(parents=True, exist_ok=True)
            img.save(dest, "JPEG", quality=85)
        return True
    except OSError as exc:
        log.warning("no thumbnail for '%s': %s", source, exc)
        return False


class _Thumbs:
    """Thumbnails of query and reference images under `thumbs/`, made once per image."""

    def __init__(self, out: Path, queries: str | Path | None, references: str | Path | None):
        self.out, self.made = out, {}
        self.paths = {"q": _id_paths(queries), "r": _id_paths(references)}

    def cell(self, side: str, image_id: str) -> str:
        key = (side, image_id)
        if key not in self.made:
            source = self.paths[side].get(image_id)
            name = f"thumbs/{side}-{len(self.made):05d}.jpg"
            self.made[key] = name if source and _thumbnail(source, self.out / name) else None
        img = (f'<img src="{self.made[key]}" alt="{html.escape(image_id)}">'
               if self.made[key] else '<div class="none">no image</div>')
        return f'<figure>{img}<figcaption>{html.escape(image_id)}</figcaption></figure>'


def _cases_html(title: str, cases: Sequence[Case], thumbs: _Thumbs, empty: str) -> str:
    if not cases:
        return f"<h2>{html.escape(title)}</h2><p>{html.escape(empty)}</p>"
    rows = "".join(
        f"<tr><td>{thumbs.cell('q', c.query)}</td><td>{thumbs.cell('r', c.reference)}</td>"
        f"<td class=num>{'never predicted' if c.score is None else f'{c.score:.3f}'}</td>"
        f"<td>{html.escape(c.note)}</td></tr>" for c in cases)
    return (f"<h2>{html.escape(title)}</h2><table class=cases><tr><th>query</th><th>reference</th>"
            f"<th>score</th><th>note</th></tr>{rows}</table>")


def _metrics_html(rows: dict[str, Metrics]) -> str:
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{f(m.micro_ap)}</td><td>{f(m.recall_at_p90)}</td>"
                   f"<td>{f(m.acc_at_1)}</td><td>{f(m.recall_at_10)}</td><td>{m.num_predictions}</td>"
                   f"<td>{m.num_positives}</td></tr>" for name, m in rows.items())
    legend = "".join(f"<li><b>{k}</b>: {html.escape(v)}</li>" for k, v in LEGEND.items())
    return ("<table class=metrics><tr><th>method</th><th>µAP</th><th>R@P90</th><th>acc@1</th>"
            f"<th>R@10</th><th>predictions</th><th>true pairs</th></tr>{body}</table><ul>{legend}</ul>")


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}.num,.metrics td{font-variant-numeric:tabular-nums}
figure{margin:0}figure img{max-width:160px;max-height:160px;display:block}figcaption{font-size:12px;
word-break:break-all;max-width:160px}.none{width:160px;height:40px;background:#eee;color:#888}
.plots img{max-width:49%}"""


def write_disc_report(
    out_dir: str | Path,
    ground_truth: str | Path,
    predictions: Sequence[PredictedMatch],
    *,
    queries: str | Path | None = None,
    references: str | Path | None = None,
    baselines: dict[str, Sequence[PredictedMatch]] | None = None,
    name: str = "copytrace",
    worst: int = 10,
    threshold: float = THRESHOLD,
) -> Path:
    """Write `index.html` (+ `pr_curve.png`, `score_histogram.png`, `thumbs/`, `metrics.json`) into
    out_dir and return the page. `baselines` (e.g. PDQ) add rows and PR curves for comparison."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gt, _ = read_ground_truth(ground_truth)
    runs = {name: list(predictions), **{k: list(v) for k, v in (baselines or {}).items()}}
    metrics = {k: evaluate(gt, v) for k, v in runs.items()}
    plot_pr_curves({k: (gt, v) for k, v in runs.items()}, out / "pr_curve.png", threshold=threshold)
    plot_score_histograms(gt, runs[name], out / "score_histogram.png", threshold=threshold)
    thumbs = _Thumbs(out, queries, references)
    misses = worst_misses(gt, runs[name], n=worst, threshold=threshold)
    false_pos = worst_false_positives(gt, runs[name], n=worst, threshold=threshold)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(name)}: "
            f"DISC evaluation</title><style>{_CSS}</style></head><body>"
            f"<h1>DISC evaluation: {html.escape(name)}</h1>"
            f"<p>Ground truth <code>{html.escape(str(ground_truth))}</code>: {len(gt)} true pairs. "
            f"Decision threshold {threshold}.</p>{_metrics_html(metrics)}"
            '<div class=plots><img src="pr_curve.png" alt="precision-recall curve">'
            '<img src="score_histogram.png" alt="score histograms"></div>'
            + _cases_html(f"Worst misses (true pairs below {threshold})", misses, thumbs,
                          f"none: every true pair scored at least {threshold}")
            + _cases_html("Worst false positives (highest-scoring wrong pairs)", false_pos, thumbs,
                          "none: no wrong pair was predicted")
            + "</body></html>")
    write_json_atomic(out / "metrics.json", {k: m.as_dict() for k, m in metrics.items()})
    return write_bytes_atomic(out / "index.html", page.encode())
