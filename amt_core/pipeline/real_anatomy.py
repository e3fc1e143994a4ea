"""The real-anatomy test subset on its own: tumours inserted into real chest CT that training never saw.

A cohort built with ``real_anatomy: N`` (:func:`amt_core.synth.generate.build_cohort`) holds N external-test
scans whose tumours were inserted into the bundled real chest CTs of N distinct patients
(``amt_core/synth/chest_backgrounds``; case-table column ``anatomy`` = ``real``). 03_evaluate calls
:func:`evaluate_real_anatomy`, which writes

- ``RUN/evaluation/test_real_anatomy/``: the external test's evaluation restricted to those scans
  (:meth:`EvaluationResult.subset`, every statistic recomputed on them: what ``evaluate_predictions`` on the
  subset gives, without reading the volumes again), plus ``tumour_free.csv``: the run's model on the same
  patients' CT *without* an inserted tumour (``RUN/predictions/real_backgrounds/``), where every candidate
  at the operating threshold is a false positive;

and 04_figures reads them back: :func:`real_anatomy_table` (``tables/real_anatomy``), the subset's curve in
the FROC figure and :func:`report_lines` (the report's section "Real anatomy"). A cohort without the subset
gets none of these, and 03_evaluate removes the folders of an earlier cohort that had one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from amt_core import registry

if TYPE_CHECKING:
    from amt_core.evaluation import EvalConfig, EvaluationResult
    from amt_core.layout import RunLayout

#: the value of the case table's ``anatomy`` column for a scan of the subset
REAL = "real"
#: the extra table of the subset's evaluation folder (``tumour_free.csv``)
TUMOUR_FREE = "tumour_free"


def real_cases(cases: pd.DataFrame) -> pd.DataFrame:
    """The external-test rows of ``cases`` with a tumour inserted into real CT (empty without the column)."""
    if "anatomy" not in cases.columns:
        return cases.iloc[0:0]
    return cases[(cases["anatomy"] == REAL) & (cases["split"] == "test")]


def background_folder(layout: RunLayout) -> Path:
    """The chest CTs the cohort's tumours were inserted into: the folder recorded by a hybrid cohort
    (``amt cohort --backgrounds``, ``.synth/cohort.json``), else the bundled ones (``real_anatomy: N``)."""
    from amt_core.synth.hybrid import bundled_backgrounds

    try:
        folder = json.loads((layout.cohort_dir / ".synth" / "cohort.json").read_text()).get("backgrounds")
    except (OSError, ValueError, AttributeError):
        folder = None
    return Path(folder) if folder else bundled_backgrounds()


def backgrounds_of(real: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Per real-anatomy case: case_id, patient_id and its background scan in ``folder`` (file, path and
    the columns of its ``backgrounds.csv``: collection, licence, ...), matched by patient. A patient without
    a scan there is an error naming it and the folder."""
    from amt_core.synth.hybrid import list_backgrounds

    found = list_backgrounds(folder)
    out = real[["case_id", "patient_id"]].merge(found, on="patient_id", how="left")
    unknown = out.loc[out["file"].isna(), "patient_id"].tolist()
    if unknown:
        raise ValueError(
            f"{folder}: holds no background scan of the real-anatomy patients {unknown[:5]} "
            "(the chest CTs their tumours were inserted into)"
        )
    if "collection" not in out.columns:
        out["collection"] = ""
    return out.reset_index(drop=True)


def evaluate_real_anatomy(
    layout: RunLayout, cases: pd.DataFrame, result: EvaluationResult, *, progress: bool = False
) -> EvaluationResult | None:
    """The external test's evaluation ``result`` restricted to the real-anatomy scans, with the false
    positives on the same patients' tumour-free CT, saved to ``RUN/evaluation/test_real_anatomy/`` (replaced
    whole); None, and the folders of an earlier cohort removed, when the test split has no such scan."""
    real = real_cases(cases)
    if real.empty:
        for folder in layout.real_anatomy_dirs():  # of an earlier cohort: must not pass for this run's
            aside = folder.with_name(f".{folder.name}.{os.getpid()}.old")  # gone at once, then deleted
            folder.rename(aside)
            shutil.rmtree(aside)
        return None
    missing = sorted(set(real["case_id"]) - set(result.per_case["case_id"]))
    if missing:
        raise ValueError(
            f"real-anatomy scans {missing[:5]} are not in the external test's evaluation "
            f"({layout.evaluation('test')}): rerun 03_evaluate"
        )
    subset = result.subset(real["case_id"])
    subset.tables[TUMOUR_FREE] = tumour_free_false_positives(layout, real, result.config, progress=progress)
    subset.save(layout.real_anatomy_dir, overwrite=True)
    return subset


def tumour_free_false_positives(
    layout: RunLayout, real: pd.DataFrame, config: EvalConfig, *, progress: bool = False
) -> pd.DataFrame:
    """The run's model (``RUN/train/best.pt``) on the real chest CTs of ``real``'s patients, without
    an inserted tumour (``RUN/predictions/real_backgrounds/<file>/``, replaced whole), each scored as the
    evaluation scores a scan without a tumour (``evaluate_case`` with an empty reference, ``config``): one row
    per scan with case_id, patient_id, background (its file in :func:`background_folder`), collection, bundled
    (whether that folder is amt's bundle), fp (candidates at the operating threshold: all false), fp_volume_ml
    (the 0.5 mask) and max_confidence."""
    from amt_core.atomic import replacing_dir
    from amt_core.data.volume import read_geometry, read_label, read_probability
    from amt_core.evaluation.api import evaluate_case
    from amt_core.model.inference import predict, resolve_inputs
    from amt_core.synth.hybrid import bundled_backgrounds

    folder = background_folder(layout)
    bundled = folder.resolve() == bundled_backgrounds().resolve()
    bgs = backgrounds_of(real, folder)
    stems = [resolve_inputs(p)[0][0] for p in bgs["path"]]  # the case id predict gives the scan
    with replacing_dir(layout.real_backgrounds_dir) as staging:
        for path, stem in zip(bgs["path"], stems, strict=True):
            predict(layout.model_path, path, staging / stem, progress=progress)
    rows = []
    for bg, stem in zip(bgs.to_dict("records"), stems, strict=True):
        pred = layout.real_backgrounds_dir / stem
        mask = read_label(
            pred / f"{stem}.nii.gz", read_geometry(bg["path"]), role="prediction", grid_of="background"
        )
        prob = read_probability(pred / f"{stem}_prob.nii.gz", mask).array
        ev = evaluate_case(np.zeros(mask.shape, np.uint8), mask.array, mask.spacing, config, prob=prob)
        rows.append(
            {
                "case_id": bg["case_id"],
                "patient_id": bg["patient_id"],
                "background": bg["file"],
                "collection": bg["collection"] or "not stated",
                "bundled": bundled,
                "fp": int(ev.record["fp"]),
                "fp_volume_ml": float(ev.record["pred_volume_ml"]),
                "max_confidence": max((c["confidence"] for c in ev.candidates), default=0.0),
            }
        )
    return pd.DataFrame(rows)


# --- reading it back: the table and the report ---------------------------------------------------------
def load_real_anatomy(layout: RunLayout) -> EvaluationResult | None:
    """The saved subset evaluation of a run, or None when the run has none."""
    from amt_core.evaluation import EvaluationResult

    if not (layout.real_anatomy_dir / "summary.json").is_file():
        return None
    return EvaluationResult.load(layout.real_anatomy_dir)


def real_anatomy_table(subset: EvaluationResult, cases: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, display)``: one row per real-anatomy scan (case, patient, collection, background, histology,
    reference tumour volume, Dice, IoU, lesions and those detected at the operating IoU, false-positive
    candidates, and on the same patient's tumour-free CT the false-positive candidates and volume) and a
    last row for the subset (means per scan; lesions and detected: totals, with the lesion-wise sensitivity
    and its Wilson interval). ``display`` is its Markdown form."""
    from amt_core.evaluation.stats import proportion_ci

    config = subset.config
    pc = subset.per_case.set_index("case_id")
    hits = subset.lesions.groupby("case_id")["hit"].sum() if len(subset.lesions) else pd.Series(dtype=int)
    free = subset.tables[TUMOUR_FREE].set_index("case_id")  # also the scans' backgrounds and collections
    meta = cases.set_index("case_id")
    rows = []
    for case in pc.index:
        rows.append(
            {
                "case_id": case,
                "patient_id": meta.at[case, "patient_id"],
                "collection": free.at[case, "collection"],
                "background": free.at[case, "background"],
                "histology": meta.at[case, "histology"],
                "tumour_volume_ml": float(pc.at[case, "ref_volume_ml"]),
                "dice": float(pc.at[case, "dice"]),
                "iou": float(pc.at[case, "iou"]),
                "lesions": int(pc.at[case, "n_lesions"]),
                "detected": int(hits.get(case, 0)),
                "fp": int(pc.at[case, "fp"]),
                "tumour_free_fp": float(free.at[case, "fp"]),
                "tumour_free_fp_ml": float(free.at[case, "fp_volume_ml"]),
                "sensitivity": np.nan,
                "sensitivity_ci_lo": np.nan,
                "sensitivity_ci_hi": np.nan,
            }
        )
    table = pd.DataFrame(rows)
    n_les, n_hit = int(table["lesions"].sum()), int(table["detected"].sum())
    lo, hi = proportion_ci(n_hit, n_les, ci_level=config.ci_level, ci_method="wilson")
    means = {
        c: table[c].mean()
        for c in ("tumour_volume_ml", "dice", "iou", "fp", "tumour_free_fp", "tumour_free_fp_ml")
    }
    total = {
        "case_id": _count(len(table), "scan", "all "),
        "patient_id": _count(table["patient_id"].nunique(), "patient"),
        "collection": "; ".join(sorted(set(table["collection"]))),
        "background": "",
        "histology": "",
        **means,
        "lesions": n_les,
        "detected": n_hit,
        "sensitivity": n_hit / n_les if n_les else np.nan,
        "sensitivity_ci_lo": lo,
        "sensitivity_ci_hi": hi,
    }
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    return table, _display(table, config)


def _display(table: pd.DataFrame, config) -> pd.DataFrame:
    from amt_core.plots.tables import ci_text

    crit = f"IoU {config.hit_criterion} {config.operating_iou:g}"
    out = []
    for k, r in enumerate(table.to_dict("records")):
        last = k == len(table) - 1
        detected = f"{r['detected']} of {r['lesions']}"
        if last and r["lesions"]:
            detected += (
                f" ({r['sensitivity']:.2f}, {config.ci_level:.0%} Wilson "
                f"{ci_text(r['sensitivity_ci_lo'], r['sensitivity_ci_hi'])})"
            )
        per = " (mean)" if last else ""
        out.append(
            {
                "Scan": r["case_id"],
                "Patient (collection)": f"{r['patient_id']} ({r['collection']})",
                "Histology": r["histology"],
                "Tumour (ml)": f"{r['tumour_volume_ml']:.1f}{per}",
                "Dice": f"{r['dice']:.3f}{per}",
                "IoU": f"{r['iou']:.3f}{per}",
                f"Detected ({crit})": detected,
                "FP candidates": _num(r["fp"], last) + per,
                "Tumour-free CT: FP candidates": _num(r["tumour_free_fp"], last) + per,
                "Tumour-free CT: FP volume (ml)": _num(r["tumour_free_fp_ml"], True) + per,
            }
        )
    return pd.DataFrame(out)


def _count(n: int, noun: str, prefix: str = "") -> str:
    """'1 scan', '4 scans' (with ``prefix`` before the number: 'all 4 scans')."""
    return f"{prefix if n > 1 else ''}{n} {noun}{'s' if n != 1 else ''}"


def _num(value: float, mean: bool) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.2f}" if mean else f"{int(value)}"


def report_lines(layout: RunLayout, cases: pd.DataFrame | None = None) -> list[str]:
    """The report's section "Real anatomy" (none for a run without the subset): how many scans and distinct
    real patients of which collections, never seen in training; the subset's Dice, sensitivity with its
    Wilson interval and false positives per scan, with and without the inserted tumour; and that so few
    scans give no precise estimate."""
    from amt_core.data.cases import read_cases
    from amt_core.synth.hybrid import bundled_backgrounds

    subset = load_real_anatomy(layout)
    if subset is None:
        return []
    cases = read_cases(layout.cases_csv, check_files=False) if cases is None else cases
    table, _ = real_anatomy_table(subset, cases)
    scans, total = table.iloc[:-1], table.iloc[-1]
    config = subset.config
    n, n_pat = len(scans), scans["patient_id"].nunique()
    collections = ", ".join(
        f"{'collection ' if c == 'not stated' else ''}{c} ({_count(k, 'patient')})"
        for c, k in scans.groupby("collection")["patient_id"].nunique().items()
    )
    crit = f"IoU {config.hit_criterion} {config.operating_iou:g}"
    dice = ", ".join(f"{d:.2f}" for d in scans["dice"])
    free = subset.tables[TUMOUR_FREE]
    try:
        n_test = int(json.loads((layout.evaluation("test") / "summary.json").read_text())["n_scans"])
    except (OSError, ValueError, KeyError):
        n_test = 0
    bundled = (
        free["bundled"].astype(bool).all()
        if "bundled" in free
        else background_folder(layout).resolve() == bundled_backgrounds().resolve()
    )
    source = (
        "The Cancer Imaging Archive, see `amt_core/synth/chest_backgrounds/SOURCES.md`"
        if bundled
        else "the cohort's background scans, `cohort/.synth/cohort.json`"
    )
    trained = cases[(cases.get("anatomy") == REAL) & cases["split"].isin(registry.TRAINING_SPLITS)]
    seen = (
        "its training and tuning scans are all synthetic"
        if trained.empty
        else f"its training and tuning held {_count(len(trained), 'scan')} in the real CT of "
        f"{_count(trained['patient_id'].nunique(), 'other patient')}"
    )
    lines = [
        "## Real anatomy",
        "",
        f"The external test holds **{_count(n, 'scan')} with {'tumours' if n > 1 else 'a tumour'} "
        f"inserted into real chest CT of {_count(n_pat, 'distinct real patient')}** ({collections}; "
        f"{source}), in institutions that appear only in the external test: the model never saw these "
        f"patients' CT in any form ({seen}). The tumours themselves are synthetic (histology-driven, "
        "inserted into the prevascular space); the anatomy, noise and texture around them are real. "
        "They also count in the external test's numbers above"
        + (f" ({n} of its {n_test} scans)" if n_test else "")
        + ". Table: "
        "[`tables/real_anatomy.md`](tables/real_anatomy.md); evaluation: `evaluation/test_real_anatomy/`.",
        "",
        f"- **Segmentation**: mean Dice {total['dice']:.2f} (per scan: {dice}), mean IoU {total['iou']:.2f}.",
        f"- **Detection** at the operating point ({crit}, confidence ≥ {config.operating_point:g}): "
        f"{int(total['detected'])} of {_count(int(total['lesions']), 'tumour')} found"
        + (
            f", sensitivity {total['sensitivity']:.2f} (Wilson {config.ci_level:.0%} CI "
            f"{total['sensitivity_ci_lo']:.2f}–{total['sensitivity_ci_hi']:.2f})"
            if total["lesions"]
            else ""
        )
        + f"; {total['fp']:.2f} false-positive candidates per scan.",
    ]
    if np.isfinite(total["tumour_free_fp"]):
        lines.append(
            f"- **The same patients' CT without an inserted tumour** (`evaluation/test_real_anatomy/"
            f"tumour_free.csv`): {total['tumour_free_fp']:.2f} false-positive candidates per scan "
            f"({int(scans['tumour_free_fp'].sum())} in {_count(n, 'scan')}), "
            f"{total['tumour_free_fp_ml']:.2f} ml of false-positive mask per scan."
        )
    width = total["sensitivity_ci_hi"] - total["sensitivity_ci_lo"]
    lines += [
        "",
        f"With {_count(n, 'scan')} these numbers are no precise estimate of performance on "
        "real CT"
        + (f" (the sensitivity's interval is {width:.2f} wide)" if np.isfinite(width) else "")
        + ", and one scan moves a mean a lot: they show whether the model finds tumours in real "
        "anatomy at all, not how well it would on a real cohort.",
        "",
    ]
    return lines
