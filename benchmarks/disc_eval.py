"""`copytrace eval disc`: score a predictions CSV, or index + query + score in one go."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from copytrace.app.cli.output import Column
from copytrace.benchmarks.disc_io import read_ground_truth, read_predictions
from copytrace.benchmarks.metrics import Metrics, PredictedMatch, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscResult:
    metrics: Metrics
    predictions: Path | None
    index: Path | None


def score_predictions(predictions: list[PredictedMatch], ground_truth: str | Path) -> Metrics:
    gt, queries = read_ground_truth(ground_truth)
    unknown = {p.query for p in predictions} - queries
    if unknown:
        log.warning("%d predicted queries are not in the ground truth (counted as negatives)",
                    len(unknown))
    return evaluate(gt, predictions)


def eval_disc(
    ground_truth: str | Path,
    *,
    predictions: str | Path | None = None,
    queries: str | Path | None = None,
    references: str | Path | None = None,
    work: str | Path | None = None,
    k: int = 10,
    model: str = "default",
    use_ray: bool = True,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> DiscResult:
    """With `predictions`: score that CSV. With `queries` + `references`: build an index of the
    references (in `work`, reused when already built), query, then score."""
    if predictions is not None:
        return DiscResult(score_predictions(read_predictions(predictions), ground_truth),
                          Path(predictions), None)
    if queries is None or references is None:
        raise ValueError("give --predictions, or both --queries and --references")
    from copytrace.pipelines import build_index, query_index

    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="copytrace-disc-"))
    index = work / "index"
    build_index(references, index, model=model, use_ray=use_ray, ray_address=ray_address,
                show_progress=show_progress)
    out = work / "predictions.csv"
    query_index(queries, index, k=k, output=out, use_ray=use_ray, ray_address=ray_address,
                show_progress=show_progress)
    return DiscResult(score_predictions(read_predictions(out), ground_truth), out, index)


def metrics_table(rows: dict[str, Metrics]) -> str:
    """A plain-text table, one row per method."""
    def f(x: float | None) -> str:
        return "  n/a" if x is None else f"{x:.4f}"

    width = max(8, *(len(n) for n in rows))
    lines = [f"{'method':<{width}}  uAP     R@P90   acc@1   R@10    preds  positives"]
    for name, m in rows.items():
        lines.append(f"{name:<{width}}  {f(m.micro_ap)}  {f(m.recall_at_p90)}  {f(m.acc_at_1)}  "
                     f"{f(m.recall_at_10)}  {m.num_predictions:>5}  {m.num_positives:>9}")
    return "\n".join(lines)


def metric_rows(rows: dict[str, Metrics]) -> tuple[list[dict], list[Column]]:
    """The metrics as rows and columns for `app.cli.output.print_rows` (table, JSON, CSV)."""
    columns = [Column("method", is_id=True), Column("uAP", "µAP", numeric=True),
               Column("R@P90", numeric=True), Column("acc@1", numeric=True),
               Column("recall@10", "R@10", numeric=True), Column("predictions", "preds", numeric=True),
               Column("positives", numeric=True)]
    return [{"method": name, **m.as_dict()} for name, m in rows.items()], columns
