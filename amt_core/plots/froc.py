"""FROC figures for both readings of "FROC derived from lesion-wise IoU thresholds".

A. :func:`plot_froc_confidence` — one curve per IoU hit threshold (0.1, 0.3, 0.5), each swept over the
   candidates' confidence and drawn linear between operating points (the interpolant that gives the
   sensitivities at the fixed FP/scan points, as MONAI's FROC score), with its bootstrap band.
B. :func:`plot_froc_iou` — each point is an IoU hit threshold at the model's fixed operating threshold;
   the operating point (the evaluation's ``operating_iou``, 0.5 by default) is marked beside the published
   "0.87 at 0.61 FP/scan" (at IoU ≥ 0.5).

Inputs are the saved tables of the evaluation (``froc_confidence.csv``, ``froc_iou.csv``) and the
analysis band table (``froc_bands.csv``: iou_threshold, fp_per_scan, sensitivity, ci_lo, ci_hi).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from amt_core.evaluation.froc import interp_rows
from amt_core.plots.style import PALETTE, ROLE, new_figure, plot_style
from amt_core.registry import FP_POINTS, FROC_IOU_THRESHOLDS, PUBLISHED


def _sel(frame: pd.DataFrame, thr: float) -> pd.DataFrame:
    return frame[(frame["iou_threshold"] - thr).abs() < 1e-9]


def _curve_line(curve: pd.DataFrame, lo_x: float, hi_x: float, marks=()) -> tuple[np.ndarray, np.ndarray]:
    """The curve as the evaluation reads it: linear between operating points (``froc.interp_rows``, the
    same interpolant that gives the sensitivities at the FP/scan points), flat after its last point.

    Sampled densely on the log axis, at every operating point inside it and at the ``marks`` (the FP/scan
    points of the table), so the marked points lie on the drawn line. Empty arrays when the curve has no point.
    """
    c = curve[["fp_per_scan", "sensitivity"]].dropna().sort_values(["fp_per_scan", "sensitivity"])
    if c.empty:
        return np.array([]), np.array([])
    fp, sens = c["fp_per_scan"].to_numpy(float), c["sensitivity"].to_numpy(float)
    if fp[0] > 0:  # every curve starts at the empty operating point
        fp, sens = np.r_[0.0, fp], np.r_[0.0, sens]
    inside = fp[(fp > lo_x) & (fp < hi_x)]
    x = np.unique(np.r_[np.geomspace(lo_x, hi_x, 256), inside, np.nextafter(inside, 0), marks])
    return x, interp_rows(fp[None, :], sens[None, :], x.tolist())[0]


def plot_froc_confidence(
    froc: pd.DataFrame,
    bands: pd.DataFrame | None = None,
    iou_thresholds=FROC_IOU_THRESHOLDS,
    fp_points=FP_POINTS,
    title: str | None = None,
    subset: pd.DataFrame | None = None,
    subset_iou: float = 0.5,
    subset_label: str = "",
    band_label: str = "95% CI (scan bootstrap)",
):
    """Reading A: sensitivity vs false positives per scan for each IoU threshold, with the bootstrap bands
    of ``bands`` (named in the legend by ``band_label``: the evaluation's level and resampling unit).

    ``subset``: reading A of a subset of the scans (the real-anatomy test subset's ``froc_confidence.csv``),
    drawn alone at ``subset_iou`` as a black dashed curve labelled ``subset_label``, without a band (a
    handful of scans)."""
    with plot_style():
        fig, ax = new_figure("single", aspect=0.92)  # room for the legend above the axes
        lo_x, hi_x = min(fp_points) / 2, max(fp_points) * 1.25
        for k, thr in enumerate(iou_thresholds):
            color = PALETTE[k % len(PALETTE)]
            x, y = _curve_line(_sel(froc, thr), lo_x, hi_x, list(fp_points))
            if len(x) == 0:
                continue
            ax.plot(x, y, color=color, lw=1.2, label=f"IoU ≥ {thr:g}")
            if bands is not None and not bands.empty:
                b = _sel(bands, thr).sort_values("fp_per_scan")
                if not b.empty:  # the band joins the CIs read at the FP/scan points
                    ax.fill_between(b["fp_per_scan"], b["ci_lo"], b["ci_hi"], color=color, alpha=0.13, lw=0)
                    for edge in ("ci_lo", "ci_hi"):
                        ax.plot(b["fp_per_scan"], b[edge], color=color, lw=0.5, alpha=0.7, ls=(0, (2, 1.5)))
                    ax.plot(
                        b["fp_per_scan"], b["sensitivity"], "o", ms=2.4, color=color, mec="white", mew=0.4
                    )
        if subset is not None and not subset.empty:
            x, y = _curve_line(_sel(subset, subset_iou), lo_x, hi_x, list(fp_points))
            if len(x):
                ax.plot(
                    x,
                    y,
                    color="black",
                    lw=1.1,
                    ls=(0, (4, 2)),
                    zorder=4,
                    label=subset_label or f"subset, IoU ≥ {subset_iou:g}",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo_x, hi_x)
        ax.set_xticks(list(fp_points))
        ax.set_xticklabels([_frac(x) for x in fp_points])
        ax.set_ylim(-0.025, 1.02)  # a curve at sensitivity 0 (often the subset's) drawn clear of the spine
        ax.set_xlabel("False positives per scan")
        ax.set_ylabel("Lesion sensitivity")
        ax.grid(True, which="major", axis="both")
        from matplotlib.patches import Patch

        handles, _ = ax.get_legend_handles_labels()
        if bands is not None and not bands.empty:
            handles.append(Patch(facecolor=ROLE["neutral"], alpha=0.2, label=band_label))
        # above the axes: the curves and bands fill any corner of the plot, run to run
        ax.legend(
            handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title="Hit criterion"
        )
        if title:
            fig.suptitle(title, fontsize=7.5, fontweight="bold")
    return fig


def _frac(x: float) -> str:
    return {0.125: "1/8", 0.25: "1/4", 0.5: "1/2"}.get(float(x), f"{x:g}")


def plot_froc_iou(
    froc_iou: pd.DataFrame,
    operating_iou: float = 0.5,
    published=PUBLISHED,
    title: str | None = None,
    hit_label: str | None = None,
):
    """Reading B: the IoU-swept curve at the operating threshold, two panels.

    ``hit_label`` names the operating criterion in the legend (default "IoU ≥ ``operating_iou``"); the
    published point is at IoU ≥ 0.5 whatever the run's.

    (a) sensitivity vs FP/scan, one point per IoU threshold, the operating point and the published
    point marked; (b) sensitivity and FP/scan against the IoU threshold.
    """
    from amt_core.plots.style import panel_label

    c = froc_iou.sort_values("iou_threshold")
    with plot_style():
        fig, (ax, bx) = new_figure("double", aspect=0.36, ncols=2)
        ax.plot(c["fp_per_scan"], c["sensitivity"], "-", color=ROLE["ours"], lw=1.0, zorder=1)
        sc = ax.scatter(
            c["fp_per_scan"],
            c["sensitivity"],
            c=c["iou_threshold"],
            cmap="cividis",
            s=12,
            zorder=2,
            edgecolor="white",
            linewidth=0.3,
            vmin=0,
            vmax=1,
        )
        cb = fig.colorbar(sc, ax=ax, pad=0.01, fraction=0.05)
        cb.set_label("IoU threshold")
        cb.outline.set_linewidth(0.4)
        op = _sel(c, operating_iou)
        if not op.empty:
            s, f = float(op["sensitivity"].iloc[0]), float(op["fp_per_scan"].iloc[0])
            ax.plot(
                [f],
                [s],
                marker="*",
                ms=9,
                color=ROLE["ours"],
                mec="black",
                mew=0.5,
                ls="none",
                zorder=3,
                label=f"This run: {s:.2f} at {f:.2f} FP/scan",
            )
        ps, pf = published.get("sensitivity_iou50"), published.get("fp_per_scan_iou50")
        if ps is not None and pf is not None:
            ax.plot(
                [pf],
                [ps],
                marker="D",
                ms=5,
                mfc="none",
                mec=ROLE["published"],
                mew=1.2,
                ls="none",
                zorder=3,
                label=f"Published: {ps:.2f} at {pf:.2f} FP/scan (IoU ≥ 0.5)",
            )
        ax.set_xlabel("False positives per scan")
        ax.set_ylabel("Lesion sensitivity")
        ax.set_ylim(-0.025, 1.02)  # the points at sensitivity 0 (high IoU thresholds) clear of the spine
        # room for every marker (the run's point is often the curve's right end): none half-clipped
        shown = [*c["fp_per_scan"].dropna(), *([pf] if pf is not None else [])]
        ax.set_xlim(0, 1.08 * max(shown) if shown and max(shown) > 0 else 1.0)
        ax.grid(True)
        ax.legend(  # above the panel: the curve and both markers move run to run, no corner stays free
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            title=f"Operating point, {hit_label or f'IoU ≥ {operating_iou:g}'}",
        )
        panel_label(ax, "a")

        bx.plot(c["iou_threshold"], c["sensitivity"], "-o", ms=2.5, color=ROLE["ours"], label="Sensitivity")
        bx.set_xlabel("IoU hit threshold")
        bx.set_ylabel("Lesion sensitivity", color=ROLE["ours"])
        bx.set_ylim(0, 1.02)
        bx.set_xlim(0, 1)
        bx.axvline(operating_iou, color=ROLE["neutral"], lw=0.6, ls=":")
        tx = bx.twinx()
        tx.spines["right"].set_visible(True)
        tx.plot(c["iou_threshold"], c["fp_per_scan"], "-s", ms=2.5, color=PALETTE[1], label="FP per scan")
        tx.set_ylabel("False positives per scan", color=PALETTE[1])
        tx.set_ylim(bottom=0)
        bx.grid(True)
        panel_label(bx, "b")
        if title:
            fig.suptitle(title, fontsize=7.5, fontweight="bold")
    return fig
