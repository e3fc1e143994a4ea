"""Learning curves of a training run (``train_log.csv``): loss per epoch and the tuning-set Dice used for
model selection, with the selected checkpoint marked; with the run's ``training.json``, a model that the time
cap kept before any scheduled evaluation (``best_tune_dice_source: "time cap"``, ``selected_by="time cap"``
in ``best.pt``) is marked as that, not as a selection."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from amt_core.plots.style import PALETTE, ROLE, new_figure, plot_style

#: the columns of ``train_log.csv`` (amt_core.model.trainer.LOG_COLUMNS) that the figure shows
COLUMNS = ("epoch", "loss", "tune_dice")
#: the legend's line when no checkpoint was selected by tuning Dice (no scheduled evaluation in the log)
NO_SELECTION = "No checkpoint selected by tuning Dice (no tuning evaluation)"


def plot_learning_curves(log: pd.DataFrame, status: dict[str, Any] | None = None):
    """Training loss and tuning-set Dice per epoch of a ``train_log.csv`` table, the selected epoch starred.

    ``status`` is the run's ``training.json`` (optional): when its ``best_tune_dice_source`` is ``"time cap"``
    the stopgap evaluation of the weights kept as ``best.pt`` is drawn, labelled as no selection. Without a
    tuning Dice in the log the legend says that no checkpoint was selected."""
    missing = [c for c in COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"train_log.csv lacks the column(s) {missing} (has {list(log.columns)})")
    x, loss, tune = COLUMNS
    status = status or {}
    with plot_style():
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator

        fig, ax = new_figure("single", aspect=0.62)
        marker = "o" if len(log) <= 30 else None
        ax.plot(log[x], log[loss], color=PALETTE[0], lw=1.0, marker=marker, ms=2.2, label="Training loss")
        # epochs are whole numbers: one tick at least, however few epochs were trained
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        epochs = pd.to_numeric(log[x], errors="coerce").dropna()
        if len(epochs) and epochs.max() - epochs.min() < 2:
            ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
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
        stopgap = _stopgap(status)
        if stopgap is not None:
            dice, epoch = stopgap
            tx.plot(
                [epoch],
                [dice],
                "D",
                ms=4.5,
                mfc="white",
                mec=PALETTE[1],
                mew=1.0,
                ls="none",
                label=f"Kept by the time cap, not a selection (best.pt): Dice {dice:.3f} at {x} {epoch:g}",
            )
        tx.set_ylabel("Tuning-set Dice", color=PALETTE[1])
        tx.set_ylim(-0.02, 1.02)
        handles += tx.get_legend_handles_labels()[0]
        if not len(t):
            handles.append(Line2D([], [], ls="none", label=NO_SELECTION))
        ncol = 2 if len(t) and stopgap is None else 1  # the long notes one under the other
        ax.legend(
            handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol, columnspacing=1.0
        )
    return fig


def _stopgap(status: dict[str, Any]) -> tuple[float, float] | None:
    """(Dice, epoch) of the stopgap evaluation that ``training.json`` records, or None."""
    if status.get("best_tune_dice_source") != "time cap":
        return None
    dice, epoch = status.get("best_tune_dice"), status.get("best_tune_dice_epoch", status.get("epochs"))
    if not isinstance(dice, int | float) or not isinstance(epoch, int | float) or not math.isfinite(dice):
        return None
    return float(dice), float(epoch)
