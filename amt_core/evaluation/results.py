"""The evaluation's result object: row tables, statistics, conventions; saved as CSV + one JSON summary.

``EvaluationResult`` holds pandas DataFrames:

- ``per_case`` (per_case.csv): one row per scan: case_id, institution_id, dice, iou, precision, recall,
  hd95_mm, msd_mm, ref/pred volumes (ml) and voxels, n_lesions, n_candidates, tp, fp, fn (operating IoU at
  the operating threshold);
- ``lesions`` (lesions.csv): one row per reference lesion: size, box, best IoU/Dice, ``hit`` and its match;
- ``candidates`` (candidates.csv): one row per candidate: size, box, confidence, best overlap, status
  ("tp", "fp", "extra", "below_threshold") and match;
- ``events`` (froc_events.csv): per scan and overlap threshold, the exact (d_tp, d_fp) gained at each
  candidate confidence; every FROC statistic is rebuilt from these, for any subset of scans;
- ``froc_confidence`` (froc_confidence.csv): reading A curves, each point with its confidence threshold;
- ``froc_points`` (froc_points.csv): reading A sensitivity at the FP/scan points and the CPM, with CIs;
- ``froc_iou`` (froc_iou.csv): reading B, one row per IoU threshold at the operating threshold;
- ``cis`` (cis.csv): mean of every per-scan metric with its bootstrap interval;
- ``tables``: further named tables (per-institution, sub-groups), saved as ``{name}.csv``;

and ``summary`` (summary.json): package versions, the full config, the conventions in words, counts, the
means, CPMs and the headline. ``load(save(r))`` gives back identical frames and summary.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core import registry
from amt_core.atomic import json_ready, write_csv, write_json
from amt_core.evaluation import froc
from amt_core.evaluation.config import EvalConfig

#: per-scan columns whose means get bootstrap intervals
MEAN_METRICS: tuple[str, ...] = registry.SEG_METRICS + (
    "hd95_mm",
    "msd_mm",
    "ref_volume_ml",
    "pred_volume_ml",
)
#: attribute -> file name of the fixed tables
FILES: dict[str, str] = {
    "per_case": "per_case.csv", "lesions": "lesions.csv", "candidates": "candidates.csv",
    "events": "froc_events.csv", "froc_confidence": "froc_confidence.csv", "froc_points": "froc_points.csv",
    "froc_iou": "froc_iou.csv", "cis": "cis.csv",
}  # fmt: skip


@dataclass
class EvaluationResult:
    """One evaluation: its row tables, the statistics computed from them, and ``summary`` (the config,
    the conventions in words, counts, means, CPMs and the headline).

    Build it with :func:`summarise` (or ``evaluate_predictions``); :meth:`save` / :meth:`load` round-trip
    it through a folder of CSV files and ``summary.json`` (the module docstring lists the files).
    :meth:`subset` recomputes every statistic for some scans. Derived values (``config``, ``means``,
    ``cpm``, ``headline``) are read from the tables and the summary, never stored twice.

    Attributes:
        per_case: one row per scan (segmentation metrics, volumes, tp/fp/fn at the operating IoU).
        lesions: one row per reference lesion (its best overlap and whether it is hit).
        candidates: one row per candidate (confidence, best overlap, status).
        events: per scan and overlap threshold, the (d_tp, d_fp) gained at each candidate confidence.
        froc_confidence: reading A, the confidence-swept FROC curves.
        froc_points: reading A at the FP/scan points and the CPM, with bootstrap intervals.
        froc_iou: reading B, one row per IoU threshold at the operating threshold.
        cis: the mean of each per-scan metric with its bootstrap interval.
        summary: the JSON summary (``summary.json``).
        tables: further named tables (per institution, sub-groups), saved as ``{name}.csv``.
    """

    per_case: pd.DataFrame
    lesions: pd.DataFrame
    candidates: pd.DataFrame
    events: pd.DataFrame
    froc_confidence: pd.DataFrame
    froc_points: pd.DataFrame
    froc_iou: pd.DataFrame
    cis: pd.DataFrame
    summary: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    # --- derived values ------------------------------------------------------------------------------
    @property
    def config(self) -> EvalConfig:
        return EvalConfig.from_dict(self.summary["config"])

    @property
    def n_scans(self) -> int:
        return len(self.per_case)

    @property
    def means(self) -> pd.Series:
        """Mean over scans of each per-scan metric (metric -> mean)."""
        return self.cis.set_index("metric")["mean"]

    @property
    def cpm(self) -> pd.Series:
        """Reading A's CPM per IoU threshold."""
        rows = self.froc_points[self.froc_points["point"] == "cpm"]
        return rows.set_index("iou_threshold")["sensitivity"]

    @property
    def headline(self) -> dict:
        """Reading B at the operating IoU (``config.operating_iou``): sensitivity, FP/scan and their intervals."""
        return dict(self.summary["headline"])

    def headline_text(self) -> str:
        h = self.headline
        if h.get("sensitivity") is None:
            return "no lesion: sensitivity undefined"
        return (
            f"sensitivity {h['sensitivity']:.2f} at {h['fp_per_scan']:.2f} FP/scan at IoU "
            f"{self.config.hit_criterion} {h['operating_iou']:.2f}"
        )

    def subset(self, case_ids) -> EvaluationResult:
        """The same evaluation restricted to some scans (statistics recomputed from the row tables)."""
        keep = set(case_ids)
        tables = {name: getattr(self, name) for name in ("per_case", "lesions", "candidates", "events")}
        tables = {k: v[v["case_id"].isin(keep)] for k, v in tables.items()}
        return summarise(tables, self.config)

    # --- files ---------------------------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write every table as CSV and ``summary.json`` into ``out_dir``, as one folder: it is written
        beside and swapped in whole. A non-empty ``out_dir`` is refused unless ``overwrite``."""
        from amt_core.atomic import check_output_dir, replacing_dir

        out = check_output_dir(out_dir, overwrite=overwrite, what="results folder", resumable=False)
        frames = {FILES[k]: getattr(self, k) for k in FILES} | {f"{k}.csv": v for k, v in self.tables.items()}
        with replacing_dir(out) as staging:
            for name, frame in frames.items():
                write_csv(staging / name, frame)
            schema = {
                name: [[str(c), str(t)] for c, t in frame.dtypes.items()] for name, frame in frames.items()
            }
            write_json(
                staging / "summary.json",
                {**self.summary, "files": schema, "extra_tables": sorted(self.tables)},
            )
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> EvaluationResult:
        """Read a folder written by :meth:`save` (columns get back their saved dtypes)."""
        out = Path(out_dir)
        path = out / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: give the --out folder of an `amt evaluate` run")
        summary = json.loads(path.read_text())
        try:
            EvalConfig.from_dict(summary.get("config") or {})
        except ValueError as exc:  # e.g. written before a setting was renamed: evaluate again
            raise ValueError(f"{path}: {exc}; evaluate the predictions again") from None
        schema = summary.pop("files")
        extra = summary.pop("extra_tables")
        read = {name: _read_csv(out / name, dict(schema[name])) for name in schema}
        return cls(
            **{k: read[v] for k, v in FILES.items()},
            summary=summary,
            tables={k: read[f"{k}.csv"] for k in extra},
        )


def _read_csv(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    text = [c for c, t in dtypes.items() if t in ("object", "str", "string")]
    # pandas 3 parses floats round-trip by default (and deprecates the option); pandas 2 needs asking
    exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    frame = pd.read_csv(
        path,
        keep_default_na=False,
        **exact,
        na_values={c: [""] if c in text else ["", "nan", "NaN"] for c in dtypes},
        dtype={c: str for c in text},
    )
    if list(frame.columns) != list(dtypes):
        raise ValueError(f"{path}: columns {list(frame.columns)} differ from summary.json's {list(dtypes)}")
    return frame.astype(dtypes)


def summarise(
    tables: dict[str, pd.DataFrame],
    config: EvalConfig | None = None,
    extra_tables: dict[str, pd.DataFrame] | None = None,
) -> EvaluationResult:
    """Every statistic of an evaluation from its row tables: means with bootstrap intervals, both FROC
    readings with their bands. Works for any subset of scans (the tables of those scans)."""
    config = config or EvalConfig()
    from amt_core.evaluation.bootstrap import (
        bootstrap_means,
        ci_from_replicates,
        cluster_problem,
        resample_weights,
    )

    per_case = tables["per_case"].reset_index(drop=True)
    n = len(per_case)
    if n == 0:
        raise ValueError("no scans to summarise")
    _check_same_matching(tables["events"], config)
    clusters = None
    if config.cluster_bootstrap:
        clusters = per_case["institution_id"].to_numpy()
    note = cluster_problem(clusters) if config.n_bootstrap else None
    if config.n_bootstrap and n < 2:  # every resample is the one scan: an interval of zero width
        note = "not estimable: 1 scan (every resample is that scan: no spread to estimate)"
    # too few institutions for a cluster interval: means only, every interval NaN, and the reason recorded
    weights = (
        resample_weights(n, config.n_bootstrap, seed=config.seed, clusters=clusters)
        if config.n_bootstrap and note is None
        else None
    )

    def ci(stat, point):
        jack = stat(froc.jackknife_weights(n, clusters)) if config.ci_method == "bca" else None
        return ci_from_replicates(
            stat(weights), point, ci_level=config.ci_level, ci_method=config.ci_method, jackknife=jack
        )

    means = per_case[list(MEAN_METRICS)].astype(float)
    if weights is not None:
        cis = bootstrap_means(
            means,
            n_bootstrap=config.n_bootstrap,
            seed=config.seed,
            clusters=clusters,
            ci_method=config.ci_method,
            ci_level=config.ci_level,
            weights=weights,
        )
    else:
        cis = pd.DataFrame(
            {
                "metric": list(MEAN_METRICS),
                "mean": means.mean().to_numpy(),
                "ci_lo": np.nan,
                "ci_hi": np.nan,
                "n": means.notna().sum().to_numpy(),
                "note": note or ("no intervals: n_bootstrap is 0" if not config.n_bootstrap else None),
            }
        )

    scan_of = {c: k for k, c in enumerate(per_case["case_id"])}
    events = tables["events"]
    events = events[events["case_id"].isin(scan_of)].assign(scan=events["case_id"].map(scan_of))
    n_lesions = per_case["n_lesions"].to_numpy()
    ci_or_none = ci if weights is not None else None
    curves, points = froc.reading_a(
        events, n_lesions, config.froc_iou_thresholds, config.fp_points, ci=ci_or_none
    )
    # reading B: each scan's (tp, fp) at the operating threshold = its increments at or above it
    sweep = config.reading_b_thresholds  # the sweep with the operating IoU in it: the headline always exists
    column = {round(t, 9): k for k, t in enumerate(sweep)}
    on = events[events["confidence"] >= config.operating_point]
    col = on["iou_threshold"].round(9).map(column)
    on, col = on[col.notna()], col[col.notna()].astype(int).to_numpy()
    tp, fp = np.zeros((n, len(column))), np.zeros((n, len(column)))
    np.add.at(tp, (on["scan"].to_numpy(), col), on["d_tp"].to_numpy())
    np.add.at(fp, (on["scan"].to_numpy(), col), on["d_fp"].to_numpy())
    iou_table = froc.reading_b(
        tp, fp, n_lesions, sweep, config.operating_point, ci=ci_or_none, ci_level=config.ci_level
    )
    summary = _summary(per_case, cis, points, iou_table, config, note)
    keep = set(per_case["case_id"])
    return EvaluationResult(
        per_case=per_case,
        lesions=tables["lesions"][tables["lesions"]["case_id"].isin(keep)].reset_index(drop=True),
        candidates=tables["candidates"][tables["candidates"]["case_id"].isin(keep)].reset_index(drop=True),
        events=tables["events"][tables["events"]["case_id"].isin(keep)].reset_index(drop=True),
        froc_confidence=curves,
        froc_points=points,
        froc_iou=iou_table,
        cis=cis,
        summary=summary,
        tables=dict(extra_tables or {}),
    )


def _check_same_matching(events: pd.DataFrame, config: EvalConfig) -> None:
    """The row tables carry the per-scan matching of the config they were evaluated with (the lesions'
    ``hit``, the per-scan tp/fp and the events at its overlap thresholds). Summarising them with a config
    that matches at other overlaps would read thresholds that were never matched and report zeros: refused."""
    if events.empty:
        return
    have = set(np.round(events["iou_threshold"].to_numpy(float), 9))
    missing = sorted(t for t in config.match_thresholds if round(t, 9) not in have)
    if missing:
        raise ValueError(
            f"the row tables were evaluated without the overlap thresholds {missing} that this config "
            "summarises at (operating_iou, iou_sweep, froc_iou_thresholds): evaluate the scans with the "
            "same EvalConfig (evaluate_case / evaluate_folder) that you pass to summarise"
        )


def _summary(per_case, cis, points, iou_table, config: EvalConfig, ci_note: str | None = None) -> dict:
    from amt_core.evaluation.bootstrap import MIN_BOOTSTRAP_SCANS
    from amt_core.provenance import package_versions

    head = iou_table[np.isclose(iou_table["iou_threshold"], config.operating_iou)]
    headline = head.iloc[0].to_dict() if len(head) else {}
    cpm = points[points["point"] == "cpm"]
    return json_ready(
        {
            "version": package_versions(
                ("numpy", "scipy", "pandas", "connected-components-3d", "statsmodels")
            ),
            "config": config.to_dict(),
            "conventions": config.describe(),
            "fingerprint": config.fingerprint(),
            "n_scans": len(per_case),
            "n_institutions": int(per_case["institution_id"].nunique()),
            "bootstrap": {
                "unit": "institution" if config.cluster_bootstrap else "scan",
                "n_bootstrap": config.n_bootstrap,
                "estimable": bool(config.n_bootstrap) and ci_note is None,
                "note": ci_note or ("" if config.n_bootstrap else "no intervals: n_bootstrap is 0"),
                "caution": (
                    f"{len(per_case)} scans: a bootstrap of fewer than {MIN_BOOTSTRAP_SCANS} scans under-covers "
                    "(its intervals are too narrow)"
                    if config.n_bootstrap and ci_note is None and len(per_case) < MIN_BOOTSTRAP_SCANS
                    else ""
                ),
            },
            "n_lesions": int(per_case["n_lesions"].sum()),
            "n_candidates": int(per_case["n_candidates"].sum()),
            "means": {
                r["metric"]: {"mean": r["mean"], "ci_lo": r["ci_lo"], "ci_hi": r["ci_hi"]}
                for r in cis.to_dict("records")
            },
            "cpm": {
                f"{r['iou_threshold']:g}": {"cpm": r["sensitivity"], "ci_lo": r["ci_lo"], "ci_hi": r["ci_hi"]}
                for r in cpm.to_dict("records")
            },
            "headline": {
                "operating_iou": headline.get("iou_threshold"),
                **{
                    k: headline.get(k)
                    for k in (
                        "threshold",
                        "sensitivity",
                        "fp_per_scan",
                        "sensitivity_wilson_lo",
                        "sensitivity_wilson_hi",
                        "sensitivity_ci_lo",
                        "sensitivity_ci_hi",
                        "fp_per_scan_ci_lo",
                        "fp_per_scan_ci_hi",
                    )
                },
            },
        }
    )
