"""The external test's statistics (``amt_core.pipeline.analysis``): one interval per number, the
evaluation's, whatever the evaluation overrides (the smoke run in test_pipeline.py checks the rest)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from amt_core.evaluation.api import collect, evaluate_case
from amt_core.evaluation.config import EvalConfig
from amt_core.evaluation.results import summarise
from amt_core.pipeline.analysis import analyse


def _study(n=10, n_institutions=5, config=None):
    """``n`` small scans over ``n_institutions`` institutions, some missed, some with false positives, and their case table."""
    rng = np.random.default_rng(3)
    evaluations = []
    for s in range(n):
        label = np.zeros((24, 24, 8), np.uint8)
        label[6:16, 6:16, 2:6] = 1
        prob = np.zeros(label.shape, np.float32)
        if s % 4 != 3:
            o = rng.integers(-2, 3, 2)
            prob[6 + o[0] : 16 + o[0], 6 + o[1] : 16 + o[1], 2:6] = rng.uniform(0.55, 1.0)
        if s % 3 == 0:
            prob[18:22, 18:22, 1:3] = rng.uniform(0.5, 1.0)
        evaluations.append(evaluate_case(label, prob >= 0.5, (1.0, 1.0, 2.0), config, prob=prob))
    ids = [f"case_{s:03d}" for s in range(n)]
    institutions = [f"INST-{s % n_institutions}" for s in range(n)]
    cases = pd.DataFrame(
        {
            "case_id": ids,
            "patient_id": [f"p{s}" for s in range(n)],
            "institution_id": institutions,
            "split": "test",
            "sex": ["M", "F"] * (n // 2),
            "age": rng.integers(30, 80, n),
            "histology": ["thymoma_AB", "lymphoma"] * (n // 2),
            "tumour_volume_ml": rng.uniform(5, 100, n),
            "contrast": ["venous", "none"] * (n // 2),
            "slice_thickness_mm": [1.0, 5.0] * (n // 2),
            "vendor": ["GE", "Siemens"] * (n // 2),
        }
    )
    return collect(evaluations, ids, institutions), cases


@pytest.fixture(scope="module")
def study():
    return _study()


@pytest.mark.parametrize(
    "overrides", [{"n_bootstrap": 300, "seed": 7}, {"n_bootstrap": 150, "seed": 2, "ci_level": 0.9}]
)
def test_tables_and_report_show_the_evaluations_intervals(study, tmp_path, overrides):
    """With eval_overrides changing the resamples, the seed or the level, every interval the analysis and
    the report show is the evaluation's own (there is one computation, not two that can disagree)."""
    from amt_core.layout import RunLayout
    from amt_core.pipeline.report import build_report

    rows, cases = study
    result = summarise(rows, EvalConfig(**overrides))
    layout = RunLayout.of(tmp_path / "run")
    tables = analyse(result, cases, layout.analysis_dir, n_bootstrap_icc=5)

    evaluation = result.cis.set_index("metric")
    seg = pd.read_csv(layout.analysis_dir / "seg_ci.csv").set_index("metric")
    for metric in ("dice", "iou", "precision", "recall"):
        for col in ("mean", "ci_lo", "ci_hi"):
            assert seg.at[metric, col] == pytest.approx(evaluation.at[metric, col], rel=1e-12)
        assert np.isfinite(seg.at[metric, "ci_lo"]) and seg.at[metric, "ci_lo"] < seg.at[metric, "ci_hi"]
    head = result.headline
    comparison = tables["comparison"].set_index("metric")
    assert comparison.at["sensitivity_iou50", "ci_lo"] == pytest.approx(head["sensitivity_ci_lo"])
    assert comparison.at["fp_per_scan_iou50", "ci_hi"] == pytest.approx(head["fp_per_scan_ci_hi"])
    assert comparison.at["dice", "ci_lo"] == pytest.approx(evaluation.at["dice", "ci_lo"])
    settings = json.loads((layout.analysis_dir / "analysis.json").read_text())
    assert (settings["n_bootstrap"], settings["seed"]) == (overrides["n_bootstrap"], overrides["seed"])
    assert settings["ci_level"] == overrides.get("ci_level", 0.95)
    det = settings["detection_model"]  # the GEE's fit description, which its CSV cannot hold as attrs
    assert det["n_obs"] == int(
        pd.read_csv(layout.analysis_dir / "detection_model.csv")["note"].iloc[0].split()[0]
    )
    assert {"formula", "reference_levels", "dropped_levels", "converged", "warnings"} <= set(det)

    report = build_report(layout.root)
    d = evaluation.loc["dice"]
    assert f"| Dice | {d['mean']:.2f} ({d['ci_lo']:.2f}–{d['ci_hi']:.2f}) |" in report


def test_every_label_names_the_conventions_the_numbers_were_made_with(tmp_path):
    """A cluster bootstrap at 90%, a strict hit at an IoU that is not one of reading B's sweep: the headline
    exists, its intervals are the evaluation's own (institutions), and the report, tables, captions and
    figures say 90%, institution and "IoU > 0.42", never the defaults' 95% and IoU ≥ 0.5."""
    from amt_core.layout import RunLayout
    from amt_core.pipeline.report import build_report
    from amt_core.plots.captions import figure_captions, table_titles
    from amt_core.plots.froc import plot_froc_iou
    from amt_core.plots.tables import detection_markdown_frame, detection_table

    config = EvalConfig(
        n_bootstrap=200, seed=3, ci_level=0.9, cluster_bootstrap=True, operating_iou=0.42, hit_criterion=">"
    )
    assert 0.42 not in config.iou_sweep
    with pytest.raises(ValueError, match=r"without the overlap thresholds \[0.42\]"):
        summarise(_study(n=24, n_institutions=12)[0], config)  # scans matched at the defaults' overlaps
    rows, cases = _study(n=24, n_institutions=12, config=config)
    result = summarise(rows, config)
    head = result.headline
    assert head["sensitivity"] == pytest.approx(result.lesions["hit"].mean())  # 0.42 swept all the same
    assert head["fp_per_scan"] == pytest.approx(result.per_case["fp"].mean())
    assert "IoU > 0.42" in result.headline_text()

    layout = RunLayout.of(tmp_path / "run")
    result.save(layout.evaluation("test"))
    layout.cases_csv.parent.mkdir(parents=True)
    files = {
        "image": [f"{c}.nii.gz" for c in cases["case_id"]],
        "label": [f"{c}_seg.nii.gz" for c in cases["case_id"]],
    }
    cases.assign(**files).to_csv(layout.cases_csv, index=False)
    tables = analyse(result, cases, layout.analysis_dir, n_bootstrap_icc=5)
    comparison, own = tables["comparison"].set_index("metric"), result.cis.set_index("metric")
    assert comparison.at["dice", "ci_lo"] == pytest.approx(
        own.at["dice", "ci_lo"]
    )  # institutions, as summary
    scan = pd.read_csv(layout.analysis_dir / "seg_ci.csv").set_index("metric")
    assert scan.at["dice", "ci_lo"] != pytest.approx(own.at["dice", "ci_lo"])  # the two units differ here

    report = build_report(layout.root)
    assert "| | this run (90% CI, institution bootstrap) | published |" in report
    assert "| Sensitivity at IoU > 0.42 | " in report and "0.87 (at IoU ≥ 0.5) |" in report
    assert "95% CI" not in report and "IoU ≥ 0.5 |" not in report

    # without resamples the header says what the intervals are (Wilson for the sensitivity, none else)
    unboot = summarise(rows, EvalConfig(n_bootstrap=0, operating_iou=0.42, hit_criterion=">"))
    unboot.save(layout.evaluation("test"), overwrite=True)
    analyse(unboot, cases, layout.analysis_dir, n_bootstrap_icc=0)
    assert "| | this run (no bootstrap; sensitivity with its Wilson 95% CI) | published |" in build_report(
        layout.root
    )

    words = " ".join([*figure_captions(config).values(), *table_titles(config).values()])
    assert "90% institution-bootstrap bands" in words and "this run at IoU > 0.42" in words
    assert "95% CI" not in words and "95% scan" not in words
    det = detection_markdown_frame(detection_table(result.froc_iou, iou_thresholds=(0.42,)), "90%", "IoU >")
    assert list(det.columns[:3]) == ["IoU >", "Sensitivity", "Wilson 90% CI"] and len(det) == 1
    fig = plot_froc_iou(result.froc_iou, operating_iou=0.42, hit_label="IoU > 0.42")
    legend = fig.axes[0].get_legend()
    assert legend.get_title().get_text() == "Operating point, IoU > 0.42"
    assert any(t.get_text().startswith(f"This run: {head['sensitivity']:.2f}") for t in legend.get_texts())


def test_the_report_says_how_calibrated_the_model_is(tmp_path):
    """Hand-made calibration results: the section shows each ECE with its interval, reads T > 1 as
    over-confident and T < 1 as under-confident, and says whether the temperature helps on the test."""
    from amt_core.layout import RunLayout
    from amt_core.pipeline.report import _calibration_section, _p_phrase

    layout = RunLayout.of(tmp_path)
    layout.analysis_dir.mkdir(parents=True)
    assert _calibration_section(layout) == []  # a run without calibration gets no section
    rows = [
        # kind, temperature, ece before (lo, hi), ece after (lo, hi)
        ("lesion", 2.0, (0.20, 0.15, 0.25), (0.05, 0.03, 0.07)),
        ("voxel_near", 0.5, (0.04, 0.03, 0.05), (0.045, 0.035, 0.055)),
    ]
    pd.DataFrame(
        [
            {
                "kind": k,
                "fit_split": "tune",
                "test_split": "test",
                "temperature": t,
                "n_scans": 12,
                "ece_before": b[0],
                "ece_ci_lo_before": b[1],
                "ece_ci_hi_before": b[2],
                "ece_after": a[0],
                "ece_ci_lo_after": a[1],
                "ece_ci_hi_after": a[2],
            }
            for k, t, b, a in rows
        ]
    ).to_csv(layout.analysis_dir / "calibration.csv", index=False)
    text = "\n".join(_calibration_section(layout))
    assert text.startswith("## Calibration") and "the 12 test scans" in text
    assert "| 0.20 (0.15–0.25) | 2.00 | 0.050 (0.030–0.070) |" in text
    assert "ECE (95% CI)" in text  # the level of a run without summary.json: the default
    assert "**Lesions**: temperature 2.00 (over-confident" in text and "it lowers the ECE" in text
    assert "**Voxels near the tumour**: temperature 0.50 (under-confident" in text
    assert "T < 1 sharpens probabilities that were too timid" in text and "T > 1 softens" in text
    assert text.count("T > 1") == 1 and "dominated" not in text
    assert "does not clearly change the ECE" in text
    # a temperature at the end of the search is no fit; a whole-scan voxel ECE mostly from its lowest bin
    table = pd.read_csv(layout.analysis_dir / "calibration.csv")
    table.loc[1, "temperature"] = 20.0
    table.to_csv(layout.analysis_dir / "calibration.csv", index=False)
    bins = pd.DataFrame({"kind": "voxel_near", "scaled": False, "bin": range(10), "weight": [970] + [3] * 9})
    bins.to_csv(layout.analysis_dir / "calibration_bins.csv", index=False)
    text = "\n".join(_calibration_section(layout))
    assert (
        "temperature 20.00 (at the end of the searched range 0.05–20, not a fitted value on the tuning split)"
        in text
    )
    assert "dominated by the lowest-confidence bin (97% of the weight)" in text
    assert _p_phrase("< 0.001") == "p < 0.001" and _p_phrase("0.250") == "p = 0.250"


def test_the_calibration_section_takes_the_runs_level_and_says_when_there_is_no_interval(tmp_path):
    import json

    from amt_core.layout import RunLayout
    from amt_core.pipeline.report import _calibration_section

    layout = RunLayout.of(tmp_path)
    layout.analysis_dir.mkdir(parents=True)
    layout.evaluation("test").mkdir(parents=True)
    (layout.evaluation("test") / "summary.json").write_text(json.dumps({"config": {"ci_level": 0.9}}))
    nan = float("nan")
    row = {"kind": "lesion", "test_split": "test", "temperature": 1.5, "n_scans": 3, "ece_before": 0.1}
    row.update(
        ece_ci_lo_before=nan, ece_ci_hi_before=nan, ece_after=0.08, ece_ci_lo_after=nan, ece_ci_hi_after=nan
    )
    pd.DataFrame([row]).to_csv(layout.analysis_dir / "calibration.csv", index=False)
    text = "\n".join(_calibration_section(layout))
    assert "ECE (90% CI)" in text and "90% intervals" in text and "95%" not in text
    assert "0.10 (no interval)" in text and "changes (no interval to judge by)" in text
