"""Calibration of the model's probabilities: reliability diagrams, expected calibration error (ECE), scan-
bootstrap bands, and one temperature fitted on the tuning split.

Two kinds of probability are checked:

- ``lesion``: each candidate's confidence (the evaluation's candidates, ``candidates.csv``) against whether
  it hits a reference lesion (best overlap, by the run's match metric, at its operating threshold and hit
  criterion; a second
  candidate on a lesion counts as a hit: its lesion is there);
- ``voxel``: the probability of a voxel against the reference mask. A scan holds millions of voxels, most
  far from the tumour with probability ~0, so voxels are sampled in two strata (:func:`sample_voxels`):
  every voxel within ``near_mm`` of the tumour or with probability >= ``min_prob`` (weight 1), plus a
  seeded random sample of the rest, weighted by the inverse of its sampling fraction, so that weighted
  statistics estimate those of every voxel of the scan (``voxel``); ``voxel_near`` is the first stratum
  alone, where the model's probabilities matter (the whole-scan ECE is dominated by the background's ~0).

ECE = sum over equal-width confidence bins of (weight in the bin / total weight) x |observed frequency -
mean confidence| (Guo et al. 2017). Bands resample scans (``bootstrap.resample_weights``): every bin
statistic is a sum over scans, so each resample is one matrix product. The temperature ``T`` minimises the
(weighted) negative log-likelihood of ``sigmoid(logit(p) / T)`` on the tuning split
(``scipy.optimize.minimize_scalar``); T > 1 means the model was over-confident. Because a candidate's
confidence is the maximum voxel probability and the map is monotone in T, the lesion temperature can be
applied to the confidences directly; the two temperatures are fitted separately.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core.evaluation.lesions import is_hit

#: lesion confidences; voxels of the whole scan (weighted sample); voxels near the tumour or at probability
#: >= min_prob only (the first stratum: the whole-scan ECE is dominated by background voxels at ~0)
KINDS: tuple[str, ...] = ("lesion", "voxel", "voxel_near")
_EPS = 1e-6


def bin_sums(
    prob: np.ndarray,
    outcome: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    scan: np.ndarray | None = None,
    n_scans: int = 1,
    n_bins: int = 10,
) -> np.ndarray:
    """(n_scans, 3, n_bins) sums of weight, weight x probability and weight x outcome per scan and bin."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.size and not (np.isfinite(prob).all() and 0.0 <= prob.min() and prob.max() <= 1.0):
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    weight = np.ones(prob.shape) if weight is None else np.asarray(weight, dtype=np.float64)
    scan = np.zeros(prob.shape, np.int64) if scan is None else np.asarray(scan, dtype=np.int64)
    b = np.clip((prob * n_bins).astype(np.int64), 0, n_bins - 1)  # [k/n, (k+1)/n), 1.0 in the last bin
    idx = scan * n_bins + b
    out = np.zeros((n_scans, 3, n_bins))
    for k, values in enumerate((weight, weight * prob, weight * np.asarray(outcome, dtype=np.float64))):
        out[:, k, :] = np.bincount(idx, weights=values, minlength=n_scans * n_bins).reshape(n_scans, n_bins)
    return out


def _ece_from_sums(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ece, mean confidence per bin, frequency per bin) from (..., 3, n_bins) sums."""
    w, wp, wy = sums[..., 0, :], sums[..., 1, :], sums[..., 2, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, freq = wp / w, wy / w
        ece = np.nansum(w * np.abs(freq - conf), axis=-1) / w.sum(axis=-1)
    return ece, conf, freq


def expected_calibration_error(prob, outcome, weight=None, *, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins (weighted when ``weight`` is given)."""
    return float(_ece_from_sums(bin_sums(prob, outcome, weight, n_bins=n_bins)[0])[0])


def apply_temperature(prob, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)`` (p clipped to [1e-6, 1 - 1e-6])."""
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))


#: the temperatures searched (a fit at either end is a bound, not an estimate)
T_BOUNDS = (0.05, 20.0)


def fit_temperature(prob, outcome, weight=None) -> float:
    """The temperature minimising the weighted binary negative log-likelihood (searched over
    :data:`T_BOUNDS`)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(outcome, dtype=np.float64)
    w = np.ones(y.shape) if weight is None else np.asarray(weight, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    z = np.log(p / (1 - p))

    def nll(log_t):
        s = z / np.exp(log_t)  # -log sigmoid(s) = logaddexp(0, -s)
        return float(np.sum(w * (y * np.logaddexp(0, -s) + (1 - y) * np.logaddexp(0, s))) / w.sum())

    bounds = (np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1]))
    return float(np.exp(minimize_scalar(nll, bounds=bounds, method="bounded").x))


def sample_voxels(
    label: np.ndarray,
    prob: np.ndarray,
    spacing,
    *,
    near_mm: float = 10.0,
    min_prob: float = 0.05,
    n_rest: int = 20_000,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(probability, outcome, weight, near) of a scan's sampled voxels: every voxel within ``near_mm`` of
    the reference or with probability >= ``min_prob`` (weight 1, ``near`` True) and ``n_rest`` of the others
    drawn without replacement (weight = their count / ``n_rest``; all of them, weight 1, when there are no
    more; ``near`` False)."""
    from scipy import ndimage

    from amt_core.evaluation.segmentation import bounding_box

    # C order once (NIfTI arrays come F-ordered): the flat indices below are C-order ones, and every
    # ravel / flatnonzero is then a view or one pass instead of a transposing copy
    prob = np.ascontiguousarray(prob)
    ref = np.ascontiguousarray(np.asarray(label) > 0)
    near = prob >= min_prob
    found = bounding_box(ref)
    if found is not None:
        grow = [int(np.ceil(near_mm / s)) for s in spacing]
        box = tuple(slice(max(b.start - g, 0), b.stop + g) for b, g in zip(found, grow, strict=True))
        dist = ndimage.distance_transform_edt(~ref[box], sampling=spacing)
        near[box] |= dist <= near_mm
    inside = np.flatnonzero(near)
    rest = np.flatnonzero(~near)
    take = rest if rest.size <= n_rest else rng.choice(rest, size=n_rest, replace=False)
    idx = np.r_[inside, take]
    weight = np.r_[np.ones(inside.size), np.full(take.size, rest.size / max(take.size, 1))]
    stratum = np.r_[np.ones(inside.size, bool), np.zeros(take.size, bool)]
    return prob.ravel()[idx].astype(np.float64), ref.ravel()[idx].astype(np.float64), weight, stratum


def lesion_samples(
    candidates: pd.DataFrame, operating_iou: float, criterion: str = ">=", match_metric: str = "iou"
) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, hit) of every candidate of an evaluation's candidates table: a hit when its best overlap
    with a lesion, by the evaluation's ``match_metric`` (``best_iou`` or ``best_dice``), passes
    ``operating_iou`` (the threshold of that metric)."""
    best = candidates[f"best_{match_metric}"].to_numpy(dtype=np.float64)
    hit = is_hit(best, operating_iou, criterion)
    return candidates["confidence"].to_numpy(dtype=np.float64), hit.astype(np.float64)


def reliability(
    sums: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0, ci_level: float = 0.95
) -> tuple[pd.DataFrame, dict]:
    """Reliability table (one row per bin: confidence, frequency with its band, weight) and the ECE with its
    band, from per-scan bin sums (:func:`bin_sums`), resampling scans."""
    from amt_core.evaluation.bootstrap import ci_from_replicates, resample_weights

    n_scans, _, n_bins = sums.shape
    total = sums.sum(axis=0)
    ece, conf, freq = _ece_from_sums(total)
    lo = hi = np.full(n_bins, np.nan)
    e_lo = e_hi = np.nan
    if n_bootstrap and n_scans > 1:
        w = resample_weights(n_scans, n_bootstrap, seed=seed).astype(np.float64)
        rep = np.einsum("bs,skn->bkn", w, sums)
        r_ece, _, r_freq = _ece_from_sums(rep)
        lo, hi = ci_from_replicates(r_freq, freq, ci_level=ci_level)
        e_lo, e_hi = ci_from_replicates(r_ece, float(ece), ci_level=ci_level)
    table = pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "bin_lo": np.arange(n_bins) / n_bins,
            "bin_hi": np.arange(1, n_bins + 1) / n_bins,
            "weight": total[0],
            "confidence": conf,
            "frequency": freq,
            "frequency_ci_lo": lo,
            "frequency_ci_hi": hi,
        }
    )
    return table, {"ece": float(ece), "ece_ci_lo": float(e_lo), "ece_ci_hi": float(e_hi)}


def calibration_study(
    cases: pd.DataFrame,
    predictions: Mapping[str, str | os.PathLike],
    results: Mapping,
    out_dir: str | os.PathLike | None = None,
    *,
    n_bins: int = 10,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    near_mm: float = 10.0,
    n_rest: int = 20_000,
    fit_split: str = "tune",
    test_split: str = "test",
) -> dict[str, pd.DataFrame]:
    """Calibration of lesion confidences and voxel probabilities on ``test_split``, before and after the
    temperature fitted on ``fit_split``.

    ``predictions``: split -> predictions folder (``{case}_prob.nii.gz`` needed for voxels); ``results``:
    split -> :class:`~amt_core.evaluation.results.EvaluationResult` of that folder. Returns (and with
    ``out_dir`` writes as ``calibration.csv`` / ``calibration_bins.csv``) ``summary`` (one row per kind:
    temperature, ECE before/after with bands, counts) and ``bins`` (reliability tables of the test split,
    ``scaled`` False/True).
    """
    config = results[test_split].config
    data: dict[str, dict[str, tuple]] = {k: {} for k in KINDS}
    for split in (fit_split, test_split):
        res = results[split]
        scan_of = {c: k for k, c in enumerate(res.per_case["case_id"])}
        conf, hit = lesion_samples(
            res.candidates, config.operating_iou, config.hit_criterion, config.match_metric
        )
        data["lesion"][split] = (
            conf,
            hit,
            np.ones(conf.size),
            res.candidates["case_id"].map(scan_of).to_numpy(),
            len(scan_of),
        )
        data["voxel"][split] = _voxel_samples(
            cases, Path(predictions[split]), list(scan_of), near_mm=near_mm, n_rest=n_rest, seed=seed
        )
        p, y, w, scan, n_scans, near = data["voxel"][split]
        data["voxel"][split] = (p, y, w, scan, n_scans)
        data["voxel_near"][split] = (p[near], y[near], w[near], scan[near], n_scans)
    rows, bins = [], []
    for kind in KINDS:
        p_fit, y_fit, w_fit, _, _ = data[kind][fit_split]
        # a temperature needs both outcomes on the tuning split (else the NLL runs off to a bound)
        temperature = fit_temperature(p_fit, y_fit, w_fit) if 0 < y_fit.sum() < y_fit.size else np.nan
        p, y, w, scan, n_scans = data[kind][test_split]
        row = {
            "kind": kind,
            "fit_split": fit_split,
            "test_split": test_split,
            "temperature": temperature,
            "n_scans": n_scans,
            "n_samples": int(p.size),
            "n_positive": int(y.sum()),
            "total_weight": float(w.sum()),
        }
        for scaled in (False, True):
            q = apply_temperature(p, temperature) if scaled and np.isfinite(temperature) else p
            table, ece = reliability(
                bin_sums(q, y, w, scan=scan, n_scans=n_scans, n_bins=n_bins),
                n_bootstrap=n_bootstrap,
                seed=seed,
                ci_level=ci_level,
            )
            if scaled and not np.isfinite(temperature):  # no temperature (the tuning split has one class)
                table.loc[:, ["weight", "confidence", "frequency", "frequency_ci_lo", "frequency_ci_hi"]] = (
                    np.nan
                )
                ece = dict.fromkeys(ece, np.nan)
            bins.append(table.assign(kind=kind, scaled=scaled))
            row |= {f"{k}_{'after' if scaled else 'before'}": v for k, v in ece.items()}
        rows.append(row)
    out = {"summary": pd.DataFrame(rows), "bins": pd.concat(bins, ignore_index=True)}
    cols = ["kind", "scaled"] + [c for c in out["bins"].columns if c not in ("kind", "scaled")]
    out["bins"] = out["bins"][cols]
    if out_dir is not None:
        from amt_core.atomic import write_csv

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_csv(Path(out_dir) / "calibration.csv", out["summary"])
        write_csv(Path(out_dir) / "calibration_bins.csv", out["bins"])
    return out


def _voxel_samples(
    cases: pd.DataFrame, pred_dir: Path, case_ids: list[str], *, near_mm: float, n_rest: int, seed: int
) -> tuple:
    from amt_core.data.volume import read_geometry, read_label, read_probability

    rng = np.random.default_rng(seed)
    labels = cases.set_index("case_id")["label"]
    parts = []
    for k, case_id in enumerate(case_ids):
        path = pred_dir / f"{case_id}_prob.nii.gz"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} missing: voxel calibration needs the probability maps that `amt predict` writes"
            )
        ref = read_label(labels[case_id], read_geometry(labels[case_id]))
        prob = read_probability(path, ref, grid_of="reference label").array
        p, y, w, near = sample_voxels(ref.array, prob, ref.spacing, near_mm=near_mm, n_rest=n_rest, rng=rng)
        parts.append((p, y, w, np.full(p.size, k), near))
    p, y, w, s, near = (np.concatenate(v) for v in zip(*parts, strict=True))
    return p, y, w, s, len(case_ids), near
