"""Forest plots of per-scan Dice (or any metric) by subgroup and by institution, with their CIs.

Input: a tidy table with one row per level — ``subgroup`` (the subgroup's name, e.g. ``vendor``; absent for
institutions), ``level``, ``n``, ``mean``, ``ci_lo``, ``ci_hi``. Institutions with few scans are pooled
before plotting (a 1-scan institution's interval says nothing): ``analysis/institutions.csv``, from
:func:`amt_core.evaluation.stats.institution_table` (``min_scans``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from amt_core.plots.style import ROLE, WIDTHS, new_figure, plot_style

GROUP_LABELS = {
    "sex": "Sex",
    "age_band": "Age (years)",
    "histology": "Histology",
    "tumour_size_band": "Tumour volume",
    "contrast": "Contrast",
    "slice_thickness_band": "Slice thickness",
    "vendor": "Vendor",
    "anatomy": "Anatomy (synthetic or real CT)",
    "institution": "Institution",
}


def plot_forest(
    table: pd.DataFrame,
    metric_label: str = "Dice",
    overall: float | None = None,
    title: str | None = None,
    xlim: tuple[float, float] = (0.0, 1.0),
    ci_label: str = "95%",
):
    """One row per level, grouped under bold subgroup headers; point size grows with n; the overall
    mean as a dashed line. Rows with n = 0 are dropped. ``ci_label`` names the intervals' level."""
    t = table[table["n"] > 0].copy()
    has_group = "subgroup" in t.columns
    rows: list[tuple[str, pd.Series | None]] = []
    if has_group:
        for group, sub in t.groupby("subgroup", sort=False):
            rows.append((GROUP_LABELS.get(group, str(group)), None))
            rows.extend((f"  {r.level}", r) for _, r in sub.iterrows())
    else:
        rows = [(str(r.level), r) for _, r in t.iterrows()]
    n_rows = len(rows)
    height_in = 0.55 + 0.125 * n_rows
    with plot_style():
        fig, ax = new_figure("single", aspect=height_in / WIDTHS["single"])
        y = np.arange(n_rows)[::-1]
        max_n = max(float(t["n"].max()), 1.0)
        for yi, (_label, r) in zip(y, rows, strict=False):
            if r is None:
                continue
            lo, hi = float(r.ci_lo), float(r.ci_hi)
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([max(lo, xlim[0]), min(hi, xlim[1])], [yi, yi], color=ROLE["ours"], lw=0.9)
            ax.plot(
                [r["mean"]],
                [yi],
                "s",
                color=ROLE["ours"],
                ms=2.0 + 3.0 * np.sqrt(r.n / max_n),
                mec="white",
                mew=0.3,
            )
        if overall is not None and np.isfinite(overall):
            ax.axvline(overall, color=ROLE["neutral"], ls="--", lw=0.7)
        ax.set_yticks(y)
        ax.set_yticklabels([lab for lab, _ in rows])
        for tick, (_, r) in zip(ax.get_yticklabels(), rows, strict=False):
            if r is None:
                tick.set_fontweight("bold")
        # right-hand column: n and mean (CI)
        for yi, (_, r) in zip(y, rows, strict=False):
            if r is not None:
                ci = f"{r.ci_lo:.2f}–{r.ci_hi:.2f}" if np.isfinite(r.ci_lo) else "–"
                ax.text(
                    1.02,
                    yi,
                    f"{int(r.n):>4d}   {r['mean']:.2f} ({ci})",
                    transform=ax.get_yaxis_transform(),
                    va="center",
                    ha="left",
                    fontsize=5.8,
                    family="DejaVu Sans Mono",
                )
        ax.text(
            1.02,
            1.0,
            f"   n   mean ({ci_label} CI)",
            transform=ax.transAxes,
            va="bottom",
            ha="left",
            fontsize=5.8,
            family="DejaVu Sans Mono",
            fontweight="bold",
        )
        ax.set_ylim(-0.7, n_rows - 0.3)
        ax.set_xlim(*xlim)
        ax.set_xlabel(f"Per-scan {metric_label} (mean, {ci_label} CI)")
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.grid(True, axis="x")
        if title:
            ax.set_title(title, loc="left")
    return fig
