"""The picture a person checks a localization with: original | copy | difference heatmap.

Each edit object gets a number and a colour by kind, the same in all three panels: outlined on
the heatmap, boxed and labelled ("1 text 0.93") on the copy, and mapped back onto the original
(with the copy's frame drawn there). A caption strip over each panel says what it shows and how
the pair was registered, so a best-guess registration is visible at a glance.
"""

from __future__ import annotations

import cv2
import numpy as np

from copytrace.matching.localize import OUTSIDE, Localization

REGISTERED_BY = {"given": "the match's homography", "keypoints": "keypoints",
                 "similarity": "image similarity", "dense": "dense flow",
                 "best-guess": "a best guess"}
"""Registration methods (`matching.register.Method` values) as the caption says them."""

KIND_COLOURS = {  # RGB
    "added": (255, 40, 40), "removed": (255, 160, 0), "replaced": (230, 0, 230), "text": (0, 200, 255),
    "lighting": (150, 150, 150),
    OUTSIDE: (60, 110, 255),
}
FRAME_COLOUR = (255, 255, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit(img: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    s = height / img.shape[0]
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=interp), s


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int],
           scale: float, taken: list | None = None) -> None:
    """Text on a filled box in the kind's colour, kept inside the image and clear of the labels
    already placed (`taken`: their rectangles, appended to)."""
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    x = int(np.clip(org[0], 0, max(0, img.shape[1] - tw - 4)))
    y = int(np.clip(org[1], th + base + 4, img.shape[0] - 1))
    for _ in range(8 if taken is not None else 0):
        rect = (x, y - th - base - 4, x + tw + 4, y)
        if not any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in taken):
            break
        y = y - th - base - 6 if y + th + base + 6 > img.shape[0] - 1 else y + th + base + 6
    if taken is not None:
        taken.append((x, y - th - base - 4, x + tw + 4, y))
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), colour, -1)
    luma = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]
    cv2.putText(img, text, (x + 2, y - base - 1), FONT, scale, (0, 0, 0) if luma > 140 else (255, 255, 255),
                thick, cv2.LINE_AA)


def _caption_height(scale: float) -> int:
    return round(34 * scale / 0.6)


def _caption(panel: np.ndarray, text: str, scale: float) -> np.ndarray:
    strip = np.full((_caption_height(scale), panel.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (6, strip.shape[0] - round(10 * scale / 0.6)), FONT, scale, (0, 0, 0),
                max(1, round(scale * 2)), cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def _quad(box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], np.float64)


def overlay(query: np.ndarray, original: np.ndarray, result: Localization, *,
            height: int = 480, numbers_only: bool = False) -> np.ndarray:
    """original | copy | heatmap side by side (RGB uint8, `height` rows), regions numbered and
    labelled; `numbers_only`: the copy's labels are the region numbers alone (small panels,
    where "7 added 0.93" labels collide; `region_legend` gives the text beside the image)."""
    font = max(0.45, height / 800)
    o, so = _fit(original, height - _caption_height(font))
    q, sq = _fit(query, height - _caption_height(font))
    o, q = o.copy(), q.copy()
    H = result.registration.homography
    qh, qw = query.shape[:2]
    frame = np.round(cv2.perspectiveTransform(_quad((0, 0, qw, qh)), H) * so).astype(np.int32)
    cv2.polylines(o, [frame], True, FRAME_COLOUR, 2, cv2.LINE_AA)
    heat = cv2.resize(np.clip(result.heat / 2.0, 0, 1), (q.shape[1], q.shape[0]),
                      interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    grey = cv2.cvtColor(cv2.cvtColor(q, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    panel = (0.35 * grey + 0.65 * colour).astype(np.uint8)
    added = cv2.resize(result.added, (q.shape[1], q.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    panel[added] = (0.5 * panel[added] + 0.5 * np.array(KIND_COLOURS[OUTSIDE])).astype(np.uint8)
    labels = result.labels
    taken: dict[str, list] = {"o": [], "q": [], "p": []}
    for n, r in enumerate(result.regions, start=1):
        c = KIND_COLOURS.get(r.kind, (255, 255, 255))
        x0, y0, x1, y1 = (round(v * sq) for v in r.box)
        if r.is_edit and labels is not None and n <= labels.max():
            obj = cv2.resize((labels == n).astype(np.uint8), (q.shape[1], q.shape[0]),
                             interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(obj, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(panel, contours, -1, c, 2, cv2.LINE_AA)
        cv2.rectangle(q, (x0, y0), (x1, y1), c, 2)
        text = str(n) if numbers_only else region_label(n, r)
        _label(q, text, (x0, y0 - 2 if y0 > 30 else y1 + 30), c, font, taken["q"])
        _label(panel, str(n), (x0, y0 - 2 if y0 > 30 else y1 + 30), c, font, taken["p"])
        if r.is_edit:
            back = np.round(cv2.perspectiveTransform(_quad(r.box), H) * so).astype(np.int32)
            cv2.polylines(o, [back], True, c, 2, cv2.LINE_AA)
            bx, by = back.reshape(-1, 2).min(axis=0)
            _label(o, str(n), (int(bx), int(by) - 2 if by > 30 else int(by) + 30), c, font, taken["o"])
    reg = result.registration
    edits = len(result.edit_regions)
    outside = len(result.regions) - edits
    o = _caption(o, "original (yellow: the copy's frame)", font)
    q = _caption(q, f"copy: {edits} edit region{'s' if edits != 1 else ''}"
                 + (f" + {outside} outside the frame" if outside else ""), font)
    how = REGISTERED_BY.get(reg.method, reg.method)
    panel = _caption(panel, f"difference; registered by {how} ({reg.confidence:.2f})", font)
    gap = np.full((o.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([o, gap, q, gap, panel], axis=1)


def region_label(n: int, region) -> str:  # noqa: ANN001 - a localize.Region
    return f"{n} {region.kind} {region.confidence:.2f}" if region.is_edit else f"{n} outside frame"


def region_legend(result: Localization) -> str:
    """Every numbered region of an overlay as text: "1 added 0.93 · 2 outside frame"."""
    return " · ".join(region_label(n, r) for n, r in enumerate(result.regions, start=1))
