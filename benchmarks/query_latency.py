"""Query latency and accuracy of the verification modes, through the engine and over HTTP.

    python -m copytrace.benchmarks.query_latency --work /tmp/ct-latency [--limit N]
    python -m copytrace.benchmarks.query_latency --work /tmp/ct-latency --fit-band
    python -m copytrace.benchmarks.query_latency --work /tmp/ct-latency --backends

On the dev benchmark (`dev_benchmark.ensure_dev_benchmark`), for each verification mode
(`off` = --no-verify, `full` = every top candidate verified, `banded` = the default): the whole
query folder through `QueryEngine.query` (wall seconds per query, queries/s, µAP / R@P90 /
acc@1), then single-image queries one at a time through the engine and through the HTTP service
(p50 / p95 / p99), then 50 concurrent HTTP clients (errors, p50 / p99, health latency under
load). Reference keypoints are prepared once into a fresh on-disk cache under WORK before the
modes (as a service does before it takes traffic; the time is reported), each mode gets a fresh
engine (its verification workers started before the clock runs, like its model);
`banded-cold` repeats the default with an empty cache (references prepared on first use, as on a
new index). Folder and single runs use `--backend` (default:
a process pool, as `copytrace query` does for folders).

`--fit-band` runs full verification on the calibration benchmark (disjoint from the dev one) and
fits the decision band (`matching.calibrate.fit_band`); `--backends` times the default (banded)
verification inline, in a process pool and on Ray, at 1 query and at `--many` (1,000). Prints
JSON, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.metrics import PredictedMatch, evaluate
from copytrace.matching import Calibration, QueryResult, fit_band, global_score_only
from copytrace.pipelines import QueryEngine, QueryTimings, VerifyBackend, VerifyMode, build_index

log = logging.getLogger(__name__)

MODES = (VerifyMode.OFF, VerifyMode.FULL, VerifyMode.BANDED)
CHUNK = 64


def ensure_index(references: Path, index: Path, model: str) -> Path:
    if not (index / "manifest.json").exists():
        build_index(references, index, model=model, use_ray=False, show_progress=False)
    return index


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "mean_ms": round(float(ms.mean()), 1)}


def open_engine(index: Path, calibration: Calibration | None, backend: str, *,
                cache_dir: Path | None = None) -> QueryEngine:
    """An engine whose keypoint cache is under `cache_dir` (None: memory only)."""
    return QueryEngine.open(index, calibration=calibration, verify_backend=backend,
                            keypoint_cache=cache_dir is not None, cache_dir=cache_dir)


def folder_run(engine: QueryEngine, files: list[Path], mode: VerifyMode, k: int
               ) -> tuple[list[QueryResult], float, QueryTimings]:
    timings = QueryTimings()
    t = time.perf_counter()
    results: list[QueryResult] = []
    for s in range(0, len(files), CHUNK):
        results.extend(engine.query(files[s : s + CHUNK], k=k, verify=mode, timings=timings))
    return results, time.perf_counter() - t, timings


def accuracy(results: list[QueryResult], gt_path: Path) -> dict:
    gt, _ = read_ground_truth(gt_path)
    ids = {r.query_id for r in results}
    preds = [PredictedMatch(r.query_id, m.reference_id, m.score) for r in results
             for m in r.matches]
    m = evaluate([g for g in gt if g.query in ids], preds)
    return {"uAP": round(m.micro_ap, 4),
            "R@P90": None if m.recall_at_p90 is None else round(m.recall_at_p90, 4),
            "acc@1": round(m.acc_at_1, 4)}


def single_run(engine: QueryEngine, files: list[Path], mode: VerifyMode, k: int) -> dict:
    seconds = []
    for f in files:
        t = time.perf_counter()
        engine.query([f], k=k, verify=mode)
        seconds.append(time.perf_counter() - t)
    return percentiles(seconds)


class _Service:
    """The real service on a loopback port, in a thread."""

    def __init__(self, index: Path, backend: str, cache_dir: Path | None = None) -> None:
        import socket

        import uvicorn

        from copytrace.app.service import ServiceConfig, create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # A long request timeout: the load test counts failures, not a busy box's queue waits.
        app = create_app(index, verify_backend=backend, cache_dir=cache_dir,
                         config=ServiceConfig(request_timeout=600, max_queue=1024))
        self.server = uvicorn.Server(uvicorn.Config(app,
                                                    host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()


def http_single(url: str, files: list[Path], mode: VerifyMode, k: int) -> dict:
    import httpx

    seconds, errors = [], 0
    with httpx.Client(timeout=300) as client:
        for f in files:
            data = f.read_bytes()
            t = time.perf_counter()
            r = client.post(f"{url}/v1/query", params={"k": k, "verify": mode.value}, content=data)
            seconds.append(time.perf_counter() - t)
            errors += r.status_code != 200
    return {**percentiles(seconds), "errors": errors}


def http_load(url: str, files: list[Path], *, clients: int = 50, k: int = 10) -> dict:
    """`clients` concurrent clients, one request each, while a probe asks /v1/health."""
    import httpx

    bodies = [files[i % len(files)].read_bytes() for i in range(clients)]

    async def one(client: httpx.AsyncClient, body: bytes) -> tuple[int, float]:
        t = time.perf_counter()
        r = await client.post(f"{url}/v1/query", params={"k": k}, content=body)
        return r.status_code, time.perf_counter() - t

    async def probe(client: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
        out = []
        while not stop.is_set():
            t = time.perf_counter()
            await client.get(f"{url}/v1/health")
            out.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)
        return out

    async def run() -> tuple[list[tuple[int, float]], list[float], float]:
        limits = httpx.Limits(max_connections=clients + 5)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            stop = asyncio.Event()
            health = asyncio.create_task(probe(client, stop))
            t = time.perf_counter()
            answers = await asyncio.gather(*[one(client, b) for b in bodies])
            wall = time.perf_counter() - t
            stop.set()
            return answers, await health, wall

    answers, health, wall = asyncio.run(run())
    return {"clients": clients, "errors": sum(s != 200 for s, _ in answers),
            "wall_s": round(wall, 2), "queries_per_s": round(clients / wall, 2),
            **percentiles([s for _, s in answers]),
            "health_p50_ms": round(1000 * statistics.median(health), 1),
            "health_max_ms": round(1000 * max(health), 1)}


def fit_band_on_calibration(data: Path, work: Path, model: str, calibration: Calibration | None,
                            backend: str, k: int) -> dict:
    """Full verification on the calibration benchmark; the band fitted on its pairs."""
    from copytrace.benchmarks.matching_bench import ensure_calibration_benchmark

    bench = ensure_calibration_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-calib", model)
    gt, _ = read_ground_truth(bench / "gt.csv")
    positive = {(g.query, g.reference) for g in gt}
    with open_engine(index, calibration, backend) as engine:
        files = sorted((bench / "queries").iterdir())
        results, wall, _ = folder_run(engine, files, VerifyMode.FULL, k)
        cal = engine.calibration
    g, v, y = [], [], []
    for r in results:
        for m in r.matches:
            g.append(global_score_only(m.evidence["global_score"], calibration=cal))
            v.append(m.score)
            y.append(int((r.query_id, m.reference_id) in positive))
    band = fit_band(np.array(g), np.array(v), np.array(y),
                    source=f"fit_band on {bench.name} ({len(y)} pairs), calibration: {cal.source}")
    return {"band": {"reject": band.reject, "accept": band.accept, "source": band.source},
            "pairs": len(y), "positives": int(sum(y)), "full_verify_wall_s": round(wall, 1)}


def _verify_chunk(engine: QueryEngine, config, chunk: list[Path], embedded: dict,
                  timings: QueryTimings) -> None:
    """Decode `chunk` (whole image only) and rank it from its precomputed view vectors."""
    from copytrace.indexing import ImageSource

    images = [engine.decode(f, config=replace(config, expand=None)) for f in chunk]
    engine.rank([ImageSource(q.query_id, str(f)) for q, f in zip(images, chunk, strict=True)],
                [embedded[f][0] for f in chunk], [embedded[f][1] for f in chunk], config=config,
                timings=timings, queries=images, verify_mode=VerifyMode.BANDED)


def compare_backends(index: Path, files: list[Path], calibration: Calibration | None, k: int,
                     *, many: int = 1000, cache_dir: Path) -> dict:
    """Verification (banded, the default) per backend, 1 query at a time (20 queries) and
    `many` queries in chunks of 64 (the dev queries repeated). Vectors are computed once and
    reused, so only verification is timed (query keypoints included, warm reference cache)."""
    batch = [files[i % len(files)] for i in range(many)]
    with open_engine(index, calibration, "inline", cache_dir=cache_dir) as engine:
        engine.prepare_references()
        embedded = {}
        for s in range(0, len(files), CHUNK):
            images = [engine.decode(f) for f in files[s : s + CHUNK]]
            for f, q, vec in zip(files[s : s + CHUNK], images, engine.embed(images), strict=True):
                embedded[f] = (vec, q.views)
    out = {}
    for backend in (VerifyBackend.INLINE, VerifyBackend.PROCESSES, VerifyBackend.RAY):
        if backend is VerifyBackend.RAY:
            from copytrace.pipelines import ensure_ray

            ensure_ray()  # start-up not counted
        with open_engine(index, calibration, backend.value, cache_dir=cache_dir) as engine:
            config = engine.options(k=k, verify=VerifyMode.BANDED)
            _verify_chunk(engine, config, files[:2], embedded, QueryTimings())  # warm-up
            one = QueryTimings()
            for f in files[2:22]:
                _verify_chunk(engine, config, [f], embedded, one)
            bulk = QueryTimings()
            t = time.perf_counter()
            for s in range(0, len(batch), CHUNK):
                _verify_chunk(engine, config, batch[s : s + CHUNK], embedded, bulk)
            wall = time.perf_counter() - t
        out[backend.value] = {"verify_ms_per_query_1": round(1000 * one.verify / 20, 1),
                              "verify_ms_per_query_many": round(1000 * bulk.verify / len(batch), 1),
                              "wall_ms_per_query_many": round(1000 * wall / len(batch), 1),
                              "queries_many": len(batch), "pairs_verified_many": bulk.pairs_verified}
    return out


def mode_run(index: Path, files: list[Path], sample: list[Path], mode: VerifyMode, k: int, *,
             calibration: Calibration | None, backend: str, cache_dir: Path | None) -> dict:
    """The folder through the engine, then single queries (keypoint cache under `cache_dir`)."""
    with open_engine(index, calibration, backend, cache_dir=cache_dir) as engine:
        engine.query(files[:1], k=k, verify=VerifyMode.OFF)  # background, catalog, model
        if mode is not VerifyMode.OFF:
            engine.verifier.start()  # pool workers start with the engine, as the model loads
        results, wall, t = folder_run(engine, files, mode, k)
        return {**accuracy(results, files[0].parent.parent / "gt.csv"),
                "wall_ms_per_query": round(1000 * wall / len(files), 1),
                "queries_per_s": round(len(files) / wall, 2),
                "pairs_verified": t.pairs_verified, "pairs_decided": t.pairs_decided,
                "stage_ms_per_query": {s: round(1000 * getattr(t, s) / len(files), 1)
                                       for s in ("embed", "search", "verify")},
                "engine_single": single_run(engine, sample, mode, k),
                "calibration": engine.calibration.source,
                "band": str(engine.calibration.decision_band())}


def run(data: Path, work: Path, *, model: str, k: int, limit: int | None, single: int,
        backend: str, calibration: Calibration | None, service: bool = True) -> dict:
    """Every mode with the reference keypoints prepared once beforehand (a fresh on-disk cache
    under WORK, as a service prepares them before it takes traffic), plus the banded default
    with an empty keypoint cache (the first run on a new index)."""
    import shutil

    bench = ensure_dev_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-dev", model)
    files = sorted((bench / "queries").iterdir())[:limit]
    rng = np.random.default_rng(0)
    sample = [files[i] for i in sorted(rng.choice(len(files), min(single, len(files)),
                                                  replace=False))]
    report: dict = {"benchmark": str(bench), "queries": len(files), "k": k, "backend": backend,
                    "cpus": os.cpu_count(), "load_before": os.getloadavg(), "modes": {}}
    cache_dir = work / "keypoint-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    with open_engine(index, calibration, backend, cache_dir=cache_dir) as engine:
        t = time.perf_counter()
        engine.prepare_references()
        report["reference_keypoints"] = {"references": len(engine.index),
                                         "seconds": round(time.perf_counter() - t, 1)}
    # one untimed pass first: the first mode would otherwise pay alone for cold files and for
    # the model's first batches of each shape (oneDNN builds its kernels per shape, per process)
    mode_run(index, files, sample[:1], VerifyMode.OFF, k, calibration=calibration,
             backend=backend, cache_dir=cache_dir)
    for mode in MODES:
        log.warning("mode %s: %d queries through the engine", mode.value, len(files))
        report["modes"][mode.value] = mode_run(index, files, sample, mode, k,
                                               calibration=calibration, backend=backend,
                                               cache_dir=cache_dir)
    log.warning("mode banded, cold keypoint cache: %d queries", len(files))
    cold = work / "keypoint-cache-cold"
    shutil.rmtree(cold, ignore_errors=True)
    report["modes"]["banded-cold"] = mode_run(index, files, sample[:1], VerifyMode.BANDED, k,
                                              calibration=calibration, backend=backend,
                                              cache_dir=cold)
    if not service:
        report["load_after"] = os.getloadavg()
        return report
    with _Service(index, backend, cache_dir) as url:
        http_single(url, sample[:3], VerifyMode.OFF, k)  # warm-up
        for mode in MODES:
            report["modes"][mode.value]["http_single"] = http_single(url, sample, mode, k)
        report["http_load_50_clients"] = http_load(url, files, clients=50, k=k)
    report["load_after"] = os.getloadavg()
    return report


def table(report: dict) -> str:
    off = report["modes"].get("off", {}).get("wall_ms_per_query")
    lines = [f"{'mode':<11} {'uAP':>6} {'R@P90':>6} {'acc@1':>6} {'ms/query':>9} {'x off':>5} "
             f"{'q/s':>6} {'verified':>8} | engine p50/p95/p99 ms   | http p50/p95/p99 ms"]
    for name, m in report["modes"].items():
        e, h = m["engine_single"], m.get("http_single", {})
        rp = "n/a" if m["R@P90"] is None else f"{m['R@P90']:.4f}"
        ratio = f"{m['wall_ms_per_query'] / off:.2f}" if off else "-"
        lines.append(f"{name:<11} {m['uAP']:.4f} {rp:>6} {m['acc@1']:.4f} "
                     f"{m['wall_ms_per_query']:>9.1f} {ratio:>5} {m['queries_per_s']:>6.2f} "
                     f"{m['pairs_verified']:>8} | {e['p50_ms']:>6.1f} {e['p95_ms']:>6.1f} "
                     f"{e['p99_ms']:>6.1f} | {h.get('p50_ms', 0):>6.1f} {h.get('p95_ms', 0):>6.1f} "
                     f"{h.get('p99_ms', 0):>6.1f}")
    if "reference_keypoints" in report:
        ref = report["reference_keypoints"]
        lines.append(f"reference keypoints prepared once: {ref['references']} references in "
                     f"{ref['seconds']} s (banded-cold: an empty cache, references prepared on first use)")
    if "http_load_50_clients" in report:
        load = report["http_load_50_clients"]
        lines.append(f"50 concurrent clients: {load['errors']} errors, p50 {load['p50_ms']} ms, "
                     f"p99 {load['p99_ms']} ms, {load['queries_per_s']} q/s, health p50 "
                     f"{load['health_p50_ms']} ms (max {load['health_max_ms']} ms)")
    if "load_before" in report:
        lines.append("load average (1/5/15 min) before: " + " ".join(
            f"{x:.2f}" for x in report["load_before"]) + ", after: " + " ".join(
            f"{x:.2f}" for x in report.get("load_after", [])))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-latency", help="work folder")
    parser.add_argument("--model", default="default")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--limit", type=int, help="only the first N queries")
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--backend", default="processes",
                        choices=[b.value for b in VerifyBackend])
    parser.add_argument("--calibration", type=Path, help="calibration.json to use")
    parser.add_argument("--fit-band", action="store_true", help="fit the decision band")
    parser.add_argument("--no-service", action="store_true",
                        help="engine only (no HTTP runs, no 50-client load test)")
    parser.add_argument("--backends", action="store_true", help="compare verify backends")
    parser.add_argument("--many", type=int, default=1000,
                        help="queries in the --backends bulk run (dev queries repeated)")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("COPYTRACE_LOG", "WARNING").upper())
    data, work = dev_data_root(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    calibration = Calibration.load(args.calibration) if args.calibration else None
    if args.fit_band:
        print(json.dumps(fit_band_on_calibration(data, work, args.model, calibration,
                                                 args.backend, args.k), indent=2))
        return
    if args.backends:
        bench = ensure_dev_benchmark(data, work)
        index = ensure_index(bench / "references", work / "idx-dev", args.model)
        files = sorted((bench / "queries").iterdir())[: args.limit]
        load = os.getloadavg()
        result = compare_backends(index, files, calibration, args.k, many=args.many,
                                  cache_dir=work / "keypoint-cache")
        print(json.dumps({"load_before": load, "load_after": os.getloadavg(), **result},
                         indent=2))
        print(f"{'backend':<10} verify ms/query: 1 query | {args.many} queries (wall ms/query)")
        for name, r in result.items():
            print(f"{name:<10} {r['verify_ms_per_query_1']:>22.1f} | "
                  f"{r['verify_ms_per_query_many']:>7.1f} ({r['wall_ms_per_query_many']:.1f})")
        return
    report = run(data, work, model=args.model, k=args.k, limit=args.limit, single=args.single,
                 backend=args.backend, calibration=calibration, service=not args.no_service)
    print(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
