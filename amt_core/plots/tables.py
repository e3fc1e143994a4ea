"""Manuscript tables: every table saved as CSV (full precision, for machines) and Markdown (rounded,
for the report and the manuscript), atomically.

The builders take the saved analysis tables of a run (see :mod:`amt_core.pipeline.analysis`) and return
presentation DataFrames; :func:`write_table` writes both files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from amt_core.atomic import write_csv, write_text
from amt_core.registry import METRIC_LABELS, PUBLISHED, SEG_METRICS


def _fmt(value, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 10:
            return str(int(value))
        return f"{value:.{digits}f}"
    text = str(value)
    return "–" if text in ("nan", "<NA>", "None") else text.replace("|", "\\|")


def to_markdown(frame: pd.DataFrame, digits: int = 3, title: str | None = None) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned, ``digits`` decimals)."""
    cols = [str(c) for c in frame.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        for c in frame.columns
    ]
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    for row in frame.itertuples(index=False):
        lines.append(
            "| " + " | ".join(_fmt(v.item() if hasattr(v, "item") else v, digits) for v in row) + " |"
        )
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame,
    out_dir: str | Path,
    name: str,
    *,
    title: str | None = None,
    digits: int = 3,
    display: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``out_dir/name.csv`` (``frame``, full precision) and ``out_dir/name.md`` (``display`` if
    given: a presentation form with 'mean (CI)' texts, else ``frame`` rounded); returns both paths."""
    out = Path(out_dir)
    csv = write_csv(out / f"{name}.csv", frame)
    shown = frame if display is None else display
    md = write_text(out / f"{name}.md", to_markdown(shown, digits=digits, title=title))
    return [csv, md]


def ci_text(lo: float, hi: float, digits: int = 2) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return "–"
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def segmentation_table(
    ci: pd.DataFrame, cluster_ci: pd.DataFrame | None = None, published: Mapping[str, float] = PUBLISHED
) -> pd.DataFrame:
    """Per-scan mean of each metric with its CI (scan bootstrap, and institution-cluster bootstrap
    when given) beside the published external-test value.

    ``ci`` and ``cluster_ci`` have the columns of :func:`amt_core.evaluation.bootstrap.bootstrap_means`
    (metric, mean, ci_lo, ci_hi, n).
    """
    ci = ci.set_index("metric")
    rows = []
    for metric in SEG_METRICS:
        if metric not in ci.index:
            continue
        r = ci.loc[metric]
        row: dict[str, Any] = {
            "metric": METRIC_LABELS.get(metric, metric),
            "n_scans": int(r.get("n", 0)),
            "mean": float(r["mean"]),
            "ci_lo": float(r["ci_lo"]),
            "ci_hi": float(r["ci_hi"]),
        }
        if cluster_ci is not None and metric in set(cluster_ci["metric"]):
            c = cluster_ci.set_index("metric").loc[metric]
            row["cluster_ci_lo"], row["cluster_ci_hi"] = float(c["ci_lo"]), float(c["ci_hi"])
            note = c.get("note", "")
            row["cluster_note"] = note if isinstance(note, str) else ""
        row["published"] = float(published.get(metric, float("nan")))
        row["difference"] = row["mean"] - row["published"]
        rows.append(row)
    return pd.DataFrame(rows)


def segmentation_markdown_frame(table: pd.DataFrame, ci_label: str = "95%") -> pd.DataFrame:
    """The presentation form of :func:`segmentation_table`: 'mean (95% CI)' columns (``ci_label``: the level)."""
    out = pd.DataFrame({"Metric": table["metric"], "n": table["n_scans"]})
    out[f"This run, mean ({ci_label} CI)"] = [
        f"{m:.3f} ({ci_text(lo, hi, 3)})"
        for m, lo, hi in zip(table["mean"], table["ci_lo"], table["ci_hi"], strict=False)
    ]
    if "cluster_ci_lo" in table:
        notes = table["cluster_note"] if "cluster_note" in table else [""] * len(table)
        out[f"Institution-cluster {ci_label} CI"] = [
            _not_estimable(note) if note else ci_text(lo, hi, 3)
            for lo, hi, note in zip(table["cluster_ci_lo"], table["cluster_ci_hi"], notes, strict=False)
        ]
    out["Published"] = table["published"]
    out["Difference"] = table["difference"]
    return out


def _not_estimable(note: str) -> str:
    """A table cell for an interval that was not computed: 'not estimable (3 institutions < 10)'."""
    import re

    m = re.search(r"(\d+) institution\(s\), fewer than the (\d+)", note)
    return f"not estimable ({m[1]} institutions < {m[2]})" if m else "not estimable"


def detection_table(
    froc_iou: pd.DataFrame,
    cpm: pd.DataFrame | None = None,
    iou_thresholds=(0.1, 0.3, 0.5),
    published: Mapping[str, float] = PUBLISHED,
) -> pd.DataFrame:
    """Detection operating points: reading B (fixed operating threshold, one row per IoU threshold) with
    sensitivity (Wilson and scan-bootstrap CIs) and FP/scan (bootstrap CI), and reading A's CPM per IoU
    threshold when given. ``froc_iou`` has the columns of the evaluation's ``froc_iou.csv``."""
    rows = []
    for thr in iou_thresholds:
        sel = froc_iou[(froc_iou["iou_threshold"] - thr).abs() < 1e-9]
        if sel.empty:
            continue
        r = sel.iloc[0]
        nan = float("nan")
        row = {
            "iou_threshold": thr,
            "sensitivity": float(r["sensitivity"]),
            "sens_wilson_lo": float(r.get("sensitivity_wilson_lo", nan)),
            "sens_wilson_hi": float(r.get("sensitivity_wilson_hi", nan)),
            "sens_boot_lo": float(r.get("sensitivity_ci_lo", nan)),
            "sens_boot_hi": float(r.get("sensitivity_ci_hi", nan)),
            "fp_per_scan": float(r["fp_per_scan"]),
            "fp_boot_lo": float(r.get("fp_per_scan_ci_lo", nan)),
            "fp_boot_hi": float(r.get("fp_per_scan_ci_hi", nan)),
        }
        for col in ("tp", "fn", "fp", "n_lesions", "n_scans"):
            if col in r.index:
                row[col] = int(r[col])
        if cpm is not None and not cpm.empty:
            c = cpm[(cpm["iou_threshold"] - thr).abs() < 1e-9]
            row["cpm"] = float(c["cpm"].iloc[0]) if not c.empty else float("nan")
            if "note" in c.columns and not c.empty:
                row["cpm_note"] = c["note"].iloc[0]
        if abs(thr - 0.5) < 1e-9:
            row["published_sensitivity"] = published.get("sensitivity_iou50", float("nan"))
            row["published_fp_per_scan"] = published.get("fp_per_scan_iou50", float("nan"))
        else:
            row["published_sensitivity"] = float("nan")
            row["published_fp_per_scan"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def detection_markdown_frame(
    table: pd.DataFrame, ci_label: str = "95%", overlap_label: str = "IoU ≥"
) -> pd.DataFrame:
    """The presentation form of :func:`detection_table` (``ci_label``: the intervals' level;
    ``overlap_label``: the hit criterion's overlap and sign, e.g. "IoU >")."""

    def opt(row, col):
        return row[col] if col in row.index else float("nan")

    rows = []
    for _, r in table.iterrows():
        published = (
            f"{r['published_sensitivity']:.2f} at {r['published_fp_per_scan']:.2f} FP/scan"
            if pd.notna(r.get("published_sensitivity"))
            else "–"
        )
        rows.append(
            {
                overlap_label: f"{r['iou_threshold']:g}",
                "Sensitivity": r["sensitivity"],
                f"Wilson {ci_label} CI": ci_text(opt(r, "sens_wilson_lo"), opt(r, "sens_wilson_hi"), 3),
                f"Bootstrap {ci_label} CI": ci_text(opt(r, "sens_boot_lo"), opt(r, "sens_boot_hi"), 3),
                f"FP/scan ({ci_label} CI)": f"{r['fp_per_scan']:.2f} ({ci_text(opt(r, 'fp_boot_lo'), opt(r, 'fp_boot_hi'), 2)})",
                "TP / lesions": (
                    f"{int(r['tp'])} / {int(r['n_lesions'])}"
                    if pd.notna(opt(r, "tp")) and pd.notna(opt(r, "n_lesions"))
                    else "–"
                ),
                "CPM (reading A)": _cpm_text(opt(r, "cpm"), r.get("cpm_note")),
                "Published": published,
            }
        )
    return pd.DataFrame(rows)


def _cpm_text(cpm: float, note) -> str:
    """The CPM cell: its value, and how it was read when the curve did not reach every FP/scan point."""
    from amt_core.evaluation.froc import REACH_INTERPOLATED

    if not pd.notna(cpm):
        return "–"
    return f"{cpm:.3f}" + (f" ({note})" if isinstance(note, str) and note != REACH_INTERPOLATED else "")


def p_display(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its p-value columns (``p_value``, ``p_adjusted``) as text: ``< 0.001``, never
    ``0.000`` (:func:`amt_core.evaluation.multiplicity.format_p`)."""
    from amt_core.evaluation.multiplicity import format_p

    out = table.copy()
    for col in ("p_value", "p_adjusted"):
        if col in out.columns:
            out[col] = [format_p(p) for p in out[col]]
    return out
