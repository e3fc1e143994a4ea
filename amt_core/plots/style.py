"""One figure style for the whole manuscript.

- Colour-blind-safe Okabe–Ito palette (Okabe & Ito 2008; also seaborn's ``colorblind``), with fixed roles
  (reference, prediction, published value) so a colour means the same thing in every figure.
- Sizes for a journal column (Scientific Reports: 89 mm single, 183 mm double column) with fonts that stay
  readable when printed at that width (7 pt text, 6.5 pt ticks).
- :func:`save_figure` writes a vector PDF (fonts embedded as TrueType) and a 300-dpi PNG, each atomically,
  with no timestamps in the files so reruns give identical bytes.

Nothing here changes matplotlib's global state: plotting code runs inside :func:`plot_style`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amt_core.atomic import atomic_path

#: Okabe–Ito colours, in the order the curves of one figure take them.
OKABE_ITO: dict[str, str] = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
PALETTE: tuple[str, ...] = tuple(
    OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky")
)
#: Fixed colour roles shared by every figure.
ROLE = {
    "reference": OKABE_ITO["green"],
    "prediction": OKABE_ITO["orange"],
    "published": OKABE_ITO["vermillion"],
    "ours": OKABE_ITO["blue"],
    "neutral": "#4D4D4D",
    "grid": "#D9D9D9",
}
SPLIT_COLORS = {"tune": OKABE_ITO["sky"], "test": OKABE_ITO["blue"], "train": OKABE_ITO["purple"]}

MM = 1 / 25.4
#: Widths in inches: Scientific Reports single (89 mm) and double (183 mm) column.
WIDTHS = {"single": 89 * MM, "onehalf": 120 * MM, "double": 183 * MM}
PNG_DPI = 300

RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 7.0,
    "axes.titlesize": 7.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 7.0,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.title_fontsize": 6.5,
    "legend.frameon": False,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.color": ROLE["grid"],
    "grid.linewidth": 0.4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "patch.linewidth": 0.6,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "figure.dpi": 150,
    "savefig.dpi": PNG_DPI,
    "image.interpolation": "nearest",
}


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """Apply the manuscript style for the duration of a ``with`` block (no global change)."""
    import matplotlib as mpl
    from cycler import cycler

    rc: Any = {**RC, "axes.prop_cycle": cycler(color=PALETTE)}  # matplotlib types its keys as a Literal
    with mpl.rc_context(rc):
        yield


def new_figure(
    width: str | float = "single", aspect: float = 0.75, nrows: int = 1, ncols: int = 1, **subplot_kw
):
    """A figure ``width`` wide (a key of :data:`WIDTHS` or inches) and ``width * aspect`` high.

    Returns ``(fig, axes)`` like ``plt.subplots`` but without pyplot's global figure registry, so it
    works headless and leaks nothing. Call inside :func:`plot_style`.
    """
    from matplotlib.figure import Figure

    w = WIDTHS[width] if isinstance(width, str) else float(width)
    fig = Figure(figsize=(w, w * aspect), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=True, **subplot_kw)
    return fig, axes


def panel_label(ax, letter: str) -> None:
    """Bold panel letter (a, b, ...) at the top-left corner outside the axes."""
    ax.text(
        -0.02, 1.02, letter, transform=ax.transAxes, fontsize=8.5, fontweight="bold", va="bottom", ha="right"
    )


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.pdf`` (vector) and ``out_dir/name.png`` (300 dpi), atomically.

    File metadata carries no creation date, so rerunning gives byte-identical files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with plot_style():
        fig.draw_without_rendering()  # lay the figure out once, then keep that layout for both files
    fig.set_layout_engine("none")
    written = []
    for ext, meta in (
        ("pdf", {"CreationDate": None, "ModDate": None, "Producer": "amt"}),
        ("png", {"Software": "amt"}),
    ):
        target = out / f"{name}.{ext}"
        with plot_style(), atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=PNG_DPI, metadata=meta, facecolor="white")
        written.append(target)
    return written


def as_image(fig, dpi: int = 150):
    """``fig`` as an ``IPython.display.Image`` (PNG), for notebooks: figures built without pyplot are
    not shown by the inline backend on their own."""
    import io

    from IPython.display import Image

    buf = io.BytesIO()
    with plot_style():
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return Image(data=buf.getvalue(), format="png")
