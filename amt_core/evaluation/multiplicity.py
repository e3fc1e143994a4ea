"""Multiplicity of the subgroup tests and the display of p-values.

Each table of subgroup tests (per-scan Dice across the levels of each subgroup; lesion-wise sensitivity
likewise) is one family: its p-values are adjusted together, and the adjusted value is shown beside the
raw one. A p-value is never printed as ``0.000``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: How p-values are adjusted within a family of tests (statsmodels.stats.multitest names).
P_ADJUST_METHOD = "holm"


def adjust_family(
    table: pd.DataFrame, *, key: str = "subgroup", p_column: str = "p_value", method: str = P_ADJUST_METHOD
) -> pd.DataFrame:
    """``table`` with ``p_adjusted`` (and ``n_tests``, ``p_adjust``) beside the raw ``p_column``.

    The family is the table: one test per ``key`` (a sub-group's p-value is repeated on each of its rows),
    adjusted together with ``statsmodels.stats.multitest.multipletests`` (Holm by default, which controls
    the family-wise error rate without assuming independence). Missing p-values stay missing and do not
    count as tests.
    """
    from statsmodels.stats.multitest import multipletests

    out = table.copy()
    if out.empty or p_column not in out.columns:
        return out.assign(p_adjusted=np.nan, n_tests=0, p_adjust=method)
    per_test = out.groupby(key, sort=False)[p_column].first()
    tested = per_test.dropna()
    adjusted = pd.Series(np.nan, index=per_test.index)
    if len(tested):
        adjusted[tested.index] = multipletests(tested.to_numpy(float), method=method)[1]
    out["p_adjusted"] = out[key].map(adjusted)
    out["n_tests"] = int(len(tested))
    out["p_adjust"] = method
    return out


def format_p(p, digits: int = 3) -> str:
    """A p-value as a reader expects it: ``< 0.001`` below 10^-digits (never ``0.000``), ``–`` when missing."""
    if p is None or not np.isfinite(float(p)):
        return "–"
    floor = 10.0**-digits
    return f"< {floor:.{digits}f}" if float(p) < floor else f"{float(p):.{digits}f}"
