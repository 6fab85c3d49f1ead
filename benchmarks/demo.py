"""`make demo`: index real photos, find the originals of edited copies, print a DISC-style score.

Uses only photos that ship with scikit-image, so it runs on a fresh machine with no data. The
stereo pair `motorcycle_left`/`motorcycle_right` gives a hard negative: the same scene from
another viewpoint is not a copy.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import time
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from copytrace.benchmarks.disc_eval import metrics_table, score_predictions
from copytrace.benchmarks.disc_io import read_predictions
from copytrace.benchmarks.pdq import pdq_predictions
from copytrace.descriptors.augment import EditContext, random_copy
from copytrace.indexing.atomic import write_bytes_atomic

DEMO_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
    "motorcycle", "immunohistochemistry", "brick", "grass", "gravel", "coins", "moon",
    "page", "text", "cell", "clock", "colorwheel", "logo", "microaneurysms", "horse",
)
HARD_NEGATIVE = "motorcycle_right"


def _photo(name: str) -> Image.Image:
    from skimage import data

    if name in ("motorcycle", HARD_NEGATIVE):  # a stereo pair: left view, right view
        arr = data.stereo_motorcycle()[0 if name == "motorcycle" else 1]
    else:
        arr = getattr(data, name)()
    if arr.dtype != "uint8":
        arr = (arr > 0).astype("uint8") * 255 if arr.dtype == bool else arr.astype("uint8")
    return Image.fromarray(arr).convert("RGB")


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_demo_set(out: Path, *, seed: int = 0, copies: int = 2) -> tuple[Path, Path, Path]:
    """references/, queries/ and gt.csv from scikit-image's photos."""
    refs, queries = out / "references", out / "queries"
    photos = {}
    for name in DEMO_PHOTOS:
        try:
            photos[name] = _photo(name)
        except Exception:  # noqa: BLE001 - an older scikit-image may lack one photo
            continue
    rng = random.Random(seed)
    gt_lines = ["query_id,reference_id"]
    for name, img in photos.items():
        write_bytes_atomic(refs / f"{name}.jpg", _jpeg(img, 95))
        others = [p for n, p in photos.items() if n != name]
        for i in range(copies):
            copy, recipe = random_copy(img, rng, context=EditContext(others=others))
            qid = f"{name}__copy{i}_{'+'.join(recipe.edits)}"
            write_bytes_atomic(queries / f"{qid}.jpg", _jpeg(copy))
            gt_lines.append(f"{qid},{name}")
    try:
        write_bytes_atomic(queries / f"{HARD_NEGATIVE}.jpg", _jpeg(_photo(HARD_NEGATIVE)))
        gt_lines.append(f"{HARD_NEGATIVE},")
    except Exception:  # noqa: BLE001
        pass
    gt = out / "gt.csv"
    write_bytes_atomic(gt, ("\n".join(gt_lines) + "\n").encode())
    return refs, queries, gt


def main() -> None:
    parser = argparse.ArgumentParser(description="copytrace demo on scikit-image's photos")
    parser.add_argument("--out", default="out/demo", help="demo folder (recreated)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    refs, queries, gt = make_demo_set(out, seed=args.seed)
    console.rule("copytrace demo")
    console.print(f"{len(list(refs.iterdir()))} reference photos, {len(list(queries.iterdir()))} "
                  f"queries (edited copies + 1 hard negative) in {out}")

    from copytrace.pipelines.build import build_index
    from copytrace.pipelines.query import query

    t = time.perf_counter()
    report = build_index(refs, out / "index", use_ray=True)
    console.print(f"index built with local Ray in {time.perf_counter() - t:.1f}s: "
                  f"{report.indexed} images, FAISS {report.index_spec}, model {report.model_id}")
    t = time.perf_counter()
    results = query(queries, out / "index", k=5, output=out / "predictions.csv")
    console.print(f"{len(results)} queries answered in {time.perf_counter() - t:.1f}s")

    table = Table("query", "edits", "top match", "score", "correct")
    truth = dict(line.split(",", 1) for line in gt.read_text().splitlines()[1:])
    for r in sorted(results, key=lambda r: r.query_id):
        top = r.matches[0] if r.matches else None
        expected = truth.get(r.query_id, "")
        name, _, edits = r.query_id.partition("__")
        ok = (top is not None and top.reference_id == expected) if expected else None
        mark = "—" if ok is None else ("[green]yes[/green]" if ok else "[red]no[/red]")
        table.add_row(name, edits.partition("_")[2] or "(other viewpoint)",
                      top.reference_id if top else "-", f"{top.score:.3f}" if top else "-", mark)
    console.print(table)
    rows = {"copytrace": score_predictions(read_predictions(out / "predictions.csv"), gt),
            "PDQ (peer)": score_predictions(pdq_predictions(queries, refs, k=5), gt)}
    console.print(metrics_table(rows), markup=False, highlight=False)


if __name__ == "__main__":
    main()
