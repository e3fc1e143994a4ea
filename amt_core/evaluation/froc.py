"""FROC, both readings of "FROC derived from lesion-wise IoU thresholds", with bootstrap bands.

Everything is built from *events*: for each scan and overlap threshold, the increments ``(d_tp, d_fp)``
that the scan gains when the confidence threshold drops to each of its candidate confidences
(:func:`amt_core.evaluation.lesions.sweep`, exact re-matching at every level). A curve is a cumulative
sum of the events sorted by descending confidence, so

- reading A (:func:`froc_curve`, :func:`reading_a`): per IoU threshold, sensitivity vs FP/scan over every
  confidence threshold, each point with the threshold that made it, sensitivity read at fixed FP/scan
  points by linear interpolation along the curve (``numpy.interp``, as MONAI's ``compute_froc_score``;
  beyond the curve's last point the last sensitivity; each point's ``reach`` says which) and their mean,
  the CPM (LUNA16; its note says how many points were held or interpolated from (0, 0), and when a single
  confidence level, e.g. masks without probabilities, made one operating point rather than a curve);
- reading B (:func:`reading_b`): per IoU threshold, the counts at the operating threshold;
- bootstrap: a resample is a vector of per-scan counts ``w`` (``bootstrap.resample_weights``); the
  resampled curve is the cumulative sum of ``w[scan] * d_tp``, so all replicates are built at once as
  one ``(n_bootstrap, n_events)`` cumulative sum (:func:`sensitivity_at_points`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _order(confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Events sorted by descending confidence, and the index of the last event of each confidence level."""
    order = np.argsort(-confidence, kind="stable")
    c = confidence[order]
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True]) if c.size else np.zeros(0, np.int64)
    return order, ends


def froc_curve(
    confidence: np.ndarray, d_tp: np.ndarray, d_fp: np.ndarray, n_lesions: np.ndarray
) -> pd.DataFrame:
    """Confidence-swept FROC curve of one overlap threshold.

    ``confidence``, ``d_tp``, ``d_fp`` are the events (any scan order); ``n_lesions`` the
    lesions of each scan (its length is the number of scans). Returns one row per operating point,
    starting at the empty operating point (threshold = inf): ``threshold`` (candidates with confidence
    >= threshold), ``tp``, ``fp``, ``sensitivity``, ``fp_per_scan``.
    """
    order, ends = _order(np.asarray(confidence, dtype=np.float64))
    tp = np.r_[0, np.cumsum(np.asarray(d_tp)[order])[ends]].astype(np.int64)
    fp = np.r_[0, np.cumsum(np.asarray(d_fp)[order])[ends]].astype(np.int64)
    total, n_scans = int(np.sum(n_lesions)), len(n_lesions)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / total if total else np.full(tp.shape, np.nan)
        fps = fp / n_scans if n_scans else np.full(fp.shape, np.nan)
    return pd.DataFrame({
        "threshold": np.r_[np.inf, np.asarray(confidence, dtype=np.float64)[order][ends]],
        "tp": tp, "fp": fp, "sensitivity": sens, "fp_per_scan": fps,
    })  # fmt: skip


def interp_rows(fps: np.ndarray, sens: np.ndarray, points: Sequence[float] | np.ndarray) -> np.ndarray:
    """``numpy.interp(points, fps[b], sens[b])`` for every row ``b`` of non-decreasing ``fps`` at once.

    ``fps``/``sens``: (n_rows, n_points_on_curve), each row starting at its curve's first point.
    Returns (n_rows, len(points)).
    """
    fps = np.atleast_2d(fps)
    sens = np.atleast_2d(sens)
    rows = np.arange(fps.shape[0])
    last = fps.shape[1] - 1
    out = np.empty((fps.shape[0], len(points)))
    for k, p in enumerate(points):
        j = np.count_nonzero(fps <= p, axis=1) - 1  # last point at or below p (rows are monotone)
        j = np.clip(j, 0, last)
        nxt = np.minimum(j + 1, last)
        x0, x1 = fps[rows, j], fps[rows, nxt]
        y0, y1 = sens[rows, j], sens[rows, nxt]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(x1 > x0, (p - x0) / (x1 - x0), 0.0)
        out[:, k] = np.where(j >= last, sens[rows, last], y0 + np.clip(frac, 0.0, 1.0) * (y1 - y0))
    return out


def sensitivity_at_points(
    scan: np.ndarray,
    confidence: np.ndarray,
    d_tp: np.ndarray,
    d_fp: np.ndarray,
    n_lesions: np.ndarray,
    weights: np.ndarray,
    points: Sequence[float],
) -> np.ndarray:
    """Sensitivity at each FP/scan point of the curve rebuilt under each row of scan ``weights``.

    ``weights`` is (n_rows, n_scans): bootstrap counts, jackknife 0/1 rows, or a single row of ones for
    the curve itself. Returns (n_rows, len(points)); NaN where a row has no lesion.
    """
    weights = np.atleast_2d(weights)
    order, ends = _order(np.asarray(confidence, dtype=np.float64))
    s = np.asarray(scan)[order]
    w_events = weights[:, s]
    tp = np.cumsum(w_events * np.asarray(d_tp, dtype=weights.dtype)[order], axis=1)[:, ends]
    fp = np.cumsum(w_events * np.asarray(d_fp, dtype=weights.dtype)[order], axis=1)[:, ends]
    del w_events
    lesions = weights @ np.asarray(n_lesions, dtype=np.float64)
    scans = weights.sum(axis=1, dtype=np.float64)
    zero = np.zeros((weights.shape[0], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.hstack([zero, tp / lesions[:, None]])
        fps = np.hstack([zero, fp / scans[:, None]])
    return interp_rows(fps, sens, points)


def _threshold_at(curve: pd.DataFrame, p: float) -> float:
    """Confidence threshold of the curve's last operating point with FP/scan <= p."""
    ok = curve["fp_per_scan"].to_numpy() <= p
    return float(curve["threshold"].to_numpy()[np.flatnonzero(ok)[-1]]) if ok.any() else np.inf


#: how a sensitivity at a fixed FP/scan point was read off the curve (``reach`` of the points table)
REACH_INTERPOLATED = "interpolated"
REACH_FROM_ZERO = "interpolated from (0, 0) (below the curve's first point)"
REACH_HELD = "held (beyond the curve's last point)"


def _reach(curve: pd.DataFrame, points: Sequence[float]) -> tuple[list[str], str]:
    """Per FP/scan point, how the curve gives its sensitivity: ``interpolated`` between two of its points,
    from the empty operating point (0, 0) to its first one, or ``held`` beyond its highest FP/scan (the last
    sensitivity, as LUNA16 and MONAI read it); and the CPM row's note saying how much of it was held or
    interpolated from (0, 0)."""
    fps = curve["fp_per_scan"].to_numpy()
    top = float(fps.max())
    first = float(fps[1]) if fps.size > 1 else 0.0
    reach = [REACH_HELD if p > top else REACH_FROM_ZERO if p < first else REACH_INTERPOLATED for p in points]
    held, low = reach.count(REACH_HELD), reach.count(REACH_FROM_ZERO)
    parts = []
    if fps.size == 2:
        parts.append(
            f"one confidence level (e.g. masks without probabilities): one operating point at {top:.3g} "
            "FP/scan, not a swept curve"
        )
    if low:
        parts.append(f"{low} of {len(points)} points interpolated from (0, 0)")
    if held:
        parts.append(f"{held} of {len(points)} points held beyond the curve's last point ({top:.3g} FP/scan)")
    return reach, "; ".join(parts) or REACH_INTERPOLATED


def jackknife_weights(n: int, clusters: Sequence | np.ndarray | None = None) -> np.ndarray:
    """Leave-one-scan-out (or leave-one-institution-out) weight rows, for BCa acceleration."""
    if clusters is None:
        return (1 - np.eye(n, dtype=np.int32)).astype(np.int32)
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    codes = codes.reshape(-1)
    return (codes[None, :] != np.arange(codes.max() + 1)[:, None]).astype(np.int32)


def reading_a(
    events: pd.DataFrame,
    n_lesions: np.ndarray,
    thresholds: Sequence[float],
    points: Sequence[float],
    *,
    ci=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reading A for every IoU threshold: the curves and the table of sensitivities at the FP points.

    ``events`` has columns scan (index), iou_threshold, confidence, d_tp, d_fp. ``ci(stat, point)``
    gives the (lo, hi) arrays of a statistic, where ``stat(weights)`` computes it for rows of scan
    weights (bootstrap resamples, jackknife rows; see ``results.summarise``); without it no intervals.
    Returns (curves, points table) with the CPM as the row ``point == "cpm"``; each point also keeps
    the confidence threshold of the last curve point at or below its FP/scan.
    """
    curves, tables = [], []
    names = [f"{p:g}" for p in points] + ["cpm"]
    for t in thresholds:
        ev = events[np.isclose(events["iou_threshold"].to_numpy(), t)]
        args = (
            ev["scan"].to_numpy(),
            ev["confidence"].to_numpy(),
            ev["d_tp"].to_numpy(),
            ev["d_fp"].to_numpy(),
        )
        curve = froc_curve(*args[1:], n_lesions)
        curves.append(curve.assign(iou_threshold=t))
        ones = np.ones((1, len(n_lesions)), dtype=np.int32)
        point = sensitivity_at_points(*args, n_lesions, ones, points)[0]
        point = np.r_[point, point.mean()]
        lo = hi = np.full(point.shape, np.nan)
        if ci is not None:

            def stat(w, _args=args):
                rep = sensitivity_at_points(*_args, n_lesions, w, points)
                return np.hstack([rep, rep.mean(axis=1, keepdims=True)])

            lo, hi = ci(stat, point)
        reach, note = _reach(curve, points)
        tables.append(pd.DataFrame({
            "iou_threshold": t, "point": names, "fp_per_scan": list(points) + [np.nan],
            "sensitivity": point, "ci_lo": lo, "ci_hi": hi,
            "threshold": [_threshold_at(curve, p) for p in points] + [np.nan],
            "curve_max_fp_per_scan": float(curve["fp_per_scan"].max()), "reach": reach + [note],
        }))  # fmt: skip
    cols = ["iou_threshold", "threshold", "tp", "fp", "sensitivity", "fp_per_scan"]
    return pd.concat(curves, ignore_index=True)[cols], pd.concat(tables, ignore_index=True)


def reading_b(
    per_scan_tp: np.ndarray,
    per_scan_fp: np.ndarray,
    n_lesions: np.ndarray,
    thresholds: Sequence[float],
    operating_threshold: float,
    *,
    ci=None,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Reading B: sensitivity and FP/scan per IoU threshold at the operating threshold.

    ``per_scan_tp``/``per_scan_fp``: (n_scans, n_thresholds) counts at the operating threshold. Adds a
    Wilson interval of the sensitivity (lesions as independent trials) and, with ``ci``, bootstrap
    intervals of the sensitivity and of FP/scan (resampling scans, so lesions of a scan stay together).
    """
    from statsmodels.stats.proportion import proportion_confint

    tp = per_scan_tp.sum(axis=0)
    fp = per_scan_fp.sum(axis=0)
    total, n = int(np.sum(n_lesions)), len(n_lesions)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / total if total else np.full(len(thresholds), np.nan)
        fps = fp / n if n else np.full(len(thresholds), np.nan)
    if total:
        w_lo, w_hi = proportion_confint(tp, total, alpha=1 - ci_level, method="wilson")
    else:
        w_lo = w_hi = np.full(len(thresholds), np.nan)
    out = pd.DataFrame({
        "iou_threshold": list(thresholds), "threshold": operating_threshold, "n_scans": n, "n_lesions": total,
        "tp": tp, "fp": fp, "fn": total - tp, "sensitivity": sens, "fp_per_scan": fps,
        "sensitivity_wilson_lo": w_lo, "sensitivity_wilson_hi": w_hi,
    })  # fmt: skip
    if ci is not None:
        stacked = np.hstack([per_scan_tp, per_scan_fp, np.asarray(n_lesions, dtype=np.float64)[:, None]])
        k = len(thresholds)

        def stat(w):
            sums = w @ stacked
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.hstack(
                    [sums[:, :k] / sums[:, -1:], sums[:, k : 2 * k] / w.sum(axis=1, keepdims=True)]
                )

        lo, hi = ci(stat, np.r_[sens, fps])
        out["sensitivity_ci_lo"], out["sensitivity_ci_hi"] = lo[:k], hi[:k]
        out["fp_per_scan_ci_lo"], out["fp_per_scan_ci_hi"] = lo[k:], hi[k:]
    return out
