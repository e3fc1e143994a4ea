"""Seed variance (issue 13 item 5): the `seeds` parameter, the between-seed spread on hand-made per-seed numbers
whose mean, SD, range and ratios are known, the primary's bootstrap CI copied (never recomputed), the one-seed
case reported as not estimable, the table, figure and report text, and one tiny end-to-end run of two seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from amt_core.layout import RunLayout
from amt_core.pipeline import seeds as S
from amt_core.pipeline.params import ParameterError, load_params, validate

#: three seeds of hand-made numbers; seed 0 is the run's. Dice 0.80/0.84/0.82: mean 0.82, SD 0.02, range 0.04
PER_SEED = pd.DataFrame({
    "seed": [0, 1, 2],
    "dice": [0.80, 0.84, 0.82], "iou": [0.70, 0.70, 0.70], "precision": [0.9, 0.8, 0.7],
    "recall": [0.6, 0.9, 0.9], "sensitivity": [0.8, 0.9, np.nan], "fp_per_scan": [0.5, 0.3, 0.4],
    "cpm": [0.70, 0.72, 0.74],
})  # fmt: skip
#: the primary's CIs as analyse() saved them (arbitrary, so a copy is recognisable)
INTERVALS = pd.DataFrame(
    {
        "metric": list(S.SEED_METRICS),
        "ci_lo": [0.78, 0.65, 0.85, 0.5, 0.7, 0.2, 0.61],
        "ci_hi": [0.86, 0.75, 0.95, 0.7, 0.9, 0.8, 0.79],
    }
)
#: chi-square quantiles with 2 degrees of freedom (statistical tables): 0.025 -> 0.05064, 0.975 -> 7.3778
CHI2_2DF = (0.0506356, 7.3777589)


# --- the parameter --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seeds, seed, message",
    [
        ("0,1,2", 0, "seeds must be list"),
        ([0, 0, 1], 0, "seeds must be a list of distinct non-negative ints"),
        ([0, -1], 0, "seeds must be a list of distinct non-negative ints"),
        ([0, True], 0, "seeds must be a list of distinct non-negative ints"),
        ([0, 1.0], 0, "seeds must be a list of distinct non-negative ints"),
        ([1, 2], 0, "seeds must contain seed (0)"),
        ([0, 2], 3, "seeds must contain seed (3)"),
    ],
)
def test_invalid_seeds_are_an_error_naming_the_problem(tmp_path, seeds, seed, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"seed": seed, "seeds": seeds}))
    with pytest.raises(ParameterError) as info:
        load_params(path)
    assert str(path) in str(info.value) and message in str(info.value)
    with pytest.raises(ParameterError, match="seeds must"):
        S.other_seeds(seeds, seed)


def test_valid_seeds_and_the_presets():
    assert validate({"seeds": []}) == [] and validate({"seeds": [2, 0, 1]}) == []
    assert validate({"seeds": [1, 2]}) == [
        "seeds must contain seed (0), whose model stays the run's; got [1, 2]"
    ]
    assert (
        S.other_seeds([2, 0, 1], 0) == [2, 1] and S.other_seeds([], 3) == [] and S.other_seeds([3], 3) == []
    )
    assert load_params("study")["seeds"] == [0, 1, 2]  # the study preset trains three
    assert not load_params("demo").get("seeds") and not load_params("smoke").get("seeds")  # the demo one


# --- the spread on hand-made numbers ----------------------------------------------------------------------
def test_spread_table_gives_the_known_mean_sd_range_and_ratios():
    t = S.spread_table(PER_SEED, INTERVALS, primary_seed=0, ci_level=0.95).set_index("metric")
    assert list(t.index) == list(S.SEED_METRICS)
    d = t.loc["dice"]
    assert (d["n_seeds"], d["primary_seed"], d["primary"]) == (3, 0, 0.80)
    assert d["seed_mean"] == pytest.approx(0.82) and d["seed_sd"] == pytest.approx(0.02)
    assert (d["seed_min"], d["seed_max"]) == (0.80, 0.84) and d["seed_range"] == pytest.approx(0.04)
    assert d["primary_minus_mean"] == pytest.approx(-0.02)
    assert (d["ci_lo"], d["ci_hi"]) == (0.78, 0.86)  # copied as analyse() saved them
    assert d["ci_width"] == pytest.approx(0.08) and d["bootstrap_se"] == pytest.approx(0.08 / (2 * 1.959964))
    assert d["sd_over_se"] == pytest.approx(0.02 / (0.08 / (2 * 1.959964)))
    assert d["range_over_ci_width"] == pytest.approx(0.5)
    # chi-square interval of the SD: sd * sqrt(df / chi2_(1+level)/2) ... sd * sqrt(df / chi2_(1-level)/2)
    assert d["seed_sd_ci_lo"] == pytest.approx(0.02 * math.sqrt(2 / CHI2_2DF[1]), rel=1e-5)
    assert d["seed_sd_ci_hi"] == pytest.approx(0.02 * math.sqrt(2 / CHI2_2DF[0]), rel=1e-5)
    assert d["note"] == ""
    # no spread at all: SD 0, ratios 0
    assert t.loc["iou", "seed_sd"] == pytest.approx(0, abs=1e-12) and t.loc["iou", "range_over_ci_width"] == 0
    # a seed without a value (no lesion: sensitivity undefined) is left out of that metric's spread
    s = t.loc["sensitivity"]
    assert (
        s["n_seeds"] == 2
        and s["seed_mean"] == pytest.approx(0.85)
        and s["seed_sd"] == pytest.approx(math.sqrt(0.005))
    )
    # the primary is a row's value whatever the order of the seeds
    assert (
        S.spread_table(PER_SEED.iloc[::-1], INTERVALS, primary_seed=1)
        .set_index("metric")
        .loc["dice", "primary"]
        == 0.84
    )


def test_one_seed_is_not_estimable_with_the_value_and_its_ci_kept():
    t = S.spread_table(PER_SEED.iloc[:1], INTERVALS, primary_seed=0).set_index("metric")
    d = t.loc["dice"]
    assert d["n_seeds"] == 1 and d["primary"] == 0.80 and (d["ci_lo"], d["ci_hi"]) == (0.78, 0.86)
    assert d["seed_mean"] == 0.80 and d["seed_min"] == d["seed_max"] == 0.80
    for col in ("seed_sd", "seed_range", "seed_sd_ci_lo", "sd_over_se", "range_over_ci_width"):
        assert np.isnan(d[col]), col  # not 0: a spread of zero would pass for a real one
    assert (t["note"] == S.ONE_SEED).all() and S.ONE_SEED.startswith("not estimable")
    assert "not estimable" in S.sentence(t.reset_index().iloc[0])
    with pytest.raises(ValueError, match="primary seed 5"):
        S.spread_table(PER_SEED, INTERVALS, primary_seed=5)


def test_metrics_of_a_summary_and_the_primary_intervals_read_from_analysis(tmp_path):
    summary = {
        "means": {
            m: {"mean": v}
            for m, v in zip(("dice", "iou", "precision", "recall"), (0.9, 0.8, 0.7, 0.6), strict=True)
        },
        "headline": {"operating_iou": 0.5, "sensitivity": 0.87, "fp_per_scan": 0.61},
        "cpm": {"0.1": {"cpm": 0.9}, "0.5": {"cpm": 0.75}},
    }
    assert S.seed_metrics(summary, 0.5) == {
        "dice": 0.9,
        "iou": 0.8,
        "precision": 0.7,
        "recall": 0.6,
        "sensitivity": 0.87,
        "fp_per_scan": 0.61,
        "cpm": 0.75,
    }
    with pytest.raises(ValueError, match="headline is at IoU 0.5, not the operating IoU 0.3"):
        S.seed_metrics(summary, 0.3)
    with pytest.raises(FileNotFoundError, match="seg_ci.csv.*run 03_evaluate's statistics"):
        S.primary_intervals(tmp_path, 0.5)
    pd.DataFrame(
        {
            "metric": ["dice", "iou", "precision", "recall", "hd95_mm"],
            "mean": [0.9, 0.8, 0.7, 0.6, 3.0],
            "ci_lo": [0.81, 0.71, 0.61, 0.51, 1.0],
            "ci_hi": [0.91, 0.81, 0.71, 0.61, 5.0],
        }
    ).to_csv(tmp_path / "seg_ci.csv", index=False)
    pd.DataFrame(
        {
            "iou_threshold": [0.3, 0.5],
            "sensitivity": [0.9, 0.87],
            "sensitivity_ci_lo": [0.8, 0.77],
            "sensitivity_ci_hi": [1.0, 0.97],
            "fp_per_scan": [0.5, 0.61],
            "fp_per_scan_ci_lo": [0.4, 0.41],
            "fp_per_scan_ci_hi": [0.6, 0.81],
        }
    ).to_csv(tmp_path / "operating_points.csv", index=False)
    pd.DataFrame(
        {"iou_threshold": [0.1, 0.5], "cpm": [0.9, 0.75], "ci_lo": [0.8, 0.65], "ci_hi": [1.0, 0.85]}
    ).to_csv(tmp_path / "cpm.csv", index=False)
    iv = S.primary_intervals(tmp_path, 0.5).set_index("metric")
    assert list(iv.index) == list(S.SEED_METRICS)
    assert tuple(iv.loc["dice"]) == (0.9, 0.81, 0.91) and tuple(iv.loc["sensitivity"]) == (0.87, 0.77, 0.97)
    assert tuple(iv.loc["fp_per_scan"]) == (0.61, 0.41, 0.81) and tuple(iv.loc["cpm"]) == (0.75, 0.65, 0.85)


# --- table, figure, report ---------------------------------------------------------------------------------
def test_table_figure_and_report_text(tmp_path):
    from amt_core.atomic import write_csv, write_json
    from amt_core.plots.seeds import plot_seed_variance, read_seed_variance, seed_variance_table
    from amt_core.plots.style import save_figure

    spread = S.spread_table(PER_SEED, INTERVALS, primary_seed=0)
    table, shown = seed_variance_table(spread, PER_SEED)
    np.testing.assert_array_equal(table["seed_2"], PER_SEED.set_index("seed").loc[2, list(S.SEED_METRICS)])
    assert shown.loc[4, "Seed 2"] == "–"  # no value (sensitivity without a lesion), not 'nan'
    dice = shown.iloc[0]
    assert dice["Seed 0 (the run's), 95% bootstrap CI"] == "0.800 (0.780–0.860)" and dice["Seed 1"] == "0.840"
    assert dice["Between seeds, mean ± SD"] == "0.820 ± 0.020" and dice["Range / CI width"] == "0.50"
    one = seed_variance_table(
        S.spread_table(PER_SEED.iloc[:1], INTERVALS, primary_seed=0), PER_SEED.iloc[:1]
    )[1]
    assert set(one["Between seeds, mean ± SD"]) == {"not estimable (one seed)"} and "Seed 1" not in one
    png = [
        p
        for p in save_figure(plot_seed_variance(spread, PER_SEED), tmp_path, "seed_variance")
        if p.suffix == ".png"
    ]
    assert png[0].stat().st_size > 5_000

    layout = RunLayout.of(tmp_path / "run")
    assert (
        S.report_lines(layout) == [] and read_seed_variance(layout.analysis_dir) is None
    )  # no files: nothing
    for n, frame in ((3, spread), (1, S.spread_table(PER_SEED.iloc[:1], INTERVALS, primary_seed=0))):
        write_csv(layout.analysis_dir / "seed_variance.csv", frame)
        write_json(
            layout.analysis_dir / "seed_variance.json",
            {
                "seeds": [0, 1, 2][:n],
                "primary_seed": 0,
                "n_seeds": n,
                "estimable": n > 1,
                "note": "computed" if n > 1 else S.ONE_SEED,
                "operating_iou": 0.5,
                "incomplete_training": [2][: n > 1],
            },
        )
        write_csv(layout.analysis_dir / "seed_metrics.csv", PER_SEED.iloc[:n])
        read = read_seed_variance(layout.analysis_dir)  # from CSV: empty notes come back as NaN
        assert read[2] == 0.5
        pd.testing.assert_frame_equal(
            seed_variance_table(*read)[1], seed_variance_table(frame, PER_SEED.iloc[:n])[1]
        )
        text = "\n".join(S.report_lines(layout))
        assert text.startswith(f"## Training randomness: {n} seed")
        assert "resamples the external-test scans" in text and "training's randomness" in text
        if n == 1:
            assert "**Between-seed spread not estimable: one seed" in text and "Dice:" not in text
        else:
            assert "seeds 1, 2 were trained" in text and "Incomplete training** of seed(s) [2]" in text
            assert "- Dice: 3 seeds gave 0.800–0.840 (mean 0.820, SD 0.020" in text
            assert "the seed range is 50% of the CI's width" in text


# --- end to end: two seeds on a tiny cohort -----------------------------------------------------------------
#: the smallest training of tests/test_model_train.py, one step
TINY = dict(
    patch_size=(32, 32, 32),
    channels=(8, 16, 32),
    strides=(2, 2),
    batch_size=2,
    steps_per_epoch=1,
    max_epochs=1,
    eval_every=1,
    num_workers=0,
    target_spacing=(3.0, 3.0, 3.0),
)


@pytest.mark.usefixtures("one_torch_thread")
def test_two_seeds_train_two_models_and_the_table_has_two_rows(tmp_path):
    import torch
    from toy import toy_cohort

    from amt_core.atomic import write_csv
    from amt_core.data.cases import read_cases
    from amt_core.evaluation import EvalConfig, EvaluationResult, evaluate_predictions
    from amt_core.model.inference import predict
    from amt_core.model.train import train
    from amt_core.pipeline.run import STEPS

    csv = toy_cohort(tmp_path / "cohort", n_train=2, n_tune=1, n_test=2)
    layout = RunLayout.of(tmp_path / "run", str(csv))
    overrides = {**TINY, "cache_dir": tmp_path / "cache"}
    train(csv, layout.train_dir, seed=0, progress=False, **overrides)  # the 02_train cell
    (layout.seed_dir(7) / "train").mkdir(parents=True)  # a seed no longer listed
    assert S.train_seeds(layout, [0, 1], 0, preset="cpu", train_overrides=overrides, progress=False) == [
        layout.seed_train_dir(1)
    ]
    assert layout.seed_numbers() == [1]  # seed 7's folder removed, no folder for the primary
    a, b = (
        torch.load(p, map_location="cpu", weights_only=True)
        for p in (layout.model_path, layout.seed_model_path(1))
    )
    assert (json.loads(a["extra"])["seed"], json.loads(b["extra"])["seed"]) == (0, 1)
    assert any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # two different models
    # 02_train's outputs: both models, and how each training ended (what the report and the seed table read)
    assert STEPS[1].outputs(layout) == [
        layout.model_path,
        layout.seed_model_path(1),
        layout.train_dir / "training.json",
        layout.train_dir / "train_log.csv",
        layout.seed_train_dir(1) / "training.json",
    ]

    # the 03_evaluate cells before: the primary predicted, evaluated, its statistics saved
    cases, config = read_cases(csv), EvalConfig(n_bootstrap=50, seed=0)
    predict(layout.model_path, csv, layout.predictions("test"), split="test", progress=False)
    result = evaluate_predictions(
        cases, layout.predictions("test"), split="test", config=config, progress=False
    )
    result.save(layout.evaluation("test"))
    ana = layout.analysis_dir
    write_csv(ana / "seg_ci.csv", result.cis)  # what analyse() writes, from the same result
    write_csv(ana / "operating_points.csv", result.froc_iou)
    cpm = result.froc_points[result.froc_points["point"] == "cpm"]
    write_csv(
        ana / "cpm.csv",
        cpm[["iou_threshold", "sensitivity", "ci_lo", "ci_hi"]].rename(columns={"sensitivity": "cpm"}),
    )

    out = S.seed_variance(layout, cases, config, [0, 1], 0, progress=False)
    per_seed = pd.read_csv(ana / "seed_metrics.csv")
    assert (
        list(per_seed["seed"]) == [0, 1]
        and list(per_seed["primary"]) == [True, False]
        and len(out["per_seed"]) == 2
    )
    other = EvaluationResult.load(layout.seed_evaluation(1))
    assert per_seed.loc[1, "dice"] == pytest.approx(other.means["dice"])
    assert per_seed.loc[0, "dice"] == pytest.approx(result.means["dice"])
    spread = pd.read_csv(ana / "seed_variance.csv").set_index("metric")
    assert (spread["n_seeds"] == 2).all()
    assert spread.loc["dice", "ci_lo"] == pytest.approx(result.cis.set_index("metric").loc["dice", "ci_lo"])
    assert spread.loc["dice", "seed_range"] == pytest.approx(
        abs(per_seed.loc[0, "dice"] - per_seed.loc[1, "dice"])
    )
    assert json.loads((ana / "seed_variance.json").read_text())["estimable"] is True
    assert set(STEPS[2].outputs(layout)) >= {layout.seed_predictions(1), layout.seed_evaluation(1)}

    # statistics of another evaluation are refused, not mixed in
    bad = result.cis.copy()
    bad.loc[bad["metric"] == "dice", "mean"] += 0.1
    write_csv(ana / "seg_ci.csv", bad)
    with pytest.raises(ValueError, match="dice is .* there but .* in evaluation/test/summary.json"):
        S.seed_variance(layout, cases, config, [0, 1], 0, progress=False)
    with pytest.raises(ValueError, match="other settings than this EvalConfig"):
        S.seed_variance(layout, cases, EvalConfig(n_bootstrap=60, seed=0), [0, 1], 0, progress=False)
    write_csv(ana / "seg_ci.csv", result.cis)

    # back to one seed: RUN/seeds removed, the spread written as not estimable
    assert S.train_seeds(layout, [], 0, preset="cpu", train_overrides=overrides, progress=False) == []
    assert not layout.seeds_dir.exists() and layout.seed_model_paths() == []
    S.seed_variance(layout, cases, config, [], 0, progress=False)
    info = json.loads((ana / "seed_variance.json").read_text())
    assert info["estimable"] is False and info["note"] == S.ONE_SEED and info["n_seeds"] == 1
    assert len(pd.read_csv(ana / "seed_metrics.csv")) == 1
