"""Pattern benchmark: do query adapters learnt from a few pairs catch a NEW tamper pattern?

    nice -n 10 python -m copytrace.benchmarks.pattern_bench --work /tmp/ct-patterns \
        --patterns halftone,mosaic --pairs 10,20,50

On the dev benchmark's index (last 300 ImageNet samples as references, UKBench hard negatives;
`dev_benchmark`), for each pattern of `new_patterns` (none of them a training edit): N example
pairs are made from N references of a fixed training pool, an adapter is learnt (`adapt_index`,
saved even where its held-out check would refuse it: the `refused` column says so),
and queries are scored before (no adapter) and after (that adapter) on FRESH copies of the
pattern (other references than the pairs', plus the pattern applied to photos not in the index
as negatives), and on the ordinary dev copy queries (all other patterns: the change must stay
above -0.005 uAP). Same engine as `copytrace query` (expand, normalize, banded verification).
Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import time
from pathlib import Path

from PIL import Image

from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
from copytrace.benchmarks.make_disc import HARD_NEGATIVE_MARK
from copytrace.benchmarks.matching_bench import ensure_index
from copytrace.benchmarks.metrics import GroundTruthMatch, Metrics, PredictedMatch, evaluate
from copytrace.benchmarks.new_patterns import PATTERNS
from copytrace.indexing import ImageSource, load_adapters, remove_adapter
from copytrace.pipelines import AdaptOptions, QueryEngine, adapt_index, with_adapter_views

TRAIN_POOL = 50  # references whose pattern copies may be example pairs (never fresh queries)


def _sources(bench: Path) -> tuple[list[tuple[str, str]], list[str], dict[str, str]]:
    """ImageNet references (id, photo), photos of the negative queries (not in the index), and
    the dev ground truth (query -> reference, '' for none)."""
    refs, negatives = [], []
    with open(bench / "sources.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    gt = {}
    with open(bench / "gt.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            gt[r["query_id"]] = r["reference_id"]
    for r in rows:
        if r["role"] == "reference" and "imagenet" in r["source"]:
            refs.append((r["id"], r["source"]))
        elif (r["role"] == "query" and not gt.get(r["id"])
              and not r["edits"].startswith(HARD_NEGATIVE_MARK)):
            negatives.append(r["source"])
    return refs, sorted(set(negatives)), gt


def _write(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, "JPEG", quality=88)
    return path


def _photo(path: str) -> Image.Image:
    img = Image.open(path).convert("RGB")
    img.thumbnail((1024, 1024))
    return img


def make_pattern_set(pattern: str, refs: list[tuple[str, str]], negatives: list[str], out: Path,
                     *, fresh: int, seed: int = 0) -> tuple[list[tuple[Path, str]], dict]:
    """Example pairs (copy, reference id) from the training pool, and fresh queries
    {query path: reference id or ''} of other references and of negative photos."""
    rng = random.Random(f"{pattern}-{seed}")
    fn = PATTERNS[pattern]
    train = [(_write(fn(_photo(src), rng), out / "train" / f"{rid}.jpg"), rid)
             for rid, src in refs[:TRAIN_POOL]]
    queries = {}
    for rid, src in refs[TRAIN_POOL : TRAIN_POOL + fresh]:
        queries[_write(fn(_photo(src), rng), out / "fresh" / f"P{rid}.jpg")] = rid
    for i, src in enumerate(negatives):
        queries[_write(fn(_photo(src), rng), out / "fresh" / f"N{i:04d}.jpg")] = ""
    return train, queries


class Scorer:
    """Queries decoded and embedded once; ranked again for each set of adapters."""

    def __init__(self, engine: QueryEngine, queries: dict[Path, str], k: int) -> None:
        self.engine, self.k = engine, k
        self.images = [engine.decode(p, query_id=p.stem) for p in queries]
        t = time.perf_counter()
        self.vectors = engine.embed(self.images)
        self.embed_seconds = time.perf_counter() - t  # the plain views' forward passes
        self.gt = [GroundTruthMatch(p.stem, r) for p, r in queries.items() if r]

    def score(self, adapters: list) -> tuple[Metrics, float]:
        """Metrics, and seconds of the adapters' views (their extra forward) + ranking."""
        t = time.perf_counter()
        vectors, views = with_adapter_views(self.vectors, [q.views for q in self.images],
                                            adapters, pixels=[q.model_pixels for q in self.images],
                                            embedder=self.engine.embedder)
        ranked = self.engine.rank([ImageSource(q.query_id, q.uri) for q in self.images],
                                  vectors, views, config=self.engine.options(k=self.k),
                                  queries=self.images, verify_mode="banded")
        preds = [PredictedMatch(q.query_id, m.reference_id, m.score)
                 for i, q in enumerate(self.images) for m in ranked[i]]
        return evaluate(self.gt, preds), time.perf_counter() - t


def _row(m: Metrics) -> dict:
    return {"uAP": round(m.micro_ap, 4), "R@10": round(m.recall_at_10, 4)}


def run(work: Path, *, patterns: list[str], pairs: list[int], fresh: int, others: bool,
        index_from: Path | None, data: Path, model: str = "default", k: int = 10,
        options: AdaptOptions | None = None) -> dict:
    bench = ensure_dev_benchmark(data, work)
    index = work / "idx"
    if index_from is not None and not index.exists():
        shutil.copytree(index_from, index, ignore=shutil.ignore_patterns("keypoints", ".lock"))
    ensure_index(bench / "references", index, model)
    for name in list(json.loads((index / "manifest.json").read_text()).get("adapters", {})):
        remove_adapter(index, name)  # a previous run's leftovers
    refs, negatives, gt = _sources(bench)
    random.Random(0).shuffle(refs)
    report: dict = {"benchmark": str(bench), "index": str(index), "fresh_positives": fresh,
                    "fresh_negatives": len(negatives), "patterns": {}}
    with QueryEngine.open(index, device="cpu", adapters="none") as engine:
        dev = (Scorer(engine, {bench / "queries" / f"{q}.jpg": r for q, r in sorted(gt.items())},
                      k) if others else None)
        dev_before = dev.score([])[0] if dev else None
        if dev_before is not None:
            report["others_before"] = _row(dev_before)
            print(json.dumps({"others_before": report["others_before"]}), flush=True)
        for spec in patterns:
            pattern, _, own = spec.partition(":")  # 'mosaic:20+50': this pattern's pair counts
            train, queries = make_pattern_set(pattern, refs, negatives, work / "patterns" / pattern,
                                              fresh=fresh)
            scorer = Scorer(engine, queries, k)
            before, rank_s = scorer.score([])
            per_query = 1000 / len(scorer.images)
            rows = {"before": _row(before), "pairs": {},
                    "query_ms_before": round((scorer.embed_seconds + rank_s) * per_query, 1)}
            for n in [int(x) for x in own.split("+")] if own else pairs:
                listing = work / "patterns" / pattern / f"pairs-{n}.csv"
                with open(listing, "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(["copy", "original"])
                    w.writerows([(str(p), rid) for p, rid in train[:n]])
                name = f"{pattern}-{n}"
                t = time.perf_counter()
                r = adapt_index(listing, index, name=name, show_progress=False, allow_worse=True,
                                options=options or AdaptOptions())
                seconds = time.perf_counter() - t
                adapters = load_adapters(index, name)
                after, rank_s = scorer.score(adapters)
                row = {"after": _row(after), "adapt_seconds": round(seconds, 1),
                       "input_filter": r.card.input_filter, "kind": r.card.kind,
                       "query_ms_after": round((scorer.embed_seconds + rank_s) * per_query, 1),
                       "train_seconds": r.card.measured["training_seconds"],
                       "bytes": r.card.bytes, "card": r.card.measured}
                if dev is not None and dev_before is not None:
                    other, _ = dev.score(adapters)
                    row["others_after"] = _row(other)
                    row["others_delta_uAP"] = round(other.micro_ap - dev_before.micro_ap, 4)
                rows["pairs"][n] = row
                remove_adapter(index, name)
                print(json.dumps({pattern: {"before": rows["before"], n: row}}), flush=True)
            report["patterns"][pattern] = rows
    return report


def table(report: dict) -> str:
    lines = [f"{'pattern':<15} {'pairs':>5} {'uAP before':>10} {'after':>7} {'R@10 before':>11} "
             f"{'after':>7} {'others dUAP':>11} {'adapt s':>7} {'size KiB':>8} "
             f"{'ms/q before':>11} {'after':>6} {'refused':>7}  filter"]
    for pattern, rows in report["patterns"].items():
        b = rows["before"]
        for n, r in rows["pairs"].items():
            delta = r.get("others_delta_uAP")
            lines.append(f"{pattern:<15} {n:>5} {b['uAP']:>10.4f} {r['after']['uAP']:>7.4f} "
                         f"{b['R@10']:>11.4f} {r['after']['R@10']:>7.4f} "
                         f"{'' if delta is None else f'{delta:+.4f}':>11} "
                         f"{r['adapt_seconds']:>7.1f} {r['bytes'] / 1024:>8.0f} "
                         f"{rows['query_ms_before']:>11.1f} {r['query_ms_after']:>6.1f} "
                         f"{'yes' if r['card'].get('refused') else 'no':>7}  "
                         f"{r.get('input_filter') or '-'}")
    if "others_before" in report:
        o = report["others_before"]
        lines.append(f"others (ordinary dev copy queries) without adapters: uAP {o['uAP']:.4f}, "
                     f"R@10 {o['R@10']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-patterns")
    parser.add_argument("--index-from", help="copy this dev index instead of building one")
    parser.add_argument("--patterns", default=",".join(PATTERNS),
                        help="comma-separated; 'mosaic:20+50' gives a pattern its own pair counts")
    parser.add_argument("--pairs", default="10,20,50")
    parser.add_argument("--fresh", type=int, default=100, help="fresh positive queries")
    parser.add_argument("--no-others", action="store_true", help="skip the ordinary dev queries")
    parser.add_argument("--map-only", action="store_true",
                        help="no input filters: the residual descriptor map alone (format 1)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    work = Path(args.work)
    report = run(work, patterns=[p for p in args.patterns.split(",") if p],
                 pairs=[int(n) for n in args.pairs.split(",")], fresh=args.fresh,
                 others=not args.no_others, data=dev_data_root(args.data),
                 index_from=Path(args.index_from) if args.index_from else None,
                 options=AdaptOptions(filters=False, residual=True) if args.map_only
                 else AdaptOptions())
    print(json.dumps(report, indent=2))
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
