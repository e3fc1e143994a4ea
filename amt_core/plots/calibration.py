"""Reliability diagrams of lesion confidence and voxel probability (``analysis/calibration_bins.csv`` and
``analysis/calibration.csv``, written by :func:`amt_core.evaluation.calibration.calibration_study`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from amt_core.plots.style import ROLE, new_figure, panel_label, plot_style

TITLES = {
    "lesion": "Candidate confidence",
    "voxel": "Voxel probability, whole scan",
    "voxel_near": "Voxel probability, near tumour",
}


def plot_calibration(bins: pd.DataFrame, summary: pd.DataFrame):
    """One panel per kind: observed frequency against mean confidence per bin on the test split, with the
    95% scan-bootstrap band, before (solid) and after (dashed) the tuning-split temperature; marker area
    grows with the bin's (weighted) count; the ECEs and T in the corner."""
    kinds = [k for k in TITLES if k in set(bins["kind"])]
    with plot_style():
        fig, axes = new_figure("double", aspect=0.4, ncols=max(len(kinds), 1))
        axes = np.atleast_1d(axes)
        for k, (ax, kind) in enumerate(zip(axes, kinds, strict=False)):
            ax.plot([0, 1], [0, 1], color=ROLE["neutral"], lw=0.8, ls=":", label="perfect calibration")
            part = bins[bins["kind"] == kind]
            for scaled, color, ls, name in (
                (False, ROLE["ours"], "-", "model"),
                (True, ROLE["prediction"], "--", "after temperature"),
            ):
                b = part[part["scaled"].astype(str).str.lower() == str(scaled).lower()].dropna(
                    subset=["frequency"]
                )
                if b.empty:
                    continue
                share = b["weight"] / b["weight"].sum()
                ax.fill_between(
                    b["confidence"], b["frequency_ci_lo"], b["frequency_ci_hi"], color=color, alpha=0.15, lw=0
                )
                ax.plot(b["confidence"], b["frequency"], color=color, ls=ls, lw=1.1, label=name)
                ax.scatter(
                    b["confidence"],
                    b["frequency"],
                    s=8 + 120 * np.sqrt(share),
                    color=color,
                    zorder=3,
                    edgecolor="white",
                    linewidth=0.4,
                )
            row = summary[summary["kind"] == kind]
            if len(row):
                r = row.iloc[0]
                unit = "candidates" if kind == "lesion" else "voxels"
                after = (
                    f"T = {r['temperature']:.2f}: ECE {r['ece_after']:#.2g} ({_ci(r, 'after')})"
                    if np.isfinite(r["temperature"])
                    else "no temperature: one outcome only on tuning"
                )
                ax.text(
                    0.03,
                    0.97,
                    f"ECE {r['ece_before']:#.2g} ({_ci(r, 'before')})\n{after}\n"
                    f"{int(r['n_samples']):,} {unit}, {int(r['n_scans'])} scans",
                    transform=ax.transAxes,
                    va="top",
                    fontsize=5.5,
                    linespacing=1.3,
                )
            ax.set(
                xlim=(0, 1),
                ylim=(-0.02, 1.02),
                xlabel="Predicted probability (bin mean)",
                ylabel="Observed frequency" if k == 0 else None,
            )
            ax.set_title(TITLES[kind], fontsize=7)
            ax.set_aspect("equal")
            panel_label(ax, "abc"[k])
        legend: dict[str, Any] = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        fig.legend(
            list(legend.values()), list(legend), loc="outside lower center", ncol=3, fontsize=6, frameon=False
        )
    return fig


def _ci(row, when: str) -> str:
    lo, hi = row.get(f"ece_ci_lo_{when}"), row.get(f"ece_ci_hi_{when}")
    return "CI n/a" if lo is None or not np.isfinite(lo) else f"{lo:#.2g}–{hi:#.2g}"
