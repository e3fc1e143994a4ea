"""``amt cohort``: write a synthetic cohort folder (or just its study design)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from amt_core import registry

    p = sub.add_parser("cohort", help="generate the synthetic multi-institution cohort",
                       description="Write a synthetic cohort folder (nnU-Net v2 raw layout + cases.csv).")
    p.add_argument("--preset", choices=registry.COHORT_PRESETS, default="demo",
                   help="resolution: tiny (tests), demo (128x128 matrix, laptop), full (512x512, native slices)")
    p.add_argument("--n-cases", type=int, default=None, help="number of patients (default: the study's 711)")
    p.add_argument("--n-institutions", type=int, default=None,
                   help="number of institutions (default: 136 for 711 cases, proportional otherwise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="cohort folder to write (new or empty, else see below)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (built beside it, then swapped in)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted cohort of the same settings (valid cases are kept)")
    p.add_argument("--design-only", action="store_true", help="write only the case table of the design")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary", action="store_true", help="print Table 1 of the cohort when done")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from amt_core.synth.generate import build_cohort

    if args.n_cases is not None and args.n_cases < 3:
        raise ValueError(f"--n-cases must be at least 3 (one case per split), got {args.n_cases}")
    csv = build_cohort(args.out, preset=args.preset, n_cases=args.n_cases, seed=args.seed,
                       n_institutions=args.n_institutions, design_only=args.design_only,
                       workers=args.workers, progress=not args.no_progress, overwrite=args.overwrite,
                       resume=args.resume)
    print(f"cohort case table: {csv}")
    if args.summary:
        import pandas as pd

        from amt_core.synth.summary import table_one

        print(table_one(pd.read_csv(csv)).to_string())
    return 0
