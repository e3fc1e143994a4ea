"""Build every manuscript figure and table of a run from its saved results (see
:mod:`amt_core.layout` for the folder and :mod:`amt_core.pipeline.analysis` for the tables)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pandas as pd

from amt_core.evaluation.stats import present_subgroups
from amt_core.layout import RunLayout
from amt_core.pipeline.real_anatomy import load_real_anatomy, real_anatomy_table
from amt_core.plots.captions import FIGURES, table_titles
from amt_core.plots.style import save_figure
from amt_core.plots.tables import write_table
from amt_core.registry import SUBGROUPS


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def evaluation_config(layout: RunLayout, summary: dict | None = None):
    """The ``EvalConfig`` recorded in the external test's ``summary.json`` (``summary``: that file's content
    when the caller has read it; the defaults when there is none yet), so every label says what the numbers
    were made with."""
    import json

    from amt_core.evaluation.config import EvalConfig

    if summary is None:
        path = layout.evaluation("test") / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
    recorded = summary.get("config")
    return EvalConfig.from_dict(recorded) if recorded else EvalConfig()


def load_cases(layout: RunLayout) -> pd.DataFrame:
    from amt_core.data.cases import read_cases

    return read_cases(layout.cases_csv, check_files=False)


def load_per_case(layout: RunLayout, cases: pd.DataFrame, splits=("tune", "test")) -> pd.DataFrame:
    """Per-scan results of the evaluated splits joined with the case table's covariates."""
    frames = []
    for split in splits:
        pc = _read(layout.evaluation(split) / "per_case.csv")
        if pc is not None:
            frames.append(pc.assign(split=split))
    if not frames:
        raise FileNotFoundError(
            f"no evaluation results in {layout.root / 'evaluation'}; run 03_evaluate first"
        )
    per_case = pd.concat(frames, ignore_index=True)
    extra = [c for c in cases.columns if c not in per_case.columns or c == "case_id"]
    return per_case.merge(cases[extra], on="case_id", how="left")


def make_all(run_dir, out_dir=None, tables_dir=None, *, cohort_csv: str = "") -> list[Path]:
    from amt_core.plots import agreement, distributions, examples, failures, flow, forest, froc, training
    from amt_core.plots import seeds as seed_plots
    from amt_core.plots import tables as T

    layout = RunLayout.of(run_dir, cohort_csv or recorded_cohort_csv(Path(run_dir)))
    out = Path(out_dir) if out_dir else layout.figures_dir
    tab = Path(tables_dir) if tables_dir else (layout.tables_dir if out_dir is None else out / "tables")
    cases = load_cases(layout)
    per_case = load_per_case(layout, cases)
    test = per_case[per_case["split"] == "test"]
    ana = layout.analysis_dir
    ev = layout.evaluation("test")
    config = evaluation_config(layout)  # the conventions the numbers were made with: labels follow them
    labels = config.labels()
    written: list[Path] = []

    def fig(name, figure):
        written.extend(save_figure(figure, out, name))

    # --- figures ---
    froc_conf, bands = _read(ev / "froc_confidence.csv"), _read(ana / "froc_bands.csv")
    real = load_real_anatomy(layout)  # the real-anatomy test subset, None for a cohort without it
    if froc_conf is not None:
        extra = (
            {}
            if real is None
            else {
                "subset": real.froc_confidence,
                "subset_iou": real.config.operating_iou,
                "subset_label": f"Real anatomy ({real.n_scans} scan{'s' * (real.n_scans != 1)}), "
                f"IoU ≥ {real.config.operating_iou:g}",
            }
        )
        fig(
            "froc_confidence",
            froc.plot_froc_confidence(
                froc_conf,
                bands,
                iou_thresholds=config.froc_iou_thresholds,
                fp_points=config.fp_points,
                band_label=f"{labels['ci']} CI ({labels['unit']} bootstrap)",
                **extra,
            ),
        )
    froc_iou = _read(ev / "froc_iou.csv")
    if froc_iou is not None:
        fig(
            "froc_iou",
            froc.plot_froc_iou(froc_iou, operating_iou=config.operating_iou, hit_label=labels["hit"]),
        )
    cal_bins, cal = _read(ana / "calibration_bins.csv"), _read(ana / "calibration.csv")
    if cal_bins is not None and cal is not None:
        from amt_core.plots.calibration import plot_calibration

        fig("calibration", plot_calibration(cal_bins, cal))
    fig("metric_distributions", distributions.plot_metric_distributions(per_case))
    figure, _ = agreement.plot_volume_agreement(test)  # per_case.csv's ref_volume_ml, pred_volume_ml
    fig("volume_agreement", figure)
    subgroups = _read(ana / "subgroups.csv")
    seg_ci = _read(ana / "seg_ci.csv")
    overall = (
        float(seg_ci.set_index("metric").loc["dice", "mean"]) if seg_ci is not None else test["dice"].mean()
    )
    if subgroups is not None:
        dice = subgroups[subgroups["metric"] == "dice"]
        fig("forest_subgroups", forest.plot_forest(dice, overall=overall, ci_label=labels["ci"]))
    institutions = _read(ana / "institutions.csv")
    if institutions is not None:
        dice = institutions[institutions["metric"] == "dice"].rename(columns={"institution_id": "level"})
        fig("forest_institutions", forest.plot_forest(dice, overall=overall, ci_label=labels["ci"]))
    fig("performance_vs_covariates", distributions.plot_performance_vs_covariates(test))
    if _has_volumes(cases, test, layout):
        fig("examples", examples.plot_examples(test, cases, layout.predictions("test")))
    log = _read(layout.train_dir / "train_log.csv")
    if log is not None:
        from amt_core.model.run_control import read_status

        fig("learning_curves", training.plot_learning_curves(log, read_status(layout.train_dir)))
    fig(
        "flow",
        flow.plot_flow(
            flow.flow_counts(
                cases, {s: int((per_case["split"] == s).sum()) for s in per_case["split"].unique()}
            )
        ),
    )
    lesions, candidates = _read(ev / "lesions.csv"), _read(ev / "candidates.csv")
    fails = None
    if lesions is not None and candidates is not None:
        fails = failures.failure_table(test, lesions, candidates, cases)
        if len(fails) and _has_volumes(cases, test, layout):
            fig("failures", failures.plot_failures(fails, cases, layout.predictions("test")))

    seeds = seed_plots.read_seed_variance(ana)
    if seeds is not None:
        fig("seed_variance", seed_plots.plot_seed_variance(*seeds))

    # --- tables: (name, full table, its markdown form or None for the table rounded), written in order ---
    tables: list[tuple[str, pd.DataFrame, pd.DataFrame | None]] = [("table1", table_one(cases), None)]
    if seg_ci is not None:
        seg = T.segmentation_table(seg_ci, _read(ana / "seg_ci_cluster.csv"))
        tables.append(("segmentation", seg, T.segmentation_markdown_frame(seg, ci_label=labels["ci"])))
    ops = _read(ana / "operating_points.csv")
    if ops is not None:
        overlaps = sorted(set(config.froc_iou_thresholds) | {config.operating_iou})
        det = T.detection_table(ops, _read(ana / "cpm.csv"), iou_thresholds=overlaps)
        tables.append(
            ("detection", det, T.detection_markdown_frame(det, labels["ci"], labels["hit"].rsplit(" ", 1)[0]))
        )
    if subgroups is not None:
        tables.append(("subgroups", subgroups, _compact(subgroups, ["subgroup", "level"])))
    if institutions is not None:
        display = _compact(institutions, ["institution_id", "n_institutions"])
        tables.append(("institutions", institutions, display))
    model = _read(ana / "institution_model.csv")
    if model is not None:
        tables.append(("institution_model", model, T.p_display(model)))
    det_sub = _read(ana / "detection_subgroups.csv")
    if det_sub is not None:
        tables.append(("detection_subgroups", det_sub, T.p_display(det_sub)))
    if fails is not None:
        tables.append(("failures", fails, failures.failure_markdown_frame(fails)))
        present = tuple(present_subgroups(cases, tuple(SUBGROUPS)))  # 'anatomy' only with a real subset
        counts = failures.failure_counts(test, lesions, candidates, cases, subgroups=present)
        tables.append(("failure_subgroups", counts, None))
    if seeds is not None:
        tables.append(("seed_variance", *seed_plots.seed_variance_table(*seeds)))
    if real is not None:
        tables.append(("real_anatomy", *real_anatomy_table(real, cases)))
    titles = table_titles(config)
    for name, table, display in tables:
        written.extend(write_table(table, tab, name, title=titles[name], display=display))
    unknown = {p.stem for p in written if p.suffix == ".png"} - set(FIGURES)
    if unknown:
        warnings.warn(f"figures without a caption in amt_core.plots.FIGURES: {sorted(unknown)}", stacklevel=2)
    return written


def recorded_cohort_csv(run_dir: Path) -> str:
    """The cohort_csv the run was made with, '' for the run's own cohort: as the run resolved it (its
    ``provenance.json``), else from its ``params.yaml``, a relative path being relative to the params file it
    was copied from (as ``amt run`` read it), never to the current folder."""
    import json

    import yaml

    config: dict = {}
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((run_dir / "provenance.json").read_text()).get("config") or {}
    if isinstance(config.get("params"), dict) and "cohort_csv" in config["params"]:
        return str(config["params"]["cohort_csv"] or "")
    params = run_dir / "params.yaml"
    value = (
        str((yaml.safe_load(params.read_text()) or {}).get("cohort_csv") or "") if params.is_file() else ""
    )
    if value and not Path(value).expanduser().is_absolute() and config.get("params_file"):
        value = str((Path(config["params_file"]).parent / Path(value).expanduser()).resolve())
    return value


def _has_volumes(cases: pd.DataFrame, test: pd.DataFrame, layout: RunLayout) -> bool:
    if test.empty or not layout.predictions("test").is_dir():
        return False
    first = cases.set_index("case_id").loc[test["case_id"].iloc[0]]
    return Path(first["image"]).is_file() and Path(first["label"]).is_file()


def table_one(cases: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of the cohort per split (amt_core.synth.summary.table_one) as a flat DataFrame."""
    from amt_core.synth import summary

    t = summary.table_one(cases)
    return t.reset_index() if not isinstance(t.index, pd.RangeIndex) else t


def _compact(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Wide presentation of a long (key, metric) table: n and 'mean (CI)' per metric, p-value if any."""
    from amt_core.evaluation.multiplicity import format_p
    from amt_core.plots.tables import ci_text
    from amt_core.registry import METRIC_LABELS

    rows = []
    for key, part in table.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=False))
        row["n"] = int(part["n"].max())
        for _, r in part.iterrows():
            label = METRIC_LABELS.get(r["metric"], r["metric"])
            row[label] = f"{r['mean']:.3f} ({ci_text(r['ci_lo'], r['ci_hi'], 3)})"
        if "p_value" in part.columns:
            row["test"], row["p (Dice)"] = part["test"].iloc[0], format_p(part["p_value"].iloc[0])
        if "p_adjusted" in part.columns:
            row[f"p (Holm, {int(part['n_tests'].iloc[0])} tests)"] = format_p(part["p_adjusted"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)
