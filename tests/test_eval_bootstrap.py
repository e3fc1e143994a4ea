"""Bootstrap resampling and CIs: coverage, determinism, cluster structure, agreement with scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from amt_core.evaluation.bootstrap import (
    MIN_CLUSTERS,
    bootstrap_means,
    ci_from_replicates,
    cluster_problem,
    jackknife_means,
    resample_indices,
    resample_weights,
    weighted_means,
)


# --- the resampler ---------------------------------------------------------------------------------------
def test_scan_weights_shape_dtype_and_row_sums():
    w = resample_weights(164, 10_000, seed=0)
    assert w.shape == (10_000, 164)
    assert w.dtype == np.int32
    assert (w.sum(axis=1) == 164).all()
    assert (w >= 0).all()
    # each scan is drawn with probability 1/n per draw: mean count 1
    assert abs(w.mean() - 1.0) < 1e-12
    assert abs(w[:, 0].var() - (1 - 1 / 164)) < 0.05


def test_same_seed_identical_different_seed_different():
    a = resample_weights(50, 200, seed=7)
    b = resample_weights(50, 200, seed=7)
    c = resample_weights(50, 200, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    x = np.random.default_rng(0).normal(size=(50, 3))
    for method in ("percentile", "bca"):
        r1 = bootstrap_means(x, n_bootstrap=500, seed=1, ci_method=method)
        r2 = bootstrap_means(x, n_bootstrap=500, seed=1, ci_method=method)
        r3 = bootstrap_means(x, n_bootstrap=500, seed=2, ci_method=method)
        pd.testing.assert_frame_equal(r1, r2)
        assert not np.allclose(r1["ci_lo"], r3["ci_lo"])


def test_chunked_draws_are_the_same_resamples(monkeypatch):
    import amt_core.evaluation.bootstrap as bs

    full = resample_weights(30, 100, seed=3)
    monkeypatch.setattr(bs, "_CHUNK", 30 * 7)  # 7 rows per chunk
    np.testing.assert_array_equal(resample_weights(30, 100, seed=3), full)


def test_cluster_weights_keep_institutions_together():
    rng = np.random.default_rng(0)
    clusters = rng.choice([f"I{k}" for k in range(25)], size=80)
    w = resample_weights(80, 2_000, seed=0, clusters=clusters)
    assert w.dtype == np.int32 and w.shape == (2_000, 80)
    labels, codes = np.unique(clusters, return_inverse=True)
    sizes = np.bincount(codes)
    for g in range(labels.size):
        block = w[:, codes == g]
        assert (block == block[:, :1]).all(), "scans of one institution must share their count"
    # institution counts: G draws with replacement per resample
    group_counts = w[:, [np.nonzero(codes == g)[0][0] for g in range(labels.size)]]
    assert (group_counts.sum(axis=1) == labels.size).all()
    np.testing.assert_array_equal(w.sum(axis=1), group_counts @ sizes)


def test_resample_indices_match_weights():
    clusters = np.repeat(np.arange(6), [1, 2, 3, 1, 4, 2])
    for cl in (None, clusters):
        w = resample_weights(13, 20, seed=5, clusters=cl)
        idx = resample_indices(13, 20, seed=5, clusters=cl)
        assert len(idx) == 20
        for row, ii in zip(w, idx, strict=True):
            np.testing.assert_array_equal(np.bincount(ii, minlength=13), row)


def test_cluster_labels_validated():
    with pytest.raises(ValueError, match="one label per scan"):
        resample_weights(5, 10, seed=0, clusters=[1, 2, 3])
    with pytest.raises(ValueError, match="missing"):
        resample_weights(3, 10, seed=0, clusters=np.array(["a", None, "b"], dtype=object))


# --- means and CIs against plain loops ----------------------------------------------------------------------
def test_weighted_means_equal_a_python_loop_with_nans():
    rng = np.random.default_rng(1)
    x = rng.random((40, 3))
    x[[2, 5, 11], 1] = np.nan
    w = resample_weights(40, 50, seed=2)
    idx = resample_indices(40, 50, seed=2)
    got = weighted_means(w, x)
    want = np.array([np.nanmean(x[ii], axis=0) for ii in idx])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_percentile_ci_equals_numpy_percentile_of_loop_replicates():
    x = np.random.default_rng(3).exponential(size=35)
    res = bootstrap_means(x, n_bootstrap=2_000, seed=4)
    reps = np.array([x[ii].mean() for ii in resample_indices(35, 2_000, seed=4)])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert res.loc[0, "ci_lo"] == pytest.approx(lo, rel=1e-12)
    assert res.loc[0, "ci_hi"] == pytest.approx(hi, rel=1e-12)
    assert res.loc[0, "mean"] == pytest.approx(x.mean())
    assert list(res.columns[:8]) == [
        "metric",
        "mean",
        "ci_lo",
        "ci_hi",
        "ci_method",
        "ci_level",
        "n_bootstrap",
        "n",
    ]


def test_jackknife_closed_form_equals_leave_one_out_loop():
    rng = np.random.default_rng(5)
    x = rng.random((12, 2))
    x[3, 0] = np.nan
    jack = jackknife_means(x)
    for i in range(12):
        for j in range(2):
            if np.isnan(x[i, j]):
                assert np.isnan(jack[i, j])
            else:
                assert jack[i, j] == pytest.approx(np.nanmean(np.delete(x[:, j], i)))
    clusters = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 4])
    jc = jackknife_means(x, clusters)
    assert jc.shape == (5, 2)
    for g in range(5):
        assert jc[g, 1] == pytest.approx(x[clusters != g, 1].mean())


def test_bca_matches_scipy():
    x = np.random.default_rng(11).exponential(size=40)
    ours = bootstrap_means(x, n_bootstrap=40_000, seed=0, ci_method="bca").iloc[0]
    ref = stats.bootstrap((x,), np.mean, method="BCa", n_resamples=40_000, rng=1).confidence_interval
    width = ref.high - ref.low
    # two independent Monte Carlo runs of 40,000 resamples: agree to a few percent of the width
    assert abs(ours["ci_lo"] - ref.low) < 0.03 * width
    assert abs(ours["ci_hi"] - ref.high) < 0.03 * width
    # and BCa differs from percentile in the direction of the skew (shifted up)
    pct = bootstrap_means(x, n_bootstrap=40_000, seed=0).iloc[0]
    assert ours["ci_hi"] > pct["ci_hi"]


def test_ci_from_replicates_vectorised_and_degenerate_cases():
    rng = np.random.default_rng(2)
    reps = rng.normal(size=(1_000, 3))
    reps[:10, 2] = np.nan
    point = np.array([0.1, 0.0, -0.1])
    jack = rng.normal(size=(20, 3))
    for method in ("percentile", "bca"):
        lo, hi = ci_from_replicates(reps, point, ci_method=method, jackknife=jack)
        for j in range(3):
            lj, hj = ci_from_replicates(reps[:, j], point[j], ci_method=method, jackknife=jack[:, j])
            assert lo[j] == pytest.approx(lj) and hi[j] == pytest.approx(hj)
    # the NaN replicates of column 2 are ignored
    lo, hi = ci_from_replicates(reps[:, 2], 0.0)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(reps[10:, 2], [2.5, 97.5])))
    # all replicates equal -> (point, point); nothing finite -> NaN
    assert ci_from_replicates(np.full(100, 0.7), 0.7, ci_method="bca") == (0.7, 0.7)
    assert all(np.isnan(ci_from_replicates(np.full(100, np.nan), 0.5)))
    assert all(np.isnan(ci_from_replicates(rng.normal(size=100), np.nan)))
    # point outside every replicate: BCa stays finite (extreme replicate)
    lo, hi = ci_from_replicates(np.linspace(0, 1, 101), 5.0, ci_method="bca")
    assert np.isfinite(lo) and np.isfinite(hi)
    with pytest.raises(ValueError, match="ci_method must be one of"):
        ci_from_replicates(reps, point, ci_method="basic")


def test_no_resamples_or_no_scans_give_nan_intervals():
    x = np.random.default_rng(0).random((10, 2))
    for method in ("percentile", "bca"):
        res = bootstrap_means(x, n_bootstrap=0, ci_method=method)  # n_bootstrap = 0 means "no CIs"
        assert res["ci_lo"].isna().all() and np.allclose(res["mean"], x.mean(axis=0))
        empty = bootstrap_means(np.zeros((0, 2)), n_bootstrap=50, ci_method=method, clusters=np.array([]))
        assert empty["mean"].isna().all() and (empty["n"] == 0).all()


def test_bootstrap_means_dataframe_skips_ids_and_nans():
    df = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(12)],
            "institution_id": [f"i{i % MIN_CLUSTERS}" for i in range(12)],
            "dice": [0.8, 0.9, np.nan, 0.7, 0.6, 0.5] * 2,
            "iou": [np.nan] * 12,
        }
    )
    res = bootstrap_means(
        df, n_bootstrap=300, seed=0, clusters=df["institution_id"].to_numpy(), ci_method="bca"
    )
    assert list(res["metric"]) == ["dice", "iou"]
    assert res.loc[0, "n"] == 10 and res.loc[0, "mean"] == pytest.approx(0.7)
    assert res.loc[0, "ci_lo"] <= 0.7 <= res.loc[0, "ci_hi"]
    assert res.loc[1, "n"] == 0 and np.isnan(res.loc[1, "mean"]) and np.isnan(res.loc[1, "ci_lo"])
    assert res["cluster"].all() and (res["ci_method"] == "bca").all()


# --- statistical behaviour --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize(
    "name, draw, true_mean",
    [
        ("normal", lambda rng, size: rng.normal(0.8, 0.1, size), 0.8),
        ("beta(2,8)", lambda rng, size: rng.beta(2.0, 8.0, size), 0.2),
        ("exponential", lambda rng, size: rng.exponential(1.0, size), 1.0),
    ],
    ids=["normal", "beta", "exponential"],
)
def test_coverage_of_the_true_mean(method, name, draw, true_mean):
    rng = np.random.default_rng(2024)
    reps, n = 500, 80
    data = draw(rng, (n, reps))  # one column per simulated study
    covered = 0
    for r in range(reps):
        res = bootstrap_means(data[:, r], n_bootstrap=500, seed=r, ci_method=method).iloc[0]
        covered += res["ci_lo"] <= true_mean <= res["ci_hi"]
    rate = covered / reps
    assert 0.90 <= rate <= 0.98, f"{name} {method}: coverage {rate:.3f}"


def test_cluster_bootstrap_is_wider_under_within_institution_correlation():
    rng = np.random.default_rng(0)
    n_inst, per = 30, 6
    clusters = np.repeat(np.arange(n_inst), per)
    x = 0.8 + rng.normal(0, 0.08, n_inst)[clusters] + rng.normal(0, 0.02, n_inst * per)
    scan = bootstrap_means(x, n_bootstrap=4_000, seed=0).iloc[0]
    clus = bootstrap_means(x, n_bootstrap=4_000, seed=0, clusters=clusters).iloc[0]
    w_scan = scan["ci_hi"] - scan["ci_lo"]
    w_clus = clus["ci_hi"] - clus["ci_lo"]
    # design effect 1 + (m - 1) * ICC ~ 1 + 5 * 0.94: the width ratio is about sqrt(5.7) ~ 2.4
    assert w_clus > 1.8 * w_scan
    # and with independent scans the two agree
    y = rng.normal(0.8, 0.08, n_inst * per)
    a = bootstrap_means(y, n_bootstrap=4_000, seed=0).iloc[0]
    b = bootstrap_means(y, n_bootstrap=4_000, seed=0, clusters=clusters).iloc[0]
    assert 0.7 < (b["ci_hi"] - b["ci_lo"]) / (a["ci_hi"] - a["ci_lo"]) < 1.4


def test_ten_thousand_cluster_bca_resamples_of_the_study_size():
    """The study's shape (164 scans, 121 institutions, 10,000 resamples, BCa): finite intervals that hold
    the mean, one per column (its speed is measured by benchmarks/bench_evaluation.py, not here)."""
    x = np.random.default_rng(0).random((164, 8))
    clusters = np.random.default_rng(1).integers(0, 121, 164)
    res = bootstrap_means(x, n_bootstrap=10_000, seed=0, clusters=clusters, ci_method="bca")
    assert len(res) == 8 and (res["n_bootstrap"] == 10_000).all() and res["cluster"].all()
    assert ((res["ci_lo"] < res["mean"]) & (res["mean"] < res["ci_hi"])).all()
    # about 1/sqrt(12 * 164) * 2 * 1.96 wide for uniform values resampled by 121 institutions
    assert ((res["ci_hi"] - res["ci_lo"]).between(0.06, 0.12)).all()


# --- too few institutions for a cluster bootstrap --------------------------------------------------------


@pytest.mark.parametrize("n_institutions", [1, 3, MIN_CLUSTERS - 1])
def test_cluster_interval_below_the_minimum_is_not_estimable(n_institutions):
    """One institution makes every resampling weight 1: the interval would collapse to (point, point)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.4, 0.95, 40)
    clusters = np.arange(40) % n_institutions
    res = bootstrap_means(x, n_bootstrap=500, seed=0, clusters=clusters).iloc[0]
    assert np.isnan(res["ci_lo"]) and np.isnan(res["ci_hi"])
    assert res["mean"] == pytest.approx(x.mean())
    assert f"{n_institutions} institution(s)" in res["note"] and "not estimable" in res["note"]
    assert cluster_problem(clusters) == res["note"]


def test_cluster_interval_at_the_minimum_is_computed_and_scan_bootstrap_never_refused():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.4, 0.95, 40)
    res = bootstrap_means(x, n_bootstrap=500, seed=0, clusters=np.arange(40) % MIN_CLUSTERS).iloc[0]
    assert res["ci_lo"] < res["mean"] < res["ci_hi"] and res["note"] is None
    scan = bootstrap_means(x[:3], n_bootstrap=500, seed=0).iloc[0]  # 3 scans: a scan bootstrap still runs
    assert scan["ci_lo"] < scan["ci_hi"] and scan["note"] is None
    assert cluster_problem(None) is None


def test_bca_counts_replicates_equal_to_the_point_up_to_rounding_as_ties():
    """A resample whose mean equals the point (the same scans, summed in another order) must count as a
    tie whatever its last bit: the BCa interval of a metric must not depend on which other metrics were
    resampled with it."""
    rng = np.random.default_rng(0)
    rep = rng.normal(0.6, 0.05, 400)
    point = 0.6
    rep[:60] = point  # many replicates hit the point exactly (small samples do)
    nudged = rep.copy()
    nudged[:60] = point * (1 + rng.choice([-1, 1], 60) * 2e-16)  # the same, by rounding
    assert not np.array_equal(rep, nudged)
    assert ci_from_replicates(nudged, point, ci_method="bca") == ci_from_replicates(
        rep, point, ci_method="bca"
    )
