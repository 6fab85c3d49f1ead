"""copytrace.benchmarks: DISC-style evaluation and speed / scale / quality benchmarks, through the
public APIs only; each prints JSON and a table.

Modules:
    adapter_cost.py  Query cost of adapters: `--adapter none`, one, `all`, interleaved
    cli.py           `copytrace eval` and `copytrace bench`
    cli_startup.py   CLI start-up
    dedup_bench.py   Dedup benchmark
    dedup_fit.py     Fit the dedup audit's "copy or another view" check on the planted FIT split
                     (never on TEST)
    dedup_planted.py A dedup benchmark folder with planted copies and planted look-alikes that are
                     NOT duplicates [tests: test_dedup.py]
    demo.py          `make demo` [tests: test_demo.py]
    demo_set.py      The demo's data [tests: test_demo.py]
    demo_story.py    What the demo says about each query [tests: test_demo.py]
    descriptor_bench.py Descriptor-only benchmark
    dev_benchmark.py Development benchmark
    disc_eval.py     `copytrace eval disc`
    disc_io.py       DISC2021 files as the metrics' records [tests: test_eval_report.py]
    distractor_eval.py Accuracy at catalog scale
    edit_families.py Accuracy per edit family [tests: test_matching_bench.py]
    eval_report.py   `copytrace eval disc --report DIR` [tests: test_eval_report.py]
    hidden_copies.py Copies that hide: dev references small inside screenshots and other photos,
                     some turned; through the query engine, before / after the small-copy pass
    localize_bench.py Localization benchmark with a fit/report split, next to two baselines
    localize_cases.py The pairs the localization benchmark scores
    localize_eval.py `copytrace eval localize` [tests: test_localize.py, test_localize_eval.py]
    localize_report.py `copytrace eval localize --report DIR`
    make_disc.py     `copytrace bench make-disc` [tests: test_make_disc.py, test_matching_bench.py]
    matching_bench.py Matching ablation on the dev benchmark
    metrics.py       DISC2021 / ISC2021 matching-track metrics, defined once [tests:
                     test_eval_report.py, test_metrics.py]
    new_patterns.py  Tamper patterns the training edits never made (mosaic, glitch bands, sticker
                     and polaroid frames, halftone) [tests: test_adapt.py]
    pattern_bench.py Query adapters on new patterns: before / after, and the other patterns
    pdq.py           PDQ (Facebook's perceptual hash) as the peer baseline
    proc_peak.py     Wall time and peak memory of a command, read from /proc
    query_latency.py Query latency and accuracy of the verification modes, through the engine and
                     over HTTP
    reliability.py   Reliability benchmark [tests: test_reliability_crash.py,
                     test_reliability_updates.py]
    scale.py         Scale benchmark
    scale_data.py    Vectors for the scale benchmark
    throughput.py    `make bench`
    train_throughput.py Training throughput [tests: test_train_views.py]

Nothing imports this package; it imports other packages only through their front doors.
Run each as `python -m copytrace.benchmarks.NAME --help`.
"""
