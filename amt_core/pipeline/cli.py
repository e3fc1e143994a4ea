"""``amt run`` and ``amt figures``: thin wrappers of :func:`amt_core.pipeline.run.run_pipeline` and
:func:`amt_core.plots.make_all_figures` (heavy imports happen inside the handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the study notebooks with papermill into a run folder",
                       description="Execute notebooks/01..05 with a parameter preset into a run folder; "
                                   "steps whose inputs and parameters are unchanged are skipped (a run "
                                   "folder is its own resume). A non-empty folder that is not a run folder "
                                   "is refused unless --overwrite.")
    p.add_argument("--params", default="demo", help="a preset name (smoke, demo, study) or a parameter file "
                                                   "(YAML; default: demo)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/demo")
    p.add_argument("--force", action="store_true", help="rerun every step even if it is up to date")
    p.add_argument("--overwrite", action="store_true",
                   help="clear the --out folder first (any folder, a run folder too) and run every step afresh")
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these steps (e.g. 04_figures)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run)

    f = sub.add_parser("figures", help="regenerate the manuscript figures and tables from a run's results",
                       description="Rebuild every figure (PDF + PNG) and table (CSV + Markdown) from the "
                                   "saved results of a run folder; no model is needed. A folder of figures "
                                   "is replaced whole (figures.json names the run; a README is kept); any "
                                   "other non-empty folder is refused unless --overwrite.")
    f.add_argument("--run", default="latest",
                   help="run folder written by `amt run` (default: the run under runs/ evaluated last)")
    f.add_argument("--out", default="figures", help="output folder (tables go to OUT/tables)")
    f.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a folder of figures")
    f.set_defaults(func=_figures)


def _run(args) -> int:
    from amt_core.cli import UserError
    from amt_core.pipeline.run import StepError, run_pipeline

    try:
        run_pipeline(args.params, args.out, progress=not args.quiet, force=args.force, steps=args.only,
                     overwrite=args.overwrite)
    except StepError as exc:
        raise UserError(str(exc)) from None
    return 0


def _figures(args) -> int:
    from amt_core.cli import UserError
    from amt_core.pipeline.layout import latest_run
    from amt_core.plots import figures_run, make_all_figures

    run = args.run
    if run == "latest" and not Path(run).is_dir():
        try:
            run = latest_run("runs")
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    before = figures_run(args.out)
    written = make_all_figures(run, args.out, overwrite=args.overwrite)
    replaced = f" (replacing the figures of {before})" if before and before != str(Path(run).resolve()) else ""
    print(f"amt figures: wrote {len(written)} files from {run} to {args.out}{replaced}")
    return 0
