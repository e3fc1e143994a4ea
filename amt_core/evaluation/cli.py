"""``amt evaluate``: score a predictions folder against a cohort's reference labels (``--cohort``: thin
wrapper of :func:`amt_core.evaluation.api.evaluate_predictions`) or against a labels folder with no case
table (``--labels``: :func:`amt_core.evaluation.folders.evaluate_folders`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from amt_core.evaluation import config as c

    p = subparsers.add_parser(
        "evaluate",
        help="per-scan metrics, lesion-wise detection, FROC and bootstrap CIs of a predictions folder",
        description="Evaluate {case}.nii.gz masks (and optional {case}_prob.nii.gz probability maps or "
        "nnU-Net's {case}.npz) against reference labels: those of one split of a cohort "
        "(--cohort), or a labels folder matched by file name (--labels, nnU-Net style; "
        "--metadata adds institutions and sub-groups). Writes per_case.csv, lesions.csv, "
        "froc_confidence.csv, froc_iou.csv, ... and summary.json into --out.",
    )
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--cohort", metavar="CASES.csv", help="the cohort's case table")
    ref.add_argument(
        "--labels", metavar="DIR", help="folder of reference labels {case}.nii.gz (no case table)"
    )
    p.add_argument("--predictions", required=True, metavar="DIR", help="folder of {case}.nii.gz predictions")
    p.add_argument(
        "--metadata",
        metavar="CSV",
        help="with --labels: case_id plus any of institution_id, sex, age, histology, "
        "tumour_volume_ml, contrast, slice_thickness_mm, vendor (a cohort's cases.csv will do)",
    )
    p.add_argument(
        "--pattern",
        metavar="TEMPLATE",
        help="with --labels: file names of both folders, '{case}' the case id (default {case}.nii.gz)",
    )
    p.add_argument(
        "--label-pattern",
        metavar="TEMPLATE",
        help="with --labels: file names of the labels when they differ (default: --pattern)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="with --labels: score a label without a prediction as an empty mask (named in "
        "summary.json) instead of stopping",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="results folder (new or empty, else --overwrite)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--split", help="with --cohort: split to evaluate (default: test; 'all' for every case)")
    p.add_argument(
        "--config",
        metavar="JSON",
        help="EvalConfig as JSON (e.g. a summary.json's 'config'); the flags below override it",
    )
    p.add_argument("--n-bootstrap", type=int, help="bootstrap resamples (default 10000; 0 = no intervals)")
    p.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    p.add_argument(
        "--cluster-bootstrap",
        action="store_true",
        default=None,
        help="resample institutions with their scans instead of scans",
    )
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


_OVERRIDES = (
    "n_bootstrap",
    "seed",
    "cluster_bootstrap",
    "ci_method",
    "ci_level",
    "threshold",
    "assignment",
    "hit_criterion",
    "extra_hits",
    "match_metric",
    "confidence",
)


def _evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from amt_core.atomic import check_output_dir
    from amt_core.data.cases import read_cases
    from amt_core.evaluation.api import evaluate_predictions
    from amt_core.evaluation.config import EvalConfig
    from amt_core.evaluation.folders import DEFAULT_PATTERN, evaluate_folders

    out, preds = Path(args.out).resolve(), Path(args.predictions).resolve()
    if out == preds or preds.is_relative_to(out):
        raise ValueError(
            f"--out {args.out} would replace the predictions folder {args.predictions}; choose another"
        )
    labels = Path(args.labels).resolve() if args.labels else None
    if labels is not None and (out == labels or labels.is_relative_to(out)):
        raise ValueError(f"--out {args.out} would replace the labels folder {args.labels}; choose another")
    check_output_dir(args.out, overwrite=args.overwrite, what="results folder", resumable=False)
    settings = {}
    if args.config:
        data = json.loads(Path(args.config).read_text())
        settings = data.get("config", data)
    settings |= {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    try:
        config = EvalConfig.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{args.config}: {exc}" if args.config else str(exc)) from None
    if args.cohort:
        only_folders = [f for f in ("metadata", "pattern", "label_pattern") if getattr(args, f) is not None]
        if only_folders or args.allow_missing:
            flag = "--" + (only_folders[0] if only_folders else "allow_missing").replace("_", "-")
            raise ValueError(f"{flag} goes with --labels; with --cohort the case table gives the cases")
        cases = read_cases(args.cohort, check_files=False)
        split = args.split or "test"
        result = evaluate_predictions(
            cases,
            args.predictions,
            split=None if split == "all" else split,
            config=config,
            progress=not args.no_progress,
        )
    else:
        if args.split is not None:
            raise ValueError(
                "--split goes with --cohort; with --labels every case of the folder is evaluated"
            )
        result = evaluate_folders(
            args.labels,
            args.predictions,
            metadata=args.metadata,
            pattern=args.pattern or DEFAULT_PATTERN,
            label_pattern=args.label_pattern,
            allow_missing=args.allow_missing,
            config=config,
            progress=not args.no_progress,
        )
    out = result.save(args.out, overwrite=args.overwrite)
    means = result.means
    print(
        f"{result.n_scans} scans: Dice {means['dice']:.3f}, IoU {means['iou']:.3f}, precision "
        f"{means['precision']:.3f}, recall {means['recall']:.3f}; {result.headline_text()}"
    )
    for line in _notes(result.summary):
        print(line)
    print(f"results in {out}")
    return 0


def _notes(summary: dict) -> list[str]:
    """What a folder evaluation could not do (summary.json says the same)."""
    lines = []
    if summary.get("missing_predictions"):
        lines.append(f"scored as empty masks (no prediction): {', '.join(summary['missing_predictions'])}")
    meta = summary.get("metadata")
    if meta and meta.get("note") != "complete":
        lines.append(f"metadata: {meta['note']}")
    boot = summary.get("bootstrap") or {}
    if boot.get("n_bootstrap") and not boot.get("estimable", True):
        lines.append(f"intervals ({boot.get('unit')} bootstrap): {boot.get('note')}")
    elif boot.get("caution"):
        lines.append(f"intervals ({boot.get('unit')} bootstrap): {boot.get('caution')}")
    return lines
