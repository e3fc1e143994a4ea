"""Learning curves of a training run (``train_log.csv``): loss per epoch and the tuning-set Dice used for
model selection, with the selected checkpoint marked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from amt_core.plots.style import PALETTE, ROLE, new_figure, plot_style

LOSS = ("train_loss", "loss")
TUNE = ("tune_dice", "val_dice", "tuning_dice")
STEP = ("epoch", "step")


def _col(frame, names):
    return next((n for n in names if n in frame.columns), None)


def plot_learning_curves(log: pd.DataFrame):
    x, loss, tune = _col(log, STEP), _col(log, LOSS), _col(log, TUNE)
    x = x or log.columns[0]
    with plot_style():
        fig, ax = new_figure("single", aspect=0.62)
        if loss:
            ax.plot(log[x], log[loss], color=PALETTE[0], lw=1.0, label="Training loss")
        ax.set_xlabel(x.capitalize())
        ax.set_ylabel("Training loss", color=PALETTE[0])
        if tune:
            tx = ax.twinx()
            tx.spines["right"].set_visible(True)
            t = log[[x, tune]].dropna()
            tx.plot(t[x], t[tune], "-o", ms=2.5, color=PALETTE[1], lw=1.0, label="Tuning Dice")
            if len(t):
                best = t.loc[t[tune].idxmax()]
                tx.plot([best[x]], [best[tune]], "*", ms=9, color=ROLE["published"], mec="black", mew=0.4,
                        label=f"Selected: {tune.replace('_', ' ')} {best[tune]:.3f} at {x} {best[x]:g}")
                tx.legend(loc="lower right")
            tx.set_ylabel("Tuning-set Dice", color=PALETTE[1])
            tx.set_ylim(0, max(1.0, float(np.nanmax(t[tune])) if len(t) else 1.0))
    return fig
