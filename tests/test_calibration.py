"""Calibration: ECE on hand-made bins with the answer written beside them, a known temperature recovered,
the scan bootstrap against resampling by hand, the voxel sample's weights, and the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amt_core.evaluation import calibration as cal


def test_ece_of_hand_made_bins():
    # 10 predictions at 0.9 of which 6 happen (gap 0.3), 10 at 0.2 of which 2 happen (gap 0): ECE = 0.15
    p = np.r_[np.full(10, 0.9), np.full(10, 0.2)]
    y = np.r_[np.ones(6), np.zeros(4), np.ones(2), np.zeros(8)]
    assert cal.expected_calibration_error(p, y) == pytest.approx(0.15)
    # weights: the 0.9 group counted three times -> (30 * 0.3 + 0) / 40
    w = np.r_[np.full(10, 3.0), np.ones(10)]
    assert cal.expected_calibration_error(p, y, w) == pytest.approx(30 * 0.3 / 40)
    # probability 1.0 falls in the last bin, 0.0 in the first
    assert cal.expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0


def test_temperature_of_an_over_confident_model_is_recovered():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 200_000)
    y = rng.random(z.size) < 1 / (1 + np.exp(-z))  # calibrated on z
    p = 1 / (1 + np.exp(-2.5 * z))  # the model's logits are 2.5 x too large: over-confident
    t = cal.fit_temperature(p, y)
    assert t == pytest.approx(2.5, rel=0.03)
    before, after = (
        cal.expected_calibration_error(p, y),
        cal.expected_calibration_error(cal.apply_temperature(p, t), y),
    )
    assert before > 0.08 and after < 0.01
    assert cal.apply_temperature([0.5, 0.9], 1.0) == pytest.approx([0.5, 0.9])


def test_bootstrap_band_equals_resampling_scans_by_hand():
    from amt_core.evaluation.bootstrap import resample_indices

    rng = np.random.default_rng(1)
    n_scans = 15
    scan = rng.integers(0, n_scans, 600)
    p = rng.random(600)
    y = (rng.random(600) < p**1.5).astype(float)
    sums = cal.bin_sums(p, y, scan=scan, n_scans=n_scans, n_bins=5)
    table, ece = cal.reliability(sums, n_bootstrap=200, seed=3)
    assert ece["ece"] == pytest.approx(cal.expected_calibration_error(p, y, n_bins=5))
    # the same resamples (seed 3), each rebuilt from the scans' raw rows
    reps = []
    for idx in resample_indices(n_scans, 200, seed=3):
        rows = np.concatenate([np.flatnonzero(scan == s) for s in idx])
        reps.append(cal.expected_calibration_error(p[rows], y[rows], n_bins=5))
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert (ece["ece_ci_lo"], ece["ece_ci_hi"]) == pytest.approx((lo, hi))
    assert (table["frequency_ci_lo"] <= table["frequency"]).all() and (
        table["frequency"] <= table["frequency_ci_hi"]
    ).all()


def test_voxel_sample_keeps_the_tumour_and_weights_the_rest():
    label = np.zeros((60, 60, 20), np.uint8)
    label[20:30, 20:30, 8:12] = 1  # 400 voxels
    prob = np.zeros(label.shape, np.float32)
    prob[18:32, 18:32, 7:13] = 0.7
    prob[50:52, 50:52, 1:3] = 0.3  # far from the tumour but >= 0.05: always kept
    p, y, w, near = cal.sample_voxels(
        label, prob, (1.0, 1.0, 2.0), near_mm=4.0, n_rest=1000, rng=np.random.default_rng(0)
    )
    assert y.sum() == 400  # every tumour voxel
    assert w.sum() == pytest.approx(label.size)  # the weights stand for every voxel of the scan
    assert np.count_nonzero(p == np.float32(0.3)) == 8 and (w[p > 0] == 1).all()
    assert np.count_nonzero(w > 1) == 1000 and np.array_equal(near, w == 1)
    n_near = np.count_nonzero(near)
    # a small scan: the rest is taken whole, at weight 1 like the near stratum, and still not in it
    p, y, w, near = cal.sample_voxels(
        label, prob, (1.0, 1.0, 2.0), near_mm=4.0, n_rest=10**6, rng=np.random.default_rng(0)
    )
    assert w.size == label.size and (w == 1).all()
    assert np.count_nonzero(near) == n_near < label.size / 10  # the same stratum as above
    assert near[y > 0].all() and near[p > 0].all()


def test_calibration_figure(tmp_path):
    from amt_core.plots.calibration import plot_calibration
    from amt_core.plots.style import save_figure

    rng = np.random.default_rng(2)
    bins = []
    for kind in ("lesion", "voxel"):
        for scaled in (False, True):
            sums = cal.bin_sums(
                p := rng.random(300),
                rng.random(300) < p ** (1 if scaled else 2),
                scan=rng.integers(0, 10, 300),
                n_scans=10,
            )
            bins.append(cal.reliability(sums, n_bootstrap=100)[0].assign(kind=kind, scaled=scaled))
    summary = pd.DataFrame(
        [
            {
                "kind": k,
                "temperature": 1.4,
                "ece_before": 0.12,
                "ece_ci_lo_before": 0.08,
                "ece_ci_hi_before": 0.16,
                "ece_after": 0.03,
                "ece_ci_lo_after": 0.01,
                "ece_ci_hi_after": 0.06,
                "n_samples": 300,
                "n_scans": 10,
            }
            for k in ("lesion", "voxel")
        ]
    )
    paths = save_figure(plot_calibration(pd.concat(bins), summary), tmp_path, "calibration")
    assert {p.suffix for p in paths} == {".pdf", ".png"} and all(p.stat().st_size > 5000 for p in paths)


def _folder_study(tmp_path, tune_hits: bool):
    """Two tuning and three test scans on disk: a 6x6x4 tumour, a map at 0.8 over it (and a 0.6 false blob)."""
    import nibabel as nib

    from amt_core.evaluation import EvalConfig, evaluate_predictions

    rows = []
    for k in range(5):
        split = "tune" if k < 2 else "test"
        label = np.zeros((30, 30, 12), np.uint8)
        label[10:16, 10:16, 4:8] = 1
        prob = np.zeros(label.shape, np.float32)
        if split == "test" or tune_hits:
            prob[10:16, 10:16, 4:8] = 0.8
        prob[22:25, 22:25, 2:4] = 0.6
        for sub in ("labels", split):
            (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "labels" / f"c{k}.nii.gz")
        nib.save(
            nib.Nifti1Image((prob >= 0.5).astype(np.uint8), np.eye(4)), tmp_path / split / f"c{k}.nii.gz"
        )
        nib.save(nib.Nifti1Image(prob, np.eye(4)), tmp_path / split / f"c{k}_prob.nii.gz")
        rows.append(
            {
                "case_id": f"c{k}",
                "institution_id": "I",
                "split": split,
                "label": str(tmp_path / "labels" / f"c{k}.nii.gz"),
            }
        )
    cases = pd.DataFrame(rows)
    results = {
        s: evaluate_predictions(
            cases,
            tmp_path / s,
            split=s,
            config=EvalConfig(n_bootstrap=0),
            progress=False,
            check_manifest=False,
        )
        for s in ("tune", "test")
    }
    return cal.calibration_study(
        cases, {s: tmp_path / s for s in ("tune", "test")}, results, tmp_path / "out", n_bootstrap=50
    )


def test_calibration_study_on_disk_and_without_a_temperature(tmp_path):
    out = _folder_study(tmp_path / "a", tune_hits=True)
    s = out["summary"].set_index("kind")
    # test candidates: per scan one hit at 0.8 and one miss at 0.6 -> bins 8 (freq 1) and 6 (freq 0)
    assert s.loc["lesion", "n_samples"] == 6 and s.loc["lesion", "n_positive"] == 3
    assert s.loc["lesion", "ece_before"] == pytest.approx((3 * 0.2 + 3 * 0.6) / 6)
    assert (tmp_path / "a" / "out" / "calibration.csv").is_file() and (
        tmp_path / "a" / "out" / "calibration_bins.csv"
    ).is_file()
    assert s.loc["voxel", "total_weight"] == pytest.approx(3 * 30 * 30 * 12)
    # a tuning split with no hit has no temperature: the "after" numbers are missing, never a made-up 0
    s = _folder_study(tmp_path / "b", tune_hits=False)["summary"].set_index("kind")
    assert np.isnan(s.loc["lesion", "temperature"]) and np.isnan(s.loc["lesion", "ece_after"])
    assert np.isfinite(s.loc["lesion", "ece_before"])
    with pytest.raises(ValueError, match="finite"):
        cal.bin_sums(np.array([0.2, np.nan]), np.array([0, 1]))


def test_lesion_outcome_follows_the_runs_match_metric():
    """A run matching by Dice judges a candidate's hit by its best Dice: IoU 0.40 is Dice 0.57, a hit at a
    threshold of 0.5 by Dice and a miss by IoU."""
    cands = pd.DataFrame({"confidence": [0.9, 0.8, 0.3], "best_iou": [0.40, 0.70, 0.0]})
    cands["best_dice"] = 2 * cands["best_iou"] / (1 + cands["best_iou"])
    _, by_iou = cal.lesion_samples(cands, 0.5, ">=", "iou")
    _, by_dice = cal.lesion_samples(cands, 0.5, ">=", "dice")
    assert by_iou.tolist() == [0.0, 1.0, 0.0] and by_dice.tolist() == [1.0, 1.0, 0.0]
