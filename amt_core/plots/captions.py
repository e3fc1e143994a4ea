"""The captions of the manuscript's figures and tables: :data:`FIGURES` and :data:`TABLES` are the single
list of what the manuscript shows (``amt_core.plots`` re-exports them; the plotting modules read them here,
so no module of the package imports the package's ``__init__`` back).

A caption names the run's own conventions: ``{ci}`` (the interval level, "95%"), ``{unit}`` (what the
evaluation's bootstrap resamples) and ``{hit}`` (the operating overlap criterion, "IoU ≥ 0.5") are filled
from the evaluation's config by :func:`figure_captions` and :func:`table_titles`; :data:`FIGURES` and
:data:`TABLES` hold them for the default config."""

from __future__ import annotations

from typing import Any

#: figure file stem -> caption template
FIGURE_TEMPLATES: dict[str, str] = {
    "froc_confidence": "FROC, reading A: lesion sensitivity against false positives per scan on the external "
    "test, one curve per IoU hit threshold (swept over candidate confidence), with {ci} "
    "{unit}-bootstrap bands at the LUNA16 FP/scan points. With a real-anatomy test "
    "subset (tumours inserted into real chest CT), the black dashed curve is that subset "
    "alone at the operating IoU (a few scans: no band).",
    "froc_iou": "FROC, reading B: (a) each point is an IoU hit threshold at the model's operating threshold; "
    "the star is this run at {hit}, the diamond the published 0.87 at 0.61 FP/scan (IoU ≥ 0.5). "
    "(b) Sensitivity and FP/scan against the IoU threshold.",
    "metric_distributions": "Per-scan Dice, IoU, precision and recall on the tuning and external test "
    "splits (violin, box and points); white dots are means, red diamonds the "
    "published external-test means.",
    "volume_agreement": "Tumour volume on the external test: (a) predicted vs reference (log scale, dashed "
    "identity); (b) Bland–Altman of the relative difference with bias and 95% limits of "
    "agreement.",
    "forest_subgroups": "Per-scan Dice by subgroup on the external test: mean and {ci} bootstrap CI (Student-t "
    "for a level of fewer than 10 scans, none for one scan); marker size grows with n; dashed line the overall "
    "mean.",
    "forest_institutions": "Per-scan Dice by institution on the external test; institutions with few scans "
    "are pooled (a 1–2-scan interval is uninformative).",
    "performance_vs_covariates": "Per-scan Dice on the external test against (a) reference tumour volume, "
    "with the mean per size band, and (b) slice thickness.",
    "examples": "Best, median and worst external-test scans by Dice: axial and coronal slices through the "
    "tumour's largest cross-section, and the axial slice with the most disagreeing voxels "
    "(where the scan is wrong, e.g. a false positive far from the tumour); mediastinal window, "
    "reference outline green, prediction orange.",
    "calibration": "Calibration on the external test: reliability diagrams of (a) candidate confidence against "
    "a hit at the operating IoU, (b) voxel probability against the reference over the whole "
    "scan (every voxel within 10 mm of the tumour or at probability ≥ 0.05, plus a seeded "
    "random sample of the rest weighted to stand for all) and (c) over the first stratum "
    "alone, with {ci} scan-bootstrap bands; solid: the model, dashed: after one "
    "temperature fitted on the tuning split (NLL); marker area grows with the bin's share.",
    "learning_curves": "Training: loss per epoch and tuning-set Dice at each evaluation; the checkpoint "
    "selected by the best tuning Dice is marked when one was selected (the legend says when none was), and "
    "a model that the time cap kept before any tuning evaluation is marked as that, not as a selection.",
    "flow": "Participant flow (STARD / TRIPOD+AI style): scans in the case table, exclusions, the training, "
    "tuning and external-test partitions with their patients and institutions (those found in no "
    "other partition), and the scans evaluated.",
    "seed_variance": "Training randomness on the external test: each headline number of the run's model (filled "
    "square) with its {ci} bootstrap CI (bar: the test sample's variation), the same model "
    "retrained on the same cohort with other seeds (open circles: the training's variation) "
    "and their mean (tick); (a) per-scan means and lesion-wise detection, (b) false positives "
    "per scan. With one seed the spread is not estimable and only the run's model is shown.",
    "failures": "Failure gallery of the external test: a share of each kind of failure in the failures table "
    "(the worst scans by Dice, the largest missed lesions, the largest false positives), numbered "
    "as in the table, which lists them all; the title says how many of how many are shown. Axial slice through each, cropped around it; mediastinal window, reference green, "
    "prediction orange; footer: institution, vendor, contrast, slice thickness.",
}

#: table file stem -> title template
TABLE_TEMPLATES: dict[str, str] = {
    "table1": "Table 1. Cohort characteristics per split",
    "segmentation": "Segmentation on the external test: mean of per-scan values with {ci} CIs (scan bootstrap; institution-cluster bootstrap beside it), beside the "
    "published values",
    "detection": "Detection operating points on the external test (reading B at the operating threshold; "
    "CPM of reading A)",
    "subgroups": "Per-scan Dice by subgroup on the external test (Dice across levels: Mann–Whitney U for two "
    "levels, Kruskal–Wallis for more; p raw and Holm-adjusted across the subgroups; {ci} CIs by bootstrap, "
    "Student-t for a level of fewer than 10 scans)",
    "institutions": "Per-scan Dice by institution on the external test (small institutions pooled; {ci} CIs by "
    "bootstrap, Student-t for fewer than 10 scans)",
    "institution_model": "Linear mixed model of per-scan Dice with a random intercept per institution: fixed "
    "effects, variance components and the ICC (parametric-bootstrap {ci} CI)",
    "detection_subgroups": "Lesion-wise sensitivity at the operating point by subgroup on the external test "
    "(Wilson {ci} CIs; Fisher's exact test, Fisher–Freeman–Halton for more than two levels, Holm-adjusted across subgroups)",
    "failures": "Failures on the external test: worst scans by Dice, every missed lesion, largest false "
    "positives (the failure gallery shows a share of each kind, each panel numbered with its #)",
    "failure_subgroups": "Failures per subgroup on the external test: missed lesions, false positives and "
    "worst scans",
    "seed_variance": "Training randomness on the external test: the run's model with its bootstrap {ci} CI (the "
    "test sample's variation) beside the same model retrained with other seeds (the training's "
    "variation): between-seed mean ± SD, range, range / CI width and SD / bootstrap SE",
    "real_anatomy": "Real-anatomy external-test subset (tumours inserted into the real chest CT of distinct "
    "patients never seen in training; only runs whose cohort has it): per scan and for the "
    "subset, Dice, IoU, detection at {hit}, false-positive candidates, and false "
    "positives on the same patients' CT without an inserted tumour",
}


def _labels(config: Any = None) -> dict[str, str]:
    from amt_core.evaluation.config import EvalConfig

    if config is None:
        config = EvalConfig()
    elif isinstance(config, dict):  # summary.json's "config"
        config = EvalConfig.from_dict(config)
    return config.labels()


def figure_captions(config: Any = None) -> dict[str, str]:
    """Figure stem -> caption, in the words of ``config`` (an ``EvalConfig``, its dict, or None: defaults)."""
    labels = _labels(config)
    return {stem: text.format(**labels) for stem, text in FIGURE_TEMPLATES.items()}


def table_titles(config: Any = None) -> dict[str, str]:
    """Table stem -> title, in the words of ``config`` (as :func:`figure_captions`)."""
    labels = _labels(config)
    return {stem: text.format(**labels) for stem, text in TABLE_TEMPLATES.items()}


#: figure file stem -> caption (default conventions)
FIGURES: dict[str, str] = figure_captions()
#: table file stem -> title (default conventions)
TABLES: dict[str, str] = table_titles()
