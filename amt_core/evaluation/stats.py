"""Institution and sub-group statistics: tables with bootstrap CIs, tests, and models.

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
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from amt_core import registry
from amt_core.evaluation.bootstrap import bootstrap_means

#: Level given to scans whose sub-group value is missing or outside the bins.
UNKNOWN = "unknown"
#: Registry order of the categorical sub-group values (others are sorted after them).
_CATEGORY_ORDER: dict[str, tuple[str, ...]] = {
    "sex": registry.SEXES,
    "histology": registry.HISTOLOGIES,
    "contrast": registry.CONTRASTS,
    "vendor": registry.VENDORS,
}


# --- intervals for proportions -------------------------------------------------------------------------
def wilson_ci(successes, n, level: float = 0.95, method: str = "wilson"):
    """Confidence interval of a binomial proportion (e.g. a sensitivity at an operating point).

    ``method``: ``"wilson"`` (default) or ``"clopper-pearson"`` (exact; ``"beta"`` is an alias), via
    ``statsmodels.stats.proportion.proportion_confint``. Scalars give ``(lo, hi)`` floats, arrays give
    arrays; ``n == 0`` gives NaN.
    """
    from statsmodels.stats.proportion import proportion_confint

    sm_method = {"wilson": "wilson", "clopper-pearson": "beta", "beta": "beta"}.get(method.lower())
    if sm_method is None:
        raise ValueError(f"method must be 'wilson' or 'clopper-pearson', got {method!r}")
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > m):
        raise ValueError(f"successes must lie in [0, n]; got successes={successes}, n={n}")
    safe_m = np.where(m > 0, m, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = proportion_confint(k, safe_m, alpha=1.0 - level, method=sm_method)
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


def _merge_cases(table: pd.DataFrame, cases: pd.DataFrame | None, needed: Sequence[str]) -> pd.DataFrame:
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


def _group_means(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    *,
    n_boot: int,
    seed: int,
    method: str,
    level: float,
    cluster: bool,
) -> pd.DataFrame:
    """bootstrap_means of ``metrics`` in ``frame``; CIs are NaN where fewer than 2 scans have a value."""
    clusters = frame["institution_id"].to_numpy() if cluster else None
    out = bootstrap_means(
        frame[list(metrics)], n_boot=n_boot, seed=seed, clusters=clusters, method=method, level=level
    )
    small = out["n"] < 2
    out.loc[small, ["ci_lo", "ci_hi"]] = np.nan
    return out.rename(columns={"level": "ci_level"})


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
    n_boot: int = 10_000,
    seed: int = 0,
    method: str = "percentile",
    level: float = 0.95,
    cluster: bool = False,
    test_metric: str = "dice",
) -> pd.DataFrame:
    """Mean and bootstrap CI of each metric per sub-group level, with a test of the level effect.

    Returns a long DataFrame with columns subgroup, level, metric, n, mean, ci_lo, ci_hi, method,
    ci_level, n_boot, cluster, test, p_value. ``test``/``p_value`` compare ``test_metric`` (Dice)
    across the known levels of the sub-group (Kruskal-Wallis; Mann-Whitney U for two levels; the
    "unknown" level is left out of the test) and are repeated on every row of that sub-group. ``n`` is
    the number of scans with a value; the levels' ``n`` add up to the scans with a value.
    """
    columns = [registry.SUBGROUPS[s][0] for s in subgroups if s in registry.SUBGROUPS]
    data = _merge_cases(per_case, cases, columns)
    rows = []
    for name in subgroups:
        levels = subgroup_levels(data, name)
        pieces, test_groups = [], []
        for lev in levels.cat.categories:
            sel = (levels == lev).to_numpy()
            if not sel.any():
                continue
            part = data.loc[sel]
            res = _group_means(
                part, metrics, n_boot=n_boot, seed=seed, method=method, level=level, cluster=cluster
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
    n_boot: int = 10_000,
    seed: int = 0,
    method: str = "percentile",
    level: float = 0.95,
    cluster: bool = False,
) -> pd.DataFrame:
    """Mean and bootstrap CI of each metric per institution.

    Institutions with fewer than ``min_scans`` scans are pooled into one row named
    ``"pooled (<k scans)"`` (with ``cluster=True`` the pooled row's CI resamples its institutions).
    Columns: institution_id, n_institutions, metric, n, mean, ci_lo, ci_hi, method, ci_level, n_boot,
    cluster. CIs are NaN for groups with fewer than 2 scans.
    """
    data = _merge_cases(per_case, cases, ["institution_id"])
    if "institution_id" not in data.columns:
        raise KeyError("institution_table needs 'institution_id' in per_case or in the case table")
    sizes = data.groupby("institution_id").size()
    big = sorted(sizes.index[sizes >= min_scans], key=str)
    small = set(sizes.index[sizes < min_scans])
    pooled_name = f"pooled (<{min_scans} scans)"
    pieces = []
    for inst in big:
        part = data[data["institution_id"] == inst]
        res = _group_means(part, metrics, n_boot=n_boot, seed=seed, method=method, level=level, cluster=False)
        res.insert(0, "n_institutions", 1)
        res.insert(0, "institution_id", str(inst))
        pieces.append(res)
    if small:
        part = data[data["institution_id"].isin(small)]
        res = _group_means(
            part, metrics, n_boot=n_boot, seed=seed, method=method, level=level, cluster=cluster
        )
        res.insert(0, "n_institutions", len(small))
        res.insert(0, "institution_id", pooled_name)
        pieces.append(res)
    return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()


def _association_test(hits: np.ndarray, totals: np.ndarray) -> tuple[str, float]:
    """Fisher's exact test (2 levels) or chi-square (more) on the levels' hit/miss table."""
    keep = totals > 0
    hits, totals = hits[keep], totals[keep]
    if hits.size < 2:
        return "none", np.nan
    table = np.column_stack([hits, totals - hits])
    name = "fisher" if hits.size == 2 else "chi-square"
    if (table.sum(axis=0) == 0).any():  # all hits or all misses: no association to detect
        return name, 1.0
    if hits.size == 2:
        return name, float(sps.fisher_exact(table).pvalue)
    return name, float(sps.chi2_contingency(table).pvalue)


def detection_subgroup_table(
    lesions: pd.DataFrame,
    cases: pd.DataFrame | None = None,
    *,
    subgroups: Sequence[str] = tuple(registry.SUBGROUPS),
    hit_column: str = "hit",
    level: float = 0.95,
    ci_method: str = "wilson",
) -> pd.DataFrame:
    """Lesion-wise sensitivity at the operating point per sub-group level.

    Columns: subgroup, level, n_lesions, n_hit, sensitivity, ci_lo, ci_hi (Wilson, or
    Clopper-Pearson with ``ci_method``), test, p_value (Fisher's exact test for two levels, chi-square
    otherwise, over the known levels). The tests treat lesions as independent; see
    :func:`detection_gee` for a model that allows for clustering by institution.
    """
    columns = [registry.SUBGROUPS[s][0] for s in subgroups if s in registry.SUBGROUPS]
    data = _merge_cases(lesions, cases, columns)
    hit = data[hit_column].astype(bool).to_numpy()
    rows = []
    for name in subgroups:
        levels = subgroup_levels(data, name)
        cats = [c for c in levels.cat.categories if (levels == c).any()]
        n_les = np.array([int((levels == c).sum()) for c in cats])
        n_hit = np.array([int(hit[(levels == c).to_numpy()].sum()) for c in cats])
        if not cats:
            continue
        lo, hi = wilson_ci(n_hit, n_les, level=level, method=ci_method)
        known = np.array([c != UNKNOWN for c in cats])
        test, p = _association_test(n_hit[known], n_les[known])
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


# --- models --------------------------------------------------------------------------------------------
@dataclass
class MixedModelResult:
    """A random-intercept model of a per-scan metric by institution."""

    formula: str
    metric: str
    fixed_effects: pd.DataFrame
    group_var: float
    residual_var: float
    icc: float
    n_obs: int
    n_groups: int
    share_groups_le2: float
    converged: bool
    on_boundary: bool
    lrt_p_value: float
    warnings: list[str] = field(default_factory=list)
    caveat: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (fixed effects as a list of records)."""
        out = asdict(self)
        out["fixed_effects"] = self.fixed_effects.to_dict(orient="records")
        return out


def _formula_terms(
    data: pd.DataFrame, covariates: Sequence[str]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Formula terms for the covariates: registry sub-groups become binned categoricals named after the
    sub-group (reference = first observed level in registry order), other numeric columns enter as they
    are, other columns as categoricals. Returns the data, the terms and the categorical columns."""
    data = data.copy()
    terms, categorical = [], []
    for cov in covariates:
        ref = cov if cov.isidentifier() else f"Q('{cov}')"
        if cov in registry.SUBGROUPS:
            data[cov] = subgroup_levels(data, cov).cat.remove_unused_categories()
        elif cov not in data.columns:
            raise KeyError(
                f"covariate {cov!r} is neither a sub-group {sorted(registry.SUBGROUPS)} nor a column"
            )
        elif pd.api.types.is_numeric_dtype(data[cov]) and not pd.api.types.is_bool_dtype(data[cov]):
            terms.append(ref)
            continue
        terms.append(f"C({ref})")
        categorical.append(cov)
    return data, terms, categorical


def _coef_table(params, bse, pvalues, level: float) -> pd.DataFrame:
    z = sps.norm.ppf(0.5 + level / 2)
    return pd.DataFrame(
        {
            "term": list(params.index),
            "estimate": params.to_numpy(),
            "se": bse.to_numpy(),
            "ci_lo": params.to_numpy() - z * bse.to_numpy(),
            "ci_hi": params.to_numpy() + z * bse.to_numpy(),
            "p_value": pvalues.to_numpy(),
        }
    )


#: Optimisers tried for a mixed model; the fit with the highest finite likelihood wins. (L-BFGS alone
#: can stop at a zero group variance with an infinite reported likelihood on well-identified data.)
_MIXED_OPTIMISERS: tuple[str, ...] = ("lbfgs", "bfgs", "powell")


def _best_mixed_fit(model, *, reml: bool, caught: list[str]):
    """The fit with the highest finite likelihood over :data:`_MIXED_OPTIMISERS` (converged first);
    the warnings of the chosen fit, and the failures of the others, are added to ``caught``."""
    kind = "REML" if reml else "ML"
    best, best_log = None, []
    for fit_method in _MIXED_OPTIMISERS:
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("always")
            try:
                fit = model.fit(reml=reml, method=fit_method)
            except (np.linalg.LinAlgError, ValueError) as exc:
                caught.append(f"{kind} {fit_method}: {type(exc).__name__}: {exc}")
                continue
        if not np.isfinite(fit.llf):
            caught.append(f"{kind} {fit_method}: non-finite likelihood, fit discarded")
            continue
        if best is None or (fit.converged, fit.llf) > (best.converged, best.llf + 1e-9):
            best, best_log = fit, [f"{kind} {fit_method}: {w.category.__name__}: {w.message}" for w in log]
    caught += sorted(set(best_log))
    return best


def institution_mixed_model(
    per_case: pd.DataFrame,
    cases: pd.DataFrame | None = None,
    metric: str = "dice",
    *,
    covariates: Sequence[str] = (),
    level: float = 0.95,
) -> MixedModelResult:
    """``metric ~ covariates + (1 | institution)`` by REML (``statsmodels`` ``mixedlm``).

    Reports the fixed effects, the random-intercept variance, the residual variance, the ICC
    (group / (group + residual)), a likelihood-ratio p-value for the random intercept (ML fits, the
    boundary mixture 0.5 chi2(0) + 0.5 chi2(1)), and whether the optimiser converged. Convergence and
    boundary warnings are caught and recorded, never raised. When most institutions contribute 1-2
    scans, ``caveat`` says that the institution variance is weakly identified.
    """
    import statsmodels.formula.api as smf

    columns = [registry.SUBGROUPS[c][0] for c in covariates if c in registry.SUBGROUPS] + ["institution_id"]
    data = _merge_cases(per_case, cases, columns)
    data = data[np.isfinite(pd.to_numeric(data[metric], errors="coerce"))]
    data, terms, _ = _formula_terms(data, covariates)
    formula = f"{metric} ~ " + (" + ".join(terms) if terms else "1")
    sizes = data.groupby("institution_id").size()
    n_groups = int(sizes.size)
    share_le2 = float((sizes <= 2).mean()) if n_groups else np.nan
    caveat = None
    if n_groups and share_le2 > 0.5:
        caveat = (
            f"{int((sizes <= 2).sum())} of {n_groups} institutions have 1-2 scans: the between-institution "
            "variance and the ICC are weakly identified (little within-institution replication); read them "
            "as exploratory and prefer the institution-cluster bootstrap for CIs."
        )
    caught: list[str] = []
    result = None
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        model = smf.mixedlm(formula, data, groups=data["institution_id"].astype(str))
        result = _best_mixed_fit(model, reml=True, caught=caught)
        ml = _best_mixed_fit(model, reml=False, caught=caught)
        lrt_p = np.nan
        if ml is not None:
            stat = max(0.0, 2.0 * (ml.llf - smf.ols(formula, data).fit().llf))
            lrt_p = float(0.5 * sps.chi2.sf(stat, 1)) if stat > 0 else 1.0
    caught += sorted({f"{w.category.__name__}: {w.message}" for w in log})
    if result is None:
        empty = pd.DataFrame(columns=["term", "estimate", "se", "ci_lo", "ci_hi", "p_value"])
        return MixedModelResult(
            formula=formula,
            metric=metric,
            fixed_effects=empty,
            group_var=np.nan,
            residual_var=np.nan,
            icc=np.nan,
            n_obs=len(data),
            n_groups=n_groups,
            share_groups_le2=share_le2,
            converged=False,
            on_boundary=False,
            lrt_p_value=lrt_p,
            warnings=caught,
            caveat=caveat,
        )
    fe_names = result.model.exog_names
    fixed = _coef_table(result.fe_params, result.bse_fe, result.pvalues[fe_names], level)
    group_var = float(result.cov_re.iloc[0, 0])
    resid_var = float(result.scale)
    total = group_var + resid_var
    icc = group_var / total if total > 0 else np.nan
    return MixedModelResult(
        formula=formula,
        metric=metric,
        fixed_effects=fixed,
        group_var=group_var,
        residual_var=resid_var,
        icc=float(icc),
        n_obs=int(result.nobs),
        n_groups=n_groups,
        share_groups_le2=share_le2,
        converged=bool(result.converged),
        on_boundary=bool(total > 0 and group_var <= 1e-6 * total),
        lrt_p_value=lrt_p,
        warnings=caught,
        caveat=caveat,
    )


def detection_gee(
    lesions: pd.DataFrame,
    cases: pd.DataFrame | None = None,
    covariates: Sequence[str] = ("tumour_size_band",),
    *,
    hit_column: str = "hit",
    model: str = "gee",
    level: float = 0.95,
) -> pd.DataFrame:
    """Logistic model of per-lesion detection (hit/miss at the operating point) by covariates.

    ``model="gee"`` (default): GEE, binomial family, logit link, exchangeable working correlation
    within institution, robust (sandwich) standard errors. ``model="bayes"``:
    ``BinomialBayesMixedGLM`` with a random intercept per institution, fitted by variational Bayes
    (posterior means and SDs; intervals are normal approximations of the posterior).

    Covariates are registry sub-group names (binned, categorical) or columns of ``lesions``/``cases``
    (numeric as they are, e.g. ``log_ref_volume_ml`` if you add it). Returns the coefficient table:
    term, estimate (log odds), se, ci_lo, ci_hi, p_value, odds_ratio, or_ci_lo, or_ci_hi, with the fit
    described in ``.attrs`` (model, formula, n_obs, n_groups, converged, warnings, and for the Bayes
    model the institution random-effect SD ``re_sd``).
    """
    if model not in ("gee", "bayes"):
        raise ValueError(f"model must be 'gee' or 'bayes', got {model!r}")
    columns = [registry.SUBGROUPS[c][0] for c in covariates if c in registry.SUBGROUPS] + [
        c for c in covariates if c not in registry.SUBGROUPS
    ]
    data = _merge_cases(lesions, cases, columns + ["institution_id"])
    data = data.copy()
    data["hit_"] = data[hit_column].astype(bool).astype(float)
    data, terms, categorical = _formula_terms(data, covariates)
    formula = "hit_ ~ " + (" + ".join(terms) if terms else "1")
    data, dropped = _drop_separated(data, categorical)
    data = data.sort_values("institution_id", kind="stable").reset_index(drop=True)
    groups = data["institution_id"].astype(str)
    caught: list[str] = list(dropped)
    attrs = {
        "model": model,
        "formula": formula,
        "n_obs": int(len(data)),
        "n_groups": int(groups.nunique()),
        "dropped_levels": dropped,
    }
    if data["hit_"].nunique() < 2:
        caught.append("the outcome does not vary (all hits or all misses): nothing to model")
        table = pd.DataFrame(columns=["term", "estimate", "se", "ci_lo", "ci_hi", "p_value"], dtype=float)
        attrs["converged"] = False
        log: list = []
    else:
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("always")
            table = _fit_detection(data, formula, groups, model, level, attrs)
        big = ~np.isfinite(table["estimate"]) | (table["estimate"].abs() > 15)
        if big.any():
            attrs["converged"] = False
            caught.append(f"non-finite or huge log odds for {list(table.loc[big, 'term'])}: quasi-separation")
    caught += sorted({f"{w.category.__name__}: {w.message}" for w in log})
    if any(w.category.__name__ == "ConvergenceWarning" for w in log):
        attrs["converged"] = False
    table["odds_ratio"] = np.exp(table["estimate"])
    table["or_ci_lo"] = np.exp(table["ci_lo"])
    table["or_ci_hi"] = np.exp(table["ci_hi"])
    attrs["warnings"] = caught
    table.attrs.update(attrs)
    return table


def _drop_separated(data: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Drop the lesions of categorical levels whose outcome never varies (perfect separation makes
    the logistic estimates diverge); says which levels went."""
    dropped = []
    for col in columns:
        rate = data.groupby(data[col].astype(str), observed=True)["hit_"].agg(["mean", "size"])
        bad = rate.index[(rate["mean"] == 0) | (rate["mean"] == 1)]
        if len(bad) and len(bad) < len(rate):
            for lev in bad:
                dropped.append(
                    f"{col}={lev}: all {int(rate.at[lev, 'size'])} lesions "
                    f"{'hit' if rate.at[lev, 'mean'] == 1 else 'missed'} (separation), left out of the fit"
                )
            keep = ~data[col].astype(str).isin(bad)
            data = data[keep].copy()
            if isinstance(data[col].dtype, pd.CategoricalDtype):
                data[col] = data[col].cat.remove_unused_categories()
    return data, dropped


def _fit_detection(data, formula, groups, model, level, attrs) -> pd.DataFrame:
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    if model == "gee":
        fit = smf.gee(
            formula,
            groups=groups,
            data=data,
            family=sm.families.Binomial(),
            cov_struct=sm.cov_struct.Exchangeable(),
        ).fit()
        attrs["converged"] = bool(getattr(fit, "converged", True))
        attrs["working_correlation"] = float(fit.model.cov_struct.dep_params)
        return _coef_table(fit.params, fit.bse, fit.pvalues, level)
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    data = data.assign(inst_=groups.to_numpy())
    glmm = BinomialBayesMixedGLM.from_formula(formula, {"institution": "0 + C(inst_)"}, data)
    fit = glmm.fit_vb()
    params = pd.Series(fit.fe_mean, index=glmm.exog_names[: len(fit.fe_mean)])
    sd = pd.Series(fit.fe_sd, index=params.index)
    p = pd.Series(2 * sps.norm.sf(np.abs(params / sd)), index=params.index)
    attrs["converged"] = True
    attrs["re_sd"] = float(np.exp(fit.vcp_mean[0]))
    return _coef_table(params, sd, p, level)
