"""copytrace as a python-threatexchange extension: the `copytrace` signal type and its index.

    pip install 'copytrace[threatexchange]'
    threatexchange config extensions add copytrace.app.threatexchange.extension
    threatexchange hash photo suspicious.jpg                    # copytrace <model key>.<base64>
    threatexchange match photo suspicious.jpg                   # against fetched banks

The hash is copytrace's global descriptor (`codec.py`); two hashes match when their cosine
similarity reaches the calibration's global-only decision point (`hasher.py`), reported as the
distance 1 - cosine. Hashes from other weights never match. PDQ needs nothing from here:
python-threatexchange's own `pdq` type reads the PDQ lines of a bank made by `copytrace tx bank`.
"""

from __future__ import annotations

import tempfile
import typing as t
from pathlib import Path

import numpy as np
from threatexchange.content_type.content_base import ContentType
from threatexchange.content_type.photo import PhotoContent
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type import signal_base
from threatexchange.signal_type.index import (
    IndexMatchUntyped,
    SignalSimilarityInfoWithSingleDistance,
    SignalTypeIndex,
)
from threatexchange.signal_type.index import T as IndexT

from copytrace.app.threatexchange.codec import SIGNAL_NAME, decode_hash
from copytrace.app.threatexchange.hasher import DescriptorHasher

_HASHER = DescriptorHasher()
CosineDistance = SignalSimilarityInfoWithSingleDistance[float]


def _distance(similarity: float) -> CosineDistance:
    return CosineDistance(round(1.0 - float(similarity), 4))


class CopytraceIndex(SignalTypeIndex[IndexT]):
    """Brute-force cosine search over the bank's vectors (a bank of a million 256-d float32
    vectors is 1 GB and one query a few ms): every entry within the match threshold."""

    def __init__(self, entries: t.Iterable[tuple[str, IndexT]] = ()) -> None:
        self.threshold = _HASHER.threshold
        self.keys: list[str] = []
        self.vectors = np.zeros((0, 0), np.float32)
        self.entries: list[IndexT] = []
        self.add_all(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, signal_str: str, entry: IndexT) -> None:
        self.add_all([(signal_str, entry)])

    def add_all(self, entries: t.Iterable[tuple[str, IndexT]]) -> None:
        rows = []
        for signal, entry in entries:
            key, vector = decode_hash(signal)
            self.keys.append(key)
            self.entries.append(entry)
            rows.append(vector)
        if rows:
            new = np.stack(rows)
            self.vectors = new if not len(self.vectors) else np.concatenate([self.vectors, new])

    def query(self, query: str) -> t.Sequence[IndexMatchUntyped[CosineDistance, IndexT]]:
        key, vector = decode_hash(query)
        if not len(self.entries) or self.vectors.shape[1] != len(vector):
            return []
        similarity = self.vectors @ vector
        hits = np.flatnonzero((similarity >= self.threshold) & (np.array(self.keys) == key))
        hits = hits[np.argsort(-similarity[hits], kind="stable")]
        return [IndexMatchUntyped(_distance(similarity[i]), self.entries[i]) for i in hits]


class CopytraceSignal(signal_base.SimpleSignalType, signal_base.BytesHasher):
    """copytrace's learned copy-detection descriptor: robust to crops, overlays, recompression
    and colour edits that move PDQ past its threshold. Distance: 1 - cosine similarity."""

    @classmethod
    def get_name(cls) -> str:
        return SIGNAL_NAME

    @classmethod
    def get_content_types(cls) -> list[type[ContentType]]:
        return [PhotoContent]

    @classmethod
    def get_index_cls(cls) -> type[CopytraceIndex]:
        return CopytraceIndex

    @classmethod
    def validate_signal_str(cls, signal_str: str) -> str:
        decode_hash(signal_str)
        return signal_str.strip()

    @classmethod
    def compare_hash(cls, hash1: str, hash2: str) -> signal_base.SignalComparisonResult:
        (k1, v1), (k2, v2) = decode_hash(hash1), decode_hash(hash2)
        similarity = float(v1 @ v2) if k1 == k2 and len(v1) == len(v2) else -1.0
        return signal_base.SignalComparisonResult(similarity >= _HASHER.threshold, _distance(similarity))

    @classmethod
    def hash_from_file(cls, file: Path) -> str:
        return _HASHER.hash_file(file)

    @classmethod
    def hash_from_bytes(cls, bytes_: bytes) -> str:
        with tempfile.NamedTemporaryFile(suffix=".img") as f:
            f.write(bytes_)
            f.flush()
            return _HASHER.hash_file(f.name)

    @staticmethod
    def get_examples() -> list[str]:
        return []


TX_MANIFEST = ThreatExchangeExtensionManifest(signal_types=(CopytraceSignal,))
