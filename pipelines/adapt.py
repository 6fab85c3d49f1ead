"""`copytrace adapt PAIRS --index IDX --name NAME`: learn a query-side adapter for a new pattern.

A few (copy, original) pairs of a tamper pattern the descriptor was not trained on are enough to
learn a small residual map of the query's descriptor (`descriptors.adapter`) that brings such
copies back to their originals' STORED vectors: the catalog is never embedded again. Ordinary
copies of other catalog images (the training edits of `descriptors.augment`) are replayed so
they keep finding their originals, and edited images left out of the softmax bank teach it not to
make false matches. The adapter is saved in the index folder with a card (`indexing.adapters`),
as a new index version; queries then search its adapted vector as one more view.
"""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from copytrace.descriptors.adapter import (
    ADAPTER_KIND,
    AdapterConfig,
    TrainingSet,
    apply_adapter,
    train_adapter,
)
from copytrace.descriptors.augment import EditContext, random_copy
from copytrace.descriptors.decode import DecodeError, decode_file
from copytrace.descriptors.embed import Embedder
from copytrace.indexing.adapters import AdapterCard, AdapterError, check_name, save_adapter
from copytrace.indexing.catalog import STATUS_OK
from copytrace.indexing.embeddings import embedding_parts, table_vectors
from copytrace.indexing.store import CopyIndex
from copytrace.matching.query_image import decode_query
from copytrace.pipelines.engine import index_model
from copytrace.util.listing import ListingError, read_listing_rows
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)

COPY_COLUMNS = ("copy", "query", "path", "uri")
ORIGINAL_COLUMNS = ("original", "reference", "reference_id", "image_id")
PAIR_VIEW_EDITS = ("crop", "jpeg", "rescale", "colour")
"""Light edits that give each example copy a few more views without hiding its pattern."""


@dataclass(frozen=True)
class AdaptOptions:
    """What `adapt` draws besides the pairs (defaults: a few minutes on 2 CPU cores)."""

    views_per_pair: int = 4  # the copy itself plus lightly edited views of it
    replay: int = 256  # ordinary copies of other catalog images
    negatives: int = 64  # ordinary copies of catalog images left out of the bank
    bank: int = 16384  # stored vectors in the softmax (all when the catalog is smaller)
    hard_k: int = 32  # nearest stored vectors of each training query, always in the bank
    seed: int = 0


@dataclass(frozen=True)
class AdaptReport:
    index: str
    version: int
    card: AdapterCard


def read_pairs(pairs: str | Path) -> list[tuple[Path, str]]:
    """(copy path, original) rows of a CSV/Parquet listing; the original is a catalog image id
    or a path. Relative copy paths are relative to the listing."""
    listing = Path(pairs)
    rows = read_listing_rows(listing)
    if not rows:
        raise ListingError(f"pairs file '{listing}' has no rows")
    columns = set(rows[0])
    copy_col = next((c for c in COPY_COLUMNS if c in columns), None)
    orig_col = next((c for c in ORIGINAL_COLUMNS if c in columns), None)
    if copy_col is None or orig_col is None:
        raise ListingError(f"pairs file '{listing}' needs a 'copy' and an 'original' column; has "
                           f"{sorted(columns)}")
    out = []
    for r in rows:
        if r[copy_col] and r[orig_col]:
            p = Path(str(r[copy_col]))
            out.append((p if p.is_absolute() else listing.parent / p, str(r[orig_col])))
    return out


def _original_ids(originals: list[str], base: Path, catalog: pa.Table) -> list[str]:
    """Catalog ids of the originals (given as ids or as paths of catalog images)."""
    ok = catalog.filter(pc.equal(catalog.column("status"), STATUS_OK))
    ids = ok.column("image_id").to_pylist()
    known = set(ids)
    by_uri = {str(Path(u).resolve()): i for i, u in zip(ids, ok.column("uri").to_pylist(),
                                                        strict=True)}
    out = []
    for o in originals:
        if o in known:
            out.append(o)
            continue
        p = Path(o) if Path(o).is_absolute() else base / o
        found = by_uri.get(str(p.resolve()))
        if found is None:
            raise AdapterError(f"original '{o}' is neither an image id nor an image of the index's "
                               "catalog: add it with 'copytrace index add' first")
        out.append(found)
    return out


def _photo(path: str | Path, max_side: int = 1024) -> Image.Image:
    img = Image.fromarray(decode_file(path).pixels)
    img.thumbnail((max_side, max_side))
    return img


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _embed(sources: list[bytes | Path], embedder: Embedder, *, label: str,
           show_progress: bool) -> np.ndarray:
    """Whole-image query vectors, decoded exactly as a query is (`decode_query`)."""
    out = []
    with progress_bar(label, total=len(sources), enabled=show_progress) as advance:
        for s in range(0, len(sources), 32):
            pixels = [decode_query(src, model_size=embedder.image_size).model_pixels
                      for src in sources[s : s + 32]]
            out.append(embedder.embed_pixels(np.stack(pixels)))
            advance(len(pixels))
    return np.concatenate(out) if out else np.zeros((0, embedder.dims), np.float32)


def _pair_views(copies: list[Path], views: int, rng: random.Random) -> tuple[list, list[int]]:
    """Each copy as given, plus `views - 1` lightly edited re-encodings of it."""
    sources: list[bytes | Path] = []
    owner: list[int] = []
    for i, path in enumerate(copies):
        sources.append(path)
        owner.append(i)
        if views > 1:
            img = _photo(path)
            for _ in range(views - 1):
                edited, _ = random_copy(img, rng, allowed=PAIR_VIEW_EDITS, max_edits=1,
                                        context=EditContext(strength=0.3), final_jpeg=False)
                sources.append(_jpeg(edited))
                owner.append(i)
    return sources, owner


def _ordinary_copies(uris: list[str], rng: random.Random, others: list[Image.Image]) -> list:
    """JPEG bytes of training-edit copies of these catalog images (None where unreadable)."""
    out: list[bytes | None] = []
    context = EditContext(others=others)
    for uri in uris:
        try:
            img = _photo(uri, 512)
        except (DecodeError, OSError):
            out.append(None)
            continue
        copy, _ = random_copy(img, rng, context=context)
        out.append(_jpeg(copy))
    return out


def _stored_vectors(index: CopyIndex, wanted: set[str]) -> tuple[list[str], np.ndarray]:
    """The index's stored vectors of `wanted` ids, read part by part (never the whole catalog
    in memory at once)."""
    ids: list[str] = []
    chunks = []
    value_set = pa.array(sorted(wanted), pa.string())
    for part in embedding_parts(index.layout.embeddings_dir, index.manifest.version):
        t = pq.read_table(part)
        t = t.filter(pc.is_in(t.column("image_id"), value_set=value_set))
        if t.num_rows:
            ids.extend(t.column("image_id").to_pylist())
            chunks.append(table_vectors(t))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, index.manifest.model.dims))
    return ids, vectors.astype(np.float32)


def _top1(queries: np.ndarray, targets: np.ndarray, bank: np.ndarray,
          arrays: dict | None = None) -> float:
    """Share of queries whose target is their best bank row; with `arrays`, a row's score is its
    best over the plain and the adapted vector (as the query views are fused)."""
    if not len(queries):
        return float("nan")
    sims = queries @ bank.T
    if arrays is not None:
        sims = np.maximum(sims, apply_adapter(arrays, queries) @ bank.T)
    return float(np.mean(sims.argmax(axis=1) == targets))


def held_out_check(data: TrainingSet, owner: np.ndarray, config: AdapterConfig, *,
                   folds: int = 3) -> tuple[float, float]:
    """Top-1 of each example copy (plain, then fused with the adapter) when its pair was left
    out of training: whether the pairs teach the pattern or only their own originals."""
    pairs = np.unique(owner)
    before = after = 0.0
    for f in range(min(folds, len(pairs))):
        out = pairs[f::folds]
        train = ~np.isin(owner, out)
        test = np.array([j for j in np.flatnonzero(~train) if j == 0 or owner[j - 1] != owner[j]])
        trained = train_adapter(TrainingSet(data.bank, data.pattern[train],
                                            data.pattern_targets[train], data.replay,
                                            data.replay_targets), config=config)
        q, t = data.pattern[test], data.pattern_targets[test]
        before += _top1(q, t, data.bank) * len(test)
        after += _top1(q, t, data.bank, trained.arrays) * len(test)
    return before / len(pairs), after / len(pairs)


def adapt_index(pairs: str | Path, index: str | Path, *, name: str, pattern: str | None = None,
                options: AdaptOptions = AdaptOptions(), config: AdapterConfig | None = None,
                device: str = "cpu", show_progress: bool = True,
                allow_worse: bool = False) -> AdaptReport:
    """Learn adapter `name` from the (copy, original) rows of `pairs` and store it in `index`.

    Before saving, the pairs are cross-checked: adapters trained without a third of them must
    not rank those copies' originals worse than the plain descriptor (fused as a query fuses
    views); otherwise the adapter only memorised its examples and is refused (`allow_worse`
    saves it anyway)."""
    check_name(name)
    t0 = time.perf_counter()
    rows = read_pairs(pairs)
    copy_index = CopyIndex.open(index)
    descriptor = index_model(copy_index)
    embedder = Embedder(descriptor, device=device)
    catalog = copy_index.catalog()
    originals = _original_ids([o for _, o in rows], Path(pairs).parent, catalog)
    rng = random.Random(options.seed)

    # ordinary copies of other catalog images: replayed (in the bank) and negatives (left out)
    removed = set(copy_index.ids[copy_index.removed]) if copy_index.removed is not None else set()
    ok = catalog.filter(pc.equal(catalog.column("status"), STATUS_OK))
    uris = dict(zip(ok.column("image_id").to_pylist(), ok.column("uri").to_pylist(), strict=True))
    others = sorted(set(uris) - set(originals) - removed)
    rng.shuffle(others)
    replay_ids = others[: options.replay]
    negative_ids = others[options.replay : options.replay + options.negatives]
    pasted = [_photo(uris[i], 512) for i in others[-8:]]
    copies = _ordinary_copies([uris[i] for i in replay_ids + negative_ids], rng, pasted)
    keep = [j for j, c in enumerate(copies) if c is not None]
    ordinary_ids = [(replay_ids + negative_ids)[j] for j in keep]

    sources, owner = _pair_views([c for c, _ in rows], options.views_per_pair, rng)
    pattern_vecs = _embed(sources, embedder, label="pattern copies", show_progress=show_progress)
    ordinary_vecs = _embed([copies[j] for j in keep], embedder, label="replay copies",
                           show_progress=show_progress)

    # the bank: every target, the nearest stored vectors of each training query, a sample
    live = [i for i in copy_index.ids.tolist() if i not in removed]
    negatives = set(negative_ids)
    hard = {n.image_id for row in copy_index.search(np.concatenate([pattern_vecs, ordinary_vecs]),
                                                    k=options.hard_k) for n in row}
    sample = live if len(live) <= options.bank else random.Random(options.seed).sample(
        live, options.bank)
    wanted = (set(originals) | set(replay_ids) | hard | set(sample)) - negatives
    bank_ids, bank = _stored_vectors(copy_index, wanted)
    row_of = {i: r for r, i in enumerate(bank_ids)}
    p_targets = np.array([row_of[originals[o]] for o in owner])
    r_targets = np.array([row_of.get(i, -1) if i not in negatives else -1 for i in ordinary_ids])

    data = TrainingSet(bank, pattern_vecs, p_targets, ordinary_vecs, r_targets)
    log.info("training adapter '%s' on %d pattern views, %d replayed copies, bank %d", name,
             len(pattern_vecs), len(ordinary_vecs), len(bank))
    config = config or AdapterConfig()
    held_before, held_after = held_out_check(data, np.array(owner), config)
    if held_after < held_before and not allow_worse:
        raise AdapterError(
            f"adapter '{name}' not saved: on example pairs left out of its training, top-1 fell "
            f"from {held_before:.2f} to {held_after:.2f} (the pairs teach their own originals, "
            "not the pattern); give more or more varied pairs, or allow_worse / --allow-worse")
    trained = train_adapter(data, config=config)
    first = np.array([j for j, o in enumerate(owner) if j == 0 or owner[j - 1] != o])
    pos = r_targets >= 0
    measured = {
        "on": f"the {len(rows)} example copies (held out: 3-fold, adapter trained without "
              f"them) and {int(pos.sum())} replayed ordinary copies, top-1 among {len(bank)} "
              "stored vectors, adapted vector fused with the plain one",
        "pairs_top1_before": _top1(pattern_vecs[first], p_targets[first], bank),
        "pairs_top1_after": _top1(pattern_vecs[first], p_targets[first], bank, trained.arrays),
        "held_out_top1_before": round(held_before, 4),
        "held_out_top1_after": round(held_after, 4),
        "replay_top1_before": _top1(ordinary_vecs[pos], r_targets[pos], bank),
        "replay_top1_after": _top1(ordinary_vecs[pos], r_targets[pos], bank, trained.arrays),
        "training_seconds": round(trained.seconds, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    card = AdapterCard(
        name=name, pattern=pattern or name, model_id=descriptor.model_id,
        model_sha256=descriptor.sha256, dims=int(bank.shape[1]), rank=config.rank,
        kind=ADAPTER_KIND, pairs=len(rows), pairs_file=str(Path(pairs).resolve()),
        replay=int(pos.sum()), negatives=int((~pos).sum()), bank=len(bank),
        seconds=round(time.perf_counter() - t0, 2), bytes=trained.bytes, measured=measured)
    version = save_adapter(index, card, trained.arrays)
    return AdaptReport(str(index), version, card)
