"""``amt run``, ``amt figures`` and ``amt lab``: thin wrappers of :func:`amt_core.pipeline.run.run_pipeline`,
:func:`amt_core.plots.make_all_figures` and :mod:`amt_core.pipeline.lab` (heavy imports happen inside the
handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the study notebooks with papermill into a run folder",
        description="Execute notebooks/01..05 with a parameter preset into a run folder; "
        "steps whose inputs and parameters are unchanged are skipped (a run "
        "folder is its own resume). A non-empty folder that is not a run folder "
        "is refused unless --overwrite.",
    )
    p.add_argument(
        "--params",
        default="demo",
        help="a preset name (smoke, quick, demo, study) or a parameter file (YAML; default: demo)",
    )
    p.add_argument("--out", required=True, help="run folder, e.g. runs/demo")
    p.add_argument("--force", action="store_true", help="rerun every step even if it is up to date")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="clear the --out folder first (any folder, a run folder too) and run every step afresh",
    )
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these steps (e.g. 04_figures)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run)

    f = sub.add_parser(
        "figures",
        help="regenerate the manuscript figures and tables from a run's results",
        description="Rebuild every figure (PDF + PNG) and table (CSV + Markdown) from the "
        "saved results of a run folder; no model is needed. A folder of figures "
        "is replaced whole (figures.json names the run; a README is kept); any "
        "other non-empty folder is refused unless --overwrite.",
    )
    f.add_argument(
        "--run",
        default="latest",
        help="run folder written by `amt run` (default: the run under runs/ evaluated last)",
    )
    f.add_argument("--out", default="figures", help="output folder (tables go to OUT/tables)")
    f.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it is not a folder of figures"
    )
    f.set_defaults(func=_figures)

    lab = sub.add_parser(
        "lab",
        help="start JupyterLab on a run folder with the project's kernel",
        description="Start JupyterLab (python -m jupyterlab) rooted at a run folder, with "
        "this installation's kernel as the default. The study notebooks are "
        "jupytext scripts: `amt lab notebooks` in a checkout opens them, and a "
        "notebook saved there keeps its edit in notebooks/NAME.py.",
    )
    lab.add_argument(
        "folder",
        nargs="?",
        metavar="RUN",
        help="folder to open (default: the run under runs/ evaluated last, else the current folder)",
    )
    lab.add_argument("--port", type=int, help="server port (default: JupyterLab's, 8888 or the next free)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser")
    lab.add_argument(
        "--allow-root",
        action="store_true",
        help="let JupyterLab run as root (it refuses otherwise; e.g. in a container)",
    )
    lab.add_argument("--print-command", action="store_true", help="print the command instead of running it")
    lab.set_defaults(func=_lab)


def _run(args) -> int:
    from amt_core.cli import UserError
    from amt_core.pipeline.run import StepError, run_pipeline

    try:
        run_pipeline(
            args.params,
            args.out,
            progress=not args.quiet,
            force=args.force,
            steps=args.only,
            overwrite=args.overwrite,
        )
    except StepError as exc:
        raise UserError(str(exc)) from None
    return 0


def _figures(args) -> int:
    from amt_core.cli import UserError
    from amt_core.layout import latest_run
    from amt_core.plots import figures_run, make_all_figures

    run = args.run
    if run == "latest" and not Path(run).is_dir():
        try:
            run = latest_run("runs")
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    from amt_core.layout import RunLayout
    from amt_core.pipeline.run import incomplete_run

    layout = RunLayout.of(run)
    if not (layout.is_run_folder() or layout.evaluation("test").is_dir()):
        # a run of `amt run`, or a folder laid out like one by hand (docs/nnunet.md: evaluation/test, ...)
        raise UserError(
            f"{run}: not a run folder (no .steps/, params.yaml or evaluation/test/); pass --run runs/NAME"
        )
    left = incomplete_run(run)
    if left is not None:
        raise UserError(
            f"{run}: its last `amt run` did not finish (step {left.get('step')}), so its folders mix results of "
            f"two parameter sets; finish it first: amt run --params {left.get('params_file')} --out {run}"
        )
    before = figures_run(args.out)
    written = make_all_figures(run, args.out, overwrite=args.overwrite)
    replaced = (
        f" (replacing the figures of {before})" if before and before != str(Path(run).resolve()) else ""
    )
    print(f"amt figures: wrote {len(written)} files from {run} to {args.out}{replaced}")
    return 0


def _lab(args) -> int:
    import os
    import shlex

    from amt_core.pipeline.lab import lab_command, lab_folder, pair_notebooks
    from amt_core.pipeline.run import ensure_kernel

    folder = lab_folder(args.folder)
    cmd = lab_command(
        folder, ensure_kernel(), port=args.port, browser=not args.no_browser, allow_root=args.allow_root
    )
    if args.print_command:
        print(shlex.join(cmd))
        return 0
    for written in pair_notebooks(folder):
        print(f"amt lab: wrote {written.name} (paired with {written.stem}.py, which keeps every edit)")
    print(f"amt lab: JupyterLab on {folder} (Ctrl-C to stop)", flush=True)
    os.execv(cmd[0], cmd)  # JupyterLab takes over this process (and its Ctrl-C)
    return 0  # pragma: no cover
