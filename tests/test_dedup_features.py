"""Stored dedup features (PDQ + template thumbnail) follow the file the catalog records: a row is
reused while the sha256 matches and computed anew when the file behind an image id changed."""

from __future__ import annotations

import hashlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from copytrace.matching.pdq import to_hex
from copytrace.pipelines.dedup.features import FEATURES_FILE, catalog_features


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pdq(features, image_id: str) -> str:
    return to_hex(features.pdq[features.rows()[image_id]].tobytes())


def test_features_are_recomputed_when_the_file_behind_an_id_changes(photos_dir, tmp_path):
    index, out = tmp_path / "idx", tmp_path / "audit"
    index.mkdir()
    img = tmp_path / "a.jpg"
    shutil.copy(photos_dir / "astronaut.jpg", img)
    sources = [("a", str(img))]
    first = catalog_features(index, sources, sha256={"a": _sha(img)}, fallback_dir=out)
    stored = pq.read_table(index / FEATURES_FILE)
    assert stored.column("sha256").to_pylist() == [_sha(img)]

    shutil.copy(photos_dir / "coffee.jpg", img)  # same id and path, another image
    again = catalog_features(index, sources, sha256={"a": _sha(img)}, fallback_dir=out)
    assert _pdq(again, "a") != _pdq(first, "a")
    assert pq.read_table(index / FEATURES_FILE).column("sha256").to_pylist() == [_sha(img)]

    digest = _sha(img)
    img.unlink()  # unchanged digest: the stored row is reused, the file is not read again
    reused = catalog_features(index, sources, sha256={"a": digest}, fallback_dir=out)
    assert _pdq(reused, "a") == _pdq(again, "a")


def test_a_features_file_without_digests_is_recomputed_once(photos_dir, tmp_path):
    index, out = tmp_path / "idx", tmp_path / "audit"
    index.mkdir()
    img = tmp_path / "a.jpg"
    shutil.copy(photos_dir / "chelsea.jpg", img)
    catalog_features(index, [("a", str(img))], sha256={"a": _sha(img)}, fallback_dir=out)
    old = pq.read_table(index / FEATURES_FILE).drop_columns(["sha256"])
    old = old.set_column(old.schema.get_field_index("pdq"), "pdq",
                         pa.array([b"\0" * 32], pa.binary(32)))  # a stale hash, no digest
    pq.write_table(old, index / FEATURES_FILE)
    got = catalog_features(index, [("a", str(img))], sha256={"a": _sha(img)}, fallback_dir=out)
    assert _pdq(got, "a") != "00" * 32


def test_catalog_hashes_are_used_and_thumbnails_made_only_where_needed(photos_dir, tmp_path):
    from copytrace.descriptors.pdq import hash_file
    from copytrace.matching.templates import TemplateConfig, template_sample

    index, out = tmp_path / "idx", tmp_path / "audit"
    index.mkdir()
    names = ("astronaut", "chelsea", "coffee", "rocket", "moon")
    sources = [(n, str(photos_dir / f"{n}.jpg")) for n in names]
    digests = {n: _sha(photos_dir / f"{n}.jpg") for n in names}
    pdq = {n: hash_file(u) for n, u in sources}
    pdq["moon"] = (b"\x01" * 32, 77)  # what the catalog says wins: the file is not hashed again
    got = catalog_features(index, sources, sha256=digests, fallback_dir=out, pdq=pdq)
    assert _pdq(got, "moon") == "01" * 32 and int(got.quality[got.rows()["moon"]]) == 77
    stored = pq.read_table(index / FEATURES_FILE)
    assert stored.column("thumb").null_count == len(names)  # nothing decoded yet

    config = TemplateConfig(sample=2)
    got.template_model(config)
    picked = {names[i] for i in template_sample(len(names), config=config)}
    got.template_cells(["coffee"], config)
    made = {r["image_id"] for r in pq.read_table(index / FEATURES_FILE).to_pylist()
            if r["thumb"] is not None}
    assert made == picked | {"coffee"}  # the model's sample and the image checked, no other
