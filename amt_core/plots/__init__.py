"""Manuscript figures and tables, from a run folder's saved results alone (no model, no GPU).

:data:`FIGURES` and :data:`TABLES` are the single list of what the manuscript shows (with captions); the
``04_figures`` notebook, ``amt figures`` and the report all read them. Importing this package is light:
matplotlib is imported by the plotting modules only.
"""

from __future__ import annotations

from pathlib import Path

from amt_core.plots.captions import FIGURES, TABLES

__all__ = ["FIGURES", "TABLES", "figures_run", "make_all_figures"]

#: the figures folder's record of the run it shows (a folder of figures never mixes two runs)
MANIFEST = "figures.json"
#: files of a figures folder that are not ours and are kept when it is replaced (figures/README.md)
_KEPT = ("README.md",)
#: tables the report writes beside the manuscript tables (amt_core.pipeline.checklist)
REPORT_TABLES = ("checklist",)


def _owned(tables: bool) -> set[str]:
    """Names a figures folder (``tables=False``) or a tables folder holds: what make_all_figures writes."""
    if tables:
        return {f"{stem}.{ext}" for stem in (*TABLES, *REPORT_TABLES) for ext in ("csv", "md")}
    return {f"{stem}.{ext}" for stem in FIGURES for ext in ("pdf", "png")} | {MANIFEST}


def _foreign(folder: Path, tables: bool) -> list[str]:
    """Entries of ``folder`` that make_all_figures does not write (none: it is a folder of figures)."""
    from amt_core.atomic import remove_stale_temps

    if not folder.is_dir():
        return []
    remove_stale_temps(folder, recursive=True)
    listed = set() if tables else set(_manifest(folder).get("files", []))
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name == "tables" and not tables and entry.is_dir():
            out += [
                f"tables/{e.name}"
                for e in sorted(entry.iterdir())
                if e.name not in _owned(tables=True) and f"tables/{e.name}" not in listed
            ]
        elif entry.name not in _owned(tables) | set(_KEPT) | listed:
            out.append(entry.name)
    return out


def _manifest(out_dir: Path) -> dict:
    import json

    try:
        data = json.loads((Path(out_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def figures_run(out_dir: str | Path) -> str | None:
    """The run whose figures ``out_dir`` holds (from its figures.json), or None."""
    run = _manifest(Path(out_dir)).get("run")
    return str(run) if run else None


def make_all_figures(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    tables_dir: str | Path | None = None,
    *,
    cohort_csv: str = "",
    overwrite: bool = False,
) -> list[Path]:
    """Rebuild every figure (PDF + PNG) and table (CSV + Markdown) of a run from its saved results, and the
    reporting checklist beside the tables (its links: these figures and tables, the run for the rest).

    ``out_dir`` defaults to ``RUN/figures`` and ``tables_dir`` to ``OUT/tables`` (``RUN/tables`` for
    the run's own figures). Returns the paths written. Each folder is replaced whole (built beside, then
    swapped in: no figure of an earlier run is left; a ``README.md`` is kept) and ``OUT/figures.json``
    names the run. A non-empty folder holding anything else is refused unless ``overwrite``.
    """
    import contextlib
    import shutil

    from amt_core.atomic import OutputExistsError, refuse_holding_inputs, replacing_dir, write_json
    from amt_core.layout import RunLayout
    from amt_core.pipeline.checklist import write_checklist
    from amt_core.plots.manuscript import make_all, recorded_cohort_csv

    run = Path(run_dir).resolve()
    out = Path(out_dir) if out_dir else RunLayout.of(run).figures_dir
    tab = Path(tables_dir) if tables_dir else (RunLayout.of(run).tables_dir if out_dir is None else None)
    separate = tab is not None and tab.resolve() != (out / "tables").resolve()
    # what the figures are made from (replacing a folder that holds it would delete it)
    layout = RunLayout.of(run, cohort_csv or recorded_cohort_csv(run))
    inputs = [
        layout.evaluation("test").parent,
        layout.analysis_dir,
        layout.train_dir,
        layout.predictions("test").parent,  # the example and failure figures read the predicted masks
        layout.cases_csv,
    ]
    for folder, tables in ((out, False), *(((tab, True),) if separate else ())):
        refuse_holding_inputs(folder, inputs, "figures folder")
        foreign = [] if overwrite else _foreign(folder, tables)
        if foreign:
            raise OutputExistsError(
                f"{folder}: is not a folder of figures (it holds {', '.join(foreign[:3])}"
                f"{' ...' if len(foreign) > 3 else ''}); pass --overwrite to replace it, "
                "or choose an empty folder"
            )
    with contextlib.ExitStack() as stack:
        staging = stack.enter_context(replacing_dir(out))
        staging_tab = stack.enter_context(replacing_dir(tab)) if separate else staging / "tables"
        for name in () if overwrite else _KEPT:
            if (out / name).is_file():
                shutil.copy2(out / name, staging / name)
        written = make_all(run, staging, staging_tab, cohort_csv=cohort_csv)
        final = {staging: out, staging_tab: tab if separate else out / "tables"}
        # the reporting checklist beside the tables: this folder's figures and tables, the run for the rest
        copies = {
            f"{'figures' if p.parent == staging else 'tables'}/{p.name}": final[p.parent] / p.name
            for p in written
        }
        written += write_checklist(
            run, staging_tab, read_from=final[staging_tab], copies=copies, will_exist=()
        )
        written = [final[p.parent] / p.name for p in written]
        summary = run / "evaluation" / "test" / "summary.json"
        write_json(
            staging / MANIFEST,
            {
                "run": str(run),
                "cohort_csv": cohort_csv,
                "evaluation_summary_sha256": _sha256(summary) if summary.is_file() else None,
                "files": sorted(
                    str(p.relative_to(out)) if p.is_relative_to(out) else str(p) for p in written
                ),
            },
        )
    return written


def _sha256(path: Path) -> str:
    from amt_core.atomic import file_hash

    return file_hash(path)
