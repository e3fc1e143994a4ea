"""Looking at a CT volume: one slice in the radiological display, a CT window, mask outlines over it.

The figures (:mod:`amt_core.plots.examples`, :mod:`amt_core.plots.failures`) and the case browser
(:mod:`amt_core.explore.widgets`) share these, so a slice looks the same everywhere. :func:`view_slice` turns
a RAS+ volume (as :func:`amt_core.data.volume.read_volume` returns it) into the display of one axial,
coronal or sagittal slice: patient's right on the viewer's left, anterior and superior up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: CT window presets: name -> (level, width) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "mediastinum": (40.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def view_axis(view: str) -> int:
    """The volume axis a view slices across (axial: z, coronal: y, sagittal: x)."""
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


def crop_box(ref2d: np.ndarray, pred2d: np.ndarray, margin: int) -> tuple[slice, slice]:
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


def outline(mask2d: np.ndarray) -> np.ndarray:
    """The boundary pixels of a 2D mask (the mask minus its 4-connected erosion), for raster overlays."""
    m = mask2d.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def draw_outlines(ax, masks, linewidth: float) -> None:
    """Outline each non-empty 2D mask of ``masks`` ((mask, colour) pairs) on a matplotlib axis."""
    for mask, color in masks:
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=linewidth)


def bare_axes(ax) -> None:
    """No ticks and no frame: an image panel."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def load_case(case: pd.Series, predictions_dir: Path):
    """(image Volume, reference mask, predicted mask) of a case-table row; an empty prediction when the
    predictions folder has no ``{case_id}.nii.gz``."""
    from amt_core.data.volume import read_label, read_volume

    image = read_volume(case["image"])
    ref = read_label(case["label"], image).array > 0
    pred_path = predictions_dir / f"{case['case_id']}.nii.gz"
    pred = read_label(pred_path, image).array > 0 if pred_path.exists() else np.zeros_like(ref)
    return image, ref, pred
