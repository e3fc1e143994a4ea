"""Institution and sub-group statistics: tables with bootstrap CIs and tests (models of institution
effects: :mod:`amt_core.evaluation.models`).

Every table is a long pandas DataFrame (one row per group and metric) so that it can be written to CSV
and filtered in a notebook. Sub-groups come from :data:`amt_core.registry.SUBGROUPS`, the one list that
the CLI, the notebooks and the docs read.

Inputs, as produced by the rest of :mod:`amt_core.evaluation`:

- ``per_case``: one row per scan with ``case_id``, ``institution_id`` and the metric columns.
- ``cases``: the case table (:data:`amt_core.registry.CASE_COLUMNS`).
- ``lesions``: one row per reference lesion with ``case_id``, ``lesion_id``, ``institution_id`` and a
  boolean ``hit`` at the operating point.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from amt_core import registry
from amt_core.evaluation.bootstrap import MIN_BOOTSTRAP_SCANS, bootstrap_means
from amt_core.evaluation.multiplicity import P_ADJUST_METHOD, adjust_family, format_p  # noqa: F401 (re-exported)

#: Level given to scans whose sub-group value is missing or outside the bins.
UNKNOWN = "unknown"
#: Registry order of the categorical sub-group values (others are sorted after them).
_CATEGORY_ORDER: dict[str, tuple[str, ...]] = {
    "sex": registry.SEXES,
    "histology": registry.HISTOLOGIES,
    "contrast": registry.CONTRASTS,
    "vendor": registry.VENDORS,
    "anatomy": registry.ANATOMIES,
}


# --- intervals for proportions -------------------------------------------------------------------------
def proportion_ci(successes, n, ci_level: float = 0.95, ci_method: str = "wilson"):
    """Confidence interval of a binomial proportion (e.g. a sensitivity at an operating point).

    ``ci_method``: ``"wilson"`` (default) or ``"clopper-pearson"`` (exact; ``"beta"`` is an alias), via
    ``statsmodels.stats.proportion.proportion_confint``. Scalars give ``(lo, hi)`` floats, arrays give
    arrays; ``n == 0`` gives NaN.
    """
    from statsmodels.stats.proportion import proportion_confint

    sm_method = {"wilson": "wilson", "clopper-pearson": "beta", "beta": "beta"}.get(ci_method.lower())
    if sm_method is None:
        raise ValueError(f"ci_method must be 'wilson' or 'clopper-pearson', got {ci_method!r}")
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > m):
        raise ValueError(f"successes must lie in [0, n]; got successes={successes}, n={n}")
    safe_m = np.where(m > 0, m, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = proportion_confint(k, safe_m, alpha=1.0 - ci_level, method=sm_method)
    lo = np.where(m > 0, lo, np.nan)
    hi = np.where(m > 0, hi, np.nan)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


# --- sub-group levels ----------------------------------------------------------------------------------
def subgroup_levels(cases: pd.DataFrame, name: str) -> pd.Series:
    """The level of sub-group ``name`` for each row of ``cases`` (an ordered categorical Series).

    Binned sub-groups use ``pd.cut`` with the registry's edges; intervals are left-closed
    (``[40, 60)`` is "40-59") unless the first label starts with ``"<="``, in which case they are
    right-closed (``(1.5, 3]`` is "1.5-3 mm"). Missing or out-of-range values get the level
    ``"unknown"`` so that the counts of a table always add up to the number of scans.
    """
    if name not in registry.SUBGROUPS:
        raise KeyError(f"unknown sub-group {name!r}; choose from {sorted(registry.SUBGROUPS)}")
    column, edges, labels = registry.SUBGROUPS[name]
    if column not in cases.columns:
        raise KeyError(
            f"sub-group {name!r} needs column {column!r} in the case table; it has {list(cases.columns)}"
        )
    raw = cases[column]
    if edges is not None:
        if labels is None:
            raise ValueError(f"sub-group {name!r} has bin edges but no bin labels in registry.SUBGROUPS")
        right = bool(labels) and str(labels[0]).startswith("<=")
        binned = pd.cut(
            pd.to_numeric(raw, errors="coerce"), bins=list(edges), labels=list(labels), right=right
        )
        order = list(labels)
        values = binned.astype(object)
    else:
        values = raw.astype(object)
        known = list(_CATEGORY_ORDER.get(column, ()))
        seen = sorted({str(v) for v in values.dropna()} - set(known))
        order = known + seen
        values = values.where(values.isna(), values.astype(str))
    values = values.where(values.notna(), UNKNOWN)
    return pd.Series(
        pd.Categorical(values, categories=order + [UNKNOWN], ordered=True), index=cases.index, name=name
    )


def present_subgroups(data: pd.DataFrame, subgroups: Sequence[str]) -> list[str]:
    """The sub-groups of ``subgroups`` whose column ``data`` has (``anatomy`` exists only in a cohort with a
    real-anatomy test subset); a name unknown to the registry is kept (:func:`subgroup_levels` refuses it)."""
    return [s for s in subgroups if s not in registry.SUBGROUPS or registry.SUBGROUPS[s][0] in data.columns]


def merge_cases(table: pd.DataFrame, cases: pd.DataFrame | None, needed: Sequence[str]) -> pd.DataFrame:
    """``table`` with the case-table columns it lacks, joined on ``case_id`` (row order kept)."""
    if cases is None:
        return table.reset_index(drop=True)
    extra = [c for c in needed if c in cases.columns and c not in table.columns]
    if not extra:
        return table.reset_index(drop=True)
    if "case_id" not in table.columns:
        raise KeyError("the table needs a 'case_id' column to be joined to the case table")
    merged = table.merge(cases[["case_id", *extra]].drop_duplicates("case_id"), on="case_id", how="left")
    return merged.reset_index(drop=True)


def _t_interval(values: np.ndarray, ci_level: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (finite, at least 2, not all equal), clipped to ``bounds``."""
    mean, sem = float(values.mean()), float(values.std(ddof=1)) / np.sqrt(values.size)
    half = float(sps.t.ppf(0.5 + ci_level / 2, values.size - 1)) * sem
    return max(mean - half, bounds[0]), min(mean + half, bounds[1])


def _group_means(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    *,
    n_bootstrap: int,
    seed: int,
    ci_method: str,
    ci_level: float,
    cluster: bool,
) -> pd.DataFrame:
    """bootstrap_means of ``metrics`` in ``frame``. A metric with a value for fewer than 2 scans, or for
    fewer than :data:`MIN_BOOTSTRAP_SCANS` all equal, has no interval (NaN, the reason in ``note``); with
    2 to ``MIN_BOOTSTRAP_SCANS - 1`` scans (scan resampling) the interval is Student's t."""
    clusters = frame["institution_id"].to_numpy() if cluster else None
    out = bootstrap_means(
        frame[list(metrics)],
        n_bootstrap=n_bootstrap,
        seed=seed,
        clusters=clusters,
        ci_method=ci_method,
        ci_level=ci_level,
    )
    out["note"] = out["note"].astype(object)
    for k, metric in enumerate(out["metric"]):
        n = int(out.at[k, "n"])
        if n >= MIN_BOOTSTRAP_SCANS or (cluster and pd.notna(out.at[k, "note"])):
            continue
        values = frame[metric].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        note = None
        if n < 2:
            note = f"{n} scan(s): no interval"
        elif np.ptp(values) == 0:
            note = f"{n} scans, all equal: no interval"
        elif n_bootstrap and not cluster:
            bounds = (0.0, 1.0) if metric in registry.SEG_METRICS else (-np.inf, np.inf)
            out.loc[k, ["ci_lo", "ci_hi"]] = _t_interval(values, ci_level, bounds)
            out.at[k, "ci_method"] = "t"
            out.at[k, "note"] = f"{n} scans (< {MIN_BOOTSTRAP_SCANS}): Student-t interval"
            continue
        if note:
            out.loc[k, ["ci_lo", "ci_hi"]] = np.nan
            out.at[k, "note"] = note
    return out


def _dice_test(groups: list[np.ndarray]) -> tuple[str, float]:
    """Kruskal-Wallis across levels (Mann-Whitney U, two-sided, for two levels)."""
    groups = [g[np.isfinite(g)] for g in groups]
    groups = [g for g in groups if g.size > 0]
    if len(groups) < 2:
        return "none", np.nan
    try:
        if len(groups) == 2:
            return "mann-whitney", float(
                sps.mannwhitneyu(groups[0], groups[1], alternative="two-sided").pvalue
            )
        return "kruskal-wallis", float(sps.kruskal(*groups).pvalue)
    except ValueError:  # all values identical
        return ("mann-whitney" if len(groups) == 2 else "kruskal-wallis"), 1.0


# --- tables --------------------------------------------------------------------------------------------
def subgroup_table(
    per_case: pd.DataFrame,
    cases: pd.DataFrame | None = None,
    *,
    metrics: Sequence[str] = registry.SEG_METRICS,
    subgroups: Sequence[str] = tuple(registry.SUBGROUPS),
    n_bootstrap: int = 10_000,
    seed: int = 0,
    ci_method: str = "percentile",
    ci_level: float = 0.95,
    cluster: bool = False,
    test_metric: str = "dice",
) -> pd.DataFrame:
    """Mean and bootstrap CI of each metric per sub-group level, with a test of the level effect.

    Returns a long DataFrame with columns subgroup, level, metric, n, mean, ci_lo, ci_hi, ci_method,
    ci_level, n_bootstrap, cluster, note, test, p_value (a level of fewer than :data:`MIN_BOOTSTRAP_SCANS`
    scans: a Student-t interval, ``ci_method`` "t"; of one scan: none). ``test``/``p_value`` compare ``test_metric`` (Dice)
    across the known levels of the sub-group (Kruskal-Wallis; Mann-Whitney U for two levels; the
    "unknown" level is left out of the test) and are repeated on every row of that sub-group. ``n`` is
    the number of scans with a value; the levels' ``n`` add up to the scans with a value. A sub-group whose
    column neither table has is left out (:func:`present_subgroups`).
    """
    columns = [registry.SUBGROUPS[s][0] for s in subgroups if s in registry.SUBGROUPS]
    data = merge_cases(per_case, cases, columns)
    rows = []
    for name in present_subgroups(data, subgroups):
        levels = subgroup_levels(data, name)
        pieces, test_groups = [], []
        for lev in levels.cat.categories:
            sel = (levels == lev).to_numpy()
            if not sel.any():
                continue
            part = data.loc[sel]
            res = _group_means(
                part,
                metrics,
                n_bootstrap=n_bootstrap,
                seed=seed,
                ci_method=ci_method,
                ci_level=ci_level,
                cluster=cluster,
            )
            res.insert(0, "level", str(lev))
            pieces.append(res)
            if lev != UNKNOWN and test_metric in part.columns:
                test_groups.append(part[test_metric].to_numpy(dtype=np.float64))
        if not pieces:
            continue
        table = pd.concat(pieces, ignore_index=True)
        table.insert(0, "subgroup", name)
        table["test"], table["p_value"] = _dice_test(test_groups)
        rows.append(table)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return out


def institution_table(
    per_case: pd.DataFrame,
    cases: pd.DataFrame | None = None,
    *,
    min_scans: int = 3,
    metrics: Sequence[str] = registry.SEG_METRICS,
    n_bootstrap: int = 10_000,
    seed: int = 0,
    ci_method: str = "percentile",
    ci_level: float = 0.95,
    cluster: bool = False,
) -> pd.DataFrame:
    """Mean and bootstrap CI of each metric per institution.

    Institutions with fewer than ``min_scans`` scans are pooled into one row named
    ``"pooled (<k scans)"`` (with ``cluster=True`` the pooled row's CI resamples its institutions).
    Columns: institution_id, n_institutions, metric, n, mean, ci_lo, ci_hi, ci_method, ci_level, n_bootstrap,
    cluster, note. Intervals of small groups as in :func:`_group_means` (Student's t below
    :data:`MIN_BOOTSTRAP_SCANS` scans, none below 2).
    """
    data = merge_cases(per_case, cases, ["institution_id"])
    if "institution_id" not in data.columns:
        raise KeyError("institution_table needs 'institution_id' in per_case or in the case table")
    sizes = data.groupby("institution_id").size()
    big = sorted(sizes.index[sizes >= min_scans], key=str)
    small = set(sizes.index[sizes < min_scans])
    pooled_name = f"pooled (<{min_scans} scans)"
    pieces = []
    for inst in big:
        part = data[data["institution_id"] == inst]
        res = _group_means(
            part,
            metrics,
            n_bootstrap=n_bootstrap,
            seed=seed,
            ci_method=ci_method,
            ci_level=ci_level,
            cluster=False,
        )
        res.insert(0, "n_institutions", 1)
        res.insert(0, "institution_id", str(inst))
        pieces.append(res)
    if small:
        part = data[data["institution_id"].isin(small)]
        res = _group_means(
            part,
            metrics,
            n_bootstrap=n_bootstrap,
            seed=seed,
            ci_method=ci_method,
            ci_level=ci_level,
            cluster=cluster,
        )
        res.insert(0, "n_institutions", len(small))
        res.insert(0, "institution_id", pooled_name)
        pieces.append(res)
    return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()


#: Monte Carlo tables drawn for the Fisher-Freeman-Halton test of more than two levels (standard error of the
#: p-value at most 0.0035)
FFH_RESAMPLES = 20_000


def _association_test(hits: np.ndarray, totals: np.ndarray, seed: int = 0) -> tuple[str, float]:
    """Fisher's exact test of the levels' hit/miss table: exact for two levels; for more, the
    Fisher-Freeman-Halton extension, its p-value from :data:`FFH_RESAMPLES` seeded Monte Carlo tables with
    the observed margins (``scipy.stats.fisher_exact`` with ``MonteCarloMethod``; a chi-square
    approximation is unreliable with the few lesions per level of a sub-group)."""
    keep = totals > 0
    hits, totals = hits[keep], totals[keep]
    if hits.size < 2:
        return "none", np.nan
    table = np.column_stack([hits, totals - hits])
    name = "fisher" if hits.size == 2 else "fisher-freeman-halton"
    if (table.sum(axis=0) == 0).any():  # all hits or all misses: no association to detect
        return name, 1.0
    if hits.size == 2:
        return name, float(sps.fisher_exact(table).pvalue)
    method = sps.MonteCarloMethod(n_resamples=FFH_RESAMPLES, rng=np.random.default_rng(seed))
    return name, float(sps.fisher_exact(table, method=method).pvalue)


def detection_subgroup_table(
    lesions: pd.DataFrame,
    cases: pd.DataFrame | None = None,
    *,
    subgroups: Sequence[str] = tuple(registry.SUBGROUPS),
    hit_column: str = "hit",
    ci_level: float = 0.95,
    ci_method: str = "wilson",
    seed: int = 0,
) -> pd.DataFrame:
    """Lesion-wise sensitivity at the operating point per sub-group level.

    Columns: subgroup, level, n_lesions, n_hit, sensitivity, ci_lo, ci_hi (Wilson, or
    Clopper-Pearson with ``ci_method``), test, p_value (Fisher's exact test over the known levels: exact
    for two, Fisher-Freeman-Halton by seeded Monte Carlo for more; :func:`_association_test`). The tests treat lesions as independent; see
    :func:`amt_core.evaluation.models.detection_gee` for a model that allows for clustering by institution.
    A sub-group whose column neither table has is left out (:func:`present_subgroups`).
    """
    columns = [registry.SUBGROUPS[s][0] for s in subgroups if s in registry.SUBGROUPS]
    data = merge_cases(lesions, cases, columns)
    hit = data[hit_column].astype(bool).to_numpy()
    rows = []
    for name in present_subgroups(data, subgroups):
        levels = subgroup_levels(data, name)
        cats = [c for c in levels.cat.categories if (levels == c).any()]
        n_les = np.array([int((levels == c).sum()) for c in cats])
        n_hit = np.array([int(hit[(levels == c).to_numpy()].sum()) for c in cats])
        if not cats:
            continue
        lo, hi = proportion_ci(n_hit, n_les, ci_level=ci_level, ci_method=ci_method)
        known = np.array([c != UNKNOWN for c in cats])
        test, p = _association_test(n_hit[known], n_les[known], seed=seed)
        rows.append(
            pd.DataFrame(
                {
                    "subgroup": name,
                    "level": [str(c) for c in cats],
                    "n_lesions": n_les,
                    "n_hit": n_hit,
                    "sensitivity": n_hit / n_les,
                    "ci_lo": lo,
                    "ci_hi": hi,
                    "ci_method": ci_method,
                    "test": test,
                    "p_value": p,
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def compare_to_published(
    summary_means: pd.DataFrame, published: dict[str, float] | None = None
) -> pd.DataFrame:
    """Our mean [CI] beside the published value for each metric of :data:`registry.PUBLISHED`.

    ``summary_means`` has columns metric, mean and optionally ci_lo, ci_hi (as from
    :func:`~amt_core.evaluation.bootstrap.bootstrap_means`). Columns of the result: metric, ours,
    ci_lo, ci_hi, published, difference (ours - published), published_in_ci, ours_text
    ("0.820 [0.790, 0.850]").
    """
    published = dict(registry.PUBLISHED if published is None else published)
    ours = summary_means.set_index("metric")
    rows = []
    for metric, value in published.items():
        mean = float(ours.at[metric, "mean"]) if metric in ours.index else np.nan
        lo = float(ours.at[metric, "ci_lo"]) if metric in ours.index and "ci_lo" in ours else np.nan
        hi = float(ours.at[metric, "ci_hi"]) if metric in ours.index and "ci_hi" in ours else np.nan
        inside = bool(lo <= value <= hi) if np.isfinite(lo) and np.isfinite(hi) else None
        text = "" if np.isnan(mean) else f"{mean:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")
        rows.append(
            {
                "metric": metric,
                "ours": mean,
                "ci_lo": lo,
                "ci_hi": hi,
                "published": float(value),
                "difference": mean - float(value),
                "published_in_ci": inside,
                "ours_text": text,
            }
        )
    return pd.DataFrame(rows)
