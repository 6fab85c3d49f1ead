"""Descriptor-only benchmark: PDQ vs the ImageNet-init descriptor vs trained copy descriptors.

    python -m copytrace.benchmarks.descriptor_bench --work /tmp/ct-desc [--extra NAME=FILE ...]

Each descriptor embeds the dev benchmark's references and queries in-process; predictions are
the top-k references by cosine similarity (no verification, no score normalisation: this
measures the descriptor alone). Every descriptor is scored raw and with PCA-whitening learned on
the references (the usual SSCD / ISC2021 post-processing). Training throughput comes from each
model's card; embedding throughput (decode + forward, img/s) is measured here.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
from copytrace.benchmarks.disc_eval import metrics_table, score_predictions
from copytrace.benchmarks.make_disc import hard_negative_sources
from copytrace.benchmarks.metrics import Metrics, PredictedMatch
from copytrace.benchmarks.pdq import pdq_predictions
from copytrace.descriptors import (
    CopyDescriptor,
    Embedder,
    LoadedDescriptor,
    embed_files,
    imagenet_descriptor,
    load_descriptor,
)
from copytrace.indexing import scan_folder


@dataclass(frozen=True)
class Embedded:
    ids: list[str]
    vectors: np.ndarray
    images_per_second: float


def embed_folder(descriptor: LoadedDescriptor, folder: Path, *, batch_size: int = 32) -> Embedded:
    sources = scan_folder(folder)
    embedder = Embedder(descriptor, device="auto")
    t = time.perf_counter()
    ids, rows = [], []
    for batch in embed_files([s.uri for s in sources], embedder, batch_size=batch_size):
        for item in batch:
            if item.vector is not None:
                ids.append(sources[item.index].image_id)
                rows.append(item.vector)
    seconds = time.perf_counter() - t
    return Embedded(ids, np.stack(rows).astype(np.float32), len(ids) / max(seconds, 1e-9))


def pca_whitening(references: np.ndarray, *, dims: int | None = None,
                  shrink: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection) learned on the references; eigenvalues shrunk towards their mean so
    that the few hundred references of the dev set do not blow up noise directions."""
    mean = references.mean(axis=0)
    x = references - mean
    cov = x.T @ x / max(1, len(x) - 1)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    keep = min(dims or len(order), len(x) - 1, len(order))
    eigval, eigvec = eigval[order[:keep]], eigvec[:, order[:keep]]
    eigval = (1 - shrink) * eigval + shrink * eigval.mean()
    return mean, eigvec / np.sqrt(eigval)[None, :]


def _apply(v: np.ndarray, mean: np.ndarray, proj: np.ndarray) -> np.ndarray:
    w = (v - mean) @ proj
    return w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12)


def knn_predictions(q: Embedded, r: Embedded, *, k: int = 10,
                    whiten: bool = False) -> list[PredictedMatch]:
    qv, rv = q.vectors, r.vectors
    if whiten:
        mean, proj = pca_whitening(rv)
        qv, rv = _apply(qv, mean, proj), _apply(rv, mean, proj)
    sims = qv @ rv.T
    kk = min(k, len(r.ids))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    return [PredictedMatch(qid, r.ids[j], float(sims[i, j]))
            for i, qid in enumerate(q.ids) for j in top[i]]


def at_resolution(descriptor: LoadedDescriptor, size: int) -> LoadedDescriptor:
    """The same weights fed a different input size (GeM pooling makes that valid)."""
    model = CopyDescriptor(replace(descriptor.config, image_size=size))
    model.load_state_dict(descriptor.model.state_dict())
    model.eval()
    return LoadedDescriptor(model, f"{descriptor.name}@{size}", descriptor.sha256, descriptor.card)


def bench_descriptor(name: str, descriptor: LoadedDescriptor, bench: Path, gt: Path
                     ) -> tuple[dict[str, Metrics], dict]:
    r = embed_folder(descriptor, bench / "references")
    q = embed_folder(descriptor, bench / "queries")
    hard = set(hard_negative_sources(bench))
    rows, without_hard = {}, {}
    for label, whiten in ((name, False), (f"{name} +PCAw", True)):
        preds = knn_predictions(q, r, whiten=whiten)
        rows[label] = score_predictions(preds, gt)
        without_hard[label] = score_predictions([p for p in preds if p.query not in hard],
                                                gt).micro_ap
    info = {"dims": descriptor.model.output_dims, "image_size": descriptor.config.image_size,
            "embed_images_per_second": round((len(q.ids) + len(r.ids))
                                             / (len(q.ids) / q.images_per_second
                                                + len(r.ids) / r.images_per_second), 1),
            "train_images_per_second": descriptor.card.get("train_images_per_second"),
            "train_steps": descriptor.card.get("steps"),
            "uAP_without_hard_negatives": {k: round(v, 4) for k, v in without_hard.items()}}
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-dev")
    parser.add_argument("--model", default="default", help="the trained descriptor to compare")
    parser.add_argument("--sizes", default="", help="extra input sizes for the trained model, "
                                                    "e.g. '224'")
    parser.add_argument("--extra", action="append", default=[],
                        help="NAME=MODEL_FILE, an ablation row (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-baselines", action="store_true", help="skip the PDQ and "
                        "ImageNet-init rows (when comparing trained models only)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a shared 2-core CPU)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    bench = ensure_dev_benchmark(dev_data_root(args.data), Path(args.work))
    gt = bench / "gt.csv"
    rows: dict[str, Metrics] = {}
    info: dict[str, dict] = {}
    candidates: list[tuple[str, LoadedDescriptor]] = []
    if not args.no_baselines:
        rows["PDQ"] = score_predictions(pdq_predictions(bench / "queries", bench / "references"),
                                        gt)
        candidates.append(("ImageNet-init", imagenet_descriptor()))
    trained = load_descriptor(args.model)
    if trained.name != "imagenet-lite0-gem":
        candidates.append((f"trained {trained.name}", trained))
        for size in filter(None, args.sizes.split(",")):
            candidates.append((f"trained @{size}", at_resolution(trained, int(size))))
    for spec in args.extra:
        label, _, path = spec.partition("=")
        candidates.append((label, load_descriptor(path)))
    for label, descriptor in candidates:
        r, i = bench_descriptor(label, descriptor, bench, gt)
        rows.update(r)
        info[label] = i
    report = {"benchmark": str(bench), "results": {n: m.as_dict() for n, m in rows.items()},
              "descriptors": info}
    print(json.dumps(report, indent=2))
    print(metrics_table(rows))
    print("\nuAP with the UKBench hard-negative queries left out (copies + distractors only):")
    for i in info.values():
        for row, ap in i["uAP_without_hard_negatives"].items():
            print(f"  {row:<40} {ap:.4f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
