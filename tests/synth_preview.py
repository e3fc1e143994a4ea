"""Look at volumes by eye (test scaffolding, not part of the package): axial, coronal and sagittal slices
through a point (the tumour by default) in the radiological display of :mod:`amt_core.plots.viewing`, the
label outlined. Used to check the synthetic anatomy against real CT."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from amt_core.plots.viewing import VIEWS, apply_window, draw_outlines, view_aspect, view_axis, view_slice


def render_panel(
    items: Sequence[tuple[str, np.ndarray, np.ndarray | None, Sequence[float]]],
    out_png,
    window: str | tuple[float, float] = (-300.0, 1400.0),
    dpi: int = 80,
):
    """One row per item (title, RAS+ image, label or None, spacing): axial, coronal, sagittal through the
    label's centroid (the volume's centre without a label); ``window`` a preset name or (level, width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 3, figsize=(12, 4 * len(items)), squeeze=False)
    for r, (title, array, label, spacing) in enumerate(items):
        centre = (
            np.argwhere(label > 0).mean(0) if label is not None and label.any() else np.array(array.shape) / 2
        )
        for c, view in enumerate(VIEWS):
            index = int(round(centre[view_axis(view)]))
            ax = axes[r, c]
            ax.imshow(
                apply_window(view_slice(array, view, index), window),
                cmap="gray",
                vmin=0,
                vmax=1,
                aspect=view_aspect(spacing, view),
            )
            if label is not None:
                draw_outlines(ax, ((view_slice(label, view, index), "r"),), 0.8)
            ax.set_title(f"{title} - {view}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png


def preview_files(pairs: Sequence[tuple[str, str | os.PathLike, str | os.PathLike | None]], out_png, **kw):
    """Render (title, image path, label path or None) rows to ``out_png`` (read as amt reads volumes)."""
    from amt_core.data.volume import read_label, read_volume

    items = []
    for title, image_path, label_path in pairs:
        image = read_volume(image_path)
        label = None if label_path is None else read_label(label_path, image, allowed=None).array
        items.append((title, image.array, label, image.spacing))
    return render_panel(items, out_png, **kw)
