"""The audit's report.html: one static page a person can open from disk (no server, no CDN, no
script), thumbnails and difference heatmaps written beside it in `thumbs/` and `diffs/`."""

from __future__ import annotations

import html
import io
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from copytrace.matching.localize import AlignmentError, LocalizeConfig, localize
from copytrace.matching.overlay import overlay, region_legend
from copytrace.matching.verify import load_rgb
from copytrace.pipelines.dedup.score import Kind, ScoredPair
from copytrace.util.atomic import write_bytes_atomic
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
MAX_CLUSTERS = 200  # gallery size; the Parquet tables hold everything
MAX_MEMBERS = 12
MAX_PAIRS = 120  # side-by-side views with heatmaps
THUMB_SIDE = 200
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #ddd}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;
border-radius:6px;padding:10px 16px}.card b{display:block;font-size:22px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:4px 10px;
text-align:right}th{background:#f0f0f0}
.cluster{background:#fff;border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:8px}
.members{display:flex;gap:8px;flex-wrap:wrap}.member{text-align:center;font-size:12px;
max-width:200px;word-break:break-all}.member img{max-height:150px;max-width:200px;display:block;
border:3px solid transparent}.member.keep img{border-color:#2a9d3f}
.badge{background:#2a9d3f;color:#fff;border-radius:3px;padding:0 4px}
.pair{background:#fff;border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:8px}
.pair img{max-height:220px;max-width:100%}.side{display:flex;flex-wrap:wrap;gap:8px;
align-items:flex-start}
.muted{color:#777}
"""


def _thumb(uri: str, path: Path) -> bool:
    try:
        img = Image.fromarray(load_rgb(uri))
    except Exception as exc:  # noqa: BLE001 - a missing file shows as a missing thumbnail
        log.warning("report: no thumbnail for '%s': %s", uri, exc)
        return False
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR)
    _write_jpeg(path, img)
    return True


def _write_jpeg(path: Path, img: Image.Image) -> None:
    """The report's images: JPEG quality 85, written atomically."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=85)
    write_bytes_atomic(path, buf.getvalue())


def _diff(query_uri: str, other_uri: str, path: Path, homography: tuple[float, ...]
          ) -> str | None:
    """The localize heatmap of the verification query against the other image of the pair,
    starting from the verifier's homography (query -> other); its regions' legend, or None
    when there is no heatmap."""
    try:
        q, o = load_rgb(query_uri), load_rgb(other_uri)
        initial = np.asarray(homography, np.float64).reshape(3, 3) if len(homography) == 9 else None
        result = localize(q, o, config=LocalizeConfig(max_side=512), initial=initial,
                          assume_copy=True)
        panel = overlay(q, o, result, height=220, numbers_only=True)
    except (AlignmentError, ValueError, OSError) as exc:
        log.info("report: no heatmap for %s vs %s: %s", query_uri, other_uri, exc)
        return None
    _write_jpeg(path, Image.fromarray(np.ascontiguousarray(panel)))
    return region_legend(result)


def sweep_rows(candidates: list[ScoredPair], exact: int) -> list[tuple[float, int, float, int]]:
    """(threshold, pairs, estimated precision, rejected as template) per threshold.

    Estimated precision is the mean calibrated P(copy) of the near pairs kept (exact and PDQ
    pairs count as 1): what the calibration expects, not a measurement against labels.
    """
    rows = []
    for t in SWEEP:
        kept = [p for p in candidates if p.reason in ("content match", "below threshold") and
                (p.kind == Kind.PDQ or p.score >= t)]
        probs = [1.0 if p.kind == Kind.PDQ else p.score for p in kept] + [1.0] * exact
        template = sum(1 for p in candidates if p.reason.startswith("evidence on") and p.score >= t)
        rows.append((t, len(probs), float(np.mean(probs)) if probs else 1.0, template))
    return rows


def _histogram(sizes: list[int]) -> str:
    counts = sorted(Counter(sizes).items())
    if not counts:
        return "<p class=muted>no clusters</p>"
    top = max(c for _, c in counts)
    bar_w, h = 48, 160
    bars = []
    for i, (size, n) in enumerate(counts):
        bh = max(2, round(h * n / top))
        x = 10 + i * (bar_w + 8)
        bars.append(f'<rect x="{x}" y="{h - bh + 20}" width="{bar_w}" height="{bh}" fill="#4a7fc1"/>'
                    f'<text x="{x + bar_w / 2}" y="{h - bh + 14}" text-anchor="middle">{n}</text>'
                    f'<text x="{x + bar_w / 2}" y="{h + 36}" text-anchor="middle">{size}</text>')
    width = 20 + len(counts) * (bar_w + 8)
    return (f'<svg width="{width}" height="{h + 44}" role="img" aria-label="cluster sizes" '
            f'font-size="12">{"".join(bars)}</svg><p class=muted>images per cluster '
            f'(x) and number of clusters (bar)</p>')


def _or_dash(v: object) -> str:
    return "-" if v is None else str(v)


def _img(src: str | None, alt: str) -> str:
    if src is None:
        return f'<span class=muted>[{html.escape(alt)}: unreadable]</span>'
    return f'<img src="{src}" alt="{html.escape(alt)}" loading="eager">'


def write_report(audit, catalog: pa.Table, *, threshold: float, show_progress: bool = False
                 ) -> Path:
    """report.html for a DedupReport (`audit`), thumbnails beside it; `show_progress`: bars
    over the clusters' thumbnails and the side-by-side heatmaps (each localizes a pair's edits)."""
    out = Path(audit.out)
    uris = dict(zip(catalog.column("image_id").to_pylist(), catalog.column("uri").to_pylist(),
                    strict=True))
    thumbs: dict[str, str | None] = {}

    def thumb(image_id: str) -> str | None:
        if image_id not in thumbs:
            rel = f"thumbs/{len(thumbs):06d}.jpg"
            thumbs[image_id] = rel if image_id in uris and _thumb(uris[image_id], out / rel) else None
        return thumbs[image_id]

    exact = sum(1 for p in audit.pairs if p.kind == Kind.EXACT)
    cards = [("images", audit.images), ("duplicate pairs", len(audit.pairs)),
             ("exact", audit.counts.get("exact", 0)), ("PDQ", audit.counts.get("pdq", 0)),
             ("near (verified)", audit.counts.get("near", 0)), ("clusters", len(audit.clusters)),
             ("to drop", audit.duplicates_to_drop),
             ("composites (roles)", len(getattr(audit, "composites", []))),
             ("rejected: template only", audit.counts.get("rejected_template", 0)),
             ("rejected: another view", audit.counts.get("rejected_other_view", 0)),
             ("rejected: partners disagree", audit.counts.get("rejected_inconsistent", 0))]
    parts = [f"<h1>copytrace dedup audit</h1><p class=muted>index {html.escape(str(audit.index))}"
             f" · decision threshold {threshold:.2f} (calibrated P(copy))</p><div class=cards>"
             + "".join(f"<div class=card><b>{v}</b>{html.escape(k)}</div>" for k, v in cards)
             + "</div>", "<h2>Cluster sizes</h2>", _histogram([len(c) for c in audit.clusters])]
    parts.append("<h2>Threshold sweep</h2><table><tr><th>threshold</th><th>pairs</th>"
                 "<th>estimated precision</th><th>rejected as template only</th></tr>"
                 + "".join(f"<tr><td>{t:.2f}</td><td>{n}</td><td>{p:.3f}</td><td>{r}</td></tr>"
                           for t, n, p, r in sweep_rows(audit.candidates, exact)) + "</table>"
                 "<p class=muted>estimated precision = mean calibrated P(copy) of the pairs kept"
                 "</p>")
    parts.append(f"<h2>Clusters, largest first ({min(len(audit.clusters), MAX_CLUSTERS)} of "
                 f"{len(audit.clusters)})</h2>")
    shown = audit.clusters[:MAX_CLUSTERS]
    with progress_bar("report thumbnails", len(shown), enabled=show_progress and bool(shown)
                      ) as step:
        for n, (members, rep) in enumerate(zip(shown, audit.representatives, strict=False)):
            parts.append(_cluster_block(n, members, rep, thumb))
            step(1)
    parts.append(_composites_block(getattr(audit, "composites", []), thumb))
    near = [p for p in audit.pairs if p.kind != Kind.EXACT][:MAX_PAIRS]
    parts.append(f"<h2>Near duplicates side by side ({len(near)})</h2><p class=muted>heatmap: "
                 "original | copy | where the copy differs (red outlines: edits)</p>")
    with progress_bar("report heatmaps", len(near), enabled=show_progress and bool(near)) as step:
        for n, p in enumerate(near):
            parts.append(_side_by_side(n, p, uris, out, thumb))
            step(1)
    page = ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<link rel=icon href="data:,"><title>copytrace dedup audit'
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return write_bytes_atomic(out / REPORT_FILE, page.encode())



def _composites_block(relations: list[ScoredPair], thumb) -> str:
    """Composite images (one catalog photo pasted into another): each with its partners' roles.
    Not duplicates, so in no cluster."""
    if not relations:
        return ""
    by: dict[str, list[tuple[str, str]]] = {}
    for p in relations:
        comp, other, role = ((p.a, p.b, p.role_b) if p.role_a == "composite"
                             else (p.b, p.a, p.role_a))
        by.setdefault(comp, []).append((role or "", other))
    rows = "".join(
        f'<div class=pair><b>{html.escape(c)}</b> <span class=muted>composite</span>'
        f'<div class=side>{_img(thumb(c), c)}'
        + "".join(f'<div class=member>{_img(thumb(o), o)}{html.escape(o)} '
                  f'<span class=badge>{html.escape(r)}</span></div>' for r, o in sorted(parts))
        + "</div></div>" for c, parts in sorted(by.items())[:MAX_PAIRS])
    return (f"<h2>Composites ({len(by)})</h2><p class=muted>an image holding two catalog "
            "photos, one pasted into the other: <i>inserted</i> occupies a region of it, "
            "<i>background</i> fills the rest; reported, not counted as duplicates</p>" + rows)


def _cluster_block(n: int, members: list[str], rep: str, thumb) -> str:
    """One cluster's thumbnails, the kept one badged."""
    cells = "".join(
        f'<div class="member{" keep" if m == rep else ""}">{_img(thumb(m), m)}'
        f'{html.escape(m)}{" <span class=badge>keep</span>" if m == rep else ""}</div>'
        for m in members[:MAX_MEMBERS])
    more = f"<p class=muted>+{len(members) - MAX_MEMBERS} more</p>" \
        if len(members) > MAX_MEMBERS else ""
    return (f'<div class=cluster id="c{n}"><b>cluster {n}</b> · {len(members)} images'
            f'<div class=members>{cells}</div>{more}</div>')


def _side_by_side(n: int, p: ScoredPair, uris: dict[str, str], out: Path,
                  thumb: Callable[[str], str | None]) -> str:
    """One near-duplicate pair: both thumbnails and the heatmap of where the copy differs."""
    q = p.query or p.a
    o = p.other(q)
    rel = f"diffs/{n:06d}.jpg"
    legend = _diff(uris[q], uris[o], out / rel, p.homography) if q in uris and o in uris \
        else None
    heat = rel if legend is not None else None
    ev = (f"{p.kind} · score {p.score:.3f} · inliers {_or_dash(p.inliers)} · content "
          f"coverage {_or_dash(p.coverage)} · PDQ distance {_or_dash(p.pdq_distance)}")
    return (f'<div class=pair><b>{html.escape(p.a)} ↔ {html.escape(p.b)}</b> '
            f'<span class=muted>{html.escape(ev)}</span><div class=side>'
            f'{_img(thumb(p.a), p.a)}{_img(thumb(p.b), p.b)}'
            f'{_img(heat, "heatmap") if heat else "<span class=muted>no heatmap</span>"}'
            f'</div>{f"<p class=muted>regions: {html.escape(legend)}</p>" if legend else ""}'
            "</div>")
