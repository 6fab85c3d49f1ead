"""copytrace.matching: query -> ranked, verified, localized matches: search and ranking,
normalization, verification, calibration, registration, diff maps, and the rules that judge a
pair (templates, view check, keep rule).

Modules:
    align.py         Keypoint alignment of a query onto a reference [tests: test_localize.py,
                     test_verify.py]
    calibrate.py     One calibrated score in [0, 1] from global and local evidence; 0.5 is the
                     decision threshold [tests: test_dedup.py, test_matching.py,
                     test_query_engine.py, ...]
    clusters.py      Group duplicate pairs into clusters (connected components, union-find) and pick
                     the image of each cluster to keep [tests: test_dedup.py]
    diffmap.py       Difference maps between a query and its registered original that ignore
                     redistribution noise
    edit_objects.py  Edit masks to edit objects
    expand.py        Global-local query expansion [tests: test_matching.py]
    extra_views.py   The second pass: the turned, small-region and grid-tile views of the queries
                     without a confident match, embedded in one model call and searched once
                     [tests: test_small_copies.py, test_rotations.py, test_grid_tiles.py]
    grid_tiles.py    Fixed overlapping grid tiles of a query without a confident match, for a copy
                     without straight borders (ISC2021's query crops) [tests: test_grid_tiles.py]
    isc_csv.py       The ISC2021 / DISC2021 CSV files, read and written here only (as isc2021's
                     `io.py` does)
    keep_rule.py     `--keep largest` by content, not raw pixels [tests: test_dedup.py]
    localize.py      Manipulation-diff localization [tests: test_localize.py]
    normalize.py     Score normalization against a background set (the ISC2021 / SSCD recipe)
                     [tests: test_matching.py]
    overlay.py       The picture a person checks a localization with [tests: test_localize.py]
    pdq.py           PDQ hash lists [tests: test_dedup.py, test_dedup_features.py]
    query_image.py   One query image, decoded once
    rank.py          From query views to ranked, verified matches
    register.py      Pixel-accurate registration of a query onto its original, for diffing them
                     [tests: test_localize.py]
    residuals.py     What a second photograph leaves in a verified pair: the inlier residuals'
                     smooth field, shading no global gain explains [tests: test_dedup_views.py,
                     test_view_check_query.py]
    results.py       The records a query returns [tests: test_demo.py, test_output.py]
    roles.py         Two originals in one query: which was pasted into which [tests: test_roles.py]
    rotations.py     Rotated query views for queries without a confident match
                     [tests: test_rotations.py]
    similarity_search.py Registration without keypoints
    small_copies.py  Views for a copy shown small inside the query (a screenshot frame, a small
                     paste), for queries without a confident match [tests: test_small_copies.py]
    templates.py     Content, not templates [tests: test_dedup.py, test_dedup_features.py]
    verify.py        Local verification of a candidate match [tests: test_dedup.py,
                     test_dedup_views.py, test_verify.py, ...]
    view_check.py    Copy, or another photo of the same flat object? The dedup audit's check on
                     verified geometry [tests: test_dedup.py, test_dedup_views.py]

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "AlignmentError": "localize",
    "Analysis": "localize",
    "Calibration": "calibrate",
    "Decision": "calibrate",
    "ExpandConfig": "expand",
    "Localization": "localize",
    "LocalizeConfig": "localize",
    "Match": "results",
    "MatchConfig": "rank",
    "NormalizeConfig": "normalize",
    "ObjectConfig": "edit_objects",
    "PREDICTIONS_HEADER": "isc_csv",
    "Prediction": "isc_csv",
    "RoleConfig": "roles",
    "QueryResult": "results",
    "QueryViews": "rank",
    "RotateConfig": "expand",
    "SHIPPED_VIEW_CHECK": "view_check:SHIPPED",
    "TemplateConfig": "templates",
    "VIEW_FEATURES": "view_check",
    "VerifyConfig": "verify",
    "ViewCheck": "view_check",
    "accepted_to_verify": "roles",
    "analyze": "localize",
    "assign_roles": "roles",
    "split_roles": "roles",
    "best_per_query": "isc_csv",
    "candidate_decisions": "rank",
    "candidates": "rank",
    "fill_holes": "localize",
    "finalize": "rank",
    "fit_band": "calibrate",
    "fit_calibration": "calibrate",
    "fit_view_check": "view_check",
    "fused_score": "calibrate",
    "global_score_only": "calibrate",
    "iou": "expand",
    "load_calibration": "calibrate",
    "load_rgb": "verify",
    "localize_edits": "localize:localize",
    "predictions_csv": "isc_csv",
    "prepare_for_verify": "verify:prepare",
    "range_pairs": "pdq",
    "read_ground_truth": "isc_csv",
    "read_hash_list": "pdq",
    "read_predictions": "isc_csv",
    "rotation_pass": "rotations",
    "rotation_views": "rotations",
    "second_pass": "extra_views",
    "segment": "localize",
    "shipped_view_check": "view_check",
    "small_copy_pass": "small_copies",
    "small_copy_views": "small_copies",
    "small_regions": "small_copies",
    "tile_boxes": "grid_tiles",
    "tile_views": "grid_tiles",
    "verify_prepared": "verify",
    "view_features": "view_check",
    "write_predictions": "isc_csv",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
