"""The index folder: where each file lives, and manifest.json, which says what the folder holds
and which model produced it (a query with another model would compare unrelated vectors)."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from copytrace.util.atomic import write_json_atomic

INDEX_FORMAT = "copytrace-index/1"


@dataclass(frozen=True)
class IndexLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def faiss_dir(self) -> Path:
        return self.root / "faiss"

    @property
    def id_map(self) -> Path:
        return self.root / "ids.parquet"

    @property
    def build_state(self) -> Path:
        return self.root / "build-state.json"

    def part_name(self, chunk: int) -> str:
        return f"part-{chunk:06d}.parquet"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    name: str
    sha256: str
    dims: int
    image_size: int


@dataclass(frozen=True)
class FaissInfo:
    spec: str
    nprobe: int | None
    shards: list[str]
    shard_size: int
    reason: str
    k_factor: int | None = None  # re-ranking depth of Refine specs
    tuning: dict | None = None  # what the search parameters were tuned on and reached
    storage: str = "memory"  # indexing.index_spec.Storage: "ondisk" memory-maps the inverted lists
    lists: str | None = None  # on disk: the merged lists file of shards[0] (`indexing.ondisk`);
    # None: each shard file holds its own lists (in RAM, or on-disk indexes built before merging)


@dataclass(frozen=True)
class Manifest:
    """`version` grows with every change (add, remove, compact); the files a version reads are
    named in it (shards, `id_map`, `tombstones`), so swapping this one file swaps the version."""

    model: ModelInfo
    index: FaissInfo
    counts: dict[str, int]
    source: str
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format: str = INDEX_FORMAT
    version: int = 1
    id_map: str = "ids.parquet"
    tombstones: str | None = None  # Parquet of removed image ids, honoured at search
    updated: str = ""
    pdq: bool = False  # the catalog holds every image's PDQ hash; `index add` computes them too
    adapters: dict[str, str] = field(default_factory=dict)  # name -> file (`indexing.adapters`)

    def files(self) -> set[str]:
        """Paths (relative to the index root) this version's search reads."""
        return {*self.index.shards, *([self.index.lists] if self.index.lists else []),
                self.id_map, *([self.tombstones] if self.tombstones else []),
                *self.adapters.values()}

    def write(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"'{Path(path).parent}' is not a copytrace index (no manifest.json): "
                "build one with 'copytrace index build IMAGES --index DIR'"
            ) from None
        if d.get("format") != INDEX_FORMAT:
            raise ValueError(f"'{path}' has format {d.get('format')!r}, expected {INDEX_FORMAT}")
        return cls(
            model=ModelInfo(**d["model"]), index=FaissInfo(**d["index"]), counts=d["counts"],
            source=d["source"], versions=d.get("versions", {}), created=d.get("created", ""),
            version=d.get("version", 1), id_map=d.get("id_map", "ids.parquet"),
            tombstones=d.get("tombstones"), updated=d.get("updated", ""),
            pdq=bool(d.get("pdq", False)), adapters=dict(d.get("adapters", {})),
        )


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import faiss
    import pyarrow
    import timm
    import torch

    try:
        own = version("copytrace")
    except PackageNotFoundError:
        own = "unknown"
    return {"copytrace": own, "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "faiss": faiss.__version__, "pyarrow": pyarrow.__version__}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
