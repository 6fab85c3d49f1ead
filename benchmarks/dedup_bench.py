"""Dedup benchmark: copytrace vs imagededup (PHash, CNN) and fastdup on a planted folder, plus a
scaling row for the candidate self-joins at >= 100k images.

    python -m copytrace.benchmarks.dedup_bench --data ../shared/data --work /tmp/dedup-bench \\
        --peer-python /tmp/peers-imagededup/bin/python [--fastdup-python /tmp/fastdup/bin/python]

Every tool runs in its own process on the same folder (benchmarks.dedup_planted): wall time and
peak RSS come from that process (wait4 rusage); pair precision / recall against groups.csv.
Peers live in separate virtual environments (their pins clash with ours); a peer that cannot run
offline (imagededup's default CNN downloads torchvision weights) is reported with its error, and
imagededup's CNN method runs again on an ImageNet EfficientNet-Lite0 from the installed weights
(imagededup's CustomModel), so the method still gets its row.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

from copytrace.benchmarks.dedup_planted import make_planted
from copytrace.benchmarks.proc_peak import run_measured


@dataclass
class Row:
    method: str
    seconds: float | None
    peak_rss_mib: float | None
    pairs: int | None
    precision: float | None
    recall: float | None
    f1: float | None
    note: str = ""


def kinds(folder: Path) -> dict[str, str]:
    """What each file is (groups.csv's role without its number: ref, copy, shared, bg, ...)."""
    with open(folder / "groups.csv", newline="") as fh:
        return {Path(r["file"]).stem: "ukb" if r["role"].startswith("ukb") else
                re.match(r"[a-z]*", r["role"]).group() for r in csv.DictReader(fh)}


def error_breakdown(audit: Path, folder: Path, group: dict[str, str]) -> dict:
    """False pairs by the kinds of their two files (e.g. "shared+shared": two different photos
    in one frame), composite relations (pairs.parquet rows with `relation` "composite": their
    roles, and how many the truth calls duplicates), and the largest cluster that joins
    different groups (size, groups in it)."""
    kind = kinds(folder)
    pairs = duplicate_rows(audit)
    false: dict[str, int] = {}
    for p in pairs:
        a, b = p["image_id_a"], p["image_id_b"]
        if group.get(a) != group.get(b):
            k = "+".join(sorted((kind.get(a, "?"), kind.get(b, "?"))))
            false[f"{k} ({p['kind']})"] = false.get(f"{k} ({p['kind']})", 0) + 1
    composite = [p for p in pq.read_table(audit / "pairs.parquet").to_pylist()
                 if p.get("relation") == "composite"]
    clusters: dict[int, list[str]] = {}
    for r in pq.read_table(audit / "clusters.parquet").to_pylist():
        clusters.setdefault(r["cluster_id"], []).append(r["image_id"])
    mixed = sorted(((len(m), len({group.get(x) for x in m})) for m in clusters.values()
                    if len({group.get(x) for x in m}) > 1), reverse=True)
    return {"false_pairs": dict(sorted(false.items(), key=lambda kv: -kv[1])),
            "composite_pairs": len(composite),
            "composite_pairs_true": sum(1 for c in composite
                                        if group.get(c["image_id_a"]) == group.get(c["image_id_b"])),
            "composite_roles": sorted(f"{kind.get(c['image_id_a'])}:{c['role_a']}+"
                                      f"{kind.get(c['image_id_b'])}:{c['role_b']}"
                                      for c in composite),
            "largest_false_cluster": {"size": mixed[0][0], "groups": mixed[0][1]} if mixed else None,
            "false_clusters": len(mixed)}


def duplicate_rows(audit: Path) -> list[dict]:
    """pairs.parquet's duplicate pairs (not its composite relations; older audits: every row)."""
    return [p for p in pq.read_table(audit / "pairs.parquet").to_pylist()
            if p.get("relation", "duplicate") == "duplicate"]


def subset_scores(audit: Path, subset: Path) -> dict:
    """Pairs, precision and recall of the audit's duplicates among the images of `subset`, a
    planted folder whose files are all in the audited one (the default set inside a
    catalog-scale one: made with the same seed, its files are byte-identical)."""
    group, true_pairs = truth(subset)
    found = {frozenset((p["image_id_a"], p["image_id_b"])) for p in duplicate_rows(audit)
             if p["image_id_a"] in group and p["image_id_b"] in group}
    precision, recall, f1 = score(found, group, true_pairs)
    return {"images": len(group), "pairs": len(found), "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4)}


def truth(folder: Path) -> tuple[dict[str, str], set[frozenset]]:
    with open(folder / "groups.csv", newline="") as fh:
        group = {Path(r["file"]).stem: r["group"] for r in csv.DictReader(fh)}
    members: dict[str, list[str]] = {}
    for i, g in group.items():
        members.setdefault(g, []).append(i)
    pairs = {frozenset((a, b)) for m in members.values() for n, a in enumerate(m) for b in m[n + 1:]}
    return group, pairs


def score(predicted: set[frozenset], group: dict[str, str], true_pairs: set[frozenset]
          ) -> tuple[float, float, float]:
    tp = sum(1 for p in predicted if len({group.get(x) for x in p}) == 1)
    precision = tp / len(predicted) if predicted else 1.0
    recall = len(predicted & true_pairs) / len(true_pairs) if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


PEER_SCRIPT = """
import json, sys
from imagededup.methods import CNN, PHash
method, folder, out = sys.argv[1], sys.argv[2], sys.argv[-1]
if method == "phash":
    hasher = PHash()
    dups = hasher.find_duplicates(image_dir=folder, max_distance_threshold=10)
elif method == "cnn-custom":  # imagededup's CNN method on a backbone that needs no download
    import torch
    from imagededup.utils import CustomModel
    from torchvision import transforms
    net = torch.jit.load(sys.argv[3]).eval()
    prep = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                               transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    cnn = CNN(model_config=CustomModel(name="imagenet-lite0", model=net, transform=prep))
    dups = cnn.find_duplicates(image_dir=folder, min_similarity_threshold=0.9)
else:
    cnn = CNN()
    dups = cnn.find_duplicates(image_dir=folder, min_similarity_threshold=0.9)
pairs = sorted({tuple(sorted((a.rsplit(".", 1)[0], b.rsplit(".", 1)[0])))
                for a, found in dups.items() for b in found})
json.dump(pairs, open(out, "w"))
"""

FASTDUP_SCRIPT = """
import json, sys
import fastdup
folder, work, out = sys.argv[1:4]
fd = fastdup.create(work_dir=work, input_dir=folder)
fd.run(overwrite=True, threshold=0.9)
sim = fd.similarity()
stem = lambda f: str(f).rsplit("/", 1)[-1].rsplit(".", 1)[0]
pairs = {} if not len(sim) else {tuple(sorted((stem(a), stem(b)))): float(d) for a, b, d in
                                 zip(sim["filename_from"], sim["filename_to"], sim["distance"])}
json.dump([[a, b, d] for (a, b), d in sorted(pairs.items())], open(out, "w"))
"""

FASTDUP_CUTS = (0.9, 0.96)  # cosine similarity; 0.96 is fastdup's usual near-duplicate cut


def run_copytrace(folder: Path, work: Path, group: dict, true_pairs: set,
                  index: Path | None = None) -> list[Row]:
    """The audit as a process on the folder (index build included) or on `index`, an index of
    the same folder built before (e.g. by a previous run: before/after on one index)."""
    audit = work / "copytrace-audit"
    code, secs, rss, tail = run_measured(
        [sys.executable, "-m", "copytrace.app.cli", "dedup", str(index or folder / "images"),
         "--out", str(audit), "--no-ray", "--quiet"],
        env={"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"})
    if code != 0:
        return [Row("copytrace", secs, rss, None, None, None, None, f"failed: {tail.strip()}")]
    default, ablations = default_and_ablations(audit, group, true_pairs)
    return [Row("copytrace (index + dedup, default)" if index is None else
                "copytrace (dedup of a built index, default)", secs, rss, *default,
                note=("index build included; " if index is None else "")
                + "crops, content, view and bridge checks on"),
            *ablations]


def default_and_ablations(audit: Path, group: dict, true_pairs: set
                          ) -> tuple[tuple, list[Row]]:
    """(pairs, precision, recall, F1) of an audit, and rows for the same run with its later
    checks undone (from candidates.parquet: what each check rejected is put back)."""
    cands = pq.read_table(audit / "candidates.parquet").to_pylist()
    pairs = duplicate_rows(audit)
    key = lambda r: frozenset((r["image_id_a"], r["image_id_b"]))  # noqa: E731
    full = {key(p) for p in pairs}
    exact = {key(p) for p in pairs if p["kind"] == "exact"}
    accepted = [c for c in cands if c["score"] >= 0.5 or c["kind"] == "pdq"]
    no_bridges = full | {key(c) for c in cands if c["reason"].startswith("partners disagree")}
    no_views = no_bridges | {key(c) for c in accepted if c["reason"].startswith("another view")}
    verified_only = exact | {key(c) for c in accepted}
    note = "ablation from candidates.parquet of the run above"
    return (len(full), *score(full, group, true_pairs)), [
        Row("copytrace, same run without the bridge check", None, None, len(no_bridges),
            *score(no_bridges, group, true_pairs), note=note),
        Row("copytrace, same run without bridge and view checks", None, None, len(no_views),
            *score(no_views, group, true_pairs), note=note),
        Row("copytrace, same run without content, view and bridge checks", None, None,
            len(verified_only), *score(verified_only, group, true_pairs), note=note)]


def imagenet_backbone(path: Path) -> Path:
    """TorchScript of an ImageNet-trained EfficientNet-Lite0 (global-pooled 1280-d features) from
    the locally installed weights: imagededup's CNN method with a backbone that needs no download
    (its default MobileNetV3 weights come from the internet, unreachable here)."""
    if not path.exists():
        import timm
        import torch

        from copytrace.descriptors import load_lite0_imagenet

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        load_lite0_imagenet(net)
        net.reset_classifier(0)
        with torch.no_grad():
            torch.jit.trace(net.eval(), torch.zeros(1, 3, 224, 224)).save(str(path))
    return path


def run_peer(name: str, python: str, script: str, args: list[str], work: Path, group: dict,
             true_pairs: set) -> list[Row]:
    out = work / f"{name.replace(' ', '_')}.json"
    script_file = work / f"peer_{name.replace(' ', '_')}.py"  # never shadows the package
    script_file.write_text(script)
    code, secs, rss, tail = run_measured([python, str(script_file), *args, str(out)],
                                         env={"HF_HUB_OFFLINE": "1"})
    if code != 0 or not out.exists():
        last = [line for line in tail.strip().splitlines() if line.strip()]
        return [Row(name, secs, rss, None, None, None, None,
                    f"failed: {last[-1][:160] if last else code}")]
    found = json.loads(out.read_text())
    if found and len(found[0]) == 3:  # (a, b, similarity): one row per cut, same run
        rows = []
        for cut in FASTDUP_CUTS:
            predicted = {frozenset(p[:2]) for p in found if p[2] >= cut}
            rows.append(Row(f"{name} sim>={cut}", secs, rss, len(predicted),
                            *score(predicted, group, true_pairs)))
        return rows
    predicted = {frozenset(p) for p in found}
    return [Row(name, secs, rss, len(predicted), *score(predicted, group, true_pairs))]


def scaling_rows(work: Path, sizes: tuple[int, ...]) -> list[dict]:
    """Peak RSS of the two candidate self-joins (descriptor kNN in chunks, PDQ range search in
    chunks) at growing N, each size in a fresh process; vectors/hashes are real ones from the
    planted index, repeated with noise (synthetic-from-real)."""
    rows = []
    for n in sizes:
        code, secs, rss, tail = run_measured(
            [sys.executable, "-m", "copytrace.benchmarks.dedup_bench", "--scale-worker", str(n),
             "--work", str(work)])
        rows.append({"images": n, "seconds": round(secs, 1), "peak_rss_mib": round(rss),
                     "ok": code == 0, "note": tail.strip()[-160:] if code else ""})
    return rows


def scale_worker(n: int, work: Path) -> None:
    """One scaling measurement (run in its own process by `scaling_rows`)."""
    import faiss
    import numpy as np

    from copytrace.indexing import read_embeddings
    from copytrace.matching import range_pairs

    index_dir = work / "copytrace-audit" / "index"
    _, real = read_embeddings(index_dir / "embeddings")
    feats = pq.read_table(index_dir / "dedup-features.parquet").column("pdq").to_pylist()
    codes = np.frombuffer(b"".join(c for c in feats if c), np.uint8).reshape(-1, 32)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(real), n)
    vectors = real[pick] + rng.normal(0, 0.03, (n, real.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hashes = codes[rng.integers(0, len(codes), n)].copy()
    flips = rng.integers(0, 256, (n, 40))
    for j in range(flips.shape[1]):  # ~40 random bit flips per hash
        np.bitwise_xor.at(hashes, (np.arange(n), flips[:, j] // 8),
                          (1 << (flips[:, j] % 8)).astype(np.uint8))
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    near = 0
    for s in range(0, n, 2048):
        sims, _ = index.search(vectors[s : s + 2048], 6)
        near += int((sims[:, 1:] > 0.9).sum())
    close = sum(1 for _ in range_pairs(hashes, hashes, self_join=True))
    print(json.dumps({"images": n, "descriptor_pairs": near, "pdq_pairs": close}))


def table(rows: list[Row]) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| method | wall s | peak RSS MiB | pairs | precision | recall | F1 | note |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {f(r.seconds, '.0f')} | {f(r.peak_rss_mib, '.0f')} | "
              f"{f(r.pairs, 'd')} | {f(r.precision, '.3f')} | {f(r.recall, '.3f')} | "
              f"{f(r.f1, '.3f')} | {r.note} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--work", default="/tmp/dedup-bench")
    ap.add_argument("--peer-python", default="/tmp/peers-imagededup/bin/python")
    ap.add_argument("--fastdup-python", default="/tmp/peers-fastdup/bin/python")
    ap.add_argument("--scale", default="25000,50000,100000")
    ap.add_argument("--skip", default="", help="comma list: copytrace,phash,cnn,cnn-custom,fastdup,scale")
    ap.add_argument("--scale-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help="audit this index of the planted folder "
                    "(built by an earlier run) instead of building one")
    ap.add_argument("--subset", type=Path, help="also score the audit on this planted folder's "
                    "images (e.g. the default set, which a catalog-scale set contains)")
    ap.add_argument("--shared-frame", type=int, default=0,
                    help="planted: this many different photos in one shared screenshot frame")
    ap.add_argument("--backgrounds-in-folder", type=int, default=0,
                    help="planted: this many of the pasted-in backgrounds also in the folder")
    ap.add_argument("--extra-plain", type=int, default=0,
                    help="planted: this many more plain Caltech photos (catalog scale)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.scale_worker:
        scale_worker(args.scale_worker, work)
        return
    skip = set(filter(None, args.skip.split(",")))
    scale = dict(shared_frame=args.shared_frame, backgrounds_in_folder=args.backgrounds_in_folder,
                 extra_plain=args.extra_plain)
    folder = work / ("planted" if not any(scale.values()) else
                     "planted-{shared_frame}-{backgrounds_in_folder}-{extra_plain}".format(**scale))
    if not (folder / "groups.csv").exists():
        make_planted(args.data, folder, **scale)
    group, true_pairs = truth(folder)
    rows: list[Row] = []
    if "copytrace" not in skip:
        rows += run_copytrace(folder, work, group, true_pairs, args.index)
    images = str(folder / "images")
    for name, python, script, extra, key in (
            ("imagededup PHash (d<=10)", args.peer_python, PEER_SCRIPT, ["phash", images], "phash"),
            ("imagededup CNN (cos>=0.9)", args.peer_python, PEER_SCRIPT, ["cnn", images], "cnn"),
            ("imagededup CNN, ImageNet Lite0 backbone (cos>=0.9)", args.peer_python, PEER_SCRIPT,
             ["cnn-custom", images, str(imagenet_backbone(work / "imagenet-lite0.ts"))],
             "cnn-custom"),
            ("fastdup", args.fastdup_python, FASTDUP_SCRIPT,
             [images, str(work / "fastdup-work")], "fastdup")):
        if key in skip:
            continue
        if not Path(python).exists():
            rows.append(Row(name, None, None, None, None, None, None, f"not installed ({python})"))
            continue
        rows += run_peer(name, python, script, extra, work, group, true_pairs)
    scaling = [] if "scale" in skip else scaling_rows(work, tuple(int(s) for s in
                                                                  args.scale.split(",")))
    audit = work / "copytrace-audit"
    errors = (error_breakdown(audit, folder, group) if "copytrace" not in skip
              and (audit / "pairs.parquet").exists() else None)
    if errors is not None and args.subset:
        errors["subset"] = subset_scores(audit, args.subset)
    print(json.dumps({"images": len(group), "true_pairs": len(true_pairs),
                      "rows": [asdict(r) for r in rows], "copytrace_errors": errors,
                      "scaling": scaling}, indent=1))
    print(f"\nplanted folder: {len(group)} images, {len(true_pairs)} true duplicate pairs\n")
    print(table(rows))
    if scaling:
        print("\n| images (synthetic-from-real) | self-join s | peak RSS MiB |\n|---|---|---|")
        for s in scaling:
            print(f"| {s['images']} | {s['seconds']} | {s['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
