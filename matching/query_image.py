"""One query image, decoded once: everything search, verification and localization need from it.

The file (or upload) is read once and decoded at full resolution; the descriptor's square input
is decoded from the same bytes the way the index decodes (cheap with JPEG DCT scaling), and the
crops searched as extra views and, when verification asks for them, the keypoints are derived
from the full pixels and kept on the object, so no later stage opens or decodes the
query again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from copytrace.descriptors.decode import DecodeError, decode_bytes, read_bytes, to_model_square
from copytrace.matching.expand import ExpandConfig, crop_views, query_views
from copytrace.matching.rank import QueryViews
from copytrace.matching.verify import Prepared, VerifyConfig, prepare

VIEW_MAX_SIDE = 1024
"""Queries are downscaled to this before cropping views (the descriptor sees 224 px anyway)."""

QuerySource = str | Path | bytes | np.ndarray
"""What a query can be: a file path, the encoded bytes (an upload), or RGB pixels."""


@dataclass
class QueryImage:
    """A decoded query: full pixels, the model's input, its crops and (lazily) its keypoints."""

    query_id: str
    uri: str  # the file it came from ("" for bytes or arrays)
    pixels: np.ndarray  # H x W x 3 uint8, full resolution, EXIF orientation applied
    model_pixels: np.ndarray  # S x S x 3 uint8, the descriptor's input for the whole image
    crops: list[np.ndarray]  # extra views (any size; resized to the model square when embedded)
    views: QueryViews  # names and boxes (full-resolution pixels) of [whole, *crops]
    prepared: Prepared | None = field(default=None, repr=False)

    def keypoints(self, config: VerifyConfig | None = None) -> Prepared:
        """Keypoints (and mirrored keypoints) for verification, detected on first use only."""
        if self.prepared is None:
            config = config or VerifyConfig()
            self.prepared = prepare(self.pixels, config=config, with_mirror=config.try_mirror)
        return self.prepared


def decode_query(source: QuerySource, *, model_size: int, expand: ExpandConfig | None = None,
                 query_id: str | None = None) -> QueryImage:
    """Read and decode `source` once; raises `DecodeError` with a one-line reason."""
    uri = ""
    if isinstance(source, np.ndarray):
        pixels = _rgb_array(source)
        whole = np.asarray(to_model_square(Image.fromarray(pixels), model_size))
    else:
        if not isinstance(source, bytes):
            uri = str(source)
            source = read_bytes(source)
        pixels = decode_bytes(source).pixels
        # The model input is decoded from the same bytes exactly as the index decodes its images
        # (JPEG DCT scaling, a few % of the full decode): resizing the full pixels instead moves
        # an identical image's vector measurably (cosine 0.985 instead of 1.0).
        whole = decode_bytes(source, target_size=model_size).pixels
    qid = query_id or (Path(uri).stem if uri else "query")
    h, w = pixels.shape[:2]
    if expand is None:
        return QueryImage(qid, uri, pixels, whole, [], QueryViews(["full"], [(0, 0, w, h)]))
    scale = min(1.0, VIEW_MAX_SIDE / max(h, w))
    small = pixels
    if scale < 1:
        small = np.asarray(Image.fromarray(pixels).resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
    found = query_views(small, config=expand)[1:]  # [0] is the whole image: `whole` covers it
    boxes = [(0, 0, w, h)] + [tuple(round(c / scale) for c in v.box) for v in found]
    return QueryImage(qid, uri, pixels, whole, crop_views(small, found),
                      QueryViews(["full"] + [v.name for v in found], boxes))


def _rgb_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape[:2]:
        raise DecodeError(f"expected an H x W x 3 RGB array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise DecodeError(f"expected uint8 pixels, got {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3])
