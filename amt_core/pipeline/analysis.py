"""The statistics of the external test, saved as tables in ``RUN/analysis/`` (the figures and the report
read them).

:func:`analyse` writes

- ``seg_ci.csv`` / ``seg_ci_cluster.csv``: per-scan means with scan- and institution-cluster bootstrap CIs;
- ``operating_points.csv``: reading B (one row per IoU threshold at the operating threshold) with Wilson
  and bootstrap intervals; ``cpm.csv``: reading A's CPM per IoU threshold;
- ``subgroups.csv`` and ``detection_subgroups.csv`` (raw and Holm-adjusted p-values, one family per table),
  ``institutions.csv`` (small institutions pooled), ``institution_model.csv`` (fixed effects, variance
  components and the ICC with its parametric-bootstrap CI), ``detection_model.csv`` (GEE of lesion hits);
- ``comparison.csv``: this run beside the published numbers; ``analysis.json``: the settings, the
  mixed model's variance components and ICC (with its caveat), and the headline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from amt_core import registry
from amt_core.atomic import write_csv, write_json


def analyse(
    result,
    cases: pd.DataFrame,
    out_dir: str | Path,
    *,
    min_institution_scans: int = 3,
    n_bootstrap_icc: int = 200,
) -> dict[str, pd.DataFrame]:
    """Every statistic of the external test from an ``EvaluationResult``; saved in ``out_dir``.

    The bootstrap (``n_bootstrap``, ``seed``, ``ci_method``, ``ci_level``) and the ``operating_iou`` are the
    evaluation's own (``result.config``): the per-scan means and their intervals are ``result.cis``, the
    operating point is ``result.froc_iou``, so the tables, the report and ``evaluation/`` show one interval
    for one number.
    """
    from amt_core.evaluation import models, multiplicity, stats
    from amt_core.evaluation.bootstrap import MIN_CLUSTERS, bootstrap_means, cluster_problem

    config = result.config
    out = Path(out_dir)
    per_case = result.per_case
    metrics = list(registry.SEG_METRICS)
    n_bootstrap, ci_level, ci_method, seed = (
        config.n_bootstrap,
        config.ci_level,
        config.ci_method,
        config.seed,
    )
    boot = {"n_bootstrap": n_bootstrap, "seed": seed, "ci_method": ci_method, "ci_level": ci_level}
    tables: dict[str, pd.DataFrame] = {}
    institutions = per_case["institution_id"].astype(str).to_numpy()
    # the evaluation's intervals for its bootstrap unit; the other unit with the same resampling settings
    # (below MIN_CLUSTERS institutions the cluster one has NaN bounds and the reason in its 'note' column)
    own = result.cis[result.cis["metric"].isin(metrics)].reset_index(drop=True)
    values = per_case[metrics].astype(float)
    if config.cluster_bootstrap:
        tables["seg_ci"] = bootstrap_means(values, **boot)
        tables["seg_ci_cluster"] = own
    else:
        tables["seg_ci"] = own
        tables["seg_ci_cluster"] = bootstrap_means(values, clusters=institutions, **boot)
    tables["operating_points"] = result.froc_iou.copy()
    points = result.froc_points
    tables["cpm"] = (
        points[points["point"] == "cpm"][
            ["iou_threshold", "sensitivity", "ci_lo", "ci_hi"] + (["reach"] if "reach" in points else [])
        ]
        .rename(columns={"sensitivity": "cpm", "reach": "note"})
        .reset_index(drop=True)
    )
    tables["froc_bands"] = points[points["point"] != "cpm"].reset_index(drop=True)
    # one family of tests per table: Holm-adjusted across the subgroups, beside the raw p-value
    tables["subgroups"] = multiplicity.adjust_family(
        stats.subgroup_table(per_case, cases, metrics=metrics, **boot)
    )
    tables["detection_subgroups"] = multiplicity.adjust_family(
        stats.detection_subgroup_table(result.lesions, cases, ci_level=ci_level, seed=seed)
    )
    tables["institutions"] = stats.institution_table(
        per_case, cases, min_scans=min_institution_scans, metrics=metrics, **boot
    )
    mixed = models.institution_mixed_model(
        per_case, cases, "dice", ci_level=ci_level, n_bootstrap_icc=n_bootstrap_icc, seed=seed
    )
    tables["institution_model"] = mixed.table()  # fixed effects, variance components, ICC with its CI
    try:
        tables["detection_model"] = models.detection_gee(result.lesions, cases, ci_level=ci_level)
    except (ValueError, ArithmeticError) as exc:  # too few lesions or no variation in hits
        tables["detection_model"] = pd.DataFrame({"note": [f"not estimable: {exc}"]})
    operating_iou = config.operating_iou
    # the headline comparison: every interval from the evaluation's own resamples (one unit for the whole table)
    means = pd.concat([own, _detection_means(result.froc_iou, operating_iou)], ignore_index=True)
    tables["comparison"] = stats.compare_to_published(means)
    for name, frame in tables.items():
        write_csv(out / f"{name}.csv", frame)
    mixed_info = {k: v for k, v in mixed.to_dict().items() if k != "fixed_effects"}
    mixed_info["warnings"] = "; ".join(mixed_info.get("warnings") or []) or "none"
    mixed_info["generalisation"] = mixed.sentence()
    n_institutions, cluster_note = int(per_case["institution_id"].nunique()), cluster_problem(institutions)
    write_json(
        out / "analysis.json",
        {
            "split": "test",
            "n_scans": int(len(per_case)),
            "n_institutions": n_institutions,
            "n_bootstrap": n_bootstrap,
            "ci_level": ci_level,
            "ci_method": ci_method,
            "seed": seed,
            # seg_ci is always the scan bootstrap (seg_ci_cluster the institution one); the headline comparison
            # and the detection intervals (operating points, CPM) are the evaluation's own resamples
            "bootstrap_unit": "scan (institution-cluster bootstrap reported beside it)",
            "headline_bootstrap_unit": config.labels()["unit"],
            "detection_bootstrap_unit": config.labels()["unit"],
            "min_institution_scans": min_institution_scans,
            "operating_iou": operating_iou,
            "p_adjust": f"{multiplicity.P_ADJUST_METHOD}, within each table (family) of subgroup tests",
            "institution_mixed_model": mixed_info,
            "detection_model": _jsonable(tables["detection_model"].attrs),
            "institution_cluster_bootstrap": {
                "n_institutions": n_institutions,
                "min_institutions": MIN_CLUSTERS,
                "estimable": cluster_note is None,
                "note": cluster_note or "computed",
            },
        },
    )
    return tables


def _jsonable(attrs: dict) -> dict:
    """A model's fit description (``DataFrame.attrs``) with numpy scalars as Python ones."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in attrs.items()}


def _detection_means(froc_iou: pd.DataFrame, operating_iou: float) -> pd.DataFrame:
    """The operating point at ``operating_iou`` in the ``metric, mean, ci_lo, ci_hi`` form of
    :func:`compare_to_published` (keys of registry.PUBLISHED)."""
    row = froc_iou[(froc_iou["iou_threshold"] - operating_iou).abs() < 1e-9]
    if row.empty:
        return pd.DataFrame(columns=["metric", "mean", "ci_lo", "ci_hi"])
    r = row.iloc[0]
    return pd.DataFrame(
        [
            {
                "metric": "sensitivity_iou50",
                "mean": r["sensitivity"],
                "ci_lo": r.get("sensitivity_ci_lo", r["sensitivity_wilson_lo"]),
                "ci_hi": r.get("sensitivity_ci_hi", r["sensitivity_wilson_hi"]),
            },
            {
                "metric": "fp_per_scan_iou50",
                "mean": r["fp_per_scan"],
                "ci_lo": r.get("fp_per_scan_ci_lo"),
                "ci_hi": r.get("fp_per_scan_ci_hi"),
            },
        ]
    )
