"""A quick validation proxy during training, on a DISC-style folder (references/, queries/, gt.csv).

Training must not depend on the benchmark package, so this reports only cheap signals:
acc@1 over positive queries, and how often a positive's top-1 score beats the top-1 scores of
non-matching queries (a ranking-AUC proxy for what µAP rewards). The real µAP / R@P90 come from
`copytrace.benchmarks.descriptor_bench`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from copytrace.descriptors.decode import DecodeError, decode_file
from copytrace.descriptors.model import CopyDescriptor


@dataclass(frozen=True)
class ValProxy:
    acc_at_1: float
    score_auc: float  # P(top-1 score of a positive query > top-1 score of a negative query)


@dataclass(frozen=True)
class ValSet:
    reference_ids: list[str]
    references: np.ndarray  # N x S x S x 3 uint8
    query_ids: list[str]
    queries: np.ndarray
    truth: dict[str, str]  # query id -> reference id ("" = no match)


def _load_folder(folder: Path, size: int, limit: int | None) -> tuple[list[str], np.ndarray]:
    ids, pixels = [], []
    for path in sorted(folder.glob("*"))[:limit]:
        try:
            pixels.append(decode_file(path, target_size=size).pixels)
            ids.append(path.stem)
        except DecodeError:
            continue
    return ids, np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)


def load_val_set(folder: str | Path, *, image_size: int, max_queries: int | None = None) -> ValSet:
    folder = Path(folder)
    truth: dict[str, str] = {}
    with open(folder / "gt.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            truth[row["query_id"]] = row.get("reference_id") or ""
    ref_ids, refs = _load_folder(folder / "references", image_size, None)
    q_ids, qs = _load_folder(folder / "queries", image_size, max_queries)
    return ValSet(ref_ids, refs, q_ids, qs, truth)


@torch.inference_mode()
def _embed(model: CopyDescriptor, pixels: np.ndarray, batch: int = 64) -> np.ndarray:
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(pixels), batch):
        x = torch.from_numpy(pixels[s : s + batch]).to(device).permute(0, 3, 1, 2).float() / 255.0
        out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.output_dims), np.float32)


def evaluate_proxy(model: CopyDescriptor, val: ValSet) -> ValProxy:
    was_training = model.training
    model.eval()
    try:
        r = _embed(model, val.references)
        q = _embed(model, val.queries)
    finally:
        model.train(was_training)
    sims = q @ r.T
    top = sims.argmax(axis=1)
    top_score = sims.max(axis=1)
    pos_scores, neg_scores, correct = [], [], 0
    for i, qid in enumerate(val.query_ids):
        ref = val.truth.get(qid, "")
        if ref:
            hit = val.reference_ids[top[i]] == ref
            correct += hit
            pos_scores.append(top_score[i] if hit else -1.0)
        else:
            neg_scores.append(top_score[i])
    acc = correct / max(1, len(pos_scores))
    if pos_scores and neg_scores:
        p, n = np.asarray(pos_scores)[:, None], np.asarray(neg_scores)[None, :]
        auc = float((p > n).mean())
    else:
        auc = float("nan")
    return ValProxy(acc, auc)
