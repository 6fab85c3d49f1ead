"""Vectors for the scale benchmark: real photos, real copies of them, and distractors like them.

References are the shipped model's descriptors of the ImageNet-sample and UKBench dev photos
(1,500). Queries are descriptors of copies made with the project's edit module
(`descriptors.augment.random_copy`) of photos the shipped model did not train on (the last 300
ImageNet-sample photos, one view of each UKBench object); the other UKBench views stay in the
catalog as hard non-matches. Embedding is slow on a small busy machine, so each set of vectors
is cached once per model in an .npz.

Distractors (to reach millions of references) are drawn from a Gaussian with the real
references' mean and covariance, then L2-normalised: random unit vectors would be far too easy,
since real descriptors crowd a narrow cone. `similarity_quantiles` checks the claim: it sets the
similarity of real queries to real non-matching references beside their similarity to
distractors.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from copytrace.descriptors import (
    EditContext,
    Embedder,
    embed_files,
    embed_images,
    load_descriptor,
    random_copy,
)
from copytrace.indexing import scan_folder

log = logging.getLogger(__name__)

HELD_OUT_IMAGENET = 300  # the shipped model trained on the first 700 ImageNet-sample photos
QUANTILES = (0.5, 0.9, 0.99, 0.999, 0.9999)


@dataclass(frozen=True)
class RealSet:
    """Real references and copy queries; `truth[i]` is the row in `refs` query i was copied from."""

    ref_ids: np.ndarray
    refs: np.ndarray
    query_ids: np.ndarray
    queries: np.ndarray
    truth: np.ndarray
    model_id: str


def _photo_folders(data: Path) -> list[Path]:
    folders = [data / "photos" / "imagenet-sample", data / "ukbench"]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise FileNotFoundError(f"dev photos not found: {', '.join(missing)} (set --data)")
    return folders


def _cached(path: Path, make) -> dict[str, np.ndarray]:
    """Arrays from `path`, or made by `make()` and saved there first (embedding is slow)."""
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return dict(z)
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def _embed_folder(folder: Path, embedder: Embedder) -> dict[str, np.ndarray]:
    sources = scan_folder(folder)
    ids, vecs = [], []
    for batch in embed_files([s.uri for s in sources], embedder, batch_size=64):
        for item in batch:
            if item.vector is not None:
                ids.append(f"{folder.name}/{sources[item.index].image_id}")
                vecs.append(item.vector)
    log.info("embedded %s: %d references", folder, len(ids))
    return {"ids": np.array(ids), "vectors": np.stack(vecs).astype(np.float32)}


def _held_out(data: Path) -> list[tuple[str, Path]]:
    """Originals of the benchmark queries: the last 300 ImageNet-sample photos, one view per
    UKBench object (the shipped model trained on neither)."""
    imagenet = sorted((data / "photos" / "imagenet-sample").glob("*.JPEG"))[-HELD_OUT_IMAGENET:]
    ukbench = sorted((data / "ukbench").glob("*.jpg"))[::4]
    return [(f"imagenet-sample/{p.stem}", p) for p in imagenet] + \
           [(f"ukbench/{p.stem}", p) for p in ukbench]


def _embed_copies(originals: list[tuple[str, Path]], embedder: Embedder, copies_per_image: int,
                  seed: int) -> dict[str, np.ndarray]:
    rng = random.Random(seed)
    others = [Image.open(p).convert("RGB") for _, p in originals[:: max(1, len(originals) // 40)]]
    context = EditContext(others=others)
    qids, truth, images = [], [], []
    for ref_id, path in originals:
        img = Image.open(path).convert("RGB")
        for c in range(copies_per_image):
            copy, _ = random_copy(img, rng, context=context)
            qids.append(f"{ref_id}#copy{c}")
            truth.append(ref_id)
            images.append(np.asarray(copy))
    vectors = embed_images(images, embedder, batch_size=64)
    return {"ids": np.array(qids), "truth": np.array(truth), "vectors": vectors.astype(np.float32)}


def load_real_set(data: Path, cache: Path, *, model: str = "default", copies_per_image: int = 1,
                  seed: int = 0) -> RealSet:
    """Embed (or read from `cache`) the real references and their copy queries."""
    descriptor = load_descriptor(model)
    tag = descriptor.model_id[:16]
    embedder: list[Embedder] = []

    def get() -> Embedder:
        if not embedder:
            embedder.append(Embedder(descriptor))
        return embedder[0]

    q = _cached(cache / f"queries-{tag}-c{copies_per_image}-s{seed}.npz",
                lambda: _embed_copies(_held_out(data), get(), copies_per_image, seed))
    parts = [_cached(cache / f"refs-{tag}-{f.name}.npz", lambda f=f: _embed_folder(f, get()))
             for f in _photo_folders(data)]
    ref_ids = np.concatenate([p["ids"] for p in parts])
    refs = np.concatenate([p["vectors"] for p in parts])
    row = {str(r): i for i, r in enumerate(ref_ids)}
    keep = np.array([str(t) in row for t in q["truth"]])
    truth = np.array([row[str(t)] for t in q["truth"][keep]], np.int64)
    return RealSet(ref_ids, refs, q["ids"][keep], q["vectors"][keep], truth, descriptor.model_id)


def load_tuning_set(data: Path, cache: Path, real: RealSet, *, model: str = "default",
                    n: int = 150, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Copy queries of `n` references the benchmark queries never use (held back for tuning)."""
    held_out = {rid for rid, _ in _held_out(data)}
    photos = sorted((data / "photos" / "imagenet-sample").glob("*.JPEG"))[:-HELD_OUT_IMAGENET]
    pool = [(f"imagenet-sample/{p.stem}", p) for p in photos]
    pool = [x for x in pool if x[0] not in held_out]
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    z = _cached(cache / f"tune-{real.model_id[:16]}-n{n}-s{seed}.npz",
                lambda: _embed_copies(chosen, Embedder(load_descriptor(model)), 1, seed))
    row = {str(r): i for i, r in enumerate(real.ref_ids)}
    return z["vectors"], np.array([row[str(t)] for t in z["truth"]], np.int64)


def fit_distractors(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the covariance's square root (rows of `scales[:, None] * vt`) of real vectors."""
    mean = real.mean(axis=0)
    _, s, vt = np.linalg.svd(real - mean, full_matrices=False)
    return mean.astype(np.float32), (s[:, None] / np.sqrt(max(1, len(real) - 1)) * vt).astype(
        np.float32)


DISTRACTOR_BLOCK = 100_000


def make_distractors(real: np.ndarray, n: int, *, seed: int = 1) -> np.ndarray:
    """`n` unit vectors drawn like the real references (Gaussian of their mean and covariance)."""
    return SyntheticCatalog(real, len(real) + n, seed=seed).read_range(len(real), len(real) + n)


class SyntheticCatalog:
    """The benchmark's catalog, never held whole: the real references (and any `planted` rows
    after them), then distractors up to `n`, generated on demand in blocks of
    `DISTRACTOR_BLOCK` that each have their own seed, so any range reads the same vectors every
    time (10M x 256 floats would be 10 GB)."""

    def __init__(self, real: np.ndarray, n: int, *, seed: int = 1,
                 spill: Path | None = None, planted: np.ndarray | None = None) -> None:
        # `planted` rows (the copy queries, for the self-join) follow the real references; the
        # distractors are fitted on the references alone, so they stay the same vectors
        rows = real if planted is None else np.concatenate([real, planted])
        self.real = np.ascontiguousarray(rows, np.float32)
        self.n = max(n, 0)
        self.dims = real.shape[1]
        self.seed = seed
        self.mean, self.root = fit_distractors(real)
        self._last: tuple[int, np.ndarray] | None = None
        self.spill = spill if spill is not None and spill.exists() else None

    def write_spill(self, path: Path) -> float:
        """Write the distractors once to a raw float32 file that later reads come from (on a
        busy 2-core box generating 10M of them takes minutes; reading them back, seconds).
        Reads use plain file reads, not a memory map, so they never count in anyone's RSS."""
        t = time.perf_counter()
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as fh:
            for a in range(len(self.real), self.n, DISTRACTOR_BLOCK):
                self.read_range(a, a + DISTRACTOR_BLOCK).tofile(fh)
        tmp.replace(path)
        self.spill = path
        return time.perf_counter() - t

    def _spilled(self, d: int, e: int) -> np.ndarray:
        with self.spill.open("rb") as fh:  # type: ignore[union-attr]
            return np.fromfile(fh, np.float32, count=(e - d) * self.dims,
                               offset=d * self.dims * 4).reshape(e - d, self.dims)

    def _block(self, no: int) -> np.ndarray:
        if self._last is None or self._last[0] != no:
            rng = np.random.default_rng([self.seed, no])
            x = self.mean + rng.standard_normal((DISTRACTOR_BLOCK, self.root.shape[0]),
                                                dtype=np.float32) @ self.root
            self._last = (no, x / np.linalg.norm(x, axis=1, keepdims=True))
        return self._last[1]

    def read_range(self, a: int, b: int) -> np.ndarray:
        """Vectors a..b (positions: real references first, then distractors)."""
        b = min(b, self.n)
        parts, r = [], len(self.real)
        if a < r:
            parts.append(self.real[a : min(b, r)])
        d = max(a, r) - r  # distractor rows wanted: d..e
        e = b - r
        if self.spill is not None and d < e:
            parts.append(self._spilled(d, e))
            d = e
        while d < e:
            no, off = divmod(d, DISTRACTOR_BLOCK)
            take = min(e - d, DISTRACTOR_BLOCK - off)
            parts.append(self._block(no)[off : off + take])
            d += take
        if not parts:
            return np.zeros((0, self.dims), np.float32)
        return np.ascontiguousarray(np.concatenate(parts), np.float32)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Vectors at sorted positions `rows` (a sparse sample of the catalog), without reading
        the ranges between them: one small read per spilled row, or each generated block once."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.dims), np.float32)
        r = len(self.real)
        real = rows < r
        out[real] = self.real[rows[real]]
        d = rows[~real] - r
        if self.spill is not None:
            size = self.dims * 4
            with self.spill.open("rb") as fh:
                chunks = b"".join(os.pread(fh.fileno(), size, int(i) * size) for i in d)
            out[~real] = np.frombuffer(chunks, np.float32).reshape(len(d), self.dims)
            return out
        blocks = d // DISTRACTOR_BLOCK
        picked = []
        for no in np.unique(blocks):
            a, b = np.searchsorted(blocks, [no, no + 1])
            picked.append(self._block(int(no))[d[a:b] - no * DISTRACTOR_BLOCK])
        if picked:
            out[~real] = np.concatenate(picked)
        return out

    def sample(self, m: int, *, seed: int = 0) -> np.ndarray:
        """`m` vectors drawn like the whole catalog: real references in their share of it, then
        distractors (independent draws, so the first ones are as random as any)."""
        m, r = min(m, self.n), min(len(self.real), self.n)
        k = round(m * r / self.n) if self.n else 0
        pick = np.random.default_rng(seed).choice(r, size=k, replace=False)
        return np.concatenate([self.real[np.sort(pick)],
                               self.read_range(len(self.real), len(self.real) + m - k)])


def similarity_quantiles(real: RealSet, distractors: np.ndarray) -> dict[str, dict[str, float]]:
    """Quantiles of query-to-reference cosine: real non-matching references vs distractors.

    Same number of references on both sides (the real set's size), so the upper quantiles and the
    mean best non-match per query are comparable.
    """
    n = len(real.refs)
    sims_real = real.queries @ real.refs.T
    sims_real[np.arange(len(real.queries)), real.truth] = np.nan  # drop the true originals
    sims_fake = real.queries @ distractors[:n].T
    out = {}
    for name, sims in (("real_non_matching", sims_real), ("distractors", sims_fake)):
        flat = sims[~np.isnan(sims)]
        row = {f"q{q:g}": round(float(np.quantile(flat, q)), 4) for q in QUANTILES}
        row["mean_best_per_query"] = round(float(np.nanmax(sims, axis=1).mean()), 4)
        out[name] = row
    return out
