"""`copytrace eval localize`: score edit masks against ground truth, defined once.

Per image: pixel F1 and IoU of the predicted mask against the ground-truth mask (both empty
counts as a perfect 1.0; one empty and not the other as 0.0), and region hits: a ground-truth
region is found when some predicted region's box overlaps its box with IoU >= 0.5, the usual
detection criterion. Ground-truth regions are the objects of the truth mask: its components
after a closing by 1 % of the longer side (the letters of one caption are one region), at least
1e-4 of the image. Predicted regions are the boxes `localize` reports when given, else the
8-connected components of the predicted mask (what a pixel-only method offers).
Scores are averaged over images (region hit rate over images that have ground-truth regions).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import typer

log = logging.getLogger(__name__)

QUERY_COLUMNS = ("query", "forged", "tampered")
HIT_IOU = 0.5
MIN_REGION_FRACTION = 1e-4  # ground-truth components smaller than this share of the image are ignored
TRUTH_GAP = 0.01  # ground-truth fragments closer than this share of the longer side are one object


@dataclass(frozen=True)
class MaskScore:
    name: str
    f1: float
    iou: float
    regions: int  # ground-truth regions
    hits: int  # of them found
    seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Summary:
    images: int
    failed: int
    f1: float
    iou: float
    region_hit_rate: float | None  # None when no image has a ground-truth region
    seconds_per_pair: float | None

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def pixel_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(F1, IoU) of two binary masks of the same shape."""
    p, t = pred > 0, truth > 0
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: predicted {p.shape}, ground truth {t.shape}")
    tp = int((p & t).sum())
    ps, ts = int(p.sum()), int(t.sum())
    if ps == 0 and ts == 0:
        return 1.0, 1.0
    return 2 * tp / (ps + ts), tp / (ps + ts - tp)


def _boxes(mask: np.ndarray, min_pixels: int) -> list[tuple[int, int, int, int]]:
    n, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, a in stats[1:] if a >= min_pixels]


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def truth_regions(truth: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes of the ground-truth objects (components after a closing by TRUTH_GAP)."""
    radius = max(1, round(TRUTH_GAP * max(truth.shape)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    closed = cv2.morphologyEx((truth > 0).astype(np.uint8), cv2.MORPH_CLOSE, disk)
    return _boxes(closed, max(1, round(MIN_REGION_FRACTION * truth.size)))


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box of all of a mask's pixels (one object), None when it is empty."""
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None


def region_hits(pred: np.ndarray, truth: np.ndarray, *, iou: float = HIT_IOU,
                boxes: Sequence[tuple[int, int, int, int]] | None = None,
                truth_boxes: Sequence[tuple[int, int, int, int]] | None = None) -> tuple[int, int]:
    """(found, total) ground-truth regions (`truth_boxes` when the objects are known, else
    `truth_regions`); predicted `boxes` (x0, y0, x1, y1, exclusive) or, without them, the
    predicted mask's components of any size."""
    gt = list(truth_boxes) if truth_boxes is not None else truth_regions(truth)
    pr = list(boxes) if boxes is not None else _boxes(pred, 1)
    found = sum(any(box_iou(g, p) >= iou for p in pr) for g in gt)
    return found, len(gt)


def score_mask(name: str, pred: np.ndarray, truth: np.ndarray, seconds: float | None = None, *,
               boxes: Sequence[tuple[int, int, int, int]] | None = None,
               truth_boxes: Sequence[tuple[int, int, int, int]] | None = None) -> MaskScore:
    f1, iou = pixel_scores(pred, truth)
    hits, regions = region_hits(pred, truth, boxes=boxes, truth_boxes=truth_boxes)
    return MaskScore(name, f1, iou, regions, hits, seconds)


def summarize(scores: Sequence[MaskScore]) -> Summary:
    ok = [s for s in scores if s.error is None]
    with_regions = [s for s in ok if s.regions]
    timed = [s.seconds for s in ok if s.seconds is not None]
    return Summary(
        images=len(ok), failed=len(scores) - len(ok),
        f1=float(np.mean([s.f1 for s in ok])) if ok else 0.0,
        iou=float(np.mean([s.iou for s in ok])) if ok else 0.0,
        region_hit_rate=float(np.mean([s.hits / s.regions for s in with_regions])) if with_regions else None,
        seconds_per_pair=float(np.mean(timed)) if timed else None,
    )


def failed(name: str, error: str) -> MaskScore:
    """A pair the method could not process scores 0 (an empty mask would often score better)."""
    return MaskScore(name, 0.0, 0.0, 0, 0, None, error)


def read_mask(path: str | Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"cannot read mask '{path}'")
    return np.where(m > 127, 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class Triple:
    name: str
    query: Path
    original: Path
    mask: Path


def read_triples(triples: str | Path, *, root: str | Path | None = None) -> list[Triple]:
    """CSV with columns query (or forged/tampered), original, mask; paths relative to root
    (default: the CSV's folder)."""
    p = Path(triples)
    base = Path(root) if root is not None else p.parent
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ValueError(f"cannot read triples '{p}': {exc.strerror or exc}") from None
    if not rows:
        return []
    qcol = next((c for c in QUERY_COLUMNS if c in rows[0]), None)
    if qcol is None or not {"original", "mask"} <= set(rows[0]):
        raise ValueError(f"triples '{p}' need columns query (or forged/tampered), original, mask")
    return [Triple(Path(r[qcol]).stem, base / r[qcol], base / r["original"], base / r["mask"]) for r in rows]


def eval_localize(
    triples: str | Path,
    *,
    root: str | Path | None = None,
    predictions: str | Path | None = None,
    max_side: int = 1024,
    progress: Callable[[MaskScore], None] | None = None,
) -> tuple[Summary, list[MaskScore]]:
    """Score `copytrace localize` (or the masks in `predictions`, named <query stem>.png or
    <query stem>.mask.png) against each triple's ground-truth mask."""
    from copytrace.descriptors import DecodeError, decode_file
    from copytrace.matching import AlignmentError, LocalizeConfig
    from copytrace.matching import localize_edits as localize

    config = LocalizeConfig(max_side=max_side)
    scores: list[MaskScore] = []
    for t in read_triples(triples, root=root):
        try:
            truth = read_mask(t.mask)
            if predictions is not None:
                cands = [Path(predictions) / f"{t.query.stem}{s}" for s in (".mask.png", ".png")]
                found = next((c for c in cands if c.is_file()), None)
                if found is None:
                    raise ValueError(f"no predicted mask for '{t.query.stem}' in '{predictions}'")
                pred, seconds, boxes = read_mask(found), None, None
            else:
                q, o = decode_file(t.query).pixels, decode_file(t.original).pixels
                start = time.perf_counter()
                result = localize(q, o, config=config)
                seconds = time.perf_counter() - start
                pred, boxes = result.mask, [r.box for r in result.edit_regions]
            s = score_mask(t.name, pred, truth, seconds, boxes=boxes)
        except (AlignmentError, DecodeError, ValueError) as exc:
            s = failed(t.name, str(exc))
        scores.append(s)
        if progress is not None:
            progress(s)
    return summarize(scores), scores


def summary_table(rows: dict[str, Summary]) -> str:
    """Plain-text table, one row per method (or dataset/method)."""
    head = (f"{'method':<32} {'images':>6} {'fail':>4} {'pixel F1':>8} {'IoU':>6} {'region hit':>10} "
            f"{'s/pair':>7}")
    lines = [head, "-" * len(head)]
    for name, s in rows.items():
        hit = f"{s.region_hit_rate:.3f}" if s.region_hit_rate is not None else "-"
        sec = f"{s.seconds_per_pair:.2f}" if s.seconds_per_pair is not None else "-"
        lines.append(f"{name:<32} {s.images:>6} {s.failed:>4} {s.f1:>8.3f} {s.iou:>6.3f} {hit:>10} {sec:>7}")
    return "\n".join(lines)


def eval_localize_cmd(
    triples: Annotated[Path, typer.Argument(help="CSV: query (or forged/tampered), original, mask.")],
    root: Annotated[Path | None, typer.Option(help="Paths are relative to this (default: the "
                                              "CSV's folder).")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Score these masks (<query stem>[.mask]"
                                                     ".png) instead of running localize.")] = None,
    max_side: int = 1024,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (summary + per image).")] = False,
) -> None:
    """Pixel F1, IoU and region hit rate (box IoU >= 0.5) of edit masks, averaged over images."""
    summary, scores = eval_localize(triples, root=root, predictions=predictions, max_side=max_side)
    if as_json:
        typer.echo(json.dumps({"summary": summary.as_dict(), "images": [s.__dict__ for s in scores]}))
        return
    for s in scores:
        if s.error:
            typer.echo(f"failed {s.name}: {s.error}", err=True)
    typer.echo(summary_table({"copytrace localize": summary}))
