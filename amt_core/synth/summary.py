"""The cohort's "Table 1": demographics, histology, tumour size and scanner profiles per split."""

from __future__ import annotations

import pandas as pd

from amt_core import registry

#: the row of a characteristic's cases with no value (empty or missing in the case table)
NOT_STATED = "not stated"


def _count_pct(series: pd.Series, value) -> str:
    n = int((~_stated(series)).sum() if value is NOT_STATED else (series == value).sum())
    return f"{n} ({100.0 * n / max(len(series), 1):.1f}%)"


def _stated(series: pd.Series) -> pd.Series:
    """Which values are given: not missing, not an empty or blank string, not the words "not stated" (a table
    that writes them is counted in that row, not in a second row of the same name)."""
    text = series.astype(str).str.strip()
    return series.notna() & (text != "") & (text.str.lower() != NOT_STATED)


def _levels(series: pd.Series, known: tuple = (), every: bool = False) -> list:
    """The rows of a categorical characteristic: the registry's levels (``every``: all of them, else those
    that occur; in the registry's order), then any other value (an imported cohort's vendor outside the
    registry; numbers in numeric order), then "not stated" when a value is missing, so that each
    characteristic's counts add up to n."""
    given = series[_stated(series)]
    levels = [v for v in known if every or (given == v).any()]
    others = set(given) - set(known)
    levels += sorted(others, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))
    return levels + ([NOT_STATED] if len(given) < len(series) else [])


def _mean_sd(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "–"
    text = f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"
    return text + (f" (n = {len(v)})" if len(v) < len(values) else "")


def _median_iqr(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "–"
    text = f"{v.median():.1f} [{v.quantile(0.25):.1f}-{v.quantile(0.75):.1f}]"
    return text + (f" (n = {len(v)})" if len(v) < len(values) else "")


def table_one(cases: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of a case table: one column per split (train, tune, test) and one for all cases.

    Rows: n, number of institutions, sex, age mean +/- SD, histology counts, tumour volume median [IQR],
    contrast phase, slice thickness, vendor. Values are display strings (notebook-ready). A characteristic
    with missing values gets a "not stated" row (counts always add up to n), a value outside the registry
    (an imported cohort's vendor) a row of its own, and a mean or median over fewer than n cases says over
    how many.
    """
    groups = [(s, cases[cases.split == s]) for s in registry.SPLITS if (cases.split == s).any()]
    groups.append(("all", cases))
    rows: dict[str, dict[str, str]] = {}

    def put(name, fn):
        rows[name] = {g: fn(df) for g, df in groups}

    def counts(column: str, label: str, known: tuple = (), fmt=str, every: bool = False):
        for v in _levels(cases[column], known, every):
            put(f"{label}: {v if v is NOT_STATED else fmt(v)}", lambda d, v=v: _count_pct(d[column], v))

    put("n", lambda d: str(len(d)))
    put("institutions", lambda d: str(d.institution_id.nunique()))
    counts("sex", "sex", registry.SEXES, every=True)
    put("age, mean ± SD", lambda d: _mean_sd(d.age))
    counts("histology", "histology", registry.HISTOLOGIES)
    put("tumour volume ml, median [IQR]", lambda d: _median_iqr(d.tumour_volume_ml))
    counts("contrast", "contrast", registry.CONTRASTS, every=True)
    counts("slice_thickness_mm", "slice thickness", fmt=lambda t: f"{float(t):g} mm")
    counts("vendor", "vendor", registry.VENDORS)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "characteristic"
    return table
