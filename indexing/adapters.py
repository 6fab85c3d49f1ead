"""Query adapters stored in an index folder: the one owner of their file format.

An adapter is `adapters/NAME.vN.npz` (its weights, float32 arrays) and `adapters/NAME.vN.json`
(its card: pattern, pairs, model, what it was measured on, size, training time), named in the
manifest's `adapters` map. Saving or removing one is an index change like `index add`: under the
writer lock, files of the new version written first, then the manifest swapped, so a reader
sees the old set or the new one. The card names the model the adapter was trained for; a
query refuses an adapter whose model is not the index's (its vectors would mean nothing).

Card format 1 (no `format` field) is a residual map only; format 2 adds `input_filter`, a chain
of pixel filters run before the model (`descriptors.input_filters`), and its weights may be
empty (a filter without a map). A reader refuses a format newer than it knows.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from copytrace.descriptors.input_filters import parse_chain
from copytrace.indexing.lock import index_lock, remove_temp_files
from copytrace.indexing.manifest import IndexLayout, Manifest, utc_now
from copytrace.util.atomic import write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapters"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ALL, NONE = "all", "none"  # `query --adapter` choices besides a name
CARD_FORMAT = 2  # what this reader understands (1: residual map only; 2: + input filter)


class AdapterError(ValueError):
    """An adapter cannot be saved, found or used as asked."""


@dataclass(frozen=True)
class AdapterCard:
    """What an adapter is for and how it was made (stored beside its weights)."""

    name: str
    pattern: str  # what the pairs show, in the user's words (default: the name)
    model_id: str  # the descriptor it was trained for (name@sha12)
    model_sha256: str
    dims: int
    rank: int
    kind: str
    pairs: int  # example pairs used
    pairs_file: str
    replay: int  # ordinary copies replayed so other patterns keep working
    negatives: int
    bank: int  # stored reference vectors the softmax ran over
    seconds: float  # training time
    bytes: int  # size of the weights
    measured: dict = field(default_factory=dict)  # recall on the training pairs, before / after
    created: str = ""
    index_version: int = 0  # the version that added it
    input_filter: str = ""  # pixel filter chain before the model ('' = none; format 2)
    format: int = 1  # card format (cards without the field are format 1)


def check_name(name: str) -> str:
    if name in (ALL, NONE) or not NAME_PATTERN.match(name):
        raise AdapterError(f"bad adapter name '{name}': use letters, digits, '.', '_' or '-' "
                           f"(not '{ALL}' or '{NONE}')")
    return name


def save_adapter(index: str | Path, card: AdapterCard, arrays: dict[str, np.ndarray]) -> int:
    """Store an adapter (replacing one of the same name) as a new index version; returns it."""
    check_name(card.name)
    layout = IndexLayout(Path(index))
    with index_lock(layout.root, purpose="adapt"):
        remove_temp_files(layout.root)
        old = Manifest.read(layout.manifest)
        if card.model_sha256 != old.model.sha256:
            raise AdapterError(f"adapter '{card.name}' was trained for model {card.model_id}, but "
                               f"index '{index}' uses {old.model.id}")
        version = old.version + 1
        rel = f"{ADAPTER_DIR}/{card.name}.v{version}.npz"
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_bytes_atomic(layout.root / rel, buf.getvalue())
        write_json_atomic(layout.root / _card_file(rel),
                          asdict(replace(card, created=utc_now(), index_version=version)))
        _publish(layout, old, replace(old, adapters={**old.adapters, card.name: rel},
                                      version=version, updated=utc_now()))
        return version


def remove_adapter(index: str | Path, name: str) -> int:
    """Drop adapter `name` from the index (a new version); returns the version."""
    layout = IndexLayout(Path(index))
    with index_lock(layout.root, purpose="adapter-remove"):
        old = Manifest.read(layout.manifest)
        if name not in old.adapters:
            raise AdapterError(f"index '{index}' has no adapter '{name}' "
                               f"(it has: {', '.join(sorted(old.adapters)) or 'none'})")
        version = old.version + 1
        _publish(layout, old, replace(old, adapters={k: v for k, v in old.adapters.items()
                                                     if k != name},
                                      version=version, updated=utc_now()))
        return version


def _publish(layout: IndexLayout, old: Manifest, new: Manifest) -> None:
    """Swap the manifest, then delete adapter files neither version names."""
    new.write(layout.manifest)
    keep = {p for m in (old, new) for rel in m.adapters.values() for p in (rel, _card_file(rel))}
    for p in (layout.root / ADAPTER_DIR).glob("*"):
        if str(p.relative_to(layout.root)) not in keep:
            p.unlink(missing_ok=True)


def _card_file(rel: str) -> str:
    return str(Path(rel).with_suffix(".json"))


def adapter_cards(index: str | Path, manifest: Manifest | None = None) -> list[AdapterCard]:
    """The cards of the adapters the index's current version names, by name."""
    layout = IndexLayout(Path(index))
    manifest = manifest or Manifest.read(layout.manifest)
    return [_read_card(layout, rel) for _, rel in sorted(manifest.adapters.items())]


def _read_card(layout: IndexLayout, rel: str) -> AdapterCard:
    d = json.loads((layout.root / _card_file(rel)).read_text())
    return AdapterCard(**{k: v for k, v in d.items() if k in AdapterCard.__dataclass_fields__})


@dataclass(frozen=True)
class LoadedAdapter:
    card: AdapterCard
    arrays: dict[str, np.ndarray]


def load_adapters(index: str | Path, which: str = ALL, *,
                  manifest: Manifest | None = None) -> list[LoadedAdapter]:
    """The adapters a query uses: `all` (each of the index's), `none`, or one or more names
    (comma-separated). An adapter trained for another model than the index's is refused: named,
    with an `AdapterError`; under `all`, skipped with a warning (the index stays usable)."""
    layout = IndexLayout(Path(index))
    manifest = manifest or Manifest.read(layout.manifest)
    if which == NONE:
        return []
    names = sorted(manifest.adapters) if which == ALL else [n.strip() for n in which.split(",")
                                                            if n.strip()]
    out = []
    for name in names:
        if name not in manifest.adapters:
            raise AdapterError(f"index '{index}' has no adapter '{name}' "
                               f"(it has: {', '.join(sorted(manifest.adapters)) or 'none'})")
        rel = manifest.adapters[name]
        card = _read_card(layout, rel)
        message = _unusable(card, manifest)
        if message:
            message = f"adapter '{name}' {message}"
            if which != ALL:
                raise AdapterError(message)
            log.warning("%s (skipped)", message)
            continue
        with np.load(layout.root / rel) as z:
            out.append(LoadedAdapter(card, {k: z[k] for k in z.files}))
    return out


def _unusable(card: AdapterCard, manifest: Manifest) -> str:
    """Why a query cannot use this adapter ('' when it can)."""
    if card.model_sha256 != manifest.model.sha256:
        return (f"was trained for model {card.model_id}, but the index uses {manifest.model.id}: "
                "train it again with 'copytrace adapt'")
    if card.format > CARD_FORMAT:
        return f"has card format {card.format}; this copytrace reads up to {CARD_FORMAT}: upgrade"
    try:
        parse_chain(card.input_filter)
    except ValueError as exc:
        return f"cannot be used: {exc} (made by a newer copytrace?)"
    return ""
