"""Per-scan metric distributions, and performance against tumour size and slice thickness.

Inputs are per-scan tables (``per_case.csv`` joined with the case table): one row per scan with
``dice``, ``iou``, ``precision``, ``recall``, ``split`` and the case-table covariates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from amt_core.plots.style import ROLE, SPLIT_COLORS, new_figure, panel_label, plot_style
from amt_core.registry import METRIC_LABELS, PUBLISHED, SEG_METRICS, SUBGROUPS


def _jitter(n: int, width: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-width, width, n)


def plot_metric_distributions(
    per_case: pd.DataFrame, metrics=SEG_METRICS, published=PUBLISHED, splits=("tune", "test")
):
    """Violin + box + points per metric, one colour per split; mean (white dot) and published mean
    (red diamond, external test) marked."""
    splits = [s for s in splits if "split" in per_case and (per_case["split"] == s).any()] or [None]
    width = 0.8 / len(splits)
    with plot_style():
        fig, ax = new_figure("single", aspect=0.72)
        for j, split in enumerate(splits):
            sub = per_case if split is None else per_case[per_case["split"] == split]
            color = SPLIT_COLORS.get(split, ROLE["ours"])
            for i, metric in enumerate(metrics):
                vals = sub[metric].dropna().to_numpy(float)
                x = i + (j - (len(splits) - 1) / 2) * width
                if len(vals) >= 2 and np.ptp(vals) > 0:
                    parts = ax.violinplot([vals], positions=[x], widths=width * 0.95, showextrema=False)
                    for body in parts["bodies"]:
                        body.set_facecolor(color)
                        body.set_alpha(0.25)
                        body.set_edgecolor("none")
                if len(vals):
                    ax.boxplot(
                        [vals],
                        positions=[x],
                        widths=width * 0.35,
                        showfliers=False,
                        medianprops={"color": "black", "lw": 0.8},
                        boxprops={"lw": 0.6},
                        whiskerprops={"lw": 0.6},
                        capprops={"lw": 0.6},
                    )
                    ax.scatter(
                        x + _jitter(len(vals), width * 0.28, seed=i + 7 * j),
                        vals,
                        s=2.5,
                        color=color,
                        alpha=0.7,
                        lw=0,
                        zorder=3,
                    )
                    ax.plot([x], [vals.mean()], "o", ms=3.2, mfc="white", mec="black", mew=0.6, zorder=4)
        for i, metric in enumerate(metrics):
            if metric in published:
                ax.plot([i + 0.42], [published[metric]], "D", ms=3.5, color=ROLE["published"], zorder=5)
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([METRIC_LABELS.get(m, m) for m in metrics])
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("Per-scan value")
        ax.grid(True, axis="y")
        from matplotlib.lines import Line2D

        handles = [
            Line2D(
                [],
                [],
                marker="s",
                ls="none",
                ms=5,
                color=SPLIT_COLORS.get(s, ROLE["ours"]),
                alpha=0.6,
                label=f"{s} (n={int((per_case['split'] == s).sum())})",
            )
            for s in splits
            if s is not None
        ]
        handles += [
            Line2D([], [], marker="o", ls="none", mfc="white", mec="black", label="Mean"),
            Line2D([], [], marker="D", ls="none", color=ROLE["published"], label="Published mean"),
        ]
        # above the axes: violins, points and means reach every corner of the plot
        ax.legend(
            handles=handles,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=len(handles),
            columnspacing=0.8,
            handletextpad=0.3,
        )
    return fig


def _binned(frame: pd.DataFrame, subgroup: str) -> tuple[pd.Series, tuple[str, ...], tuple[float, ...]]:
    """The registry's bins (levels, labels, edges), closed on the same side as the sub-group tables and
    forest plots."""
    from amt_core.evaluation.stats import subgroup_levels

    _column, edges, labels = SUBGROUPS[subgroup]
    if edges is None or labels is None:
        raise ValueError(f"sub-group {subgroup!r} is categorical: it has no bins")
    return subgroup_levels(frame, subgroup), labels, edges


def plot_performance_vs_covariates(per_case: pd.DataFrame, metric: str = "dice"):
    """(a) per-scan metric vs reference tumour volume (log scale) with the mean per size band;
    (b) per-scan metric per slice-thickness band (box + points)."""
    label = METRIC_LABELS.get(metric, metric)
    vol_col = "tumour_volume_ml"
    with plot_style():
        fig, (ax, bx) = new_figure("double", aspect=0.34, ncols=2)
        d = per_case.dropna(subset=[metric])
        vol = d[vol_col].clip(lower=0.1)
        ax.scatter(vol, d[metric], s=4, color=ROLE["ours"], alpha=0.6, lw=0)
        binned, labels, edges = _binned(d, "tumour_size_band")
        for k, lab in enumerate(labels):
            vals = d.loc[binned == lab, metric]
            if len(vals) == 0:
                continue
            lo, hi = max(edges[k], vol.min()), min(edges[k + 1], vol.max())
            ax.plot([lo, hi], [vals.mean()] * 2, color=ROLE["prediction"], lw=1.6, solid_capstyle="butt")
            ax.text(
                np.sqrt(lo * hi), 1.03, f"n={len(vals)}", ha="center", fontsize=5.5, color=ROLE["neutral"]
            )
        for e in edges[1:-1]:
            ax.axvline(e, color=ROLE["grid"], lw=0.6, zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("Reference tumour volume (ml)")
        ax.set_ylabel(f"Per-scan {label}")
        ax.set_ylim(-0.02, 1.08)
        panel_label(ax, "a")

        binned, labels, _ = _binned(d, "slice_thickness_band")
        groups = [d.loc[binned == lab, metric].to_numpy(float) for lab in labels]
        for k, vals in enumerate(groups):
            if len(vals) == 0:
                continue
            bx.boxplot(
                [vals],
                positions=[k],
                widths=0.45,
                showfliers=False,
                medianprops={"color": "black", "lw": 0.8},
            )
            bx.scatter(
                k + _jitter(len(vals), 0.15, seed=k), vals, s=4, color=ROLE["ours"], alpha=0.6, lw=0, zorder=3
            )
            bx.text(k, 1.03, f"n={len(vals)}", ha="center", fontsize=5.5, color=ROLE["neutral"])
        bx.set_xticks(range(len(labels)))
        bx.set_xticklabels(labels)
        bx.set_xlim(-0.6, len(labels) - 0.4)
        bx.set_xlabel("Slice thickness")
        bx.set_ylabel(f"Per-scan {label}")
        bx.set_ylim(-0.02, 1.08)
        bx.grid(True, axis="y")
        panel_label(bx, "b")
    return fig
