"""FROC readings against MONAI's compute_froc_curve_data / compute_froc_score where the definitions
coincide, the vectorised bootstrap band against rebuilding the curve from resampled scans, and reading B."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amt_core import registry
from amt_core.evaluation import froc, lesions


def _random_study(seed, n_scans=25):
    """Per-scan overlap matrices where each candidate overlaps at most one lesion (MONAI's setting),
    one scan with a lesion and no candidate (so MONAI's skipped lowest threshold is the 0 of a miss)."""
    rng = np.random.default_rng(seed)
    scans = []
    for s in range(n_scans):
        n_l = 1 if s == 0 else int(rng.integers(0, 3))
        n_c = 0 if s == 0 else int(rng.integers(0, 5))
        overlap = np.zeros((n_c, n_l))
        for i in range(n_c):
            if n_l and rng.random() < 0.6:
                overlap[i, rng.integers(n_l)] = rng.uniform(0.05, 0.95)
        conf = np.round(rng.uniform(0.5, 1.0, n_c), 2)  # ties across scans
        scans.append((overlap, conf))
    return scans


def _events(scans, t, method="hungarian", extra="ignore"):
    rows = []
    for s, (overlap, conf) in enumerate(scans):
        levels, d_tp, d_fp = lesions.sweep(overlap, conf, t, method=method, extra_hits=extra)
        rows += [(s, c, a, b) for c, a, b in zip(levels, d_tp, d_fp, strict=True)]
    ev = pd.DataFrame(rows, columns=["scan", "confidence", "d_tp", "d_fp"])
    return ev["scan"].to_numpy(), ev["confidence"].to_numpy(), ev["d_tp"].to_numpy(), ev["d_fp"].to_numpy()


def _monai_inputs(scans, t):
    fp_probs, tp_probs = [], []
    for overlap, conf in scans:
        hits = overlap >= t
        fp_probs += conf[~hits.any(axis=1)].tolist()
        for j in range(overlap.shape[1]):
            tp_probs.append(conf[hits[:, j]].max() if hits[:, j].any() else 0.0)
    return np.array(fp_probs), np.array(tp_probs)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("t", registry.FROC_IOU_THRESHOLDS)
def test_confidence_swept_froc_equals_monai(seed, t):
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    scans = _random_study(seed)
    n_lesions = np.array([o.shape[1] for o, _ in scans])
    args = _events(scans, t)
    curve = froc.froc_curve(*args[1:], n_lesions)
    fp_probs, tp_probs = _monai_inputs(scans, t)
    m_fps, m_sens = compute_froc_curve_data(fp_probs, tp_probs, int(n_lesions.sum()), len(scans))
    np.testing.assert_allclose(curve["fp_per_scan"].to_numpy()[::-1], m_fps)
    np.testing.assert_allclose(curve["sensitivity"].to_numpy()[::-1], m_sens)
    ours = froc.sensitivity_at_points(
        *args, n_lesions, np.ones((1, len(scans)), np.int32), registry.FP_POINTS
    )
    monai = compute_froc_score(m_fps, m_sens, eval_thresholds=registry.FP_POINTS)
    assert ours.mean() == pytest.approx(monai, abs=1e-12)


def test_curve_points_keep_their_thresholds():
    scans = _random_study(11)
    n_lesions = np.array([o.shape[1] for o, _ in scans])
    curve = froc.froc_curve(*_events(scans, 0.3)[1:], n_lesions)
    assert curve["threshold"].iloc[0] == np.inf and (curve[["tp", "fp"]].iloc[0] == 0).all()
    assert curve["threshold"].is_monotonic_decreasing
    assert curve["fp_per_scan"].is_monotonic_increasing and curve["sensitivity"].is_monotonic_increasing
    # every point is what re-counting at its threshold gives
    for _, row in curve.iloc[1:].iterrows():
        tp = fp = 0
        for overlap, conf in scans:
            act = conf >= row["threshold"]
            hits = lesions.is_hit(overlap[act], 0.3)
            a, b, _ = lesions.count(lesions.assign(overlap[act], hits, conf[act]), hits, overlap.shape[1])
            tp, fp = tp + a, fp + b
        assert (row["tp"], row["fp"]) == (tp, fp)


@pytest.mark.parametrize("seed", range(5))
def test_interp_rows_equals_numpy_interp(seed):
    rng = np.random.default_rng(seed)
    fps = np.c_[np.zeros(20), np.cumsum(rng.integers(0, 3, (20, 12)) * 0.25, axis=1)]
    sens = np.c_[np.zeros(20), np.cumsum(rng.integers(0, 2, (20, 12)), axis=1) / 12]
    points = [0.1, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    got = froc.interp_rows(fps, sens, points)
    want = np.array([np.interp(points, f, s) for f, s in zip(fps, sens, strict=True)])
    np.testing.assert_allclose(got, want)


def test_bootstrap_band_equals_rebuilding_the_curve_from_resampled_scans():
    scans = _random_study(5)
    n_lesions = np.array([o.shape[1] for o, _ in scans])
    args = _events(scans, 0.1)
    rng = np.random.default_rng(0)
    weights = rng.multinomial(len(scans), np.ones(len(scans)) / len(scans), size=8).astype(np.int32)
    band = froc.sensitivity_at_points(*args, n_lesions, weights, registry.FP_POINTS)
    for w, row in zip(weights, band, strict=True):
        picked = [scans[s] for s in np.repeat(np.arange(len(scans)), w)]
        ev = _events(picked, 0.1)
        nl = np.array([o.shape[1] for o, _ in picked])
        again = froc.sensitivity_at_points(*ev, nl, np.ones((1, len(picked)), np.int32), registry.FP_POINTS)[
            0
        ]
        np.testing.assert_allclose(row, again)


def test_reading_b_counts_and_wilson_interval():
    from statsmodels.stats.proportion import proportion_confint

    tp = np.array([[1, 1, 0], [0, 0, 0], [2, 1, 1]])
    fp = np.array([[0, 0, 1], [1, 1, 1], [0, 1, 1]])
    n_lesions = np.array([1, 1, 2])
    out = froc.reading_b(tp, fp, n_lesions, (0.1, 0.5, 0.9), 0.5)
    assert out["sensitivity"].tolist() == [0.75, 0.5, 0.25]
    assert out["fp_per_scan"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert out["fn"].tolist() == [1, 2, 3]
    lo, hi = proportion_confint(2, 4, alpha=0.05, method="wilson")
    assert (out["sensitivity_wilson_lo"][1], out["sensitivity_wilson_hi"][1]) == pytest.approx((lo, hi))


def test_jackknife_weights():
    assert froc.jackknife_weights(3).tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    assert froc.jackknife_weights(3, ["b", "a", "b"]).tolist() == [[1, 0, 1], [0, 1, 0]]


def test_points_say_whether_the_curve_reached_them():
    """Two scans, two lesions. A curve swept over two confidence levels reaching 1 FP/scan: points below
    its first point are interpolated from (0, 0), points up to 1 are interpolated, 2-8 are held (LUNA16's
    reading), and the CPM row counts them (the curve's first point, 0.5 FP/scan, is reached: interpolated).
    Masks alone (one confidence level): one operating point."""
    events = pd.DataFrame({
        "scan": [0, 1, 0, 1], "iou_threshold": 0.5, "confidence": [0.9, 0.9, 0.6, 0.6],
        "d_tp": [1, 0, 0, 1], "d_fp": [0, 1, 1, 0],
    })  # fmt: skip
    n_lesions = np.array([1, 1])
    points = registry.FP_POINTS  # 1/8 ... 8
    _, table = froc.reading_a(events, n_lesions, [0.5], points)
    reach = dict(zip(table["point"], table["reach"], strict=True))
    # the curve: (0, 0), (0.5 FP/scan, 0.5), (1.0, 1.0)
    assert [reach[f"{p:g}"] for p in points] == [froc.REACH_FROM_ZERO] * 2 + [froc.REACH_INTERPOLATED] * 2 + [
        froc.REACH_HELD
    ] * 3  # fmt: skip
    assert table["curve_max_fp_per_scan"].eq(1.0).all()
    assert reach["cpm"] == (
        "2 of 7 points interpolated from (0, 0); 3 of 7 points held beyond the curve's last point (1 FP/scan)"
    )
    masks = events.assign(confidence=1.0)
    _, table = froc.reading_a(masks, n_lesions, [0.5], points)
    cpm = table.set_index("point").loc["cpm"]
    assert cpm["reach"].startswith(
        "one confidence level (e.g. masks without probabilities): one operating point at 1 FP/scan"
    )
