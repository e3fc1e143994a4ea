"""Agreement of predicted and reference tumour volume: scatter and Bland–Altman.

Volumes span two orders of magnitude and their errors grow with size, so the Bland–Altman panel plots
the relative difference, 100·(predicted − reference)/mean, against the mean on a log axis; the bias and
95% limits of agreement (bias ± 1.96 SD) are reported by :func:`bland_altman_stats`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from amt_core.plots.style import ROLE, new_figure, panel_label, plot_style


def bland_altman_stats(reference: np.ndarray, predicted: np.ndarray, relative: bool = True) -> dict:
    """Bias and 95% limits of agreement of ``predicted - reference`` (percent of the mean if relative)."""
    ref, pred = np.asarray(reference, float), np.asarray(predicted, float)
    ok = np.isfinite(ref) & np.isfinite(pred) & ((ref + pred) > 0)
    ref, pred = ref[ok], pred[ok]
    mean = (ref + pred) / 2
    diff = pred - ref
    if relative:
        diff = 100 * diff / mean
    bias = float(diff.mean()) if len(diff) else float("nan")
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return {
        "n": int(len(diff)),
        "bias": bias,
        "sd": sd,
        "loa_lo": bias - 1.96 * sd,
        "loa_hi": bias + 1.96 * sd,
        "relative": relative,
        "mean": mean,
        "diff": diff,
    }


def plot_volume_agreement(
    per_case: pd.DataFrame, ref_col: str = "ref_volume_ml", pred_col: str = "pred_volume_ml"
):
    """(a) predicted vs reference volume (log–log, identity line); (b) Bland–Altman, relative difference."""
    ref = per_case[ref_col].to_numpy(float)
    pred = per_case[pred_col].to_numpy(float)
    st = bland_altman_stats(ref, pred, relative=True)
    with plot_style():
        fig, (ax, bx) = new_figure("double", aspect=0.36, ncols=2)
        ok = (ref > 0) & (pred > 0)
        ax.scatter(ref[ok], pred[ok], s=5, color=ROLE["ours"], alpha=0.7, lw=0)
        missed = (ref > 0) & ~(pred > 0)
        if missed.any():
            floor = max(np.nanmin(ref[ref > 0]) / 4, 1e-2)
            ax.scatter(
                ref[missed],
                np.full(missed.sum(), floor),
                marker="v",
                s=9,
                color=ROLE["published"],
                label=f"no prediction (n={int(missed.sum())})",
            )
            ax.legend(loc="upper left")
        vals = np.concatenate([ref[ok], pred[ok]]) if ok.any() else np.array([1.0, 100.0])
        lim = (vals.min() / 1.5, vals.max() * 1.5)
        ax.plot(lim, lim, color=ROLE["neutral"], lw=0.7, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lim)
        ax.set_ylim(min(lim[0], ax.get_ylim()[0]), lim[1])
        ax.set_xlabel("Reference volume (ml)")
        ax.set_ylabel("Predicted volume (ml)")
        ax.set_aspect("equal", adjustable="box")
        panel_label(ax, "a")

        bx.scatter(st["mean"], st["diff"], s=5, color=ROLE["ours"], alpha=0.7, lw=0)
        bx.axhline(0, color=ROLE["grid"], lw=0.6)
        spread = st["loa_hi"] - st["bias"] if np.isfinite(st["sd"]) else 0.0
        for y, name, ls in (
            (st["bias"], "bias", "-"),
            (st["loa_lo"], "−1.96 SD", "--"),
            (st["loa_hi"], "+1.96 SD", "--"),
        ):
            if not np.isfinite(y) or (name != "bias" and spread < 20):  # limits on the bias: label it once
                continue
            bx.axhline(y, color=ROLE["prediction"], lw=0.9, ls=ls)
            bx.text(
                1.01,
                y,
                f"{name}\n{y:+.1f}%",
                transform=bx.get_yaxis_transform(),
                fontsize=5.5,
                va="center",
                ha="left",
                color=ROLE["neutral"],
            )
        bx.set_xscale("log")
        _plain_log_ticks(bx.xaxis, *bx.get_xlim())
        reach = max([210.0] + [abs(v) + 25 for v in (st["loa_lo"], st["loa_hi"]) if np.isfinite(v)])
        bx.set_ylim(-reach, reach)
        bx.set_yticks([t for t in (-300, -200, -100, 0, 100, 200, 300) if abs(t) < reach])
        bx.set_xlabel("Mean of predicted and reference volume (ml)")
        bx.set_ylabel("Difference, predicted − reference (% of mean)")
        panel_label(bx, "b")
    return fig, {k: v for k, v in st.items() if k not in ("mean", "diff")}


def _plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Labels on a log ``axis`` spanning ``lo``..``hi`` as plain numbers at the major ticks only, spaced so
    they cannot run together (matplotlib labels the minor ticks of a short span, "3×10²4×10²"): every
    integer multiple of a power of ten within half a decade, 1, 2 and 5 times it within two decades, the
    powers of ten alone over a longer span."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = np.log10(hi / lo) if lo > 0 and hi > lo else np.inf
    subs: list[float] = (
        [float(k) for k in range(1, 10)] if decades <= 0.5 else [1.0, 2.0, 5.0] if decades <= 2 else [1.0]
    )
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
