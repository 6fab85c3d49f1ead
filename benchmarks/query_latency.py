"""Query latency and accuracy of the verification modes, through the engine and over HTTP.

    python -m copytrace.benchmarks.query_latency --work /tmp/ct-latency [--limit N]
    python -m copytrace.benchmarks.query_latency --work /tmp/ct-latency --fit-band
    python -m copytrace.benchmarks.query_latency --work /tmp/ct-latency --backends

On the dev benchmark (`dev_benchmark.ensure_dev_benchmark`), for each verification mode
(`off` = --no-verify, `full` = every top candidate verified, `banded` = the default): the whole
query folder through `QueryEngine.query` (wall seconds per query, queries/s, µAP / R@P90 /
acc@1), then single-image queries one at a time through the engine and through the HTTP service
(p50 / p95 / p99), then 50 concurrent HTTP clients (errors, p50 / p99, health latency under
load). Each mode gets a fresh engine with no on-disk keypoint cache, so no mode profits from
another's work; the single-image runs come after the folder run (warm in-memory reference cache).

`--fit-band` runs full verification on the calibration benchmark (disjoint from the dev one) and
fits the decision band (`matching.calibrate.fit_band`); `--backends` times verification inline,
in a process pool and on Ray, at 1 query and at many. Prints JSON, then a table.
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
from pathlib import Path

import numpy as np

from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.metrics import PredictedMatch, evaluate
from copytrace.matching.calibrate import Calibration, fit_band, global_score_only
from copytrace.matching.results import QueryResult
from copytrace.pipelines.build import build_index
from copytrace.pipelines.engine import QueryEngine, QueryTimings, VerifyMode
from copytrace.pipelines.verify_pool import VerifyBackend

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


def open_engine(index: Path, calibration: Calibration | None, backend: str) -> QueryEngine:
    return QueryEngine.open(index, calibration=calibration, verify_backend=backend,
                            keypoint_cache=False)


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

    def __init__(self, index: Path, backend: str) -> None:
        import socket

        import uvicorn

        from copytrace.pipelines.service import ServiceConfig, create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # A long request timeout: the load test counts failures, not a busy box's queue waits.
        app = create_app(index, verify_backend=backend,
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


def compare_backends(index: Path, files: list[Path], calibration: Calibration | None,
                     k: int) -> dict:
    """Full verification only, per backend: 1 query at a time (20), and a batch."""
    out = {}
    for backend in (VerifyBackend.INLINE, VerifyBackend.PROCESSES, VerifyBackend.RAY):
        if backend is VerifyBackend.RAY:
            from copytrace.pipelines.ray_runtime import ensure_ray

            ensure_ray()  # start-up not counted
        with open_engine(index, calibration, backend.value) as engine:
            engine.query(files[:2], k=k, verify=VerifyMode.FULL)  # warm-up (pool start)
            engine.verifier.cache = type(engine.verifier.cache)(
                engine.verifier.cache.loader, config=engine.verifier.config)
            one = QueryTimings()
            for f in files[2:22]:
                engine.query([f], k=k, verify=VerifyMode.FULL, timings=one)
            many = QueryTimings()
            batch = files[22:]
            for s in range(0, len(batch), CHUNK):
                engine.query(batch[s : s + CHUNK], k=k, verify=VerifyMode.FULL, timings=many)
        out[backend.value] = {"verify_ms_per_query_1": round(1000 * one.verify / 20, 1),
                              "verify_ms_per_query_batch": round(1000 * many.verify / len(batch),
                                                                 1),
                              "batch_queries": len(batch)}
    return out


def run(data: Path, work: Path, *, model: str, k: int, limit: int | None, single: int,
        backend: str, calibration: Calibration | None) -> dict:
    bench = ensure_dev_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-dev", model)
    files = sorted((bench / "queries").iterdir())[:limit]
    rng = np.random.default_rng(0)
    sample = [files[i] for i in sorted(rng.choice(len(files), min(single, len(files)),
                                                  replace=False))]
    report: dict = {"benchmark": str(bench), "queries": len(files), "k": k, "backend": backend,
                    "cpus": os.cpu_count(), "modes": {}}
    for mode in MODES:
        log.warning("mode %s: %d queries through the engine", mode.value, len(files))
        with open_engine(index, calibration, backend) as engine:
            engine.query(files[:1], k=k, verify=VerifyMode.OFF)  # background, catalog, model
            results, wall, t = folder_run(engine, files, mode, k)
            report["modes"][mode.value] = {
                **accuracy(results, bench / "gt.csv"),
                "wall_ms_per_query": round(1000 * wall / len(files), 1),
                "queries_per_s": round(len(files) / wall, 2),
                "pairs_verified": t.pairs_verified, "pairs_decided": t.pairs_decided,
                "stage_ms_per_query": {s: round(1000 * getattr(t, s) / len(files), 1)
                                       for s in ("embed", "search", "verify")},
                "engine_single": single_run(engine, sample, mode, k)}
            report["calibration"] = engine.calibration.source
            report["band"] = str(engine.calibration.decision_band())
    with _Service(index, backend) as url:
        http_single(url, sample[:3], VerifyMode.OFF, k)  # warm-up
        for mode in MODES:
            report["modes"][mode.value]["http_single"] = http_single(url, sample, mode, k)
        report["http_load_50_clients"] = http_load(url, files, clients=50, k=k)
    return report


def table(report: dict) -> str:
    lines = [f"{'mode':<8} {'uAP':>6} {'R@P90':>6} {'acc@1':>6} {'ms/query':>9} {'q/s':>6} "
             f"{'verified':>8} | engine p50/p95/p99 ms      | http p50/p95/p99 ms"]
    for name, m in report["modes"].items():
        e, h = m["engine_single"], m.get("http_single", {})
        rp = "n/a" if m["R@P90"] is None else f"{m['R@P90']:.4f}"
        lines.append(f"{name:<8} {m['uAP']:.4f} {rp:>6} {m['acc@1']:.4f} "
                     f"{m['wall_ms_per_query']:>9.1f} {m['queries_per_s']:>6.2f} "
                     f"{m['pairs_verified']:>8} | {e['p50_ms']:>7.1f} {e['p95_ms']:>7.1f} "
                     f"{e['p99_ms']:>7.1f} | {h.get('p50_ms', 0):>7.1f} {h.get('p95_ms', 0):>7.1f} "
                     f"{h.get('p99_ms', 0):>7.1f}")
    if "http_load_50_clients" in report:
        load = report["http_load_50_clients"]
        lines.append(f"50 concurrent clients: {load['errors']} errors, p50 {load['p50_ms']} ms, "
                     f"p99 {load['p99_ms']} ms, {load['queries_per_s']} q/s, health p50 "
                     f"{load['health_p50_ms']} ms (max {load['health_max_ms']} ms)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-latency", help="work folder")
    parser.add_argument("--model", default="default")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--limit", type=int, help="only the first N queries")
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--backend", default="inline", choices=[b.value for b in VerifyBackend])
    parser.add_argument("--calibration", type=Path, help="calibration.json to use")
    parser.add_argument("--fit-band", action="store_true", help="fit the decision band")
    parser.add_argument("--backends", action="store_true", help="compare verify backends")
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
        files = sorted((bench / "queries").iterdir())[: args.limit or 150]
        result = compare_backends(index, files, calibration, args.k)
        print(json.dumps(result, indent=2))
        for name, r in result.items():
            print(f"{name:<10} verify ms/query: 1 query {r['verify_ms_per_query_1']:>7.1f}   "
                  f"batch of {r['batch_queries']} {r['verify_ms_per_query_batch']:>7.1f}")
        return
    report = run(data, work, model=args.model, k=args.k, limit=args.limit, single=args.single,
                 backend=args.backend, calibration=calibration)
    print(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
