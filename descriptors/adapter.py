"""Query-side adapters: an input filter chain and/or a small residual map of a query's
descriptor, learnt from a few pairs.

A new tamper pattern (a meme frame, a glitch filter) moves a copy's descriptor away from its
original's in a consistent direction. Retraining the descriptor would mean re-embedding the
catalog; instead a residual MLP `y = normalize(x + W2 gelu(W1 x + b1) + b2)` (W2 starts at zero,
so a fresh adapter is the identity) is trained on the query side only, against the reference
vectors the index already stores (the asymmetric idea of ASL, per pattern). The adapted vector
is one more query view, so a query the adapter does not help still has its plain views.

Training (`train_adapter`) is full-batch on CPU: a softmax over a bank of stored vectors pulls
each pattern copy to its original; ordinary copies (replay) keep ranking their original first
and stay near where they were; edited images that are not in the bank must not get closer to
any reference than before (the adapter must not make false matches).

A descriptor-space map cannot undo what the backbone already destroyed (halftone dots, inverted
colours, torn bands), and on a small catalog it learns "go to the training originals" rather than
the pattern. So an adapter (format 2) may also carry an input filter chain
(`descriptors.input_filters`), chosen from a fixed library by `rank_chains` for how close it
brings the example copies to their stored originals: a handful of discrete choices cannot
memorise originals. The filtered query costs one more forward pass; the residual map, when the
held-out pairs show it helps, is trained on top of the filtered vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from copytrace.descriptors.input_filters import apply_chain

ADAPTER_KIND = "residual-mlp/1"  # format 1: the residual map only
FILTER_KIND = "input-filter/2"  # format 2: an input filter chain, no map
FILTER_MAP_KIND = "input-filter+residual-mlp/2"  # format 2: the chain, then the map


@dataclass(frozen=True)
class AdapterConfig:
    """Size and training schedule of an adapter (defaults fit a few minutes on 2 CPU cores)."""

    rank: int = 64  # hidden width of the residual MLP
    steps: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05  # of the softmax over the bank
    replay_weight: float = 1.0  # ordinary copies must keep finding their originals
    stay_weight: float = 4.0  # ... and move little (squared distance to their plain vector)
    negative_weight: float = 4.0  # non-copies must not come closer to any reference
    rank_weight: float = 1.0  # softmax over the bank for pattern copies (ranks, but memorizes)
    align_weight: float = 1.0  # pattern copies close to their original (a score, not a rank)
    linear: bool = False  # no GELU: a low-rank linear residual (generalizes from few pairs)
    input_noise: float = 0.0  # std of noise on the pattern copies' vectors while training
    seed: int = 0


@dataclass(frozen=True)
class TrainingSet:
    """Vectors for `train_adapter`; targets are rows of `bank` (-1: the query has no original
    in the bank, a negative)."""

    bank: np.ndarray  # M x D stored reference vectors (unit norm)
    pattern: np.ndarray  # N x D query vectors of copies of the new pattern
    pattern_targets: np.ndarray  # N bank rows
    replay: np.ndarray  # R x D query vectors of ordinary copies (and negatives)
    replay_targets: np.ndarray  # R bank rows, -1 for negatives


class QueryAdapter(nn.Module):
    """`x -> normalize(x + mlp(x))`; the zero-initialised output layer makes it start as identity."""

    def __init__(self, dims: int, rank: int = 64, linear: bool = False) -> None:
        super().__init__()
        self.act = nn.Identity() if linear else nn.GELU()
        self.register_buffer("linear", torch.tensor(float(linear)))
        self.down = nn.Linear(dims, rank)
        self.up = nn.Linear(rank, dims)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + self.up(self.act(self.down(x))), dim=-1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights as float32 arrays (what the index stores)."""
        return {k: v.detach().cpu().numpy().astype(np.float32)
                for k, v in self.state_dict().items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> QueryAdapter:
        rank, dims = arrays["down.weight"].shape
        module = cls(int(dims), int(rank), linear=bool(arrays["linear"]))
        module.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32))
                                for k, v in arrays.items()})
        return module.eval()


def apply_adapter(arrays: dict[str, np.ndarray], vectors: np.ndarray) -> np.ndarray:
    """Adapted unit vectors of `vectors` (N x D), in numpy: queries need no autograd or torch
    threads for one small matrix product."""
    x = np.asarray(vectors, np.float32)
    h = x @ arrays["down.weight"].T + arrays["down.bias"]
    if not float(arrays["linear"]):
        h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))  # exact GELU, as torch's default
    y = x + h @ arrays["up.weight"].T + arrays["up.bias"]
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def adapt_query(whole: np.ndarray, pixels: np.ndarray | None, *, input_filter: str,
                arrays: dict[str, np.ndarray],
                embed: Callable[[np.ndarray], np.ndarray] | None,
                embedded: np.ndarray | None = None) -> np.ndarray:
    """An adapter's vectors of N queries: `whole` are their plain whole-image vectors, `pixels`
    their N x S x S x 3 model inputs; with an input filter the filtered pixels are embedded
    again (`embed`: pixels -> unit vectors), or `embedded` already holds those vectors (an
    embedding worker made them beside the plain ones), then the residual map (if any) applies."""
    x = whole
    if input_filter and embedded is not None:
        x = embedded
    elif input_filter:
        if pixels is None or embed is None:
            raise ValueError(f"input filter '{input_filter}' needs the query's pixels")
        x = embed(apply_chain(input_filter, pixels))
    return apply_adapter(arrays, x) if arrays else np.asarray(x, np.float32)


def fused_sims(vectors: np.ndarray, bank: np.ndarray,
               adapted: np.ndarray | None = None) -> np.ndarray:
    """Cosines to the bank; with `adapted` (the same queries' adapted vectors), the better of
    the two per bank row, as a query fuses its views."""
    sims = vectors @ bank.T
    return sims if adapted is None else np.maximum(sims, adapted @ bank.T)


def margins(sims: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per query: similarity to its target minus the best to any other bank row (> 0: the target
    ranks first). A continuous score, so a few pairs still rank filter chains."""
    sims = np.array(sims, np.float32)
    rows = np.arange(len(sims))
    own = sims[rows, targets].copy()
    sims[rows, targets] = -2.0
    return own - sims.max(axis=1)


def reciprocal_ranks(sims: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1 / rank of each query's target among the bank rows."""
    own = sims[np.arange(len(sims)), targets]
    return 1.0 / (1.0 + (sims > own[:, None]).sum(axis=1))


def rank_chains(vectors: dict[str, np.ndarray], targets: np.ndarray, bank: np.ndarray, *,
                plain: np.ndarray, rows: np.ndarray | None = None) -> list[tuple[float, str]]:
    """Filter chains (keys of `vectors`: chain -> vectors of the same queries) by the mean margin
    of the queries `rows` (all by default) when the chain's view is fused with the `plain` one,
    best first; '' (no filter) is scored as the plain view alone."""
    rows = np.arange(len(targets)) if rows is None else rows
    scored = []
    for chain, v in vectors.items():
        sims = fused_sims(plain[rows], bank, v[rows] if chain else None)
        scored.append((float(margins(sims, targets[rows]).mean()), chain))
    return sorted(scored, key=lambda t: (-t[0], t[1]))


def _erf(x: np.ndarray) -> np.ndarray:
    return torch.erf(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


@dataclass(frozen=True)
class TrainedAdapter:
    arrays: dict[str, np.ndarray]
    seconds: float
    final_loss: float

    @property
    def bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def train_adapter(data: TrainingSet, *, config: AdapterConfig = AdapterConfig()) -> TrainedAdapter:
    """Fit an adapter on `data` (full batch, Adam): pattern copies to their originals, replay
    copies kept in place and still first, negatives no closer to the bank than before."""
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only spin-waits on a busy box
    try:
        return _train(data, config, t0)
    finally:
        torch.set_num_threads(threads)


def _train(data: TrainingSet, config: AdapterConfig, t0: float) -> TrainedAdapter:
    torch.manual_seed(config.seed)
    bank = torch.from_numpy(np.ascontiguousarray(data.bank, np.float32))
    pattern = torch.from_numpy(np.ascontiguousarray(data.pattern, np.float32))
    p_targets = torch.from_numpy(np.asarray(data.pattern_targets, np.int64))
    replay = torch.from_numpy(np.ascontiguousarray(data.replay, np.float32))
    r_targets = torch.from_numpy(np.asarray(data.replay_targets, np.int64))
    pos, neg = r_targets >= 0, r_targets < 0
    with torch.no_grad():  # how close each negative already is to its nearest reference
        neg_before = (replay[neg] @ bank.T).max(dim=1).values if neg.any() else None
        others = torch.ones(len(pattern), len(bank), dtype=torch.bool)
        others[torch.arange(len(pattern)), p_targets] = False  # the pattern copies' non-originals
        wrong_before = (pattern @ bank.T).masked_fill(~others, -2).max(dim=1).values
    model = QueryAdapter(bank.shape[1], config.rank, linear=config.linear)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss = torch.zeros(())
    for _ in range(config.steps):
        opt.zero_grad()
        noisy = (F.normalize(pattern + config.input_noise * torch.randn_like(pattern), dim=-1)
                 if config.input_noise else pattern)
        y = model(noisy)
        sims = y @ bank.T
        loss = config.rank_weight * F.cross_entropy(sims / config.temperature, p_targets)
        loss = loss + config.align_weight * (1 - sims.gather(1, p_targets[:, None])).mean()
        # the index's hard negatives of a pattern copy must not come closer than they were
        wrong = sims.masked_fill(~others, -2).max(dim=1).values
        loss = loss + config.negative_weight * F.relu(wrong - wrong_before).mean()
        if len(replay):
            yr = model(replay)
            if pos.any():
                loss = loss + config.replay_weight * F.cross_entropy(
                    yr[pos] @ bank.T / config.temperature, r_targets[pos])
            loss = loss + config.stay_weight * (yr - replay).pow(2).sum(dim=1).mean()
            if neg_before is not None:
                closest = (yr[neg] @ bank.T).max(dim=1).values
                loss = loss + config.negative_weight * F.relu(closest - neg_before).mean()
        loss.backward()
        opt.step()
    return TrainedAdapter(model.eval().arrays(), time.perf_counter() - t0, float(loss.detach()))
