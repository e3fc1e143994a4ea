"""The result object: save/load round trip, subsets, the recorded conventions, config checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from amt_core.evaluation.api import collect, evaluate_case
from amt_core.evaluation.config import EvalConfig
from amt_core.evaluation.results import FILES, EvaluationResult, summarise


def _study(n=12, seed=0, n_institutions=5):
    rng = np.random.default_rng(seed)
    evaluations = []
    for s in range(n):
        label = np.zeros((40, 40, 16), np.uint8)
        label[10:25, 10:25, 4:12] = 1
        if s % 4 == 0:
            label[30:36, 30:36, 2:6] = 1
        prob = np.zeros(label.shape, np.float32)
        if s % 5 != 4:  # some scans miss the tumour
            o = rng.integers(-3, 4, 3)
            prob[10 + o[0] : 25 + o[0], 10 + o[1] : 25 + o[1], 4 + o[2] : 12 + o[2]] = rng.uniform(0.55, 1.0)
        for _ in range(rng.integers(0, 3)):
            c = rng.integers(0, 34, 3) // (1, 1, 3)
            prob[c[0] : c[0] + 5, c[1] : c[1] + 5, c[2] : c[2] + 3] = rng.uniform(0.5, 1.0)
        evaluations.append(evaluate_case(label, prob >= 0.5, (0.8, 0.8, 2.0), prob=prob))
    ids = [f"case_{s:03d}" for s in range(n)]
    return collect(evaluations, ids, [f"INST-{s % n_institutions}" for s in range(n)])


@pytest.fixture(scope="module")
def result():
    return summarise(_study(), EvalConfig(n_bootstrap=500, seed=1))


def test_save_load_round_trip_is_identical(result, tmp_path):
    result.tables["per_institution"] = pd.DataFrame({"institution_id": ["007", "INST-1"], "n": [1, 2]})
    result.save(tmp_path / "out")
    back = EvaluationResult.load(tmp_path / "out")
    for name in FILES:
        pd.testing.assert_frame_equal(getattr(result, name), getattr(back, name), check_exact=True)
    pd.testing.assert_frame_equal(back.tables["per_institution"], result.tables["per_institution"])
    assert back.tables["per_institution"]["institution_id"].tolist() == ["007", "INST-1"]  # ids stay text
    assert back.summary == result.summary
    assert back.config == result.config
    del result.tables["per_institution"]


def test_files_and_summary_state_the_conventions(result, tmp_path):
    out = result.save(tmp_path)
    for name in ("per_case.csv", "lesions.csv", "froc_confidence.csv", "froc_iou.csv", "summary.json"):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text())  # valid JSON (no NaN tokens)
    assert summary["version"]["amt"]
    assert "both masks empty" in summary["conventions"]["empty_scans"]
    assert summary["config"]["empty_both"] == "one" and summary["config"]["assignment"] == "hungarian"
    assert (
        summary["config"]["candidates"] == "dynamic" and "peak / 2.5" in summary["conventions"]["candidates"]
    )
    per_case = pd.read_csv(out / "per_case.csv")
    assert {
        "case_id",
        "institution_id",
        "dice",
        "iou",
        "precision",
        "recall",
        "hd95_mm",
        "tp",
        "fp",
        "fn",
    } <= set(per_case)
    froc_iou = pd.read_csv(out / "froc_iou.csv")
    assert {"iou_threshold", "sensitivity", "fp_per_scan", "threshold"} <= set(froc_iou)
    assert len(froc_iou) == 19


def test_fingerprint_names_every_decision_and_follows_the_config(tmp_path):
    """The Metrics Reloaded-style fingerprint in summary.json: each decision present and changed with the
    config (so it is built from the config, not written once)."""
    keys = {
        "localisation_criterion",
        "assignment_strategy",
        "thresholds",
        "aggregation",
        "empty_scan_policy",
        "space",
        "connectivity",
        "candidate_extraction",
    }
    base = summarise(_study(n=6), EvalConfig(n_bootstrap=0))
    other = summarise(
        _study(n=6),
        EvalConfig(
            n_bootstrap=0,
            candidates="threshold",
            connectivity=6,
            hit_criterion=">",
            assignment="greedy",
            operating_iou=0.3,
            empty_both="nan",
        ),
    )
    a = json.loads((base.save(tmp_path / "a") / "summary.json").read_text())["fingerprint"]
    b = json.loads((other.save(tmp_path / "b") / "summary.json").read_text())["fingerprint"]
    assert keys <= set(a) and keys <= set(b)
    assert a["localisation_criterion"].startswith("mask IoU >=") and b["localisation_criterion"].startswith(
        "mask IoU > threshold"
    )
    assert "dynamic" in a["candidate_extraction"] and "probability >= 0.5" in b["candidate_extraction"]
    assert (a["connectivity"], b["connectivity"]) == ("26-connected (3D)", "6-connected (3D)")
    assert "Hungarian" in a["assignment_strategy"] and "greedy" in b["assignment_strategy"]
    assert (a["thresholds"]["operating_overlap"], b["thresholds"]["operating_overlap"]) == (0.5, 0.3)
    assert (a["empty_scan_policy"]["both_empty"], b["empty_scan_policy"]["both_empty"]) == ("one", "nan")
    assert "native grid" in a["space"]


def test_reading_b_agrees_with_the_per_lesion_and_per_scan_tables(result):
    head = result.froc_iou[np.isclose(result.froc_iou["iou_threshold"], 0.5)].iloc[0]
    assert head["sensitivity"] == pytest.approx(result.lesions["hit"].mean())
    assert head["fp"] == result.per_case["fp"].sum() and head["tp"] == result.per_case["tp"].sum()
    assert result.headline["sensitivity"] == pytest.approx(head["sensitivity"])
    assert "at IoU >= 0.50" in result.headline_text()


def test_means_are_per_scan_means_with_intervals(result):
    m = result.cis.set_index("metric")
    assert m.loc["iou", "mean"] == pytest.approx(result.per_case["iou"].mean())
    assert (m["ci_lo"] <= m["mean"]).all() and (m["mean"] <= m["ci_hi"]).all()
    pts = result.froc_points
    ok = pts["ci_lo"].notna()
    assert (
        (pts["ci_lo"][ok] <= pts["sensitivity"][ok] + 1e-12)
        & (pts["sensitivity"][ok] <= pts["ci_hi"][ok] + 1e-12)
    ).all()


def test_subset_recomputes_from_the_tables(result):
    ids = result.per_case["case_id"].iloc[:6]
    sub = result.subset(ids)
    assert sub.n_scans == 6 and set(sub.lesions["case_id"]) <= set(ids)
    assert sub.means["dice"] == pytest.approx(result.per_case["dice"].iloc[:6].mean())


def test_same_seed_same_numbers_and_cluster_option():
    tables = _study(24, seed=3, n_institutions=12)
    a = summarise(tables, EvalConfig(n_bootstrap=300, seed=5))
    b = summarise(tables, EvalConfig(n_bootstrap=300, seed=5))
    pd.testing.assert_frame_equal(a.cis, b.cis)
    pd.testing.assert_frame_equal(a.froc_points, b.froc_points)
    c = summarise(tables, EvalConfig(n_bootstrap=300, seed=5, cluster_bootstrap=True, ci_method="bca"))
    assert c.cis["cluster"].all() and c.summary["config"]["cluster_bootstrap"]
    assert c.froc_iou["sensitivity_ci_lo"].notna().any() and c.summary["bootstrap"]["estimable"]
    assert not c.cis["ci_lo"].equals(a.cis["ci_lo"])  # institutions, not scans, were resampled
    d = summarise(tables, EvalConfig(n_bootstrap=0))
    assert d.cis["ci_lo"].isna().all() and d.means["dice"] == pytest.approx(a.means["dice"])


def test_config_round_trip_and_clear_errors():
    cfg = EvalConfig(assignment="greedy", fp_points=(0.25, 1, 8), seed=3)
    assert EvalConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"assignment='nearest' \(choose one of"):
        EvalConfig(assignment="nearest")
    with pytest.raises(ValueError, match="unknown evaluation config keys"):
        EvalConfig.from_dict({"treshold": 0.5})
    # the names earlier versions used (e.g. a summary.json written before) say the name now
    with pytest.raises(
        ValueError, match="'n_boot' is now 'n_bootstrap'; 'headline_iou' is now 'operating_iou'"
    ):
        EvalConfig.from_dict({**cfg.to_dict(), "n_boot": 10, "headline_iou": 0.5})
    assert EvalConfig().match_thresholds == tuple(sorted(set(EvalConfig().iou_sweep)))


def test_degenerate_studies_no_candidates_and_no_lesions(tmp_path):
    z = np.zeros((20, 20, 8), np.uint8)
    lesion = z.copy()
    lesion[5:10, 5:10, 2:5] = 1
    none_found = collect([evaluate_case(lesion, z) for _ in range(3)], ["a", "b", "c"], ["I", "I", "J"])
    r = summarise(none_found, EvalConfig(n_bootstrap=50))
    assert (r.froc_points["sensitivity"] == 0).all() and (r.froc_iou["sensitivity"] == 0).all()
    assert r.candidates.empty and r.events.empty
    r.save(tmp_path / "a")
    back = EvaluationResult.load(tmp_path / "a")
    pd.testing.assert_frame_equal(back.candidates, r.candidates)
    no_lesions = collect([evaluate_case(z, lesion) for _ in range(3)], ["a", "b", "c"], ["I", "I", "J"])
    r = summarise(no_lesions, EvalConfig(n_bootstrap=50))
    assert r.froc_iou["sensitivity"].isna().all() and (r.froc_iou["fp_per_scan"] == 1).all()
    assert r.summary["headline"]["sensitivity"] is None and "undefined" in r.headline_text()


def test_cluster_bootstrap_over_too_few_institutions_is_reported_not_estimable(tmp_path):
    """_study() has 5 institutions: the cluster intervals are NaN with the reason, in the result and on disk."""
    res = summarise(_study(), EvalConfig(n_bootstrap=300, seed=0, cluster_bootstrap=True))
    assert res.cis["ci_lo"].isna().all() and res.cis["ci_hi"].isna().all()
    assert res.cis["note"].str.contains("5 institution").all()
    assert res.summary["bootstrap"] == {
        "unit": "institution",
        "n_bootstrap": 300,
        "estimable": False,
        "note": res.cis["note"].iloc[0],
        "caution": "",
    }
    headline = res.headline
    assert headline["sensitivity_ci_lo"] is None and headline["fp_per_scan_ci_lo"] is None
    assert headline["sensitivity_wilson_lo"] is not None  # the binomial interval does not resample
    saved = json.loads((res.save(tmp_path) / "summary.json").read_text())
    assert saved["bootstrap"]["estimable"] is False and "fewer than the 10" in saved["bootstrap"]["note"]
    scan = summarise(_study(), EvalConfig(n_bootstrap=300, seed=0))
    assert scan.summary["bootstrap"]["estimable"] is True and scan.cis["ci_lo"].notna().any()


def test_one_scan_has_no_interval_and_a_few_scans_a_caution():
    """A bootstrap of one scan resamples that scan only: its 'interval' has zero width. It is reported as not
    estimable (NaN and the reason), never as a CI; 2-9 scans keep their intervals with a caution."""
    lesion = np.zeros((20, 20, 8), np.uint8)
    lesion[5:10, 5:10, 2:5] = 1
    pred = np.zeros_like(lesion)
    pred[6:10, 5:10, 2:5] = 1
    one = summarise(collect([evaluate_case(lesion, pred)], ["a"], ["I"]), EvalConfig(n_bootstrap=50))
    assert one.cis[["ci_lo", "ci_hi"]].isna().all().all() and one.cis["mean"].notna().all()
    assert one.headline["sensitivity_ci_lo"] is None and one.froc_points["ci_lo"].isna().all()
    assert one.headline["sensitivity_wilson_lo"] is not None  # the binomial interval does not resample
    boot = one.summary["bootstrap"]
    assert not boot["estimable"] and boot["note"].startswith("not estimable: 1 scan")
    few = summarise(
        collect([evaluate_case(lesion, pred)] * 3, list("abc"), list("IJK")), EvalConfig(n_bootstrap=50)
    )
    assert few.summary["bootstrap"]["estimable"] and "3 scans" in few.summary["bootstrap"]["caution"]
    assert few.cis["ci_lo"].notna().all()
