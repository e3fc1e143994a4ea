"""``amt cohort``: write a synthetic cohort folder (or just its study design)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from amt_core import registry

    p = sub.add_parser(
        "cohort",
        help="generate the synthetic multi-institution cohort",
        description="Write a synthetic cohort folder (nnU-Net v2 raw layout + cases.csv).",
    )
    p.add_argument(
        "--preset",
        choices=registry.COHORT_PRESETS,
        default=None,
        help="resolution: tiny (tests), demo (128x128 matrix, laptop; the default), full (512x512, native slices)",
    )
    p.add_argument("--n-cases", type=int, default=None, help="number of patients (default: the study's 711)")
    p.add_argument(
        "--n-institutions",
        type=int,
        default=None,
        help="number of institutions (default: 136 for 711 cases, proportional otherwise)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="cohort folder to write (new or empty, else see below)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out whole (built beside it, then swapped in)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted cohort of the same settings (valid cases are kept)",
    )
    p.add_argument("--design-only", action="store_true", help="write only the case table of the design")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary", action="store_true", help="print Table 1 of the cohort when done")
    p.add_argument(
        "--real-anatomy",
        type=int,
        default=0,
        metavar="N",
        help="add N (at most 4) external-test scans with tumours inserted into the bundled real "
        "chest CTs, in institutions of their own (case-table column anatomy = real)",
    )
    p.add_argument(
        "--backgrounds",
        metavar="DIR",
        default=None,
        help="insert the tumours into the tumour-free chest CTs of DIR (NIfTI/NRRD/DICOM; one "
        "case per scan, one scan per patient; optional DIR/backgrounds.csv) instead of "
        "drawing the anatomy; 'bundled' = the four real chest CTs shipped with amt. "
        "Rejected insertions are listed in OUT/rejections.csv",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from amt_core.synth.generate import build_cohort

    if args.n_cases is not None and args.n_cases < 3:
        raise ValueError(f"--n-cases must be at least 3 (one case per split), got {args.n_cases}")
    if args.backgrounds is not None:
        return _run_hybrid(args)
    csv = build_cohort(
        args.out,
        preset=args.preset or "demo",
        n_cases=args.n_cases,
        seed=args.seed,
        n_institutions=args.n_institutions,
        design_only=args.design_only,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        resume=args.resume,
        real_anatomy=args.real_anatomy,
    )
    print(f"cohort case table: {csv}")
    _print_summary(args, csv)
    return 0


def _print_summary(args: argparse.Namespace, csv) -> None:
    """Table 1 of the cohort when ``--summary`` asks for it (synthetic and hybrid cohorts alike)."""
    if args.summary:
        import pandas as pd

        from amt_core.synth.summary import table_one

        print(table_one(pd.read_csv(csv)).to_string())


def _run_hybrid(args: argparse.Namespace) -> int:
    from amt_core.synth.hybrid import build_hybrid_cohort, bundled_backgrounds

    if args.resume or args.design_only:
        raise ValueError(
            "--backgrounds cannot be combined with --resume or --design-only (a hybrid "
            "cohort is rebuilt whole: use --overwrite)"
        )
    given = {
        "--preset": args.preset is not None,
        "--n-institutions": args.n_institutions is not None,
        "--workers": args.workers is not None,
        "--real-anatomy": bool(args.real_anatomy),
    }
    if any(given.values()):  # never silently ignored
        raise ValueError(
            f"--backgrounds cannot be combined with {', '.join(k for k, v in given.items() if v)}: a hybrid "
            "cohort keeps each background's own grid, makes each patient an institution of its own, is built "
            "in one process, and its scans are all real anatomy"
        )
    folder = bundled_backgrounds() if args.backgrounds == "bundled" else args.backgrounds
    csv = build_hybrid_cohort(
        folder,
        args.out,
        n_cases=args.n_cases,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"cohort case table: {csv}")
    _print_summary(args, csv)
    return 0
