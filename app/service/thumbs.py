"""Catalog images for the web page, by image id only: decoded from the catalog's own URI,
resized server-side and kept in a bounded cache.

The id is looked up in the catalog and nothing else: no part of the request ever becomes a
filesystem path, so an unknown id (or a traversal attempt, which is just an unknown id) is a
`KeyError` the service answers with 404.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from copytrace.descriptors import decode_file

SIDES = (160, 320, 640)
"""The thumbnail sizes served (longest side, px); a request's size snaps to the next one up, so
the cache holds at most three entries per image."""


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    width: int  # of the catalog image, as displayed (the page scales match boxes by these)
    height: int


def snap_side(side: int) -> int:
    return next((s for s in SIDES if side <= s), SIDES[-1])


class ThumbnailCache:
    """Thread-safe LRU of JPEG thumbnails, bounded by total bytes."""

    def __init__(self, uris: Callable[[str], str | None], *, max_bytes: int = 32 * 2**20,
                 quality: int = 85) -> None:
        self._uris = uris  # image id -> the catalog's URI, None when the id is not in it
        self.max_bytes = max_bytes
        self.quality = quality
        self._items: OrderedDict[tuple[str, int], Thumbnail] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._size

    def get(self, image_id: str, side: int = 320) -> Thumbnail:
        """The thumbnail of a catalog image; `KeyError` for an id not in the catalog,
        `DecodeError` for one whose file cannot be read now."""
        key = (image_id, snap_side(side))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        uri = self._uris(image_id)
        if uri is None:
            raise KeyError(image_id)
        thumb = _render(uri, key[1], self.quality)
        with self._lock:
            if key not in self._items and len(thumb.jpeg) <= self.max_bytes:
                self._items[key] = thumb
                self._size += len(thumb.jpeg)
                while self._size > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._size -= len(old.jpeg)
        return thumb


def _render(uri: str, side: int, quality: int) -> Thumbnail:
    decoded = decode_file(uri)
    img = Image.fromarray(decoded.pixels)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Thumbnail(buf.getvalue(), decoded.width, decoded.height)

