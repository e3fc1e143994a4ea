"""Look at volumes: axial / coronal / sagittal slices through a point (the tumour by default), in the
radiological convention (patient's right on the viewer's left, anterior up, superior up), with the
label outlined. Used to check the synthetic anatomy against real CT by eye."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def _canonical(path: str | os.PathLike):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), np.sqrt((img.affine[:3, :3] ** 2).sum(0))


def slices_through(array: np.ndarray, spacing, point=None, label=None):
    """Three (image, label, extent) views through voxel ``point`` (default: label centroid or centre)."""
    if point is None:
        if label is not None and label.any():
            point = np.round(np.argwhere(label > 0).mean(0)).astype(int)
        else:
            point = np.array(array.shape) // 2
    i, j, k = (int(v) for v in point)
    sx, sy, sz = spacing
    nx, ny, nz = array.shape
    views = []
    for img2, lab2, ext in (
        (array[::-1, :, k].T, None if label is None else label[::-1, :, k].T, (0, nx * sx, 0, ny * sy)),
        (array[::-1, j, :].T, None if label is None else label[::-1, j, :].T, (0, nx * sx, 0, nz * sz)),
        (array[i, ::-1, :].T, None if label is None else label[i, ::-1, :].T, (0, ny * sy, 0, nz * sz)),
    ):
        views.append((img2, lab2, ext))
    return views


def render_panel(items: Sequence[tuple[str, np.ndarray, np.ndarray | None, Sequence[float]]], out_png,
                 window=(-1000, 400), dpi: int = 80):
    """One row per item (title, image, label or None, spacing): axial, coronal, sagittal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 3, figsize=(12, 4 * len(items)), squeeze=False)
    for r, (title, arr, lab, spacing) in enumerate(items):
        for c, (img2, lab2, ext) in enumerate(slices_through(arr, spacing, label=lab)):
            ax = axes[r, c]
            ax.imshow(img2, cmap="gray", vmin=window[0], vmax=window[1], origin="lower", extent=ext)
            if lab2 is not None and lab2.any():
                ax.contour(lab2, levels=[0.5], colors="r", linewidths=0.8, origin="lower", extent=ext)
            ax.set_title(f"{title} - {('axial', 'coronal', 'sagittal')[c]}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png


def preview_files(pairs: Sequence[tuple[str, str | os.PathLike, str | os.PathLike | None]], out_png, **kw):
    """Render (title, image path, label path or None) rows to ``out_png``."""
    items = []
    for title, img_path, lab_path in pairs:
        arr, sp = _canonical(img_path)
        lab = None if lab_path is None else _canonical(lab_path)[0]
        items.append((title, arr, lab, sp))
    return render_panel(items, out_png, **kw)
