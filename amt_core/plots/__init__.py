"""Manuscript figures and tables, from a run folder's saved results alone (no model, no GPU).

:data:`FIGURES` and :data:`TABLES` are the single list of what the manuscript shows (with captions); the
``04_figures`` notebook, ``amt figures`` and the report all read them. Importing this package is light:
matplotlib is imported by the plotting modules only.
"""

from __future__ import annotations

from pathlib import Path

#: figure file stem -> caption
FIGURES: dict[str, str] = {
    "froc_confidence": "FROC, reading A: lesion sensitivity against false positives per scan on the external "
                       "test, one curve per IoU hit threshold (swept over candidate confidence), with 95% "
                       "scan-bootstrap bands at the LUNA16 FP/scan points.",
    "froc_iou": "FROC, reading B: (a) each point is an IoU hit threshold at the model's operating threshold; "
                "the star is this run at IoU ≥ 0.5, the diamond the published 0.87 at 0.61 FP/scan. "
                "(b) Sensitivity and FP/scan against the IoU threshold.",
    "metric_distributions": "Per-scan Dice, IoU, precision and recall on the tuning and external test "
                            "splits (violin, box and points); white dots are means, red diamonds the "
                            "published external-test means.",
    "volume_agreement": "Tumour volume on the external test: (a) predicted vs reference (log scale, dashed "
                        "identity); (b) Bland–Altman of the relative difference with bias and 95% limits of "
                        "agreement.",
    "forest_subgroups": "Per-scan Dice by subgroup on the external test: mean and 95% bootstrap CI; marker "
                        "size grows with n; dashed line the overall mean.",
    "forest_institutions": "Per-scan Dice by institution on the external test; institutions with few scans "
                           "are pooled (a 1–2-scan interval is uninformative).",
    "performance_vs_covariates": "Per-scan Dice on the external test against (a) reference tumour volume, "
                                 "with the mean per size band, and (b) slice thickness.",
    "examples": "Best, median and worst external-test scans by Dice: axial and coronal slices through the "
                "tumour's largest cross-section, and the axial slice with the most disagreeing voxels "
                "(where the scan is wrong, e.g. a false positive far from the tumour); mediastinal window, "
                "reference outline green, prediction orange.",
    "learning_curves": "Training: loss per epoch and tuning-set Dice at each evaluation; the selected "
                       "(best tuning Dice) checkpoint is marked.",
}

#: table file stem -> title
TABLES: dict[str, str] = {
    "table1": "Table 1. Cohort characteristics per split",
    "segmentation": "Segmentation on the external test: mean of per-scan values with 95% CIs, beside the "
                    "published values",
    "detection": "Detection operating points on the external test (reading B at the operating threshold; "
                 "CPM of reading A)",
    "subgroups": "Per-scan Dice by subgroup on the external test",
    "institutions": "Per-scan Dice by institution on the external test (small institutions pooled)",
    "institution_model": "Linear mixed model of per-scan Dice with a random intercept per institution",
}


def make_all_figures(run_dir: str | Path, out_dir: str | Path | None = None,
                     tables_dir: str | Path | None = None, *, cohort_csv: str = "") -> list[Path]:
    """Rebuild every figure (PDF + PNG) and table (CSV + Markdown) of a run from its saved results.

    ``out_dir`` defaults to ``RUN/figures`` and ``tables_dir`` to ``OUT/tables`` (``RUN/tables`` for
    the run's own figures). Returns the paths written.
    """
    from amt_core.plots.manuscript import make_all

    return make_all(run_dir, out_dir, tables_dir, cohort_csv=cohort_csv)
