"""Best, median and worst cases with the reference and predicted outlines over the CT.

Also the slice helpers the case browser shares: :func:`view_slice` turns a RAS+ volume into the
radiological display of one axial, coronal or sagittal slice (patient's right on the viewer's left,
anterior and superior up), and :data:`WINDOWS` holds the CT window presets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from amt_core.plots.style import ROLE, new_figure, plot_style

#: CT window presets: name -> (level, width) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "mediastinum": (40.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def view_axis(view: str) -> int:
    if view not in _VIEW_AXIS:
        raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")
    return _VIEW_AXIS[view]


def view_slice(array: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2D display array (rows top→bottom, columns left→right) of slice ``index`` of a RAS+ volume."""
    if view == "axial":
        return array[::-1, ::-1, index].T
    if view == "coronal":
        return array[::-1, index, ::-1].T
    if view == "sagittal":
        return array[index, ::-1, ::-1].T
    raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")


def view_aspect(spacing, view: str) -> float:
    """imshow aspect (row spacing / column spacing) for a view of a volume with voxel ``spacing``."""
    sx, sy, sz = (float(s) for s in spacing)
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def apply_window(hu: np.ndarray, window: str | tuple[float, float]) -> np.ndarray:
    """HU → [0, 1] grey levels for a window preset name or a (level, width) pair."""
    level, width = WINDOWS[window] if isinstance(window, str) else window
    return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)


def largest_slice(mask: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of the slice with the most foreground voxels (the middle slice if empty)."""
    other = tuple(a for a in range(3) if a != axis)
    counts = np.count_nonzero(mask, axis=other)
    return int(np.argmax(counts)) if counts.any() else mask.shape[axis] // 2


def error_slice(ref: np.ndarray, pred: np.ndarray, axis: int) -> int | None:
    """Index along ``axis`` of the slice with the most disagreeing voxels (reference XOR prediction): where
    a scan's error is, be it a missed part, an over-segmentation or a false positive far from the tumour.
    ``None`` when the masks agree everywhere."""
    wrong = np.logical_xor(ref, pred)
    return largest_slice(wrong, axis) if wrong.any() else None


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


def _crop_box(ref2d: np.ndarray, pred2d: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows and columns around the reference (the prediction when the reference is empty) plus a margin;
    scattered false positives elsewhere do not widen the crop."""
    fg = ref2d > 0 if (ref2d > 0).any() else pred2d > 0
    if not fg.any():
        return slice(None), slice(None)
    rows, cols = np.nonzero(fg)
    h, w = fg.shape
    r0, r1 = max(rows.min() - margin, 0), min(rows.max() + margin + 1, h)
    c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin + 1, w)
    return slice(r0, r1), slice(c0, c1)


def _load(case: pd.Series, predictions_dir: Path):
    from amt_core.data.volume import read_label, read_volume

    image = read_volume(case["image"])
    ref = read_label(case["label"], image).array > 0
    pred_path = predictions_dir / f"{case['case_id']}.nii.gz"
    pred = read_label(pred_path, image).array > 0 if pred_path.exists() else np.zeros_like(ref)
    return image, ref, pred


def plot_examples(per_case: pd.DataFrame, cases: pd.DataFrame, predictions_dir: str | Path,
                  metric: str = "dice", window: str = "mediastinum", margin_mm: float = 25.0):
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
            image, ref, pred = _load(case, Path(predictions_dir))
            focus = ref if ref.any() else pred
            margin = int(round(margin_mm / float(min(image.spacing))))
            for r, (kind, label) in enumerate(rows):
                ax = axes[r, col]
                view = "axial" if kind == "error" else kind
                err = error_slice(ref, pred, view_axis(view)) if kind == "error" else None
                idx = largest_slice(focus, view_axis(view)) if err is None else err
                rs, ps = view_slice(ref, view, idx), view_slice(pred, view, idx)
                box = _crop_box(rs if err is None else np.logical_xor(rs, ps), ps, margin)
                if kind == "error":
                    ax.text(0.02, 0.03, f"slice {idx}" if err is not None else "no error", color="white",
                            fontsize=5.5, transform=ax.transAxes, va="bottom",  # legible on bone too
                            bbox={"facecolor": "black", "alpha": 0.65, "linewidth": 0, "pad": 1.2})
                img = apply_window(view_slice(image.array, view, idx), window)
                ax.imshow(img[box], cmap="gray", vmin=0, vmax=1, aspect=view_aspect(image.spacing, view),
                          interpolation="bilinear")
                for mask, color in ((rs, ROLE["reference"]), (ps, ROLE["prediction"])):
                    if mask[box].any():
                        ax.contour(mask[box].astype(float), levels=[0.5], colors=[color], linewidths=0.9)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if r == 0:
                    ax.set_title(_example_title(name, row, metric), fontsize=6.5)
                if col == 0:
                    ax.set_ylabel(label)
        for c in range(len(picks), 3):
            for r in range(len(rows)):
                axes[r, c].set_visible(False)
        handles = [Line2D([], [], color=ROLE["reference"], lw=1.2, label="Reference"),
                   Line2D([], [], color=ROLE["prediction"], lw=1.2, label="Prediction")]
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
    chosen = (order + rest)[:max(n, 1)]
    with plot_style():
        fig, axes = new_figure("double", aspect=0.36 if len(chosen) > 2 else 0.5, ncols=len(chosen))
        for ax, i in zip(np.atleast_1d(axes), chosen, strict=False):
            row = cases.loc[i]
            image = read_volume(row["image"])
            ref = read_label(row["label"], image).array > 0
            idx = largest_slice(ref, 2)
            ax.imshow(apply_window(view_slice(image.array, "axial", idx), window), cmap="gray", vmin=0, vmax=1,
                      aspect=view_aspect(image.spacing, "axial"), interpolation="bilinear")
            rs = view_slice(ref, "axial", idx)
            if rs.any():
                ax.contour(rs.astype(float), levels=[0.5], colors=[ROLE["reference"]], linewidths=0.8)
            ax.set_title(f"{row['case_id']} ({row['split']})\n{row['histology']}, "
                         f"{row['slice_thickness_mm']:g} mm", fontsize=6.5)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    return fig
