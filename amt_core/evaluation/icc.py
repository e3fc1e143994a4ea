"""The intraclass correlation of a random-intercept model: its interval (parametric bootstrap) and the
variance components as table rows.

With most external institutions contributing one or two scans the Wald interval of a variance is
meaningless (the variance sits on or near zero), and an institution-cluster bootstrap degenerates below
ten institutions; the parametric bootstrap simulates new outcomes from the fitted model (fixed effects +
a random intercept per institution + residual noise, on the observed design and institution sizes),
refits the model to each and takes percentiles of the refitted ICCs. It is what ``lme4::bootMer`` does
and is valid on the boundary (a zero institution variance gives an interval starting at 0).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

#: Institutions with two or more scans needed to tell the institution variance from the residual one
MIN_REPLICATED = 2
#: How the ICC interval is computed (recorded with the result and printed in the report).
ICC_CI_METHOD = "parametric bootstrap (percentile) from the REML fit"


def parametric_bootstrap_icc(
    exog: np.ndarray,
    fitted_fixed: np.ndarray,
    groups: np.ndarray,
    group_var: float,
    residual_var: float,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> tuple[float, float, int]:
    """Percentile interval of the ICC over ``n_bootstrap`` outcomes simulated from a random-intercept model.

    ``exog`` (n, p) is the fixed-effects design, ``fitted_fixed`` (n,) its fitted mean ``X @ beta``,
    ``groups`` (n,) the institution of each row. Returns ``(lo, hi, n_fits)``: NaN bounds when the model
    cannot be bootstrapped (fewer than :data:`MIN_REPLICATED` institutions with two or more scans: the two
    variances are then not separable; non-finite variances; or under 20 fits converging).
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    from amt_core.progress import Progress

    labels, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if (
        (np.bincount(index) >= 2).sum() < MIN_REPLICATED
        or not (np.isfinite(group_var) and np.isfinite(residual_var))
        or residual_var <= 0
    ):
        return np.nan, np.nan, 0
    rng = np.random.default_rng(seed)
    sd_u, sd_e = np.sqrt(max(group_var, 0.0)), np.sqrt(residual_var)
    iccs = []
    with Progress("icc", n_bootstrap, unit="refit", desc="ICC bootstrap") as progress:  # `amt run` shows it
        for _ in range(n_bootstrap):
            y = fitted_fixed + rng.normal(0.0, sd_u, labels.size)[index] + rng.normal(0.0, sd_e, index.size)
            value = _refit_icc(MixedLM(y, exog, groups=index))
            if value is not None:
                iccs.append(value)
            progress.update()
    if len(iccs) < 20:
        return np.nan, np.nan, len(iccs)
    lo, hi = np.percentile(iccs, [50 * (1 - ci_level), 50 * (1 + ci_level)])
    return float(lo), float(hi), len(iccs)


def _refit_icc(model) -> float | None:
    """The ICC of one REML refit: BFGS, else Nelder-Mead (L-BFGS stops at a zero institution variance on
    well-identified data, see :data:`amt_core.evaluation.models._MIXED_OPTIMISERS`); None if both fail."""
    for method in ("bfgs", "nm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit = model.fit(reml=True, method=method)
            except (np.linalg.LinAlgError, ValueError):
                continue
        g, r = float(np.asarray(fit.cov_re)[0, 0]), float(fit.scale)
        if np.isfinite(fit.llf) and np.isfinite(g) and np.isfinite(r) and g + r > 0:
            return max(g, 0.0) / (max(g, 0.0) + r)
    return None


def variance_rows(
    group_var: float,
    residual_var: float,
    icc: float,
    icc_lo: float,
    icc_hi: float,
    lrt_p: float,
    n_bootstrap: int,
) -> pd.DataFrame:
    """The random part of the model as rows of the fixed-effects table (term, estimate, ci_lo, ci_hi,
    p_value, note): the institution and residual variances and the ICC with its interval."""
    nan = np.nan
    return pd.DataFrame(
        [
            {
                "term": "institution variance (random intercept)",
                "estimate": group_var,
                "se": nan,
                "ci_lo": nan,
                "ci_hi": nan,
                "p_value": lrt_p,
                "note": "p: likelihood-ratio test of the random intercept "
                "(boundary mixture 0.5 chi2(0) + 0.5 chi2(1))",
            },
            {
                "term": "residual variance",
                "estimate": residual_var,
                "se": nan,
                "ci_lo": nan,
                "ci_hi": nan,
                "p_value": nan,
                "note": "within-institution, scan-to-scan",
            },
            {
                "term": "ICC",
                "estimate": icc,
                "se": nan,
                "ci_lo": icc_lo,
                "ci_hi": icc_hi,
                "p_value": nan,
                "note": "institution variance / total; "
                + (
                    f"CI: {ICC_CI_METHOD}, {n_bootstrap} simulated data sets"
                    if n_bootstrap
                    else "no CI (not identifiable, or not bootstrapped)"
                    if np.isfinite(icc)
                    else "not identifiable (too few institutions with two or more scans) or not fitted"
                ),
            },
        ]
    )


def generalisation_sentence(
    icc: float,
    icc_lo: float,
    icc_hi: float,
    group_var: float,
    n_groups: int,
    share_le2: float,
    metric: str = "Dice",
    n_replicated: int | None = None,
    ci_level: float = 0.95,
    residual_var: float | None = None,
) -> str:
    """Plain sentences on what the ICC means for generalisation across institutions (``n_replicated``:
    institutions with two or more scans)."""
    if n_replicated is not None and n_replicated < MIN_REPLICATED:
        some = (
            f"Only {n_replicated} of the {n_groups} institutions contribute"
            if n_replicated
            else f"None of the {n_groups} institutions contributes"
        )
        return (
            f"{some} more than one scan, so the "
            "between- and within-institution variances cannot be told apart: the ICC is not identifiable "
            f"from this run, and nothing can be said about how {metric} varies between institutions."
        )
    if not np.isfinite(icc):
        return (
            f"The institution model could not be fitted, so nothing is said here about how {metric} "
            "varies between institutions."
        )
    interval = (
        f" ({100 * ci_level:.10g}% CI {icc_lo:.2f}–{icc_hi:.2f})"
        if np.isfinite(icc_lo)
        else " (no interval: too few institutions or fits to bootstrap)"
    )
    spread = 1.96 * np.sqrt(max(group_var, 0.0))
    # the spread the interval's upper end allows (the point estimate alone, e.g. 0 on the boundary, would be
    # false precision): institution variance = ICC / (1 - ICC) x residual variance
    upper = (
        1.96 * np.sqrt(icc_hi / (1.0 - icc_hi) * residual_var)
        if residual_var is not None and np.isfinite(icc_hi) and 0 <= icc_hi < 1 and np.isfinite(residual_var)
        else np.nan
    )
    text = (
        f"About {100 * icc:.0f}%{interval} of the scan-to-scan variance in {metric} lies between "
        f"institutions: the mean {metric} of 95% of institutions like these is expected within "
        f"±{spread:.2f} of the overall mean"
        + (f", and within ±{upper:.2f} at the interval's upper end." if np.isfinite(upper) else ".")
    )
    if np.isfinite(icc_hi) and icc_hi < 0.1:
        text += " The data rule out a large institution effect."
    elif (
        share_le2 > 0.5 or not np.isfinite(icc_hi) or icc_hi - (icc_lo if np.isfinite(icc_lo) else 0.0) > 0.3
    ):
        text += (
            f" {100 * share_le2:.0f}% of the {n_groups} institutions contribute 1–2 scans, so the data "
            "can neither confirm nor exclude that some institutions do much worse than others."
        )
    return text
