"""Bootstrap resampling and confidence intervals, vectorised.

One resampler for the whole engine: :func:`resample_weights` gives, for each of ``n_bootstrap`` resamples,
how many times each scan appears in it (an ``(n_bootstrap, n)`` int32 matrix). Any statistic that is a sum
over scans (a mean, a count of hits, a count of false positives) is then a single matrix product
``W @ per_scan_values``, which is how 10,000 resamples of every mean cost milliseconds instead of a
Python loop over resamples.

- Scan bootstrap: each resample draws ``n`` scans with replacement (multinomial counts).
- Institution-cluster bootstrap (``clusters=``): each resample draws institutions with replacement
  and every scan of a drawn institution comes along, so a scan's count is its institution's count.

:func:`ci_from_replicates` turns replicates into percentile or BCa intervals (Efron & Tibshirani 1993,
ch. 14; the same conventions as ``scipy.stats.bootstrap``), and :func:`bootstrap_means` does the whole
job for a table of per-scan metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from amt_core.registry import CI_METHODS

#: Fewest institutions for an institution-cluster bootstrap interval; below it the interval is reported
#: as not estimable (NaN, with the reason) instead of being computed. Why 10: with G institutions a
#: resample is one of C(2G-1, G) multisets of institutions (G=1: 1, so the interval collapses to the
#: point; G=3: 10; G=5: 126), and the cluster bootstrap is known to under-cover badly with few clusters
#: (Cameron, Gelbach & Miller 2008, Rev Econ Stat 90:414-427, simulate 5-30 clusters and find rejection
#: rates far above nominal below about 10; the cluster-robust literature asks for tens of clusters).
MIN_CLUSTERS = 10

#: Fewest scans for a scan-bootstrap interval of a group's mean. The percentile and BCa bootstraps of a mean
#: under-cover badly in small samples (the resample variance is (n-1)/n of the sample's, and a few scans give
#: few distinct resamples): simulated per-scan Dice (Beta(8, 2)) gave 95% intervals covering 44% of the time
#: at 2 scans, 73% at 3, 84% at 5 and 88% at 10, where a Student-t interval covers 93%. Below it a subgroup
#: level's or institution's interval is Student's t (``stats``: ``ci_method`` "t", the reason in ``note``),
#: and an evaluation's own intervals carry a caution (``results``: summary.json's bootstrap ``caution``).
MIN_BOOTSTRAP_SCANS = 10

#: BCa: a replicate within this relative distance of the point estimate is a tie with it (counts half)
TIE_RTOL = 1e-9

#: Largest number of random draws made at once (bounds the temporary index array to ~32 MiB).
_CHUNK = 1 << 22


def _cluster_codes(clusters: Sequence | np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Integer codes 0..G-1 for the cluster labels, in order of first sorted label."""
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(f"clusters must have one label per scan: got shape {labels.shape}, expected ({n},)")
    if pd.isna(labels).any():
        raise ValueError("clusters contains missing labels; give every scan an institution_id")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    return codes, int(codes.max()) + 1 if n else 0


def cluster_problem(clusters: Sequence | np.ndarray | None) -> str | None:
    """Why an institution-cluster bootstrap of these labels is not estimable, or None when it is
    (``clusters=None`` is a scan bootstrap: always None)."""
    if clusters is None:
        return None
    labels = pd.Series(np.asarray(clusters, dtype=object).reshape(-1))
    n_groups = int(labels.dropna().nunique())
    if n_groups < MIN_CLUSTERS:
        return (
            f"not estimable: {n_groups} institution(s), fewer than the {MIN_CLUSTERS} that an "
            "institution-cluster bootstrap needs (with few clusters its interval is degenerate or "
            "under-covers)"
        )
    return None


def _multinomial_counts(rng: np.random.Generator, n_units: int, n_bootstrap: int) -> np.ndarray:
    """(n_bootstrap, n_units) int32 counts of ``n_units`` draws with replacement per row.

    Resamples done are reported once per chunk (:mod:`amt_core.progress`: only to ``amt run``'s progress
    file, never a bar), so the report costs nothing next to the draws."""
    from amt_core.progress import Progress

    out = np.empty((n_bootstrap, n_units), dtype=np.int32)
    rows_per_chunk = max(1, _CHUNK // max(n_units, 1))
    with Progress("bootstrap", n_bootstrap, unit="resample") as progress:
        for start in range(0, n_bootstrap, rows_per_chunk):
            stop = min(n_bootstrap, start + rows_per_chunk)
            rows = stop - start
            idx = rng.integers(0, n_units, size=(rows, n_units))
            idx += (np.arange(rows) * n_units)[:, None]
            out[start:stop] = np.bincount(idx.ravel(), minlength=rows * n_units).reshape(rows, n_units)
            progress.update(rows)
    return out


def resample_weights(
    n: int,
    n_bootstrap: int,
    *,
    seed: int | np.random.Generator | None,
    clusters: Sequence | np.ndarray | None = None,
) -> np.ndarray:
    """How many times each of ``n`` scans appears in each of ``n_bootstrap`` bootstrap resamples.

    Parameters
    ----------
    n : number of scans.
    n_bootstrap : number of resamples.
    seed : seed for ``numpy.random.default_rng`` (same seed -> identical matrix).
    clusters : optional length-``n`` labels (institution ids). When given, institutions are resampled
        with replacement and each scan gets its institution's count (the cluster bootstrap).

    Returns
    -------
    int32 array of shape ``(n_bootstrap, n)``; each row of a scan bootstrap sums to ``n``; in a cluster
    bootstrap all scans of one institution have equal counts within a row.
    """
    if n < 0 or n_bootstrap < 0:
        raise ValueError(f"n and n_bootstrap must be non-negative, got n={n}, n_bootstrap={n_bootstrap}")
    rng = np.random.default_rng(seed)
    if clusters is None:
        return _multinomial_counts(rng, n, n_bootstrap)
    codes, n_groups = _cluster_codes(clusters, n)
    group_counts = _multinomial_counts(rng, n_groups, n_bootstrap)
    return np.ascontiguousarray(group_counts[:, codes])


def resample_indices(
    n: int,
    n_bootstrap: int,
    *,
    seed: int | np.random.Generator | None,
    clusters: Sequence | np.ndarray | None = None,
) -> list[np.ndarray]:
    """The resamples of :func:`resample_weights` as lists of scan indices (sorted, with repeats).

    For statistics that are not sums over scans. Each list is what ``np.repeat(arange(n), w)`` gives
    for that resample's weights, so both forms describe the very same resamples for a given seed.
    Cluster resamples vary in length, hence a list of arrays.
    """
    weights = resample_weights(n, n_bootstrap, seed=seed, clusters=clusters)
    base = np.arange(n)
    return [np.repeat(base, row) for row in weights]


def _quantiles_nan(sorted_rep: np.ndarray, n_valid: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantiles (numpy's default) of each column at its own probability.

    sorted_rep: (B, k) with NaNs sorted to the end; n_valid: (k,); probs: (k,). NaN where no data.
    """
    k = sorted_rep.shape[1]
    out = np.full(k, np.nan)
    ok = (n_valid > 0) & np.isfinite(probs)
    if not ok.any():
        return out
    cols = np.nonzero(ok)[0]
    h = (n_valid[cols] - 1) * np.clip(probs[cols], 0.0, 1.0)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n_valid[cols] - 1)
    frac = h - lo
    v_lo = sorted_rep[lo, cols]
    v_hi = sorted_rep[hi, cols]
    out[cols] = v_lo + frac * (v_hi - v_lo)
    return out


def _acceleration(jackknife: np.ndarray) -> np.ndarray:
    """BCa acceleration from jackknife values (n, k), NaN rows ignored per column; 0 when undefined."""
    jack = np.asarray(jackknife, dtype=np.float64)
    valid = np.isfinite(jack)
    m = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dot = np.where(m > 0, np.nansum(jack, axis=0) / np.maximum(m, 1), np.nan)
        diff = np.where(valid, dot - jack, 0.0)
        num = (diff**3).sum(axis=0)
        den = 6.0 * (diff**2).sum(axis=0) ** 1.5
        a = np.where(den > 0, num / den, 0.0)
    return a


def ci_from_replicates(
    replicates: np.ndarray,
    point: float | np.ndarray,
    *,
    ci_level: float = 0.95,
    ci_method: str = "percentile",
    jackknife: np.ndarray | None = None,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Two-sided bootstrap confidence interval from bootstrap replicates.

    Parameters
    ----------
    replicates : ``(n_bootstrap,)`` or ``(n_bootstrap, k)`` bootstrap values of the statistic (NaN replicates,
        e.g. resamples in which a metric had no scan, are ignored per column).
    point : the statistic on the original data, scalar or ``(k,)``.
    ci_level : confidence level (0.95).
    ci_method : ``"percentile"`` or ``"bca"`` (bias-corrected and accelerated).
    jackknife : for BCa, leave-one-out values of the statistic, ``(n,)`` or ``(n, k)`` (NaN rows
        ignored); without it the acceleration is 0 (the bias-corrected interval).

    BCa follows ``scipy.stats.bootstrap``: ``z0 = ndtri(p)`` with ``p`` the fraction of replicates
    below the point (ties, within ``TIE_RTOL`` relative, count half), clipped to ``[1/(2B), 1 - 1/(2B)]`` so that a point outside all
    replicates gives the extreme replicate rather than an infinite bound; acceleration from the
    jackknife skewness. Degenerate columns (all replicates equal) give ``(point, point)``; columns with
    no finite replicate or a NaN point give ``(nan, nan)``.

    Returns
    -------
    ``(lo, hi)`` as floats for 1-D replicates, as ``(k,)`` arrays for 2-D replicates.
    """
    ci_method = ci_method.lower()
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level must lie in (0, 1), got {ci_level}")
    rep = np.asarray(replicates, dtype=np.float64)
    scalar = rep.ndim == 1
    if scalar:
        rep = rep[:, None]
    if rep.ndim != 2:
        raise ValueError(f"replicates must be (n_bootstrap,) or (n_bootstrap, k), got shape {rep.shape}")
    k = rep.shape[1]
    pt = np.broadcast_to(np.asarray(point, dtype=np.float64).reshape(-1), (k,)).copy()

    if rep.shape[0] == 0:  # no resamples (n_bootstrap = 0): no interval
        nan = np.full(k, np.nan)
        return (float("nan"), float("nan")) if scalar else (nan, nan.copy())
    sorted_rep = np.sort(rep, axis=0)  # NaNs go last
    n_valid = np.isfinite(rep).sum(axis=0)
    alpha = (1.0 - ci_level) / 2.0
    p_lo = np.full(k, alpha)
    p_hi = np.full(k, 1.0 - alpha)

    if ci_method == "bca":
        with np.errstate(invalid="ignore"):
            # a replicate equal to the point up to rounding (the same resample summed in another order
            # gives the last bit differently) is a tie, so an interval does not depend on which other
            # statistics were resampled with it
            tol = TIE_RTOL * np.maximum(np.abs(pt), 1.0)
            below = (rep < pt - tol).sum(axis=0) + (rep <= pt + tol).sum(axis=0)
            frac = below / (2.0 * np.maximum(n_valid, 1))
        bound = 1.0 / (2.0 * np.maximum(n_valid, 1))
        z0 = ndtri(np.clip(frac, bound, 1.0 - bound))
        if jackknife is None:
            a = np.zeros(k)
        else:
            jack = np.asarray(jackknife, dtype=np.float64)
            jack = jack[:, None] if jack.ndim == 1 else jack
            if jack.shape[1] != k:
                raise ValueError(f"jackknife has {jack.shape[1]} columns, replicates have {k}")
            a = _acceleration(jack)
        z_lo, z_hi = ndtri(alpha), ndtri(1.0 - alpha)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_lo = ndtr(z0 + (z0 + z_lo) / (1.0 - a * (z0 + z_lo)))
            p_hi = ndtr(z0 + (z0 + z_hi) / (1.0 - a * (z0 + z_hi)))

    lo = _quantiles_nan(sorted_rep, n_valid, p_lo)
    hi = _quantiles_nan(sorted_rep, n_valid, p_hi)

    rng_min = np.where(n_valid > 0, sorted_rep[0], np.nan)
    rng_max = sorted_rep[np.maximum(n_valid - 1, 0), np.arange(k)]
    degenerate = (n_valid > 0) & (rng_min == rng_max)
    lo = np.where(degenerate, pt, lo)
    hi = np.where(degenerate, pt, hi)
    missing = ~np.isfinite(pt) | (n_valid == 0)
    lo = np.where(missing, np.nan, lo)
    hi = np.where(missing, np.nan, hi)
    if scalar:
        return float(lo[0]), float(hi[0])
    return lo, hi


def _as_matrix(values: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, list[str]]:
    if isinstance(values, pd.DataFrame):
        numeric = values.select_dtypes(include=["number", "bool"])
        return numeric.to_numpy(dtype=np.float64), [str(c) for c in numeric.columns]
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"values must be a DataFrame or a 1-D/2-D array, got shape {arr.shape}")
    return arr, [f"m{j}" for j in range(arr.shape[1])]


def jackknife_means(values: np.ndarray, clusters: Sequence | np.ndarray | None = None) -> np.ndarray:
    """Leave-one-out (or leave-one-cluster-out) means of each column, NaN-aware, in closed form.

    values: (n, k). Returns (n, k) for scans or (G, k) for clusters; a row is NaN where the left-out
    unit had no value for that metric (it does not change the mean) or nothing would remain.
    """
    v = np.asarray(values, dtype=np.float64)
    mask = np.isfinite(v)
    v0 = np.where(mask, v, 0.0)
    total, count = v0.sum(axis=0), mask.sum(axis=0)
    if clusters is None:
        part_sum, part_cnt = v0, mask.astype(np.int64)
    else:
        codes, n_groups = _cluster_codes(clusters, v.shape[0])
        part_sum = np.zeros((n_groups, v.shape[1]))
        part_cnt = np.zeros((n_groups, v.shape[1]), dtype=np.int64)
        np.add.at(part_sum, codes, v0)
        np.add.at(part_cnt, codes, mask.astype(np.int64))
    remain = count - part_cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        jack = (total - part_sum) / remain
    return np.where((part_cnt > 0) & (remain > 0), jack, np.nan)


def weighted_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bootstrap means ``(W @ v) / (W @ mask)`` of each column, NaN values excluded: (n_bootstrap, k)."""
    v = np.asarray(values, dtype=np.float64)
    mask = np.isfinite(v)
    w = np.asarray(weights, dtype=np.float64)
    stacked = np.concatenate([np.where(mask, v, 0.0), mask.astype(np.float64)], axis=1)
    prod = w @ stacked
    k = v.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(prod[:, k:] > 0, prod[:, :k] / prod[:, k:], np.nan)


def bootstrap_means(
    values: pd.DataFrame | np.ndarray,
    *,
    n_bootstrap: int = 10_000,
    seed: int = 0,
    clusters: Sequence | np.ndarray | None = None,
    ci_method: str = "percentile",
    ci_level: float = 0.95,
    weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Mean of each per-scan metric with its bootstrap confidence interval.

    Parameters
    ----------
    values : per-scan metrics, a DataFrame (its numeric columns are the metrics; id columns are
        skipped) or an ``(n,)``/``(n, k)`` array. NaN per-scan values are excluded per metric.
    n_bootstrap, seed : resamples and the seed of :func:`resample_weights`.
    clusters : length-``n`` institution ids for the institution-cluster bootstrap.
    ci_method : ``"percentile"`` or ``"bca"``; BCa uses the closed-form jackknife of the mean
        (leave-one-cluster-out for the cluster bootstrap).
    ci_level : confidence level.
    weights : optional precomputed ``(n_bootstrap, n)`` resample weights (to share resamples between
        tables); when given, ``n_bootstrap``/``seed`` only label the output.

    Returns
    -------
    DataFrame with one row per metric: metric, mean, ci_lo, ci_hi, ci_method, ci_level, n_bootstrap, n (scans
    with a value), cluster (True for the cluster bootstrap), note (None, or why the interval is not
    estimable: a cluster bootstrap over fewer than :data:`MIN_CLUSTERS` institutions has NaN bounds).
    """
    arr, names = _as_matrix(values)
    n = arr.shape[0]
    mask = np.isfinite(arr)
    counts = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(counts > 0, np.where(mask, arr, 0.0).sum(axis=0) / counts, np.nan)
    problem = cluster_problem(clusters) if n else None
    if problem is not None:  # too few institutions: the means, no interval, and why
        lo = hi = np.full(len(names), np.nan)
    else:
        if weights is None:
            weights = resample_weights(n, n_bootstrap, seed=seed, clusters=clusters)
        elif weights.shape[1] != n:
            raise ValueError(f"weights have {weights.shape[1]} columns but values have {n} rows")
        n_bootstrap = int(weights.shape[0])
        jack = jackknife_means(arr, clusters) if ci_method.lower() == "bca" else None
        lo, hi = ci_from_replicates(
            weighted_means(weights, arr), point, ci_level=ci_level, ci_method=ci_method, jackknife=jack
        )
    return pd.DataFrame(
        {
            "metric": names,
            "mean": point,
            "ci_lo": lo,
            "ci_hi": hi,
            "ci_method": ci_method.lower(),
            "ci_level": ci_level,
            "n_bootstrap": int(n_bootstrap),
            "n": counts.astype(int),
            "cluster": clusters is not None,
            "note": problem,
        }
    )
