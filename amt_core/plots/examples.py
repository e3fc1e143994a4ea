"""Best, median and worst cases with the reference and predicted outlines over the CT, and a few cohort
scans (slices, windows and outlines: :mod:`amt_core.plots.viewing`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from amt_core.plots.style import ROLE, new_figure, plot_style
from amt_core.plots.viewing import (
    apply_window,
    bare_axes,
    crop_box,
    draw_outlines,
    error_slice,
    largest_slice,
    load_case,
    view_aspect,
    view_axis,
    view_slice,
)


def pick_examples(per_case: pd.DataFrame, metric: str = "dice") -> dict[str, pd.Series]:
    """The best, median and worst scans by ``metric`` (scans with a value only)."""
    d = per_case.dropna(subset=[metric]).sort_values([metric, "case_id"]).reset_index(drop=True)
    if d.empty:
        return {}
    n = len(d)
    # nearest the median value; among ties the middle position, so the three differ whenever n >= 3
    order = sorted(range(n), key=lambda i: (abs(d[metric].iloc[i] - d[metric].median()), abs(i - n // 2)))
    med = next((i for i in order if i not in (0, n - 1)), order[0])
    return {"best": d.iloc[-1], "median": d.iloc[med], "worst": d.iloc[0]}


def plot_examples(
    per_case: pd.DataFrame,
    cases: pd.DataFrame,
    predictions_dir: str | Path,
    metric: str = "dice",
    window: str = "mediastinum",
    margin_mm: float = 25.0,
):
    """A 3×3 grid: best / median / worst scan by ``metric``. Rows: axial and coronal slices through the
    reference tumour's largest cross-section, cropped around it, and the axial slice where the scan's
    error is largest (:func:`error_slice`), cropped around the error, so a far false positive that makes a
    scan the worst is shown, not hidden by the crop. Reference outlines green, prediction orange; titles
    give the metric, precision/recall and the false-positive candidates where the table has them."""
    from matplotlib.lines import Line2D

    picks = pick_examples(per_case, metric)
    table = cases.set_index("case_id")
    rows = (("axial", "Axial"), ("coronal", "Coronal"), ("error", "Largest error\n(axial)"))
    with plot_style():
        fig, axes = new_figure("double", aspect=0.9, nrows=len(rows), ncols=3)
        for col, (name, row) in enumerate(picks.items()):
            case = table.loc[row["case_id"]].copy()
            case["case_id"] = row["case_id"]
            image, ref, pred = load_case(case, Path(predictions_dir))
            focus = ref if ref.any() else pred
            margin = int(round(margin_mm / float(min(image.spacing))))
            for r, (kind, label) in enumerate(rows):
                ax = axes[r, col]
                view = "axial" if kind == "error" else kind
                err = error_slice(ref, pred, view_axis(view)) if kind == "error" else None
                idx = largest_slice(focus, view_axis(view)) if err is None else err
                rs, ps = view_slice(ref, view, idx), view_slice(pred, view, idx)
                box = crop_box(rs if err is None else np.logical_xor(rs, ps), ps, margin)
                if kind == "error":
                    ax.text(
                        0.02,
                        0.03,
                        f"slice {idx}" if err is not None else "no error",
                        color="white",
                        fontsize=5.5,
                        transform=ax.transAxes,
                        va="bottom",  # legible on bone too
                        bbox={"facecolor": "black", "alpha": 0.65, "linewidth": 0, "pad": 1.2},
                    )
                img = apply_window(view_slice(image.array, view, idx), window)
                ax.imshow(
                    img[box],
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                    aspect=view_aspect(image.spacing, view),
                    interpolation="bilinear",
                )
                draw_outlines(ax, ((rs[box], ROLE["reference"]), (ps[box], ROLE["prediction"])), 0.9)
                bare_axes(ax)
                if r == 0:
                    ax.set_title(_example_title(name, row, metric), fontsize=6.5)
                if col == 0:
                    ax.set_ylabel(label)
        for c in range(len(picks), 3):
            for r in range(len(rows)):
                axes[r, c].set_visible(False)
        handles = [
            Line2D([], [], color=ROLE["reference"], lw=1.2, label="Reference"),
            Line2D([], [], color=ROLE["prediction"], lw=1.2, label="Prediction"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=2)
    return fig


def _example_title(name: str, row: pd.Series, metric: str) -> str:
    head = f"{name.capitalize()}: {metric.capitalize()} {row[metric]:.2f} ({row['case_id']})"
    parts = []
    if pd.notna(row.get("precision")) and pd.notna(row.get("recall")):
        parts.append(f"precision {row['precision']:.2f}, recall {row['recall']:.2f}")
    if pd.notna(row.get("fp")):
        parts.append(f"{int(row['fp'])} FP candidate{'s' if int(row['fp']) != 1 else ''}")
    return head + ("\n" + "; ".join(parts) if parts else "")


def plot_cohort_examples(cases: pd.DataFrame, n: int = 3, seed: int = 0, window: str = "mediastinum"):
    """``n`` scans (one per split first, then at random), full axial slice through the tumour's largest
    cross-section with the reference outline, titled with split, histology and slice thickness."""
    from amt_core.data.volume import read_label, read_volume

    rng = np.random.default_rng(seed)
    order = list(cases.groupby("split", sort=False).head(1).index)
    rest = [i for i in rng.permutation(cases.index) if i not in order]
    chosen = (order + rest)[: max(n, 1)]
    with plot_style():
        fig, axes = new_figure("double", aspect=0.36 if len(chosen) > 2 else 0.5, ncols=len(chosen))
        for ax, i in zip(np.atleast_1d(axes), chosen, strict=False):
            row = cases.loc[i]
            image = read_volume(row["image"])
            ref = read_label(row["label"], image).array > 0
            idx = largest_slice(ref, 2)
            ax.imshow(
                apply_window(view_slice(image.array, "axial", idx), window),
                cmap="gray",
                vmin=0,
                vmax=1,
                aspect=view_aspect(image.spacing, "axial"),
                interpolation="bilinear",
            )
            draw_outlines(ax, ((view_slice(ref, "axial", idx), ROLE["reference"]),), 0.8)
            ax.set_title(
                f"{row['case_id']} ({row['split']})\n{row['histology']}, {row['slice_thickness_mm']:g} mm",
                fontsize=6.5,
            )
            bare_axes(ax)
    return fig
