"""`make demo`: index real photos, find the originals of edited copies, and explain the result.

Uses only photos that ship with scikit-image, so it runs on a fresh machine with no data. It says
what it indexed and which edits it made, gives a verdict per query at the 0.5 threshold and the
likely reason for each wrong one, scores the run like DISC2021 beside the PDQ hash, localizes the
edits of one found copy and writes the HTML evaluation report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from copytrace.benchmarks.demo_set import DEMO_PHOTOS, DemoSet, make_demo_set
from copytrace.benchmarks.demo_story import THRESHOLD, Verdict, judge
from copytrace.benchmarks.disc_eval import metrics_table, score_predictions
from copytrace.benchmarks.disc_io import read_predictions
from copytrace.benchmarks.eval_report import LEGEND, write_disc_report
from copytrace.benchmarks.metrics import PredictedMatch
from copytrace.matching import QueryResult
from copytrace.util import progress_bar

STEPS = 6
LOCAL_EDITS = ("text", "shapes", "paste_other", "stripes", "meme")  # edits a mask can show


class Story:
    """Numbered steps with their wall time, printed as they happen."""

    def __init__(self, console: Console):
        self.console, self.n, self.t = console, 0, time.perf_counter()

    def step(self, text: str) -> None:
        self.n += 1
        self.console.print(f"\n[bold cyan]{self.n}/{STEPS}[/] [bold]{text}[/] "
                           f"[dim]({time.perf_counter() - self.t:.0f}s)[/]")


def bullets(console: Console, items: Sequence[tuple[str, str]]) -> None:
    """`name: text` lines whose text wraps under itself (a hanging indent) at any width."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for name, text in items:
        grid.add_row(name, text)
    console.print(grid, highlight=False)


def describe_set(console: Console, demo: DemoSet) -> None:
    copies = [c for c in demo.copies if c.original]
    edits = Counter(e for c in copies for e in c.edits)
    console.print(f"{len({c.original for c in copies})} reference photos from scikit-image -> "
                  f"{demo.references}")
    console.print(f"{len(copies)} edited copies (1-3 random edits each, then usually a JPEG "
                  f"re-encode) + 1 hard negative (the other view of the stereo pair 'motorcycle', "
                  f"similar but NOT a copy) -> {demo.queries}")
    console.print("edits used: " + ", ".join(f"{e} x{n}" for e, n in edits.most_common()),
                  highlight=False)


def verdict_table(verdicts: Sequence[Verdict]) -> Table:
    """One row per query; fits 80 columns (edits wrap, ids never do)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("query", no_wrap=True)
    table.add_column("edits", overflow="fold")
    table.add_column("top match", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("correct", no_wrap=True)
    for v in verdicts:
        c = v.copy
        edits = " ".join(e for e in c.edits) if c.original else "(other view)"
        mark = ("[green]yes*[/]" if v.inserted else "[green]yes[/]") if v.correct else "[red]NO[/]"
        table.add_row(c.label, edits, v.top or "-", "-" if v.score is None else f"{v.score:.3f}",
                      str(v.rank or "-") if c.original else "", "copy" if v.is_copy else "no copy",
                      mark)
    return table


def explain(console: Console, verdicts: Sequence[Verdict]) -> None:
    copies = [v for v in verdicts if v.copy.original]
    outcomes = Counter(v.outcome for v in verdicts)
    console.print(f"At the {THRESHOLD} threshold: {outcomes['found']} of {len(copies)} copies found "
                  f"with the right original, {outcomes['missed']} missed (scored below "
                  f"{THRESHOLD}), {outcomes['wrong original']} matched to another photo; hard "
                  f"negative {'rejected' if outcomes['rejected'] else 'FALSELY called a copy'}.")
    console.print("rank = where the true original is among the 5 candidates; 'correct' = the "
                  "verdict (copy of the right original, or no copy) is right.", style="dim")
    if any(v.inserted for v in verdicts):
        console.print("yes* = the query holds two indexed photos: the original was pasted into the "
                      "top match, and both are reported as copies with their roles (inserted, "
                      "background).", style="dim")
    wrong = [v for v in verdicts if not v.correct]
    if wrong:
        console.print(f"\n[bold]Why the {len(wrong)} wrong verdicts[/] (query, then the likely reason)")
        bullets(console, [(v.copy.label, v.why) for v in wrong])


def pick_localization(verdicts: Sequence[Verdict]) -> Verdict | None:
    """A found copy whose edit leaves a visible mark (text, shapes, an overlay), else any found one."""
    found = [v for v in verdicts if v.outcome == "found" and not v.inserted]
    local = [v for v in found if set(v.copy.edits) & set(LOCAL_EDITS)
             and not {"crop", "rotate", "perspective", "flip"} & set(v.copy.edits)]
    return (local or found or [None])[0]


def localize_one(console: Console, demo: DemoSet, verdicts: Sequence[Verdict], out: Path) -> Path | None:
    from copytrace.pipelines import localize_pair

    v = pick_localization(verdicts)
    if v is None:
        console.print("no found copy to localize")
        return None
    o = localize_pair(demo.queries / f"{v.copy.query_id}.jpg", demo.references / f"{v.top}.jpg",
                      out_dir=out, query_id=v.copy.query_id, reference_id=v.top, overlay=True)
    if o.error:
        console.print(f"{v.copy.query_id}: not localized: {o.error}", markup=False)
        return None
    console.print(f"{v.copy.query_id} vs {v.top}: {o.regions} edited region(s) over "
                  f"{o.edited_fraction:.1%} of the copy, added content {o.added_fraction:.1%}",
                  highlight=False)
    return Path(o.overlay)


def print_metrics(console: Console, rows: dict) -> None:
    console.print(metrics_table(rows), markup=False, highlight=False)
    legend = {**LEGEND, "R@10": LEGEND["R@10"] + " (the demo keeps 5 candidates: here R@5)"}
    bullets(console, [*legend.items(), ("PDQ", "Meta's perceptual hash, the usual non-learned "
                                         "baseline, on the same images (score = 1 - Hamming "
                                         "distance / 256)")])


def run_queries(demo: DemoSet, out: Path) -> list[QueryResult]:
    from copytrace.pipelines import query_index

    return query_index(demo.queries, out / "index", k=5, output=out / "predictions.csv").results


def main() -> None:
    parser = argparse.ArgumentParser(description="copytrace demo on scikit-image's photos")
    parser.add_argument("--out", default="out/demo", help="demo folder (recreated)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random edits")
    parser.add_argument("--copies", type=int, default=2, help="edited copies per reference photo")
    args = parser.parse_args()
    console = Console()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    story = Story(console)
    console.rule("copytrace demo")
    story.step("Make a test set: photos as references, edited copies as queries")
    with progress_bar("making copies", total=len(DEMO_PHOTOS)) as advance:
        demo = make_demo_set(out, seed=args.seed, copies=args.copies, advance=advance)
    describe_set(console, demo)

    from copytrace.pipelines import build_index

    story.step("Index the references (descriptor + FAISS, a local Ray job)")
    report = build_index(demo.references, out / "index", use_ray=True)
    console.print(f"{report.indexed} images indexed: FAISS {report.index_spec}, model "
                  f"{report.model_id} -> {report.index}", highlight=False)

    story.step(f"Query: 5 candidates each, verified, scored (>= {THRESHOLD}: copy)")
    results = run_queries(demo, out)
    by_id = {r.query_id: r for r in results}
    verdicts = [judge(c, by_id[c.query_id]) for c in demo.copies if c.query_id in by_id]
    console.print(verdict_table(verdicts))
    explain(console, verdicts)

    from copytrace.benchmarks.pdq import pdq_predictions

    story.step("Score it like DISC2021, beside the PDQ hash")
    ours = read_predictions(out / "predictions.csv")
    pdq: list[PredictedMatch] = pdq_predictions(demo.queries, demo.references, k=5)
    print_metrics(console, {"copytrace": score_predictions(ours, demo.ground_truth),
                            "PDQ (peer)": score_predictions(pdq, demo.ground_truth)})

    story.step("Localize the edits of one found copy")
    overlay = localize_one(console, demo, verdicts, out / "localize")

    story.step("Write the evaluation report (HTML)")
    page = write_disc_report(out / "report", demo.ground_truth, ours, queries=demo.queries,
                             references=demo.references, baselines={"PDQ (peer)": pdq})
    console.rule(f"done in {time.perf_counter() - story.t:.0f}s")
    console.print("[bold]Where to look next[/]")
    looks = [("report", f"{page}\n  PR curve, score histograms, worst misses and false positives")]
    if overlay is not None:
        looks.insert(0, ("overlay", f"{overlay}\n  original | copy | where it was edited"))
    looks.append(("evidence", f"{cli_name()} query {demo.queries}/<file> --index {out / 'index'} "
                              "--json"))
    bullets(console, looks)


def cli_name() -> str:
    """How to call the CLI from the user's shell: `copytrace` when it is on PATH, else the
    venv's script (a fresh shell after `make demo` has not activated .venv)."""
    found = shutil.which("copytrace")
    script = Path(sys.executable).with_name("copytrace")
    if found and Path(found).resolve() == script.resolve():
        return "copytrace"
    return os.path.relpath(script) if script.exists() else "copytrace"


if __name__ == "__main__":
    main()
