"""Training randomness in a table and a figure: each seed's external-test headline numbers beside the primary
model's bootstrap CI (``analysis/seed_metrics.csv`` and ``analysis/seed_variance.csv``, written by
:func:`amt_core.pipeline.seeds.seed_variance`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from amt_core.pipeline.seeds import LABELS, note_of
from amt_core.plots.style import ROLE, new_figure, panel_label, plot_style
from amt_core.plots.tables import ci_text

#: metrics on the [0, 1] scale (panel a); the rest (FP/scan) get a panel of their own
UNIT_SCALE = ("dice", "iou", "precision", "recall", "sensitivity", "cpm")


def seed_variance_table(
    spread: pd.DataFrame, per_seed: pd.DataFrame, operating_iou: float = 0.5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, display)``: the spread table with one ``seed_<k>`` column per seed (CSV), and its
    presentation form (Markdown): per metric the run's seed with its bootstrap CI, every other seed, the
    between-seed mean ± SD, range, and range / CI width and SD / bootstrap SE; "not estimable (one seed)"
    where the spread is not estimable."""
    values = per_seed.set_index("seed")
    seeds = [int(k) for k in values.index]
    table = spread.copy()
    for k in seeds:
        table[f"seed_{k}"] = [float(values.at[k, m]) for m in table["metric"]]
    rows = []
    for r in table.to_dict("records"):
        primary = int(r["primary_seed"])
        row = {
            "Metric": LABELS.get(r["metric"], r["metric"]).format(iou=operating_iou),
            f"Seed {primary} (the run's), {r['ci_level']:.0%} bootstrap CI": f"{_num(r['primary'], 3)} ({ci_text(r['ci_lo'], r['ci_hi'], 3)})",
        }
        row |= {f"Seed {k}": _num(r[f"seed_{k}"], 3) for k in seeds if k != primary}
        if note_of(r):
            gone = "not estimable (one seed)" if r["n_seeds"] <= 1 else "not estimable"
            row |= {
                "Between seeds, mean ± SD": gone,
                "Range": "–",
                "Range / CI width": "–",
                "SD / bootstrap SE": "–",
            }
        else:
            row |= {
                "Between seeds, mean ± SD": f"{r['seed_mean']:.3f} ± {r['seed_sd']:.3f}",
                "Range": ci_text(r["seed_min"], r["seed_max"], 3),
                "Range / CI width": _num(r["range_over_ci_width"], 2),
                "SD / bootstrap SE": _num(r["sd_over_se"], 2),
            }
        rows.append(row)
    return table, pd.DataFrame(rows)


def read_seed_variance(analysis_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, float] | None:
    """``(spread, per_seed, operating_iou)`` from ``analysis/seed_variance.csv``, ``seed_metrics.csv`` and
    ``seed_variance.json``; None when the run has none of them (a run from before seed variance)."""
    import json

    ana = Path(analysis_dir)
    paths = [ana / "seed_variance.csv", ana / "seed_metrics.csv", ana / "seed_variance.json"]
    if not any(p.is_file() for p in paths):
        return None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not found beside the other seed-variance files: rerun 03_evaluate"
        )
    info = json.loads(paths[2].read_text())
    return pd.read_csv(paths[0]), pd.read_csv(paths[1]), float(info.get("operating_iou", 0.5))


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else "–"


def plot_seed_variance(spread: pd.DataFrame, per_seed: pd.DataFrame, operating_iou: float = 0.5):
    """Per metric (one row each): the run's model (filled square) with its bootstrap CI (bar), every other
    seed (open circles) and the between-seed mean (vertical tick); (a) the metrics on the [0, 1] scale,
    (b) FP/scan. With one seed the circles are absent and a title says the spread is not estimable (better:
    draw it only with two seeds or more)."""
    panels = [
        [m for m in spread["metric"] if m in UNIT_SCALE],
        [m for m in spread["metric"] if m not in UNIT_SCALE],
    ]
    panels = [p for p in panels if p]
    primary = int(spread["primary_seed"].iloc[0])
    others = per_seed[per_seed["seed"] != primary]
    rows = spread.set_index("metric")
    with plot_style():
        fig, axes = new_figure(
            "double",
            aspect=0.32,
            ncols=len(panels),
            gridspec_kw={"width_ratios": [len(p) + 1.5 for p in panels]} if len(panels) > 1 else {},
        )
        axes = np.atleast_1d(axes)
        for k, (ax, metrics) in enumerate(zip(axes, panels, strict=True)):
            y = np.arange(len(metrics))[::-1]
            for yi, m in zip(y, metrics, strict=True):
                r = rows.loc[m]
                if np.isfinite(r["ci_lo"]) and np.isfinite(r["ci_hi"]):
                    ax.plot(
                        [r["ci_lo"], r["ci_hi"]],
                        [yi, yi],
                        color=ROLE["ours"],
                        lw=1.4,
                        solid_capstyle="butt",
                        label=f"seed {primary} (the run's), {r['ci_level']:.0%} bootstrap CI",
                    )
                ax.plot(
                    [r["primary"]],
                    [yi],
                    "s",
                    color=ROLE["ours"],
                    ms=4,
                    mec="white",
                    mew=0.4,
                    label=f"seed {primary} (the run's)",
                )
                if len(others):
                    vals = others[m].astype(float).to_numpy()
                    offs = np.linspace(-0.18, 0.18, len(vals)) if len(vals) > 1 else np.zeros(1)
                    ax.plot(
                        vals,
                        yi + offs,
                        "o",
                        mfc="none",
                        mec=ROLE["prediction"],
                        ms=3.5,
                        mew=0.9,
                        label="other seeds",
                    )
                if np.isfinite(r["seed_mean"]) and not note_of(r):
                    ax.plot(
                        [r["seed_mean"]] * 2,
                        [yi - 0.22, yi + 0.22],
                        color=ROLE["neutral"],
                        lw=0.8,
                        label="mean over seeds",
                    )
            ax.set_yticks(y)
            ax.set_yticklabels([LABELS.get(m, m).format(iou=operating_iou) for m in metrics])
            ax.set_ylim(-0.7, len(metrics) - 0.3)
            ax.tick_params(axis="y", length=0)
            ax.spines["left"].set_visible(False)
            ax.grid(True, axis="x")
            ax.set_xlabel(
                "External test (per-scan mean or lesion-wise)"
                if metrics[0] in UNIT_SCALE
                else "False positives per scan"
            )
            if len(panels) > 1:
                panel_label(ax, "ab"[k])
        if len(per_seed) < 2:  # the caption tells the rest; this must not pass for a spread of zero
            fig.suptitle("Between-seed spread not estimable (one seed)", fontsize=7.5, fontweight="bold")
        legend = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        fig.legend(
            list(legend.values()), list(legend), loc="outside lower center", ncol=4, fontsize=6, frameon=False
        )
    return fig
