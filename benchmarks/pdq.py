"""PDQ (Facebook's perceptual hash) as the peer baseline: hash, brute-force Hamming, top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pdqhash

from copytrace.benchmarks.metrics import PredictedMatch
from copytrace.descriptors import DecodeError, decode_file
from copytrace.indexing import scan_folder


def pdq_hashes(folder: str | Path) -> tuple[list[str], np.ndarray]:
    """(ids, N x 256 bool) for the decodable images of a folder."""
    ids, rows = [], []
    for src in scan_folder(Path(folder)):
        try:
            pixels = decode_file(src.uri).pixels
        except DecodeError:
            continue
        bits, _quality = pdqhash.compute(np.ascontiguousarray(pixels))
        ids.append(src.image_id)
        rows.append(bits.astype(bool))
    return ids, np.array(rows, dtype=bool).reshape(-1, 256)


def pdq_predictions(queries: str | Path, references: str | Path, *, k: int = 10) -> list[PredictedMatch]:
    """Score = 1 - Hamming distance / 256, so higher means more similar, as ISC expects."""
    qids, q = pdq_hashes(queries)
    rids, r = pdq_hashes(references)
    if not len(qids) or not len(rids):
        return []
    qf, rf = q.astype(np.float32), r.astype(np.float32)
    distance = qf @ (1 - rf).T + (1 - qf) @ rf.T
    scores = 1.0 - distance / 256.0
    kk = min(k, len(rids))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    return [PredictedMatch(qid, rids[j], float(scores[i, j]))
            for i, qid in enumerate(qids) for j in top[i]]
