"""Hash an image with copytrace's descriptor, and the cosine similarity that counts as a match.

The hash of a file is the vector `copytrace index build` stores for it (same decode, same
model), so a bank exported from an index (`bank.py`) and a hash made here compare exactly. The
match threshold is the calibration's global-only decision point: the similarity at which
`copytrace query --verify off` scores 0.5. A bank has no background sample, so the threshold is
applied to the raw cosine similarity, which is a little higher than the background-normalized one
the calibration was fitted on: this matcher is a little more permissive than the query engine
with verification off, and it never runs the keypoint check (that is `copytrace serve`'s job).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from copytrace.app.threatexchange.codec import encode_vector, model_key

if TYPE_CHECKING:  # torch loads only when something is hashed: `threatexchange config` stays fast
    from copytrace.descriptors import Embedder
    from copytrace.matching import Calibration

MODEL_ENV = "COPYTRACE_TX_MODEL"
"""Which descriptor the signal type hashes with: a shipped model's name or a model file (default:
the shipped default, the one `copytrace index build` uses)."""


def match_threshold(calibration: Calibration) -> float:
    """The cosine similarity at which the global-only calibrated score is 0.5."""
    return -calibration.global_bias / calibration.global_weight


@dataclass
class DescriptorHasher:
    """Loads the descriptor on first use; one per process is enough."""

    model: str | None = None
    device: str = "cpu"
    _embedder: Embedder | None = field(default=None, repr=False)

    @property
    def embedder(self) -> Embedder:
        from copytrace.descriptors import Embedder, load_descriptor

        if self._embedder is None:
            self._embedder = Embedder(load_descriptor(self.model or os.environ.get(MODEL_ENV)),
                                      device=self.device)
        return self._embedder

    @property
    def key(self) -> str:
        return model_key(self.embedder.descriptor.sha256)

    @property
    def threshold(self) -> float:
        from copytrace.matching import load_calibration

        return match_threshold(load_calibration(None, self.embedder.descriptor.card))

    def hash_file(self, path: str | Path) -> str:
        """The signal string of one image file; DecodeError if it cannot be read."""
        from copytrace.descriptors import DecodeError, embed_files

        [record] = next(embed_files([str(path)], self.embedder, batch_size=1, decode_processes=1,
                                    decode_device=None))
        if record.vector is None:
            raise DecodeError(f"cannot hash '{path}': {record.error}")
        return encode_vector(record.vector, self.key)
