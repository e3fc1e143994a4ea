"""The cohort's "Table 1": demographics, histology, tumour size and scanner profiles per split."""

from __future__ import annotations

import pandas as pd

from amt_core import registry


def _count_pct(series: pd.Series, value) -> str:
    n = int((series == value).sum())
    return f"{n} ({100.0 * n / max(len(series), 1):.1f}%)"


def table_one(cases: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of a case table: one column per split (train, tune, test) and one for all cases.

    Rows: n, number of institutions, sex, age mean +/- SD, histology counts, tumour volume median [IQR],
    contrast phase, slice thickness, vendor. Values are display strings (notebook-ready).
    """
    groups = [(s, cases[cases.split == s]) for s in registry.SPLITS if (cases.split == s).any()]
    groups.append(("all", cases))
    rows: dict[str, dict[str, str]] = {}

    def put(name, fn):
        rows[name] = {g: fn(df) for g, df in groups}

    put("n", lambda d: str(len(d)))
    put("institutions", lambda d: str(d.institution_id.nunique()))
    for sx in registry.SEXES:
        put(f"sex: {sx}", lambda d, sx=sx: _count_pct(d.sex, sx))
    put(
        "age, mean ± SD",
        lambda d: f"{d.age.mean():.1f} ± {d.age.std(ddof=1):.1f}" if len(d) > 1 else f"{d.age.mean():.1f}",
    )
    for h in registry.HISTOLOGIES:
        if (cases.histology == h).any():
            put(f"histology: {h}", lambda d, h=h: _count_pct(d.histology, h))
    put(
        "tumour volume ml, median [IQR]",
        lambda d: (
            f"{d.tumour_volume_ml.median():.1f} [{d.tumour_volume_ml.quantile(0.25):.1f}-"
            f"{d.tumour_volume_ml.quantile(0.75):.1f}]"
        ),
    )
    for c in registry.CONTRASTS:
        put(f"contrast: {c}", lambda d, c=c: _count_pct(d.contrast, c))
    for t in sorted(cases.slice_thickness_mm.unique()):
        put(f"slice thickness: {t:g} mm", lambda d, t=t: _count_pct(d.slice_thickness_mm, t))
    for v in registry.VENDORS:
        if (cases.vendor == v).any():
            put(f"vendor: {v}", lambda d, v=v: _count_pct(d.vendor, v))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "characteristic"
    return table
