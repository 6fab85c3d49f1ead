"""Batched inference: decoded pixels in, L2-normalised float32 descriptors out.

Decoding runs ahead of the model while it works on the previous batch: on threads on small
machines (PIL and torch both release the GIL, so one process keeps two cores busy), in a process
pool sized from the granted cores on bigger ones (one process's Python side cannot feed 16
cores), or batched on the GPU (nvJPEG) when the model runs there.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from copytrace.descriptors.batch_decode import DeviceBatch, decode_to_device
from copytrace.descriptors.decode import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    decode_bytes,
    read_bytes,
    to_model_square,
)
from copytrace.descriptors.input_filters import apply_chain
from copytrace.descriptors.model import LoadedDescriptor
from copytrace.descriptors.pdq import hash_bytes
from copytrace.util.worker_guard import exit_with_parent

log = logging.getLogger(__name__)

_PREFETCH_BATCHES = 2
_NO_PIXELS = np.empty((0, 0, 3), np.uint8)


def pick_device(device: str = "auto") -> torch.device:
    """'auto' takes a GPU when torch sees one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Embedder:
    """Holds a descriptor on its device, set up for fast eval (channels_last, no autograd)."""

    def __init__(self, descriptor: LoadedDescriptor, *, device: str = "auto",
                 threads: int | None = None) -> None:
        self.descriptor = descriptor
        self.device = pick_device(device)
        if threads:
            torch.set_num_threads(threads)
        self.model = descriptor.model.eval().to(self.device).to(memory_format=torch.channels_last)
        self.image_size = descriptor.config.image_size
        self.dims = descriptor.model.output_dims

    @torch.inference_mode()
    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 (already at `image_size`) -> N x D float32, unit norm."""
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"expected N x H x W x 3 uint8 pixels, got {pixels.shape}")
        pixels = np.ascontiguousarray(pixels)
        if not pixels.flags.writeable:  # PIL-backed arrays are read-only; torch wants to own
            pixels = pixels.copy()
        x = torch.from_numpy(pixels).to(self.device)
        return self.embed_tensor(x.permute(0, 3, 1, 2))

    @torch.inference_mode()
    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """N x 3 x S x S pixel values 0-255 (any dtype, already on any device) -> N x D."""
        x = x.to(self.device).float().div_(255.0)
        x = x.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                out = self.model(x)
        else:
            out = torch.cat([self.model(part)[:n] for part, n in _fixed_batches(x)])
        return out.float().cpu().numpy()


CPU_FORWARD_BATCH = 4
"""Every CPU forward holds exactly this many images (the last one padded). torch's CPU kernels,
and so a descriptor's low bits, depend on the batch size (on 2 cores batches of 1, 2-3 and 4+
differ by up to 5e-7; not on position or batch-mates), so a query's scores depended on how many
queries shared its batch (issue 26). Four costs about what one batch of 32 does: 0.28 vs 0.30 s
for 32 images at 224 px on 2 threads (one at a time: 0.41 s)."""


def _fixed_batches(x: torch.Tensor) -> Iterator[tuple[torch.Tensor, int]]:
    """(batch of exactly CPU_FORWARD_BATCH images, how many of them are real) over `x`."""
    for start in range(0, len(x), CPU_FORWARD_BATCH):
        part = x[start : start + CPU_FORWARD_BATCH]
        n = len(part)
        if n < CPU_FORWARD_BATCH:
            pad = part[-1:].repeat(CPU_FORWARD_BATCH - n, 1, 1, 1)
            part = torch.cat([part, pad]).contiguous(memory_format=torch.channels_last)
        yield part, n


@dataclass(frozen=True)
class EmbeddedFile:
    """One input's outcome: a vector and facts about the file, or the reason it failed."""

    index: int  # position in the input sequence
    image: DecodedImage | None
    vector: np.ndarray | None
    error: str | None
    filtered: tuple[np.ndarray, ...] = ()  # one vector per requested input filter chain


def _decode(path: str | Path, size: int, max_pixels: int,
            pdq: bool = False) -> DecodedImage | str:
    """The model's input square; with `pdq`, also the file's PDQ hash, from a decode of its own
    (the hash's pixels must not depend on the model's input size)."""
    try:
        data = read_bytes(path)
        image = decode_bytes(data, target_size=size, max_pixels=max_pixels)
        if pdq:
            code, quality = hash_bytes(data, max_pixels=max_pixels)
            image = replace(image, pdq=code, pdq_quality=quality)
        return image
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a batch must survive any single bad input
        return f"unexpected decode failure: {type(exc).__name__}: {exc}"


def granted_cores() -> int:
    """Cores this process may run on (its CPU affinity: what a container or scheduler grants)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_decode_processes(cores: int | None = None) -> int:
    """Decode processes for a node: all cores but two (the model's) from 4 cores up; below
    that, threads in the model's process do as well (0 = threads)."""
    cores = cores or granted_cores()
    return cores - 2 if cores >= 4 else 0


def _decode_device(decode_device: str | None, embedder: Embedder) -> str | None:
    """'auto': batch-decode JPEGs on the GPU when the model runs on one."""
    if decode_device in (None, "off"):
        return None
    if decode_device == "auto":
        if embedder.device.type != "cuda":
            return None
        decode_device = str(embedder.device)
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        log.warning("torchvision is not importable: decoding on the CPU")
        return None
    return decode_device


def embed_files(
    paths: Sequence[str | Path],
    embedder: Embedder,
    *,
    batch_size: int = 32,
    decode_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_processes: int | None = None,
    decode_device: str | None = "auto",
    pdq: bool = False,
    input_filters: Sequence[str] = (),
) -> Iterator[list[EmbeddedFile]]:
    """Embed files in order, one list per batch; failed files come back with their error.

    Decoding runs ahead of the model by two batches: per file in `decode_processes` processes
    (default: sized from the granted cores) or threads, or per batch on `decode_device` ('auto':
    the model's GPU, JPEGs only, others on the CPU). With `pdq` each file's PDQ hash comes back
    in its image record; the hash needs CPU pixels, so files are then decoded on the CPU.
    Each `input_filters` chain (a query adapter's) also embeds the filtered model input, so a
    worker returns those vectors and the pixels never travel."""
    size = embedder.image_size
    device = None if pdq else _decode_device(decode_device, embedder)
    processes = auto_decode_processes() if decode_processes is None else decode_processes
    if device is not None:
        pool: Executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
    elif processes > 1:
        pool = ProcessPoolExecutor(max_workers=processes, mp_context=get_context("forkserver"),
                                   initializer=exit_with_parent)
    else:
        workers = decode_workers or max(1, min(4, os.cpu_count() or 1))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    starts = deque(range(0, len(paths), batch_size))
    with pool:
        pending: deque[tuple[int, list[Future]]] = deque()

        def submit_next() -> None:
            if starts:
                s = starts.popleft()
                chunk = list(paths[s : s + batch_size])
                if device is not None:
                    pending.append((s, [pool.submit(decode_to_device, chunk, size=size,
                                                    device=device, max_pixels=max_pixels)]))
                else:
                    pending.append((s, [pool.submit(_decode, p, size, max_pixels, pdq)
                                        for p in chunk]))

        for _ in range(_PREFETCH_BATCHES):
            submit_next()
        while pending:
            start, futures = pending.popleft()
            submit_next()
            if device is not None:
                yield _embed_device_batch(start, futures[0].result(), embedder, input_filters)
            else:
                yield _embed_batch(start, [f.result() for f in futures], embedder, input_filters)


def _embed_batch(start: int, decoded: list, embedder: Embedder,
                 input_filters: Sequence[str] = ()) -> list[EmbeddedFile]:
    good = [d.pixels for d in decoded if isinstance(d, DecodedImage)]
    if not good:
        return _records(start, decoded, None, [])
    pixels = np.stack(good)
    return _records(start, decoded, embedder.embed_pixels(pixels),
                    [embedder.embed_pixels(apply_chain(c, pixels)) for c in input_filters])


def _embed_device_batch(start: int, batch: DeviceBatch, embedder: Embedder,
                        input_filters: Sequence[str] = ()) -> list[EmbeddedFile]:
    if not len(batch.pixels):
        return _records(start, batch.images, None, [])
    filtered = []
    if input_filters:  # the filters are numpy/OpenCV: the model inputs as S x S x 3 uint8
        pixels = batch.pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        filtered = [embedder.embed_pixels(apply_chain(c, pixels.numpy())) for c in input_filters]
    return _records(start, batch.images, embedder.embed_tensor(batch.pixels), filtered)


def _records(start: int, decoded: list, vectors: np.ndarray | None,
             filtered: list[np.ndarray]) -> list[EmbeddedFile]:
    """One record per input, in order: the k-th decoded image gets the k-th vector (and the
    k-th row of each filtered matrix; its pixels dropped: the catalog keeps only the file's
    facts)."""
    out: list[EmbeddedFile] = []
    k = 0
    for i, d in enumerate(decoded):
        if isinstance(d, DecodedImage):
            image = replace(d, pixels=_NO_PIXELS)
            out.append(EmbeddedFile(start + i, image, vectors[k], None,
                                    tuple(f[k] for f in filtered)))
            k += 1
        else:
            out.append(EmbeddedFile(start + i, None, None, d))
    return out


def embed_images(images: Iterable[np.ndarray], embedder: Embedder,
                 batch_size: int = 32) -> np.ndarray:
    """Embed in-memory RGB arrays of any size (resized to the model's square input)."""
    from PIL import Image

    size = embedder.image_size
    batch: list[np.ndarray] = []
    out: list[np.ndarray] = []
    for arr in images:
        img = Image.fromarray(np.asarray(arr, dtype=np.uint8)).convert("RGB")
        batch.append(np.asarray(to_model_square(img, size)))
        if len(batch) == batch_size:
            out.append(embedder.embed_pixels(np.stack(batch)))
            batch = []
    if batch:
        out.append(embedder.embed_pixels(np.stack(batch)))
    return np.concatenate(out) if out else np.zeros((0, embedder.dims), np.float32)
