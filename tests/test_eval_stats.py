"""Institution and sub-group statistics: intervals, tables, tests and models on hand-made and simulated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from amt_core import registry
from amt_core.evaluation.models import detection_gee, institution_mixed_model
from amt_core.evaluation.multiplicity import adjust_family, format_p
from amt_core.evaluation.stats import (
    UNKNOWN,
    compare_to_published,
    detection_subgroup_table,
    institution_table,
    proportion_ci,
    subgroup_levels,
    subgroup_table,
)


def _cohort(n=164, n_inst=121, seed=0):
    """A synthetic case table and per-case metrics shaped like the external test split."""
    rng = np.random.default_rng(seed)
    cases = pd.DataFrame(
        {
            "case_id": [f"c{i:03d}" for i in range(n)],
            "patient_id": [f"p{i:03d}" for i in range(n)],
            "institution_id": [f"I{k:03d}" for k in rng.integers(0, n_inst, n)],
            "split": "test",
            "sex": rng.choice(list(registry.SEXES), n),
            "age": rng.uniform(20, 85, n),
            "histology": rng.choice(["thymoma_AB", "thymic_carcinoma", "lymphoma"], n),
            "tumour_volume_ml": rng.lognormal(3.0, 1.2, n),
            "contrast": rng.choice(["none", "venous"], n),
            "slice_thickness_mm": rng.choice([1.0, 1.5, 2.5, 5.0], n),
            "vendor": rng.choice(["GE", "Siemens", "Canon"], n),
        }
    )
    cases.loc[[3, 7], "age"] = np.nan  # unknown age
    per_case = cases[["case_id", "institution_id"]].copy()
    for metric in registry.SEG_METRICS:
        per_case[metric] = rng.beta(8, 2, n)
    per_case.loc[5, "precision"] = np.nan  # undefined for an empty prediction
    return cases, per_case


# --- proportions ---------------------------------------------------------------------------------------
def test_wilson_matches_hand_values():
    # Wilson score interval written out: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    assert proportion_ci(87, 100) == pytest.approx((0.7901964855992357, 0.9224283257275948), abs=1e-12)
    assert proportion_ci(7, 8) == pytest.approx((0.5291118177871464, 0.9775825085499433), abs=1e-12)
    lo, hi = proportion_ci(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0 < hi < 1


def test_clopper_pearson_is_the_exact_beta_interval_and_arrays_work():
    lo, hi = proportion_ci(7, 20, ci_method="clopper-pearson")
    assert lo == pytest.approx(sps.beta.ppf(0.025, 7, 14))
    assert hi == pytest.approx(sps.beta.ppf(0.975, 8, 13))
    lo, hi = proportion_ci(np.array([0, 5]), np.array([0, 10]))
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] < 0.5 < hi[1]
    with pytest.raises(ValueError, match="successes"):
        proportion_ci(5, 3)
    with pytest.raises(ValueError, match="ci_method must be"):
        proportion_ci(1, 3, ci_method="agresti")


# --- sub-group bins ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, column, value, expected",
    [
        ("age_band", "age", 39.9, "<40"),
        ("age_band", "age", 40.0, "40-59"),
        ("age_band", "age", 59.99, "40-59"),
        ("age_band", "age", 60.0, ">=60"),
        ("age_band", "age", np.nan, UNKNOWN),
        ("tumour_size_band", "tumour_volume_ml", 9.99, "<10 ml"),
        ("tumour_size_band", "tumour_volume_ml", 10.0, "10-50 ml"),
        ("tumour_size_band", "tumour_volume_ml", 200.0, ">=200 ml"),
        ("slice_thickness_band", "slice_thickness_mm", 1.5, "<=1.5 mm"),
        ("slice_thickness_band", "slice_thickness_mm", 3.0, "1.5-3 mm"),
        ("slice_thickness_band", "slice_thickness_mm", 3.01, ">3 mm"),
        ("slice_thickness_band", "slice_thickness_mm", 0.625, "<=1.5 mm"),
        ("sex", "sex", "F", "F"),
        ("vendor", "vendor", None, UNKNOWN),
    ],
)
def test_subgroup_bins(name, column, value, expected):
    levels = subgroup_levels(pd.DataFrame({column: [value]}), name)
    assert levels.iloc[0] == expected


def test_subgroup_levels_follow_registry_order_and_name_missing_columns():
    levels = subgroup_levels(pd.DataFrame({"sex": ["F", "M", "F"]}), "sex")
    assert list(levels.cat.categories) == ["M", "F", UNKNOWN]
    with pytest.raises(KeyError, match="tumour_volume_ml"):
        subgroup_levels(pd.DataFrame({"sex": ["F"]}), "tumour_size_band")
    with pytest.raises(KeyError, match="unknown sub-group"):
        subgroup_levels(pd.DataFrame({"sex": ["F"]}), "shoe_size")


# --- tables --------------------------------------------------------------------------------------------------
def test_subgroup_table_counts_add_up_and_tests_match_scipy():
    cases, per_case = _cohort()
    table = subgroup_table(per_case, cases, n_bootstrap=300, seed=0)
    assert set(table["subgroup"]) == set(registry.SUBGROUPS) - {
        "anatomy"
    }  # the cohort has no 'anatomy' column
    sums = table.groupby(["subgroup", "metric"])["n"].sum().unstack()
    assert (sums["dice"] == 164).all() and (sums["precision"] == 163).all()
    age = table[(table["subgroup"] == "age_band") & (table["metric"] == "dice")].set_index("level")
    assert age.loc[UNKNOWN, "n"] == 2
    assert list(age.index) == ["<40", "40-59", ">=60", UNKNOWN]
    assert (age["ci_lo"] <= age["mean"]).all() and (age["mean"] <= age["ci_hi"]).all()
    # Kruskal-Wallis over the known age bands; Mann-Whitney for the two sexes
    merged = per_case.merge(cases[["case_id", "age", "sex"]], on="case_id")
    bands = subgroup_levels(merged, "age_band")
    groups = [merged.loc[bands == lev, "dice"] for lev in ["<40", "40-59", ">=60"]]
    assert age["test"].iloc[0] == "kruskal-wallis"
    assert age["p_value"].iloc[0] == pytest.approx(sps.kruskal(*groups).pvalue)
    sex = table[(table["subgroup"] == "sex") & (table["metric"] == "dice")]
    want = sps.mannwhitneyu(
        merged.loc[merged["sex"] == "M", "dice"],
        merged.loc[merged["sex"] == "F", "dice"],
        alternative="two-sided",
    ).pvalue
    assert sex["test"].iloc[0] == "mann-whitney" and sex["p_value"].iloc[0] == pytest.approx(want)


def test_subgroup_table_cluster_option_and_single_scan_levels():
    cases, per_case = _cohort(n=40, n_inst=8, seed=1)
    cases.loc[0, "vendor"] = "Fujifilm"  # a level with a single scan: no CI
    table = subgroup_table(per_case, cases, subgroups=("vendor",), n_bootstrap=200, seed=0, cluster=True)
    fuji = table[table["level"] == "Fujifilm"]
    assert (fuji["n"] == 1).all() and fuji["ci_lo"].isna().all()
    assert table["cluster"].all()


def test_small_groups_get_a_student_t_interval_not_a_narrow_bootstrap():
    """A level of 2-9 scans: the bootstrap under-covers, so its interval is Student's t (by hand below),
    clipped to [0, 1] and named in ci_method and note; 10 scans and more: the bootstrap; all-equal values:
    no interval."""
    cases, per_case = _cohort(n=60, n_inst=30, seed=2)
    cases["vendor"] = ["Canon"] * 3 + ["Fujifilm"] * 2 + ["GE"] * 55
    per_case.loc[3:4, "dice"] = 0.7  # the two Fujifilm scans: equal Dice
    table = subgroup_table(per_case, cases, subgroups=("vendor",), n_bootstrap=300, seed=0)
    rows = table.set_index(["level", "metric"])
    dice = per_case["dice"].to_numpy()[:3]
    half = sps.t.ppf(0.975, 2) * dice.std(ddof=1) / np.sqrt(3)
    canon = rows.loc[("Canon", "dice")]
    assert (canon["ci_lo"], canon["ci_hi"]) == pytest.approx(
        (max(dice.mean() - half, 0.0), min(dice.mean() + half, 1.0))
    )
    assert canon["ci_method"] == "t" and "Student-t" in canon["note"]
    fuji = rows.loc[("Fujifilm", "dice")]
    assert np.isnan(fuji["ci_lo"]) and "all equal" in fuji["note"]
    assert rows.loc[("Fujifilm", "iou"), "ci_method"] == "t"  # its IoUs differ
    ge = rows.loc[("GE", "dice")]
    assert ge["ci_method"] == "percentile" and pd.isna(ge["note"]) and ge["ci_lo"] < ge["mean"] < ge["ci_hi"]
    wide = per_case.assign(dice=[0.05, 0.95] + [0.8] * 58)  # two far-apart scans: t reaches past [0, 1]
    cases["vendor"] = ["Canon"] * 2 + ["GE"] * 58
    two = subgroup_table(wide, cases, subgroups=("vendor",), n_bootstrap=300, seed=0).set_index(
        ["level", "metric"]
    )
    assert (two.loc[("Canon", "dice"), "ci_lo"], two.loc[("Canon", "dice"), "ci_hi"]) == (0.0, 1.0)


def test_institution_table_pools_small_institutions():
    per_case = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(12)],
            "institution_id": ["A"] * 5 + ["B"] * 3 + ["C"] * 2 + ["D", "E"],
            "dice": np.linspace(0.5, 0.95, 12),
            "iou": np.linspace(0.4, 0.9, 12),
        }
    )
    table = institution_table(per_case, min_scans=3, metrics=("dice", "iou"), n_bootstrap=200, seed=0)
    dice = table[table["metric"] == "dice"].set_index("institution_id")
    assert list(dice.index) == ["A", "B", "pooled (<3 scans)"]
    assert list(dice["n"]) == [5, 3, 4] and dice["n"].sum() == 12
    assert list(dice["n_institutions"]) == [1, 1, 3]
    assert dice.loc["pooled (<3 scans)", "mean"] == pytest.approx(per_case["dice"].iloc[8:].mean())
    # k = 1: no pooling, single-scan institutions get no CI
    table = institution_table(per_case, min_scans=1, metrics=("dice",), n_bootstrap=200, seed=0)
    assert len(table) == 5 and table.set_index("institution_id").loc["D", ["ci_lo", "ci_hi"]].isna().all()


def test_detection_subgroup_table_sensitivity_wilson_and_fisher():
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(30)], "sex": ["M"] * 10 + ["F"] * 20})
    lesions = pd.DataFrame(
        {
            "case_id": cases["case_id"],
            "lesion_id": 1,
            "institution_id": [f"I{i % 7}" for i in range(30)],
            "hit": [True] * 9 + [False] + [True] * 12 + [False] * 8,
            "ref_volume_ml": 20.0,
        }
    )
    table = detection_subgroup_table(lesions, cases, subgroups=("sex",)).set_index("level")
    assert table.loc["M", "n_hit"] == 9 and table.loc["M", "n_lesions"] == 10
    assert table.loc["F", "sensitivity"] == pytest.approx(0.6)
    assert (table.loc["F", "ci_lo"], table.loc["F", "ci_hi"]) == pytest.approx(proportion_ci(12, 20))
    assert table["test"].iloc[0] == "fisher"
    assert table["p_value"].iloc[0] == pytest.approx(sps.fisher_exact([[9, 1], [12, 8]]).pvalue)


def _exact_ffh_p(table: np.ndarray) -> float:
    """The exact Fisher-Freeman-Halton p-value of a k x 2 table, by enumerating every table with its margins
    (the test's statistic: the table's probability; p = the mass of tables no more probable)."""
    import itertools

    from scipy.special import gammaln

    rows, hits = table.sum(axis=1), int(table[:, 0].sum())

    def logp(col0):
        col1 = rows - col0
        return (
            gammaln(rows + 1).sum() + gammaln(hits + 1) + gammaln(rows.sum() - hits + 1)
            - gammaln(rows.sum() + 1) - gammaln(np.r_[col0, col1] + 1).sum()
        )  # fmt: skip

    observed = logp(table[:, 0])
    total = 0.0
    for col0 in itertools.product(*(range(int(r) + 1) for r in rows)):
        if sum(col0) == hits and logp(np.array(col0)) <= observed + 1e-9:
            total += np.exp(logp(np.array(col0)))
    return total


def test_detection_subgroup_table_fisher_freeman_halton_for_more_levels():
    cases, _ = _cohort(n=24, n_inst=12, seed=2)
    rng = np.random.default_rng(3)
    lesions = cases[["case_id", "institution_id"]].assign(lesion_id=1, hit=rng.random(24) < 0.7)
    table = detection_subgroup_table(lesions, cases, subgroups=("vendor",))
    counts = table.set_index("level")[["n_hit", "n_lesions"]]
    counts = counts.drop(index="unknown", errors="ignore")
    observed = np.column_stack([counts["n_hit"], counts["n_lesions"] - counts["n_hit"]])
    assert len(observed) > 2 and table["test"].iloc[0] == "fisher-freeman-halton"
    # the Monte Carlo p-value (20,000 tables) agrees with the exact enumeration within its sampling error
    assert table["p_value"].iloc[0] == pytest.approx(_exact_ffh_p(observed), abs=0.012)
    # one seed, one p-value; another seed draws other tables
    again = detection_subgroup_table(lesions, cases, subgroups=("vendor",))
    assert again["p_value"].iloc[0] == table["p_value"].iloc[0]
    other = detection_subgroup_table(lesions, cases, subgroups=("vendor",), seed=1)
    assert other["p_value"].iloc[0] != table["p_value"].iloc[0]


def test_compare_to_published():
    ours = pd.DataFrame(
        {"metric": ["dice", "iou"], "mean": [0.80, 0.70], "ci_lo": [0.78, 0.65], "ci_hi": [0.83, 0.71]}
    )
    table = compare_to_published(ours).set_index("metric")
    assert list(table.index) == list(registry.PUBLISHED)
    assert table.loc["dice", "published"] == registry.PUBLISHED["dice"]
    assert table.loc["dice", "published_in_ci"] is True  # 0.82 in [0.78, 0.83]
    assert table.loc["iou", "published_in_ci"] is False  # 0.72 above [0.65, 0.71]
    assert table.loc["dice", "difference"] == pytest.approx(0.80 - 0.82)
    assert table.loc["dice", "ours_text"] == "0.800 [0.780, 0.830]"
    assert np.isnan(table.loc["recall", "ours"]) and table.loc["recall", "published_in_ci"] is None


# --- models -----------------------------------------------------------------------------------------------------
def _clustered(n_inst, per_inst, group_sd, resid_sd, seed):
    rng = np.random.default_rng(seed)
    inst = np.repeat([f"I{k:03d}" for k in range(n_inst)], per_inst)
    effect = rng.normal(0, group_sd, n_inst)
    dice = 0.8 + np.repeat(effect, per_inst) + rng.normal(0, resid_sd, n_inst * per_inst)
    return pd.DataFrame(
        {"case_id": [f"c{i}" for i in range(inst.size)], "institution_id": inst, "dice": dice}
    )


def test_mixed_model_recovers_a_known_icc():
    per_case = _clustered(n_inst=60, per_inst=20, group_sd=0.08, resid_sd=0.08, seed=0)  # ICC 0.5
    res = institution_mixed_model(per_case, metric="dice", n_bootstrap_icc=0)  # the interval: its own test
    assert res.converged and not res.on_boundary
    assert res.icc == pytest.approx(0.5, abs=0.12)
    assert res.group_var == pytest.approx(0.0064, rel=0.4)
    assert res.residual_var == pytest.approx(0.0064, rel=0.1)
    assert res.n_groups == 60 and res.n_obs == 1200 and res.caveat is None
    assert res.lrt_p_value < 1e-6
    intercept = res.fixed_effects.set_index("term").loc["Intercept"]
    assert intercept["ci_lo"] < 0.8 < intercept["ci_hi"]
    assert res.to_dict()["fixed_effects"][0]["term"] == "Intercept"


def test_mixed_model_on_mostly_single_scan_institutions_warns_and_does_not_crash():
    cases, per_case = _cohort(seed=4)  # 164 scans over up to 121 institutions, no true effect
    res = institution_mixed_model(
        per_case, cases, metric="dice", covariates=("sex", "tumour_size_band"), n_bootstrap_icc=0
    )
    assert res.caveat is not None and "weakly identified" in res.caveat
    assert res.share_groups_le2 > 0.5
    # no institution effect was simulated: the ICC is the variance share of the institutions, and small
    assert res.icc == pytest.approx(res.group_var / (res.group_var + res.residual_var))
    assert res.icc < 0.2
    assert "C(sex)[T.F]" in set(res.fixed_effects["term"])
    assert isinstance(res.warnings, list)


def test_gee_recovers_the_sign_of_an_effect():
    rng = np.random.default_rng(0)
    n_inst, per = 80, 5
    inst = np.repeat([f"I{k}" for k in range(n_inst)], per)
    log_vol = rng.normal(0, 1, n_inst * per)
    u = np.repeat(rng.normal(0, 0.5, n_inst), per)
    hit = rng.random(inst.size) < 1 / (1 + np.exp(-(1.0 + 1.2 * log_vol + u)))
    lesions = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(inst.size)],
            "lesion_id": 1,
            "institution_id": inst,
            "hit": hit,
            "log_vol": log_vol,
        }
    )
    gee = detection_gee(lesions, covariates=("log_vol",)).set_index("term")
    assert gee.loc["log_vol", "estimate"] > 0.5 and gee.loc["log_vol", "p_value"] < 1e-4
    assert gee.loc["log_vol", "or_ci_lo"] > 1.0
    assert gee.attrs["model"] == "gee" and gee.attrs["n_groups"] == n_inst and gee.attrs["converged"]
    bayes = detection_gee(lesions, covariates=("log_vol",), model="bayes").set_index("term")
    assert bayes.loc["log_vol", "estimate"] > 0.5 and bayes.attrs["re_sd"] > 0


def test_gee_with_subgroup_covariates_handles_separation():
    cases, _ = _cohort(n=200, n_inst=60, seed=5)
    size = subgroup_levels(cases, "tumour_size_band")
    rng = np.random.default_rng(6)
    p = np.where(size == "<10 ml", 0.5, 0.9)
    hit = rng.random(200) < p
    hit[(size == ">=200 ml").to_numpy()] = True  # every large tumour found: perfect separation
    lesions = cases[["case_id", "institution_id"]].assign(lesion_id=1, hit=hit)
    gee = detection_gee(lesions, cases, covariates=("tumour_size_band",))
    terms = gee.set_index("term")
    assert np.isfinite(gee["estimate"]).all()
    assert terms.loc["C(tumour_size_band)[T.10-50 ml]", "estimate"] > 0  # reference: "<10 ml"
    assert any(">=200 ml" in d for d in gee.attrs["dropped_levels"])
    assert gee.attrs["reference_levels"] == {"tumour_size_band": "<10 ml"}
    # the CSV keeps it: every row says which lesions were fitted, the reference and what was left out
    note = gee["note"].iloc[0]
    assert (gee["note"] == note).all() and "reference tumour_size_band=<10 ml" in note
    assert f"{gee.attrs['n_obs']} lesions" in note and "tumour_size_band=>=200 ml: all" in note
    # every small tumour missed: that band leaves the fit, and the reference moves to the next band, said so
    hit[(size == "<10 ml").to_numpy()] = False
    gee = detection_gee(cases[["case_id", "institution_id"]].assign(lesion_id=1, hit=hit), cases)
    assert gee.attrs["reference_levels"] == {"tumour_size_band": "10-50 ml"}
    assert (
        "tumour_size_band=<10 ml: all" in gee["note"].iloc[0] and "missed (separation)" in gee["note"].iloc[0]
    )
    assert "reference tumour_size_band=10-50 ml" in gee["note"].iloc[0]
    with pytest.raises(ValueError, match="model"):
        detection_gee(lesions, cases, model="glmm")


# --- multiplicity and p-value display --------------------------------------------------------------------
def test_holm_adjusts_one_p_value_per_subgroup_within_the_table():
    # three tests (one per sub-group, repeated on each level's row) and one sub-group without a test.
    # Holm by hand: sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(1*0.04, 0.06) = 0.06
    table = pd.DataFrame(
        {
            "subgroup": ["a", "a", "b", "b", "c", "d"],
            "level": list("xyxyxx"),
            "p_value": [0.01, 0.01, 0.04, 0.04, 0.03, np.nan],
        }
    )
    out = adjust_family(table)
    assert out["p_value"].tolist()[:5] == [0.01, 0.01, 0.04, 0.04, 0.03]  # the raw value is kept beside
    assert out["p_adjusted"].tolist()[:5] == pytest.approx([0.03, 0.03, 0.06, 0.06, 0.06])
    assert (
        np.isnan(out["p_adjusted"].iloc[5])
        and (out["n_tests"] == 3).all()
        and (out["p_adjust"] == "holm").all()
    )


def test_subgroup_table_with_holm_never_lowers_a_p_value():
    cases, per_case = _cohort(seed=2)
    out = adjust_family(subgroup_table(per_case, cases, n_bootstrap=50))
    assert (out["p_adjusted"] >= out["p_value"] - 1e-15).all() and (out["p_adjusted"] <= 1).all()
    assert (out["n_tests"] == len(registry.SUBGROUPS) - 1).all()  # no 'anatomy' column: not tested


@pytest.mark.parametrize(
    "p, text",
    [
        (0.0, "< 0.001"),
        (0.00049, "< 0.001"),
        (0.001, "0.001"),
        (0.0123, "0.012"),
        (1.0, "1.000"),
        (np.nan, "–"),
        (None, "–"),
    ],
)
def test_format_p(p, text):
    assert format_p(p) == text


# --- the ICC's interval ---------------------------------------------------------------------------------
def test_icc_interval_covers_a_known_icc_and_the_table_shows_the_variance_components():
    per_case = _clustered(n_inst=40, per_inst=8, group_sd=0.08, resid_sd=0.08, seed=1)  # ICC 0.5
    res = institution_mixed_model(per_case, metric="dice", n_bootstrap_icc=60, seed=0)
    assert res.icc_boot_fits >= 50 and "parametric bootstrap" in res.icc_ci_method
    assert 0.0 < res.icc_ci_lo < res.icc < res.icc_ci_hi < 1.0
    assert res.icc_ci_lo < 0.5 < res.icc_ci_hi
    table = res.table().set_index("term")
    assert list(table.index) == [
        "Intercept",
        "institution variance (random intercept)",
        "residual variance",
        "ICC",
    ]
    assert table.loc["ICC", "estimate"] == pytest.approx(res.icc)
    assert (
        table.loc["ICC", "ci_lo"] == res.icc_ci_lo
        and table.loc["residual variance", "estimate"] == res.residual_var
    )
    assert table.loc["institution variance (random intercept)", "p_value"] == res.lrt_p_value
    assert f"About {100 * res.icc:.0f}% (95% CI {res.icc_ci_lo:.2f}–{res.icc_ci_hi:.2f})" in res.sentence()
    # same seed, same interval
    again = institution_mixed_model(per_case, metric="dice", n_bootstrap_icc=60, seed=0)
    assert (again.icc_ci_lo, again.icc_ci_hi) == (res.icc_ci_lo, res.icc_ci_hi)


def test_icc_of_single_scan_institutions_is_not_identifiable():
    per_case = _clustered(n_inst=30, per_inst=1, group_sd=0.05, resid_sd=0.05, seed=3)
    res = institution_mixed_model(per_case, metric="dice", n_bootstrap_icc=40)
    assert np.isnan(res.icc_ci_lo) and np.isnan(res.icc_ci_hi) and res.icc_boot_fits == 0
    assert res.n_groups_replicated == 0 and res.icc_ci_method == ""
    assert "None of the 30 institutions contributes more than one scan" in res.sentence()
    assert "not identifiable" in res.sentence()
    table = res.table().set_index("term")
    assert "not identifiable" in table.loc["ICC", "note"]
    # an optimiser splits the total variance arbitrarily (ICC exactly 0.5): no number is reported for it
    assert np.isnan(res.icc) and np.isnan(res.group_var) and np.isnan(res.lrt_p_value)
    assert (
        table.loc[["ICC", "residual variance", "institution variance (random intercept)"], "estimate"]
        .isna()
        .all()
    )
    intercept = table.loc["Intercept"]  # the fixed part: ordinary least squares, the mean with its SE
    assert intercept["estimate"] == pytest.approx(per_case["dice"].mean())
    assert intercept["se"] == pytest.approx(per_case["dice"].std(ddof=1) / np.sqrt(30))
    assert "ordinary least squares" in intercept["note"]


def test_the_icc_sentence_gives_the_spread_its_interval_allows():
    """On the boundary the point estimate puts no variance between institutions ("within ±0.00"): the
    sentence also gives the spread at the interval's upper end, 1.96 sqrt(ICC_hi / (1 - ICC_hi) x residual)."""
    from amt_core.evaluation.icc import generalisation_sentence

    text = generalisation_sentence(0.0, 0.0, 0.5, 0.0, 40, 0.2, "Dice", 40, residual_var=0.01)
    assert "within ±0.00 of the overall mean, and within ±0.20 at the interval's upper end." in text
    assert "upper end" not in generalisation_sentence(
        0.1, np.nan, np.nan, 0.001, 40, 0.2, "Dice", 40, residual_var=0.01
    )
