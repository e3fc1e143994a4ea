"""Per-scan segmentation metrics: Dice, IoU, precision, recall, volumes, HD95 and mean surface distance.

Pure functions over numpy arrays. Speed comes from touching the full volume as little as possible: one
bounding-box pass per mask (``ndarray.any`` projections), then every count, surface and distance inside
each mask's own box (the overlap inside the intersection of the two boxes). Surface distances are exact Euclidean distances in mm between surface voxels
(a KD-tree over the surface voxels' physical coordinates, as MONAI does on CPU), so the crop never needs a
distance transform.

Definitions (MONAI's, so that the numbers agree with ``DiceMetric``, ``MeanIoU`` and
``compute_hausdorff_distance``): a surface voxel is a mask voxel with at least one of its 6 face
neighbours outside the mask (``mask ^ binary_erosion(mask)``, voxels outside the volume count as
background); HD95 = max of the two directed 95th percentiles (linear interpolation) of surface-to-surface
distances; the mean surface distance is the mean over both directions' distances pooled (MONAI's
symmetric average surface distance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from amt_core.evaluation.config import EMPTY_BOTH, EMPTY_ONE

Box = tuple[slice, slice, slice]


def bounding_box(array: np.ndarray, threshold: float | None = None) -> Box | None:
    """Tight bounding box (slices) of the non-zero voxels of a 3D array (of the voxels ``>= threshold``
    when a threshold is given), or None when there are none.

    Two projections: a reduction over the first axis (contiguous, vectorised) gives the y/z extent, then
    one over the y/z crop gives the x extent; no full-size temporary is made.
    """
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    if array.flags.f_contiguous and not array.flags.c_contiguous:  # NIfTI arrays come Fortran-ordered
        box = bounding_box(array.T, threshold)
        return None if box is None else box[::-1]
    arr = np.ascontiguousarray(array)
    if threshold is None:
        yz = arr.reshape(arr.shape[0], -1).any(axis=0).reshape(arr.shape[1:])
    else:
        yz = arr.reshape(arr.shape[0], -1).max(axis=0).reshape(arr.shape[1:]) >= threshold
    ys = np.flatnonzero(yz.any(axis=1))
    if ys.size == 0:
        return None
    zs = np.flatnonzero(yz.any(axis=0))
    y, z = slice(int(ys[0]), int(ys[-1]) + 1), slice(int(zs[0]), int(zs[-1]) + 1)
    sub = arr[:, y, z]
    xs = np.flatnonzero(sub.any(axis=(1, 2)) if threshold is None else sub.max(axis=(1, 2)) >= threshold)
    return slice(int(xs[0]), int(xs[-1]) + 1), y, z


def union_box(*boxes: Box | None) -> Box | None:
    """Smallest box holding every given box (None entries are skipped; None when all are None)."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def overlap_scores(
    n_ref: int, n_pred: int, n_both: int, *, empty_both: str = "one", empty_one: str = "zero"
) -> dict[str, float]:
    """Dice, IoU, precision and recall from voxel counts, with the empty-mask policy applied.

    ``empty_both`` ("one" | "zero" | "nan") scores a scan whose reference and prediction are both
    empty; ``empty_one`` ("zero" | "nan") is the value of the ratio that is 0/0 when exactly one mask
    is empty (precision without a prediction, recall without a reference). See ``EvalConfig``.
    """
    if n_ref == 0 and n_pred == 0:
        v = EMPTY_BOTH[empty_both]
        return {"dice": v, "iou": v, "precision": v, "recall": v}
    undefined = EMPTY_ONE[empty_one]
    return {
        "dice": 2.0 * n_both / (n_ref + n_pred),
        "iou": n_both / (n_ref + n_pred - n_both),
        "precision": n_both / n_pred if n_pred else undefined,
        "recall": n_both / n_ref if n_ref else undefined,
    }


def surface_coordinates(
    mask: np.ndarray, spacing: Sequence[float], offset: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """Physical coordinates (mm, float64, shape (n, 3)) of the surface voxels of a boolean 3D mask.

    ``offset`` is the voxel index of ``mask[0, 0, 0]`` in the full volume (only shifts the coordinates).
    """
    box = bounding_box(mask)
    if box is None:
        return np.empty((0, 3))
    m = np.pad(mask[box], 1)
    core = m[1:-1, 1:-1, 1:-1]
    interior = core & m[:-2, 1:-1, 1:-1] & m[2:, 1:-1, 1:-1]
    interior &= m[1:-1, :-2, 1:-1]
    interior &= m[1:-1, 2:, 1:-1]
    interior &= m[1:-1, 1:-1, :-2]
    interior &= m[1:-1, 1:-1, 2:]
    idx = np.argwhere(core & ~interior).astype(np.float64)
    idx += np.array([box[a].start + offset[a] for a in range(3)], dtype=np.float64)
    idx *= np.asarray(spacing, dtype=np.float64)
    return idx


def surface_distances(ref_surface: np.ndarray, pred_surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances (mm): each prediction surface point to the nearest reference surface point,
    and each reference surface point to the nearest prediction surface point."""
    from scipy.spatial import cKDTree

    d_pred = cKDTree(ref_surface, leafsize=32).query(pred_surface, k=1, workers=-1)[0]
    d_ref = cKDTree(pred_surface, leafsize=32).query(ref_surface, k=1, workers=-1)[0]
    return d_pred, d_ref


def intersect_box(a: Box | None, b: Box | None) -> Box | None:
    """Overlap of two boxes (None when they do not overlap)."""
    if a is None or b is None:
        return None
    box = tuple(slice(max(a[k].start, b[k].start), min(a[k].stop, b[k].stop)) for k in range(3))
    return None if any(s.start >= s.stop for s in box) else box


def segmentation_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    empty_both: str = "one",
    empty_one: str = "zero",
    hd_percentile: float = 95.0,
    boxes: tuple[Box | None, Box | None] | None = None,
) -> dict[str, float]:
    """Per-scan metrics of a predicted mask against the reference (non-zero voxels are foreground).

    Returns ``dice, iou, precision, recall, hd95_mm, msd_mm, ref_volume_ml, pred_volume_ml,
    ref_voxels, pred_voxels, overlap_voxels``. Each mask is only read inside its own bounding box
    (``boxes`` = (reference box, prediction box) when already known) and the overlap inside the
    intersection of the two. Spacing is in mm along the array axes.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"reference and prediction differ in shape: {reference.shape} vs {prediction.shape}")
    if len(spacing) != 3:
        raise ValueError(f"spacing needs 3 values (mm per axis), got {tuple(spacing)}")
    box_r, box_p = boxes if boxes is not None else (bounding_box(reference), bounding_box(prediction))
    n_ref = int(np.count_nonzero(reference[box_r])) if box_r else 0
    n_pred = int(np.count_nonzero(prediction[box_p])) if box_p else 0
    both = intersect_box(box_r, box_p)
    n_both = int(np.count_nonzero(_as_bool(reference[both]) & _as_bool(prediction[both]))) if both else 0
    out = overlap_scores(n_ref, n_pred, n_both, empty_both=empty_both, empty_one=empty_one)
    hd = msd = math.nan
    if n_ref and n_pred:
        d_pred, d_ref = surface_distances(
            surface_coordinates(_as_bool(reference[box_r]), spacing, [s.start for s in box_r]),
            surface_coordinates(_as_bool(prediction[box_p]), spacing, [s.start for s in box_p]),
        )
        hd = float(max(np.percentile(d_pred, hd_percentile), np.percentile(d_ref, hd_percentile)))
        msd = float((d_pred.sum() + d_ref.sum()) / (d_pred.size + d_ref.size))
    ml = float(np.prod(spacing)) / 1000.0
    out.update(
        hd95_mm=hd, msd_mm=msd, ref_volume_ml=n_ref * ml, pred_volume_ml=n_pred * ml,
        ref_voxels=n_ref, pred_voxels=n_pred, overlap_voxels=n_both,
    )  # fmt: skip
    return out


def _as_bool(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == bool else a != 0
