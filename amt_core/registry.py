"""The single list of every choice the package offers.

The CLI, the notebooks, the case-table validator, the synthetic cohort and the docs all read these
names, so they can never drift apart (TotalSegmentator's ``registry.py`` idea).
"""

from __future__ import annotations

# --- the case table -------------------------------------------------------------------------------
#: Columns of a case table, in order. ``image`` and ``label`` are paths relative to the table.
CASE_COLUMNS: tuple[str, ...] = (
    "case_id",
    "patient_id",
    "institution_id",
    "split",
    "sex",
    "age",
    "histology",
    "tumour_volume_ml",
    "contrast",
    "slice_thickness_mm",
    "vendor",
    "image",
    "label",
)
SPLITS: tuple[str, ...] = ("train", "tune", "test")
#: the splits the model learns from (nnU-Net's imagesTr/labelsTr); the rest is the external test
TRAINING_SPLITS: tuple[str, ...] = ("train", "tune")
SEXES: tuple[str, ...] = ("M", "F")

#: WHO thymic epithelial tumours and other anterior mediastinal tumours (cohort histology labels).
HISTOLOGIES: tuple[str, ...] = (
    "thymoma_A",
    "thymoma_AB",
    "thymoma_B1",
    "thymoma_B2",
    "thymoma_B3",
    "thymic_carcinoma",
    "lymphoma",
    "germ_cell_tumour",
    "thymic_cyst",
    "other",
)
CONTRASTS: tuple[str, ...] = ("none", "venous", "arterial")
VENDORS: tuple[str, ...] = ("GE", "Siemens", "Philips", "Canon", "Fujifilm")

# --- the study being reproduced (Takemura et al., Sci Rep 2026) --------------------------------------
STUDY_DESIGN = {
    "n_cases": 711,
    "n_institutions": 136,
    "n_male": 339,
    "n_female": 372,
    "n_train": 485,
    "n_tune": 62,
    "n_test": 164,
    "n_test_institutions": 121,
}
#: Published external-test results (means of per-scan values; detection at IoU >= 0.5).
PUBLISHED = {
    "dice": 0.82,
    "iou": 0.72,
    "precision": 0.85,
    "recall": 0.82,
    "sensitivity_iou50": 0.87,
    "fp_per_scan_iou50": 0.61,
}

# --- evaluation defaults ------------------------------------------------------------------------------
#: FROC reading A: one curve per IoU hit threshold.
FROC_IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5)
#: FROC reading B: the IoU thresholds swept at the operating point (0.05 ... 0.95).
IOU_SWEEP: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))
#: LUNA16 CPM points (false positives per scan).
FP_POINTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SEG_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall")
#: bootstrap confidence intervals: percentile or bias-corrected and accelerated (BCa)
CI_METHODS: tuple[str, ...] = ("percentile", "bca")
#: how tables, figures and the report name a metric (keys: SEG_METRICS and those of PUBLISHED)
METRIC_LABELS: dict[str, str] = {
    "dice": "Dice",
    "iou": "IoU",
    "precision": "Precision",
    "recall": "Recall",
    "sensitivity_iou50": "Sensitivity at IoU ≥ 0.5",
    "fp_per_scan_iou50": "FP per scan at IoU ≥ 0.5",
}
#: names that earlier versions used for a setting -> its one name now (params files, ``eval_overrides``,
#: ``EvalConfig.from_dict`` and ``amt evaluate --config`` refuse the old name and say the new one)
RENAMED: dict[str, str] = {
    "n_boot": "n_bootstrap",
    "bootstrap_resamples": "n_bootstrap",
    "headline_iou": "operating_iou",
    "iou_threshold": "operating_iou",
    "method": "ci_method",
    "level": "ci_level",
}

# --- sub-groups: name -> (case-table column, bin edges or None for categorical, bin labels) -----------
SUBGROUPS: dict[str, tuple[str, tuple[float, ...] | None, tuple[str, ...] | None]] = {
    "sex": ("sex", None, None),
    "age_band": ("age", (0, 40, 60, 200), ("<40", "40-59", ">=60")),
    "histology": ("histology", None, None),
    "tumour_size_band": (
        "tumour_volume_ml",
        (0, 10, 50, 200, 1e9),
        ("<10 ml", "10-50 ml", "50-200 ml", ">=200 ml"),
    ),
    "contrast": ("contrast", None, None),
    "slice_thickness_band": ("slice_thickness_mm", (0, 1.5, 3.0, 100), ("<=1.5 mm", "1.5-3 mm", ">3 mm")),
    "vendor": ("vendor", None, None),
    # the real-anatomy test subset (tumours inserted into real chest CT); only cohorts with that column
    "anatomy": ("anatomy", None, None),
}
#: the levels of the ``anatomy`` column of a cohort with a real-anatomy test subset
ANATOMIES: tuple[str, ...] = ("synthetic", "real")

# --- presets --------------------------------------------------------------------------------------
COHORT_PRESETS: tuple[str, ...] = ("tiny", "demo", "full")
MODEL_PRESETS: tuple[str, ...] = ("cpu", "full")
PIPELINE_PRESETS: tuple[str, ...] = ("smoke", "demo", "study", "quick")
