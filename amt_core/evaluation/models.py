"""Models of institution effects: a linear mixed model of a per-scan metric with a random intercept per
institution (ICC, likelihood-ratio test), and a GEE (or Bayesian mixed GLM) of lesion detection clustered
by institution. Split from :mod:`amt_core.evaluation.stats`, whose sub-group binning they use.

Boundary and convergence warnings are caught and returned with the fit, never raised; the caveat of the
ICC when most institutions contribute one or two scans is part of the result.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from amt_core import registry
from amt_core.evaluation.stats import merge_cases, subgroup_levels


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
    icc_ci_lo: float = float("nan")
    icc_ci_hi: float = float("nan")
    icc_ci_method: str = ""
    icc_boot_fits: int = 0
    n_groups_replicated: int = 0
    icc_ci_level: float = 0.95

    def table(self) -> pd.DataFrame:
        """Fixed effects, then the variance components and the ICC with its interval (one table)."""
        from amt_core.evaluation.icc import variance_rows

        rand = variance_rows(
            self.group_var,
            self.residual_var,
            self.icc,
            self.icc_ci_lo,
            self.icc_ci_hi,
            self.lrt_p_value,
            self.icc_boot_fits,
        )
        from amt_core.evaluation.icc import MIN_REPLICATED

        identified = self.n_groups_replicated >= MIN_REPLICATED or not self.n_groups
        fixed = self.fixed_effects.assign(
            note="fixed effect (Wald CI)" if identified else "fixed effect (ordinary least squares, Wald CI)"
        )
        return pd.concat([fixed, rand], ignore_index=True) if len(fixed) else rand

    def sentence(self) -> str:
        """What the ICC means for generalisation, in words."""
        from amt_core.evaluation.icc import generalisation_sentence

        return generalisation_sentence(
            self.icc,
            self.icc_ci_lo,
            self.icc_ci_hi,
            self.group_var,
            self.n_groups,
            self.share_groups_le2,
            self.metric.capitalize(),
            self.n_groups_replicated,
            ci_level=self.icc_ci_level,
            residual_var=self.residual_var,
        )

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


def _coef_table(params, bse, pvalues, ci_level: float) -> pd.DataFrame:
    z = sps.norm.ppf(0.5 + ci_level / 2)
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
    ci_level: float = 0.95,
    n_bootstrap_icc: int = 200,
    seed: int = 0,
) -> MixedModelResult:
    """``metric ~ covariates + (1 | institution)`` by REML (``statsmodels`` ``mixedlm``).

    Reports the fixed effects, the random-intercept variance, the residual variance, the ICC
    (group / (group + residual)), a likelihood-ratio p-value for the random intercept (ML fits, the
    boundary mixture 0.5 chi2(0) + 0.5 chi2(1)), and whether the optimiser converged. Convergence and
    boundary warnings are caught and recorded, never raised. When most institutions contribute 1-2
    scans, ``caveat`` says that the institution variance is weakly identified. The ICC's interval is a
    parametric bootstrap of ``n_bootstrap_icc`` simulated data sets (:mod:`amt_core.evaluation.icc`; 0: none).
    """
    import statsmodels.formula.api as smf

    columns = [registry.SUBGROUPS[c][0] for c in covariates if c in registry.SUBGROUPS] + ["institution_id"]
    data = merge_cases(per_case, cases, columns)
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
            "as exploratory."
        )
    from amt_core.evaluation.icc import MIN_REPLICATED

    replicated = int((sizes >= 2).sum())
    if n_groups and replicated < MIN_REPLICATED:
        return _unidentified_model(data, formula, metric, n_groups, share_le2, replicated, caveat, ci_level)
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
        return _without_variances(
            formula,
            metric,
            empty,
            len(data),
            n_groups,
            share_le2,
            lrt_p_value=lrt_p,
            warnings=caught,
            caveat=caveat,
        )
    fe_names = result.model.exog_names
    with np.errstate(invalid="ignore"):  # a degenerate fit's covariance: NaN standard errors, said as such
        fixed = _coef_table(result.fe_params, result.bse_fe, result.pvalues[fe_names], ci_level)
    group_var = float(result.cov_re.iloc[0, 0])
    resid_var = float(result.scale)
    total = group_var + resid_var
    icc = group_var / total if total > 0 else np.nan
    from amt_core.evaluation.icc import ICC_CI_METHOD, parametric_bootstrap_icc

    lo, hi, fits = (
        (np.nan, np.nan, 0)
        if n_bootstrap_icc <= 0
        else parametric_bootstrap_icc(
            result.model.exog,
            result.model.exog @ result.fe_params.to_numpy(),
            data["institution_id"].to_numpy(),
            group_var,
            resid_var,
            n_bootstrap=n_bootstrap_icc,
            seed=seed,
            ci_level=ci_level,
        )
    )
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
        icc_ci_lo=lo,
        icc_ci_hi=hi,
        icc_ci_method=ICC_CI_METHOD if fits else "",
        icc_ci_level=ci_level,
        icc_boot_fits=fits,
        n_groups_replicated=replicated,
    )


def _unidentified_model(
    data: pd.DataFrame,
    formula: str,
    metric: str,
    n_groups: int,
    share_le2: float,
    replicated: int,
    caveat: str | None,
    ci_level: float,
) -> MixedModelResult:
    """Fewer than ``MIN_REPLICATED`` institutions with two or more scans: the institution and residual
    variances cannot be told apart (an optimiser splits the total arbitrarily, e.g. into an ICC of exactly
    0.5), so they, the ICC and the likelihood-ratio test are NaN, and the fixed effects are the ordinary
    least-squares ones (what the mixed model's fixed part reduces to)."""
    import statsmodels.formula.api as smf

    ols = smf.ols(formula, data).fit()
    with np.errstate(invalid="ignore"):
        fixed = _coef_table(ols.params, ols.bse, ols.pvalues, ci_level)
    reason = (
        f"not identifiable: {replicated} of {n_groups} institutions have two or more scans; fixed effects by "
        "ordinary least squares"
    )
    return _without_variances(
        formula,
        metric,
        fixed,
        int(ols.nobs),
        n_groups,
        share_le2,
        lrt_p_value=np.nan,
        warnings=[reason],
        caveat=caveat,
        icc_ci_level=ci_level,
        n_groups_replicated=replicated,
    )


def _without_variances(
    formula: str, metric: str, fixed: pd.DataFrame, n_obs: int, n_groups: int, share_le2: float, **extra
) -> MixedModelResult:
    """A result without variance components (no fit, or none identifiable): NaN variances and ICC."""
    return MixedModelResult(
        formula=formula,
        metric=metric,
        fixed_effects=fixed,
        group_var=np.nan,
        residual_var=np.nan,
        icc=np.nan,
        n_obs=n_obs,
        n_groups=n_groups,
        share_groups_le2=share_le2,
        converged=False,
        on_boundary=False,
        **extra,
    )


def detection_gee(
    lesions: pd.DataFrame,
    cases: pd.DataFrame | None = None,
    covariates: Sequence[str] = ("tumour_size_band",),
    *,
    hit_column: str = "hit",
    model: str = "gee",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Logistic model of per-lesion detection (hit/miss at the operating point) by covariates.

    ``model="gee"`` (default): GEE, binomial family, logit link, exchangeable working correlation
    within institution, robust (sandwich) standard errors. ``model="bayes"``:
    ``BinomialBayesMixedGLM`` with a random intercept per institution, fitted by variational Bayes
    (posterior means and SDs; intervals are normal approximations of the posterior).

    Covariates are registry sub-group names (binned, categorical) or columns of ``lesions``/``cases``
    (numeric as they are, e.g. ``log_ref_volume_ml`` if you add it). Returns the coefficient table:
    term, estimate (log odds), se, ci_lo, ci_hi, p_value, odds_ratio, or_ci_lo, or_ci_hi, note (the lesions
    fitted, the reference levels, levels left out for separation and fit warnings, in words), with the fit
    described in ``.attrs`` (model, formula, n_obs, n_groups, converged, dropped_levels, reference_levels,
    warnings, and for the Bayes model the institution random-effect SD ``re_sd``).
    """
    if model not in ("gee", "bayes"):
        raise ValueError(f"model must be 'gee' or 'bayes', got {model!r}")
    columns = [registry.SUBGROUPS[c][0] for c in covariates if c in registry.SUBGROUPS] + [
        c for c in covariates if c not in registry.SUBGROUPS
    ]
    data = merge_cases(lesions, cases, columns + ["institution_id"])
    data = data.copy()
    data["hit_"] = data[hit_column].astype(bool).astype(float)
    data, terms, categorical = _formula_terms(data, covariates)
    formula = "hit_ ~ " + (" + ".join(terms) if terms else "1")
    data, dropped = _drop_separated(data, categorical)
    reference = {
        col: str(data[col].cat.categories[0])
        if isinstance(data[col].dtype, pd.CategoricalDtype)
        else str(sorted(data[col].dropna().astype(str).unique())[0])
        for col in categorical
        if data[col].notna().any()
    }
    data = data.sort_values("institution_id", kind="stable").reset_index(drop=True)
    groups = data["institution_id"].astype(str)
    caught: list[str] = list(dropped)
    attrs = {
        "model": model,
        "formula": formula,
        "n_obs": int(len(data)),
        "n_groups": int(groups.nunique()),
        "dropped_levels": dropped,
        "reference_levels": reference,
    }
    if data["hit_"].nunique() < 2:
        caught.append("the outcome does not vary (all hits or all misses): nothing to model")
        table = pd.DataFrame(columns=["term", "estimate", "se", "ci_lo", "ci_hi", "p_value"], dtype=float)
        attrs["converged"] = False
        log: list = []
    else:
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("always")
            table = _fit_detection(data, formula, groups, model, ci_level, attrs)
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
    # what a CSV of the table must still say (attrs are not written): its lesions, reference levels,
    # left-out levels and fit problems, on every row
    table["note"] = "; ".join(
        [f"{attrs['n_obs']} lesions in {attrs['n_groups']} institutions"]
        + [f"reference {k}={v}" for k, v in reference.items()]
        + caught
        + ([] if attrs.get("converged", False) else ["not converged"])
    )
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


def _fit_detection(data, formula, groups, model, ci_level, attrs) -> pd.DataFrame:
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
        return _coef_table(fit.params, fit.bse, fit.pvalues, ci_level)
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    data = data.assign(inst_=groups.to_numpy())
    glmm = BinomialBayesMixedGLM.from_formula(formula, {"institution": "0 + C(inst_)"}, data)
    fit = glmm.fit_vb()
    params = pd.Series(fit.fe_mean, index=glmm.exog_names[: len(fit.fe_mean)])
    sd = pd.Series(fit.fe_sd, index=params.index)
    p = pd.Series(2 * sps.norm.sf(np.abs(params / sd)), index=params.index)
    attrs["converged"] = True
    attrs["re_sd"] = float(np.exp(fit.vcp_mean[0]))
    return _coef_table(params, sd, p, ci_level)
