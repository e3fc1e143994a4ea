"""Learning curves of a training run (``train_log.csv``): loss per epoch and the tuning-set Dice used for
model selection, with the selected checkpoint marked."""

from __future__ import annotations

import pandas as pd

from amt_core.plots.style import PALETTE, ROLE, new_figure, plot_style

#: the columns of ``train_log.csv`` (amt_core.model.trainer.LOG_COLUMNS) that the figure shows
COLUMNS = ("epoch", "loss", "tune_dice")


def plot_learning_curves(log: pd.DataFrame):
    """Training loss and tuning-set Dice per epoch of a ``train_log.csv`` table, the selected epoch starred."""
    missing = [c for c in COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"train_log.csv lacks the column(s) {missing} (has {list(log.columns)})")
    x, loss, tune = COLUMNS
    with plot_style():
        fig, ax = new_figure("single", aspect=0.62)
        marker = "o" if len(log) <= 30 else None
        ax.plot(log[x], log[loss], color=PALETTE[0], lw=1.0, marker=marker, ms=2.2, label="Training loss")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x.capitalize())
        ax.set_ylabel("Training loss", color=PALETTE[0])
        handles = ax.get_legend_handles_labels()[0]
        tx = ax.twinx()
        tx.spines["right"].set_visible(True)
        t = log[[x, tune]].dropna()
        tx.plot(t[x], t[tune], "-s", ms=2.5, color=PALETTE[1], lw=1.0, label="Tuning-set Dice")
        if len(t):
            best = t.loc[t[tune].idxmax()]
            tx.plot(
                [best[x]],
                [best[tune]],
                "*",
                ms=9,
                color=ROLE["published"],
                mec="black",
                mew=0.4,
                ls="none",
                label=f"Selected (best.pt): Dice {best[tune]:.3f} at {x} {best[x]:g}",
            )
        tx.set_ylabel("Tuning-set Dice", color=PALETTE[1])
        tx.set_ylim(-0.02, 1.02)
        handles += tx.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, columnspacing=1.0)
    return fig
