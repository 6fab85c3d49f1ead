"""Per-image dedup features: the PDQ hash of every audited image, and template thumbnails made
only where the audit looks at them.

The PDQ hash is the catalog's own when the index was built with `--pdq` (the audit then decodes
no file for it); otherwise it is computed once, with the thumbnail, from the pixels
`descriptors.pdq` defines the hash on. Thumbnails are needed only for the template model's sample
(`matching.templates.template_sample`: at most `TemplateConfig.sample` images) and for the images
of candidate pairs, so on a `--pdq` index an audit decodes those alone, not the whole catalog.

Stored as `dedup-features.parquet` beside the catalog (falls back to the audit folder when the
index is read-only), so a second audit or an incremental `--against` run re-reads them. A stored
row is reused only while the catalog records the same file bytes (sha256) for its image id: an id
whose file was replaced (removed and added again) is hashed anew, never judged by the old file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from copytrace.descriptors.decode import DecodeError, read_bytes
from copytrace.descriptors.pdq import PDQ_BYTES, hash_pixels_of, pdq_hash
from copytrace.indexing.catalog import Hashed
from copytrace.matching.templates import (
    THUMB,
    TemplateConfig,
    TemplateModel,
    learn_templates,
    template_sample,
    thumbnail,
)
from copytrace.util.atomic import write_parquet_atomic
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)

FEATURES_FILE = "dedup-features.parquet"
FEATURES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("pdq", pa.binary(PDQ_BYTES)),  # null when the image could not be decoded
    ("pdq_quality", pa.int32()),
    ("thumb", pa.binary(THUMB * THUMB)),  # THUMB x THUMB grey; null until the audit needs it
    ("sha256", pa.string()),  # of the file the row was computed from (null: unknown, recompute)
])
FLAT = np.full((THUMB, THUMB), 128, np.uint8)
"""The thumbnail of an image whose file can no longer be read: no texture, so no evidence."""


def _decoded(uri: str) -> np.ndarray | None:
    try:
        return hash_pixels_of(read_bytes(uri))
    except (DecodeError, OSError) as exc:
        log.warning("dedup features: cannot decode '%s': %s (skipped)", uri, exc)
        return None


def _one(uri: str) -> tuple[bytes, int, bytes] | None:
    """(PDQ, quality, thumbnail) of a file, from one decode."""
    pixels = _decoded(uri)
    if pixels is None:
        return None
    code, quality = pdq_hash(pixels)
    return code, quality, thumbnail(pixels).tobytes()


def _thumb(uri: str) -> bytes | None:
    pixels = _decoded(uri)
    return None if pixels is None else thumbnail(pixels).tobytes()


class ImageFeatures:
    """PDQ hashes of the audited images (`ids`, a row each) and their template thumbnails, made
    on first use when `uris` says where the files are, and written back to `store_at`."""

    def __init__(self, ids: list[str], pdq: np.ndarray, quality: np.ndarray,
                 thumbs: dict[str, bytes], *, uris: Mapping[str, str] | None = None,
                 sha256: Mapping[str, str] | None = None, store_at: Sequence[Path] = (),
                 show_progress: bool = False) -> None:
        self.ids, self.pdq, self.quality = ids, pdq, quality
        self._thumbs, self._uris, self._sha = dict(thumbs), dict(uris or {}), dict(sha256 or {})
        self._store_at, self._progress = list(store_at), show_progress
        self._models: dict[TemplateConfig, TemplateModel] = {}

    def rows(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.ids)}

    def thumbs(self, ids: Sequence[str]) -> np.ndarray:
        """len(ids) x THUMB x THUMB; missing ones are decoded now and stored."""
        missing = sorted({i for i in ids if i not in self._thumbs})
        if missing:
            with ThreadPoolExecutor(max_workers=2) as pool, \
                    progress_bar("thumbnails", total=len(missing),
                                 enabled=self._progress and len(missing) > 100) as advance:
                for image_id, got in zip(missing, pool.map(_thumb, [self._uris[i] for i in missing]),
                                         strict=True):
                    self._thumbs[image_id] = got if got is not None else FLAT.tobytes()
                    advance(1)
            self.save()
        if not ids:
            return np.zeros((0, THUMB, THUMB), np.uint8)
        return np.frombuffer(b"".join(self._thumbs[i] for i in ids), np.uint8).reshape(
            len(ids), THUMB, THUMB)

    def template_model(self, config: TemplateConfig) -> TemplateModel:
        """The recurrence model of the audited images, learned once per config from the
        thumbnails of `template_sample` of them."""
        if config not in self._models:
            picked = [self.ids[i] for i in template_sample(len(self.ids), config=config)]
            self._models[config] = learn_templates(self.thumbs(picked), config=config)
        return self._models[config]

    def template_cells(self, ids: Sequence[str], config: TemplateConfig) -> dict[str, np.ndarray]:
        """Template cells (GRID x GRID bool) of each of `ids` that was audited."""
        ids = [i for i in ids if i in self._thumbs or i in self._uris]
        if not ids:
            return {}
        cells = self.template_model(config).template_cells(self.thumbs(ids))
        return dict(zip(ids, cells, strict=True))

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(
            [{"image_id": i, "pdq": bytes(self.pdq[n]), "pdq_quality": int(self.quality[n]),
              "thumb": self._thumbs.get(i), "sha256": self._sha.get(i)}
             for n, i in enumerate(self.ids)], schema=FEATURES_SCHEMA)

    def save(self) -> None:
        for path in self._store_at:
            try:
                write_parquet_atomic(path, self.table())
                return
            except OSError as exc:
                log.info("cannot store dedup features in '%s' (%s)", path.parent, exc)


def compute_features(sources: list[tuple[str, str]], *, show_progress: bool = False,
                     threads: int = 2, sha256: Mapping[str, str] | None = None) -> pa.Table:
    """FEATURES_SCHEMA rows (PDQ and thumbnail) for (image_id, uri) pairs, decoded on threads.
    `sha256`: the catalog's file digests by image id, recorded with the rows."""
    sha256 = sha256 or {}
    rows = []
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            progress_bar("hashing", total=len(sources), enabled=show_progress) as advance:
        for (image_id, _), got in zip(sources, pool.map(_one, [u for _, u in sources]),
                                      strict=True):
            code, quality, thumb = got if got is not None else (None, None, None)
            rows.append({"image_id": image_id, "pdq": code, "pdq_quality": quality,
                         "thumb": thumb, "sha256": sha256.get(image_id)})
            advance(1)
    return pa.Table.from_pylist(rows, schema=FEATURES_SCHEMA)


def as_features(table: pa.Table) -> ImageFeatures:
    """Features of computed rows (every thumbnail present); undecodable rows left out."""
    ok = table.filter(table.column("pdq").is_valid()).to_pylist()
    return ImageFeatures([r["image_id"] for r in ok], _matrix([r["pdq"] for r in ok]),
                         np.asarray([r["pdq_quality"] for r in ok], np.int32),
                         {r["image_id"]: r["thumb"] for r in ok if r["thumb"] is not None})


def _matrix(codes: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), PDQ_BYTES)


def catalog_digests(catalog: pa.Table) -> dict[str, str]:
    """sha256 of each catalog row's file, by image id (what `catalog_features` keys rows on)."""
    return dict(zip(catalog.column("image_id").to_pylist(), catalog.column("sha256").to_pylist(),
                    strict=True))


def _stored(paths: list[Path], sha256: Mapping[str, str]) -> dict[str, dict]:
    """Rows of the first stored features file that still describe the catalog's file (a file
    written before rows carried their sha256 matches nothing and is recomputed once)."""
    for path in paths:
        if path.exists():
            table = pq.read_table(path)
            if "sha256" not in table.column_names:
                return {}
            return {r["image_id"]: r for r in table.to_pylist()
                    if r["sha256"] is not None and r["sha256"] == sha256.get(r["image_id"])}
    return {}


def catalog_features(index: str | Path, sources: list[tuple[str, str]], *,
                     sha256: Mapping[str, str], fallback_dir: str | Path,
                     pdq: Mapping[str, Hashed] | None = None,
                     show_progress: bool = False) -> ImageFeatures:
    """Features of every (image_id, uri) of an index: PDQ from the catalog (`pdq`, see
    `indexing.catalog.catalog_pdq`) or the stored file, else computed now with the thumbnail; other thumbnails
    on demand. `sha256`: the catalog's file digest by image id."""
    store_at = [Path(index) / FEATURES_FILE, Path(fallback_dir) / FEATURES_FILE]
    stored, pdq = _stored(store_at, sha256), pdq or {}
    known = {i: (r["pdq"], r["pdq_quality"]) for i, r in stored.items() if r["pdq"] is not None}
    known.update(pdq)
    thumbs = {i: r["thumb"] for i, r in stored.items() if r["thumb"] is not None}
    todo = [(i, u) for i, u in sources if i not in known]
    fresh = compute_features(todo, show_progress=show_progress) if todo else None
    if fresh is not None:
        for r in fresh.filter(fresh.column("pdq").is_valid()).to_pylist():
            known[r["image_id"]] = (r["pdq"], r["pdq_quality"])
            thumbs[r["image_id"]] = r["thumb"]
    ids = [i for i, _ in sources if i in known]
    features = ImageFeatures(ids, _matrix([known[i][0] for i in ids]),
                             np.asarray([known[i][1] for i in ids], np.int32), thumbs,
                             uris=dict(sources), sha256=sha256, store_at=store_at,
                             show_progress=show_progress)
    if todo or len(stored) != len(ids):
        features.save()  # the file now matches the catalog
    return features
