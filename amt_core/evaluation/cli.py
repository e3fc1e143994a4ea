"""``amt evaluate``: score a predictions folder against a cohort's reference labels (thin wrapper of
:func:`amt_core.evaluation.api.evaluate_predictions`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from amt_core.evaluation import config as c

    p = subparsers.add_parser(
        "evaluate", help="per-scan metrics, lesion-wise detection, FROC and bootstrap CIs of a predictions folder",
        description="Evaluate {case_id}.nii.gz masks (and optional {case_id}_prob.nii.gz probability maps) "
                    "against the reference labels of one split; writes per_case.csv, lesions.csv, "
                    "froc_confidence.csv, froc_iou.csv, ... and summary.json into --out.")
    p.add_argument("--cohort", required=True, metavar="CASES.csv", help="the cohort's case table")
    p.add_argument("--predictions", required=True, metavar="DIR", help="folder of {case_id}.nii.gz predictions")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (new or empty, else --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--split", default="test", help="split to evaluate (default: test; 'all' for every case)")
    p.add_argument("--config", metavar="JSON", help="EvalConfig as JSON (e.g. a summary.json's 'config'); "
                                                    "the flags below override it")
    p.add_argument("--n-boot", type=int, help="bootstrap resamples (default 10000; 0 = no intervals)")
    p.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    p.add_argument("--cluster-bootstrap", action="store_true", default=None,
                   help="resample institutions with their scans instead of scans")
    p.add_argument("--ci-method", choices=c.CI_METHODS)
    p.add_argument("--ci-level", type=float)
    p.add_argument("--threshold", type=float, help="probability threshold of candidates (default 0.5)")
    p.add_argument("--assignment", choices=c.ASSIGNMENTS)
    p.add_argument("--hit-criterion", choices=c.HIT_CRITERIA)
    p.add_argument("--extra-hits", choices=c.EXTRA_HITS)
    p.add_argument("--match-metric", choices=c.MATCH_METRICS)
    p.add_argument("--confidence", choices=c.CONFIDENCES)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)


_OVERRIDES = ("n_boot", "seed", "cluster_bootstrap", "ci_method", "ci_level", "threshold", "assignment",
              "hit_criterion", "extra_hits", "match_metric", "confidence")


def _evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from amt_core.atomic import check_output_dir
    from amt_core.data.cases import read_cases
    from amt_core.evaluation.api import evaluate_predictions
    from amt_core.evaluation.config import EvalConfig

    out, preds = Path(args.out).resolve(), Path(args.predictions).resolve()
    if out == preds or preds.is_relative_to(out):
        raise ValueError(f"--out {args.out} would replace the predictions folder {args.predictions}; choose another")
    check_output_dir(args.out, overwrite=args.overwrite, what="results folder", resumable=False)
    settings = {}
    if args.config:
        data = json.loads(Path(args.config).read_text())
        settings = data.get("config", data)
    settings |= {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    config = EvalConfig.from_dict(settings)
    cases = read_cases(args.cohort, check_files=False)
    result = evaluate_predictions(cases, args.predictions, split=None if args.split == "all" else args.split,
                                  config=config, progress=not args.no_progress)
    out = result.save(args.out, overwrite=args.overwrite)
    means = result.means
    print(f"{result.n_scans} scans: Dice {means['dice']:.3f}, IoU {means['iou']:.3f}, precision "
          f"{means['precision']:.3f}, recall {means['recall']:.3f}; {result.headline_text()}")
    print(f"results in {out}")
    return 0
