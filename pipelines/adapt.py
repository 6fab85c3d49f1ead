"""`copytrace adapt PAIRS --index IDX --name NAME`: learn a query-side adapter for a new pattern.

A few (copy, original) pairs of a tamper pattern the descriptor was not trained on choose a chain
of cheap pixel filters for the query's model input (`descriptors.input_filters`: undo an
inversion, blur halftone dots into tones, ...) and, where it helps, a small residual map of the
filtered descriptor (`descriptors.adapter`), both scored against the originals' STORED vectors:
the catalog is never embedded again. Ordinary
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from copytrace.descriptors.adapter import (
    ADAPTER_KIND,
    FILTER_KIND,
    FILTER_MAP_KIND,
    AdapterConfig,
    TrainingSet,
    apply_adapter,
    fused_sims,
    rank_chains,
    reciprocal_ranks,
    train_adapter,
)
from copytrace.descriptors.augment import EditContext, random_copy
from copytrace.descriptors.decode import DecodeError, decode_file
from copytrace.descriptors.embed import Embedder
from copytrace.descriptors.input_filters import LIBRARY, apply_chain
from copytrace.indexing.adapters import (
    CARD_FORMAT,
    AdapterCard,
    AdapterError,
    check_name,
    save_adapter,
)
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
    filters: bool = True  # search an input filter chain (format 2); False: the map only
    chain_singles: int = 8  # next best single filters tried after the best one
    residual: bool | None = None  # None: the map on top only if the held-out pairs gain
    folds: int = 3
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


def _decode(sources: list[bytes | Path], embedder: Embedder) -> np.ndarray:
    """N x S x S x 3 model inputs, decoded exactly as a query's whole image is."""
    size = embedder.image_size
    if not sources:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([decode_query(src, model_size=size).model_pixels for src in sources])


def _embed(pixels: np.ndarray, embedder: Embedder, *, label: str, show_progress: bool,
           chain: str = "") -> np.ndarray:
    """Unit vectors of model inputs (through the filter `chain` first)."""
    out = []
    with progress_bar(label, total=len(pixels), enabled=show_progress) as advance:
        for s in range(0, len(pixels), 32):
            out.append(embedder.embed_pixels(apply_chain(chain, pixels[s : s + 32])))
            advance(len(out[-1]))
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


@dataclass(frozen=True)
class Vectors:
    """What the choice of an adapter reads: pattern copies (all views, and the copies as given
    embedded through every candidate chain), ordinary copies, the bank."""

    data: TrainingSet  # plain vectors
    owner: np.ndarray  # pair of each pattern row
    first: np.ndarray  # pattern rows that are the copies as given (one per pair)
    chains: dict[str, np.ndarray]  # chain -> vectors of the `first` rows


def _fused_rr(plain: np.ndarray, targets: np.ndarray, bank: np.ndarray,
              adapted: np.ndarray | None = None) -> np.ndarray:
    return reciprocal_ranks(fused_sims(plain, bank, adapted), targets)


def _adapted(chain_vecs: np.ndarray, arrays: dict | None) -> np.ndarray:
    return apply_adapter(arrays, chain_vecs) if arrays else chain_vecs


def choose_chain(v: Vectors, pairs: np.ndarray) -> str:
    """The filter chain (maybe '') whose view, fused with the plain one, brings the copies of
    `pairs` closest to their originals."""
    rows = np.flatnonzero(np.isin(v.owner[v.first], pairs))
    targets, plain = v.data.pattern_targets[v.first], v.data.pattern[v.first]
    return rank_chains(v.chains, targets, v.data.bank, plain=plain, rows=rows)[0][1]


def held_out_check(v: Vectors, options: AdaptOptions, config: AdapterConfig,
                   chain_of_fold: Callable[[np.ndarray], str],
                   map_chain: tuple[str, np.ndarray, np.ndarray] | None) -> dict:
    """Each pair's copy scored by an adapter chosen WITHOUT it (k folds): mean reciprocal rank
    and top-1 of its original among the bank, plain and fused with the adapter's view. With
    `map_chain` (chain, its vectors of all pattern rows, of the replay rows) a residual map
    is trained on top of that chain per fold too ('map' keys)."""
    pairs = np.unique(v.owner)
    targets = v.data.pattern_targets
    first_owner = v.owner[v.first]
    out: dict[str, list] = {"plain": [], "chain": [], "map": []}
    for f in range(min(options.folds, len(pairs))):
        test_pairs = pairs[f :: options.folds]
        test = np.isin(first_owner, test_pairs)
        rows = v.first[test]
        plain = v.data.pattern[rows]
        out["plain"].append(_fused_rr(plain, targets[rows], v.data.bank))
        chain = chain_of_fold(np.setdiff1d(pairs, test_pairs))
        chained = v.chains[chain][test] if chain else None
        out["chain"].append(_fused_rr(plain, targets[rows], v.data.bank, chained))
        if map_chain is not None:
            mchain, mpattern, mreplay = map_chain
            train = ~np.isin(v.owner, test_pairs)
            trained = train_adapter(TrainingSet(v.data.bank, mpattern[train], targets[train],
                                                mreplay, v.data.replay_targets), config=config)
            base = v.chains[mchain][test] if mchain else plain
            out["map"].append(_fused_rr(plain, targets[rows], v.data.bank,
                                        apply_adapter(trained.arrays, base)))
    return {k: np.concatenate(x) for k, x in out.items() if x}


def _others_check(v: Vectors, replay_adapted: np.ndarray) -> dict:
    """How the adapter's view changes ordinary copies: the replayed ones' reciprocal rank of
    their original (must not fall), and how well their similarity to it still separates them
    from copies of images that are not in the bank (the share of (copy, non-copy) pairs where
    the copy scores higher: a false match is a non-copy that overtakes copies)."""
    bank, replay, targets = v.data.bank, v.data.replay, v.data.replay_targets
    pos, neg = targets >= 0, targets < 0
    rr_before = _fused_rr(replay[pos], targets[pos], bank)
    rr_after = _fused_rr(replay[pos], targets[pos], bank, replay_adapted[pos])
    out = {"replay_rr_before": float(rr_before.mean()), "replay_rr_after": float(rr_after.mean()),
           "replay_top1_before": float((rr_before == 1).mean()),
           "replay_top1_after": float((rr_after == 1).mean())}
    if pos.any() and neg.any():
        for key, adapted in (("before", None), ("after", replay_adapted)):
            sims = fused_sims(replay, bank, adapted)
            own = sims[np.flatnonzero(pos), targets[pos]]
            best_neg = sims[neg].max(axis=1)
            out[f"separation_{key}"] = float((own[:, None] > best_neg[None, :]).mean())
            out[f"negative_sim_{key}"] = float(best_neg.mean())
    return out


MIN_HELD_OUT_GAIN = 0.01
"""Smallest rise of the held-out pairs' mean reciprocal rank an adapter must show: each one
costs every query a view (and a forward pass with a filter), so a tie is not worth it."""
OTHERS_RR_TOLERANCE = 0.005
"""Largest fall of the replayed ordinary copies' mean reciprocal rank an adapter may cause
(the issue's 0.005 µAP bound on other patterns, read on the replay copies)."""
SEPARATION_TOLERANCE = 0.005
"""Largest fall of the share of (ordinary copy, non-copy) pairs ranked right an adapter may
cause. (A first version capped the non-copies' mean similarity rise at 0.01: it refused a
10-pair halftone adapter that lifted fresh µAP 0.27 -> 0.71 and other patterns +0.005, because
a blur brings copies closer as much as non-copies.)"""


def adapt_index(pairs: str | Path, index: str | Path, *, name: str, pattern: str | None = None,
                options: AdaptOptions = AdaptOptions(), config: AdapterConfig | None = None,
                device: str = "cpu", show_progress: bool = True,
                allow_worse: bool = False) -> AdaptReport:
    """Learn adapter `name` from the (copy, original) rows of `pairs` and store it in `index`.

    Before saving, the pairs are cross-checked: adapters chosen without a fold of them must not
    rank those copies' originals worse than the plain descriptor (fused as a query fuses its
    views), and the adapter must not rank ordinary copies worse or bring non-copies closer;
    otherwise it is refused (`allow_worse` saves it anyway)."""
    check_name(name)
    t0 = time.perf_counter()
    config = config or AdapterConfig()
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
    pattern_px = _decode(sources, embedder)
    ordinary_px = _decode([copies[j] for j in keep], embedder)
    pattern_vecs = _embed(pattern_px, embedder, label="pattern copies",
                          show_progress=show_progress)
    ordinary_vecs = _embed(ordinary_px, embedder, label="replay copies",
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
    owner_arr = np.array(owner)
    first = np.array([j for j, o in enumerate(owner) if j == 0 or owner[j - 1] != o])

    # input filter chains: every single filter on the copies as given, then the best one
    # followed by each of the next best (greedy: a second filter only where it adds)
    chains: dict[str, np.ndarray] = {"": pattern_vecs[first]}
    if options.filters:
        chains |= _chain_vectors(pattern_px[first], list(LIBRARY), embedder, show_progress)
        ranked = [c for _, c in rank_chains(chains, p_targets[first], bank,
                                            plain=pattern_vecs[first]) if c]
        combos = [f"{ranked[0]}|{c}" for c in ranked[1 : 1 + options.chain_singles]]
        chains |= _chain_vectors(pattern_px[first], combos, embedder, show_progress)
    v = Vectors(data, owner_arr, first, chains)
    all_pairs = np.unique(owner_arr)
    chain = choose_chain(v, all_pairs)

    # the residual map, on top of the chosen chain: trained when asked, or when the folds gain
    chain_pattern = (_embed(pattern_px, embedder, label="filtered copies", chain=chain,
                            show_progress=show_progress) if chain else pattern_vecs)
    chain_replay = (_embed(ordinary_px, embedder, label="filtered replay", chain=chain,
                           show_progress=show_progress) if chain else ordinary_vecs)
    try_map = options.residual is not False
    log.info("adapter '%s': chain '%s' over %d chains; %d pattern views, %d replayed copies, "
             "bank %d", name, chain, len(chains), len(pattern_vecs), len(ordinary_vecs), len(bank))
    held = held_out_check(v, options, config, lambda p: choose_chain(
        v, p), (chain, chain_pattern, chain_replay)
        if try_map else None)
    use_map = options.residual is True or (
        try_map and held["map"].mean() > held["chain"].mean() + 1e-6)
    trained = (train_adapter(TrainingSet(bank, chain_pattern, p_targets, chain_replay,
                                         r_targets), config=config) if use_map else None)
    arrays = trained.arrays if trained else {}
    after = held["map"] if use_map else held["chain"]
    others = _others_check(v, _adapted(chain_replay, arrays or None))
    measured = {
        "on": f"the {len(rows)} example copies (held out: {options.folds}-fold, adapter chosen "
              f"without them; mean reciprocal rank and top-1 among {len(bank)} stored vectors, "
              f"adapted view fused with the plain one) and {int((r_targets >= 0).sum())} "
              f"replayed ordinary copies / {int((r_targets < 0).sum())} non-copies",
        "chains_tried": len(chains),
        "fold_chains": [choose_chain(v, np.setdiff1d(all_pairs, all_pairs[f :: options.folds]))
                        for f in range(min(options.folds, len(all_pairs)))],
        "held_out_rr_before": round(float(held["plain"].mean()), 4),
        "held_out_rr_after": round(float(after.mean()), 4),
        "held_out_rr_chain_only": round(float(held["chain"].mean()), 4),
        "held_out_top1_before": round(float((held["plain"] == 1).mean()), 4),
        "held_out_top1_after": round(float((after == 1).mean()), 4),
        **{k: round(x, 4) for k, x in others.items()},
        "training_seconds": round(trained.seconds, 2) if trained else 0.0,
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    problem = _refusal(chain, use_map, measured)
    measured["refused"] = problem
    if problem and not allow_worse:
        raise AdapterError(f"adapter '{name}' not saved: {problem}; give more or more varied "
                           "pairs, or allow_worse / --allow-worse")
    card = AdapterCard(
        name=name, pattern=pattern or name, model_id=descriptor.model_id,
        model_sha256=descriptor.sha256, dims=int(bank.shape[1]),
        rank=config.rank if use_map else 0,
        kind=(FILTER_MAP_KIND if chain and use_map else FILTER_KIND if chain else ADAPTER_KIND),
        pairs=len(rows), pairs_file=str(Path(pairs).resolve()),
        replay=int((r_targets >= 0).sum()), negatives=int((r_targets < 0).sum()), bank=len(bank),
        seconds=round(time.perf_counter() - t0, 2),
        bytes=trained.bytes if trained else 0, measured=measured, input_filter=chain,
        format=CARD_FORMAT)
    version = save_adapter(index, card, arrays)
    return AdaptReport(str(index), version, card)


def _chain_vectors(pixels: np.ndarray, chains: list[str], embedder: Embedder,
                   show_progress: bool) -> dict[str, np.ndarray]:
    return {c: _embed(pixels, embedder, label=f"filter {c}", chain=c, show_progress=show_progress)
            for c in chains}


def _refusal(chain: str, use_map: bool, m: dict) -> str:
    """Why the adapter must not be saved ('' when it may)."""
    if not chain and not use_map:
        return ("no input filter or map brought held-out copies closer to their originals "
                f"(mean reciprocal rank {m['held_out_rr_before']:.3f})")
    if m["held_out_rr_after"] < m["held_out_rr_before"] + MIN_HELD_OUT_GAIN:
        return (f"on example pairs left out of its choice, mean reciprocal rank went from "
                f"{m['held_out_rr_before']:.3f} to {m['held_out_rr_after']:.3f} (top-1 "
                f"{m['held_out_top1_before']:.2f} -> {m['held_out_top1_after']:.2f}; it must "
                f"gain {MIN_HELD_OUT_GAIN})")
    if m["replay_rr_after"] < m["replay_rr_before"] - OTHERS_RR_TOLERANCE:
        return (f"ordinary copies would rank their originals worse (mean reciprocal rank "
                f"{m['replay_rr_before']:.3f} -> {m['replay_rr_after']:.3f})")
    if m.get("separation_after", 1.0) < m.get("separation_before", 1.0) - SEPARATION_TOLERANCE:
        return (f"copies of images not in the catalog would overtake ordinary copies (share of "
                f"pairs ranked right {m['separation_before']:.3f} -> "
                f"{m['separation_after']:.3f})")
    return ""
