"""The participant flow diagram (STARD 2015 / TRIPOD+AI style): the scans of the case table, those
excluded, and the train / tune / test partitions with their patients and institutions, and how many of
each evaluated partition were scored. Drawn from the case table (and the evaluation's per-scan rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from amt_core import registry


def flow_counts(
    cases: pd.DataFrame,
    evaluated: Mapping[str, int] | None = None,
    exclusions: Mapping[str, int] | None = None,
) -> dict:
    """The numbers of the flow diagram.

    ``cases``: the case table (one row per scan). ``evaluated``: scans scored per split (e.g. rows of
    ``evaluation/{split}/per_case.csv``); splits not given were not evaluated. ``exclusions``: reason ->
    scans excluded before the case table (the case table holds included scans only, so without it the
    diagram says that no exclusion is recorded). Returns ``{"total": {...}, "excluded": {...},
    "splits": {split: {scans, patients, institutions, institutions_only_here, male, female, evaluated}}}``.
    """

    def block(part: pd.DataFrame) -> dict:
        return {
            "scans": int(len(part)),
            "patients": int(part["patient_id"].nunique()),
            "institutions": int(part["institution_id"].nunique()),
        }

    excluded = {str(k): int(v) for k, v in (exclusions or {}).items()}
    out: dict[str, Any] = {
        "total": block(cases),
        "excluded": excluded,
        "eligible": int(len(cases)) + sum(excluded.values()),
        "splits": {},
    }
    for split in registry.SPLITS:
        part = cases[cases["split"] == split]
        if evaluated and int(evaluated.get(split, 0)) > len(part):
            raise ValueError(
                f"{evaluated[split]} {split} scans evaluated, but the case table has {len(part)}"
            )
        others = set(cases.loc[cases["split"] != split, "institution_id"])
        out["splits"][split] = {
            **block(part),
            "institutions_only_here": int(len(set(part["institution_id"]) - others)),
            "male": int((part["sex"] == "M").sum()) if "sex" in part else 0,
            "female": int((part["sex"] == "F").sum()) if "sex" in part else 0,
            "evaluated": None if evaluated is None or split not in evaluated else int(evaluated[split]),
        }
    return out


#: what each partition is for (the study's words)
ROLES = {"train": "Training", "tune": "Tuning (model selection)", "test": "External test"}


def plot_flow(counts: dict):
    """Boxes and arrows: eligible scans -> exclusions -> the case table -> one box per partition ->
    scans evaluated. Text only from ``counts`` (:func:`flow_counts`)."""
    from matplotlib.patches import FancyBboxPatch

    from amt_core.plots.style import new_figure, plot_style

    def box(ax, x, y, text, w=0.28, h=0.16, face="#f3f3f3"):
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                boxstyle="round,pad=0.005,rounding_size=0.01",
                facecolor=face,
                edgecolor="#444444",
                linewidth=0.7,
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=6)

    def arrow(ax, x0, y0, x1, y1):
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 0.7, "shrinkA": 0, "shrinkB": 0},
        )

    t = counts["total"]
    with plot_style():
        fig, ax = new_figure("double", aspect=0.62)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
        box(ax, 0.5, 0.92, f"Scans assessed for eligibility\nn = {counts['eligible']}", w=0.34, h=0.1)
        reasons = counts["excluded"]
        text = (
            "Excluded: none recorded\n(the case table lists included scans only)"
            if not reasons
            else f"Excluded (n = {sum(reasons.values())})\n"
            + "\n".join(f"{k}: {v}" for k, v in reasons.items())
        )
        arrow(ax, 0.5, 0.87, 0.5, 0.73)
        ax.plot([0.5, 0.66], [0.8, 0.8], color="#444444", lw=0.7)
        box(ax, 0.82, 0.8, text, w=0.32, h=0.1, face="#fbeee6")
        box(
            ax,
            0.5,
            0.66,
            f"Case table: {_n(t['scans'], 'scan')}, {_n(t['patients'], 'patient')},\n"
            f"{_n(t['institutions'], 'institution')}",
            w=0.44,
            h=0.12,
        )
        xs = {"train": 0.17, "tune": 0.5, "test": 0.83}
        ax.plot([0.5, 0.5], [0.6, 0.53], color="#444444", lw=0.7)
        ax.plot([min(xs.values()), max(xs.values())], [0.53, 0.53], color="#444444", lw=0.7)
        for split, x in xs.items():
            s = counts["splits"][split]
            unstated = s["scans"] - s["male"] - s["female"]  # sex: the counts add up to the scans
            arrow(ax, x, 0.53, x, 0.46)
            box(
                ax,
                x,
                0.36,
                f"{ROLES[split]}\n{_n(s['scans'], 'scan')}, {_n(s['patients'], 'patient')}\n"
                f"{_n(s['institutions'], 'institution')} ({s['institutions_only_here']} only here)\n"
                f"{s['male']} M / {s['female']} F" + (f" / {unstated} not stated" if unstated else ""),
                w=0.3,
                h=0.2,
            )
            if s["evaluated"] is not None:
                arrow(ax, x, 0.26, x, 0.19)
                missing = s["scans"] - s["evaluated"]
                box(
                    ax,
                    x,
                    0.12,
                    f"Evaluated: {_n(s['evaluated'], 'scan')}\nnot evaluated: {missing}",
                    w=0.3,
                    h=0.12,
                    face="#e6f0fa",
                )
    return fig


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
