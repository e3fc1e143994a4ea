"""Training randomness: the model trained once per seed on the same cohort, and the spread of the external
test's headline numbers between seeds, beside the primary model's bootstrap intervals.

A bootstrap interval resamples the test scans of *one* trained model: it says how the numbers would move
with another sample of test patients, not how they would move had the same data trained another model
(initial weights, patch sampling and augmentation all follow the seed). ``seeds: [0, 1, 2]`` in the params
trains every other seed into ``RUN/seeds/seed_<k>/train/`` (:func:`train_seeds`, 02_train); the ``seed``
model stays the run's model at ``RUN/train/`` and everything else in the run evaluates it.
:func:`seed_variance` (03_evaluate, after the statistics) predicts and evaluates the external test with each
other seed's selected checkpoint (same ``EvalConfig`` as the primary) and writes to ``RUN/analysis/``:

- ``seed_metrics.csv``: one row per seed: the headline metrics (:data:`SEED_METRICS`: per-scan mean Dice,
  IoU, precision, recall; lesion sensitivity and FP/scan at the operating point; reading A's CPM, both at
  the operating IoU) and whether its training completed;
- ``seed_variance.csv``: one row per metric: the primary's value and its bootstrap CI (read from
  ``seg_ci.csv``, ``operating_points.csv``, ``cpm.csv``, never recomputed), the between-seed mean, SD (with
  a chi-square interval: with three seeds the SD itself is rough), min, max and range, and two ratios: the
  SD over the bootstrap SE implied by the CI's width, and the range over the CI's width;
- ``seed_variance.json``: the settings, what each interval describes, and one sentence per metric.

With one seed (``seeds`` empty or ``[seed]``) the files are still written, as the institution-cluster
bootstrap below :data:`~amt_core.evaluation.bootstrap.MIN_CLUSTERS` is: the values, NaN spread, and a
``note`` starting "not estimable" (``estimable: false`` in the JSON).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core.atomic import write_csv, write_json
from amt_core.layout import RunLayout

#: the headline metrics compared between seeds, in table order
SEED_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "sensitivity", "fp_per_scan", "cpm")
#: their labels ({iou}: the operating IoU)
LABELS: dict[str, str] = {
    "dice": "Dice",
    "iou": "IoU",
    "precision": "Precision",
    "recall": "Recall",
    "sensitivity": "Sensitivity at IoU ≥ {iou:g}",
    "fp_per_scan": "FP/scan at IoU ≥ {iou:g}",
    "cpm": "CPM at IoU ≥ {iou:g} (reading A)",
}
ONE_SEED = (
    "not estimable: one seed (the model was trained once; list more seeds, seed among them, in the "
    "params' seeds, e.g. [0, 1, 2], to retrain it with others)"
)
#: what each interval describes (the report and seed_variance.json say it in these words)
DESCRIBES = {
    "bootstrap": "the primary model's bootstrap CI resamples the external-test scans and so describes how the "
    "numbers would vary with another sample of test patients, for this one trained model",
    "seeds": "the between-seed spread retrains the same model on the same cohort with other seeds (initial "
    "weights, patch sampling, augmentation) and so describes the training's randomness, which no "
    "bootstrap of the test scans contains",
}
#: relative tolerance when checking that RUN/analysis belongs to RUN/evaluation/test
_TOL = 1e-9


def other_seeds(seeds: Sequence[int], seed: int) -> list[int]:
    """The seeds to train besides ``seed`` (in the given order), after validating ``seeds`` as the
    ``seeds`` parameter; raises :class:`~amt_core.pipeline.params.ParameterError`."""
    from amt_core.pipeline.params import ParameterError, validate

    problems = validate({"seed": seed, "seeds": seeds}, allowed=("seed", "seeds"))
    if problems:
        raise ParameterError("invalid parameters:\n  - " + "\n  - ".join(problems))
    return [int(k) for k in seeds if k != seed]


def train_seeds(
    layout: RunLayout,
    seeds: Sequence[int],
    seed: int,
    *,
    preset: str,
    train_overrides: Mapping | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train the model once per seed of ``seeds`` other than ``seed`` (the run's own model, trained into
    ``RUN/train`` by the cell before) into ``RUN/seeds/seed_<k>/train``; returns those folders.

    Every seed uses the same cohort, ``preset`` and ``train_overrides`` as the primary. Each folder is
    replaced whole (built beside, swapped in); with ``resume`` in ``train_overrides`` a folder holding a
    ``last.pt`` of the same settings is continued instead (a finished one is then kept as it is). Seed
    folders of seeds no longer listed are removed (with one seed: the whole ``RUN/seeds``).
    """
    from amt_core.model.train import train

    others = other_seeds(seeds, seed)
    overrides = dict(train_overrides or {})
    resume = bool(overrides.pop("resume", False))
    overrides.pop("overwrite", None)
    _remove_seed_folders(layout, keep=others)
    out = []
    for k in others:
        folder = layout.seed_train_dir(k)
        cont = resume and (folder / "last.pt").is_file()
        out.append(
            train(
                layout.cases_csv,
                folder,
                preset=preset,
                seed=k,
                progress=progress,
                resume=cont,
                overwrite=not cont,
                **overrides,
            )
        )
    return out


def _remove_seed_folders(layout: RunLayout, keep: Sequence[int]) -> None:
    """Delete ``RUN/seeds/seed_<k>`` for every k not in ``keep`` (``RUN/seeds`` itself when nothing is kept);
    each is renamed aside first (a name :func:`amt_core.atomic.remove_stale_temps` knows), so a killed
    deletion leaves a hidden temporary, never half a seed folder."""
    import os
    import secrets

    stale = [layout.seed_dir(k) for k in layout.seed_numbers() if k not in set(keep)]
    if not keep and layout.seeds_dir.exists():
        stale = [layout.seeds_dir]
    for folder in stale:
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
        os.replace(folder, aside)
        shutil.rmtree(aside)


# --- the spread ---------------------------------------------------------------------------------------
def seed_metrics(summary: Mapping, operating_iou: float) -> dict[str, float]:
    """The :data:`SEED_METRICS` of one evaluation's ``summary.json`` (NaN where undefined, e.g. no lesion)."""

    def num(value) -> float:
        return float("nan") if value is None else float(value)

    means = summary.get("means") or {}
    head = summary.get("headline") or {}
    if head.get("operating_iou") is not None and not math.isclose(head["operating_iou"], operating_iou):
        raise ValueError(
            f"the evaluation's headline is at IoU {head['operating_iou']}, not the operating IoU "
            f"{operating_iou}: evaluate with the same EvalConfig (operating_iou)"
        )
    cpm = (summary.get("cpm") or {}).get(f"{operating_iou:g}") or {}
    out = {m: num((means.get(m) or {}).get("mean")) for m in ("dice", "iou", "precision", "recall")}
    return out | {
        "sensitivity": num(head.get("sensitivity")),
        "fp_per_scan": num(head.get("fp_per_scan")),
        "cpm": num(cpm.get("cpm")),
    }


def primary_intervals(analysis_dir: str | Path, operating_iou: float) -> pd.DataFrame:
    """The primary model's bootstrap CIs of :data:`SEED_METRICS` as :func:`amt_core.pipeline.analysis.analyse`
    saved them (``seg_ci.csv``, ``operating_points.csv``, ``cpm.csv``): columns metric, value, ci_lo, ci_hi."""
    ana = Path(analysis_dir)
    paths = {name: ana / f"{name}.csv" for name in ("seg_ci", "operating_points", "cpm")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not found: the seed spread is read beside the primary "
            "model's statistics; run 03_evaluate's statistics cell (analyse) first"
        )
    seg = pd.read_csv(paths["seg_ci"]).set_index("metric")
    rows = [
        {"metric": m, "value": seg.at[m, "mean"], "ci_lo": seg.at[m, "ci_lo"], "ci_hi": seg.at[m, "ci_hi"]}
        for m in ("dice", "iou", "precision", "recall")
        if m in seg.index
    ]
    ops = _at_iou(pd.read_csv(paths["operating_points"]), operating_iou, paths["operating_points"])
    if ops is not None:
        for m in ("sensitivity", "fp_per_scan"):
            rows.append(
                {
                    "metric": m,
                    "value": ops[m],
                    "ci_lo": ops.get(f"{m}_ci_lo", np.nan),
                    "ci_hi": ops.get(f"{m}_ci_hi", np.nan),
                }
            )
    cpm = _at_iou(pd.read_csv(paths["cpm"]), operating_iou, paths["cpm"])
    if cpm is not None:
        rows.append({"metric": "cpm", "value": cpm["cpm"], "ci_lo": cpm["ci_lo"], "ci_hi": cpm["ci_hi"]})
    return pd.DataFrame(rows, columns=["metric", "value", "ci_lo", "ci_hi"]).astype(
        {"value": float, "ci_lo": float, "ci_hi": float}
    )


def _at_iou(table: pd.DataFrame, iou: float, path: Path) -> pd.Series | None:
    if "iou_threshold" not in table:
        raise ValueError(f"{path}: no iou_threshold column; not a table written by analyse")
    row = table[np.isclose(table["iou_threshold"].astype(float), iou)]
    return row.iloc[0] if len(row) else None


def spread_table(
    per_seed: pd.DataFrame, intervals: pd.DataFrame, *, primary_seed: int, ci_level: float = 0.95
) -> pd.DataFrame:
    """One row per metric of ``per_seed`` (one row per seed: ``seed`` and the metric columns): the primary
    seed's value with its bootstrap CI from ``intervals`` (metric, ci_lo, ci_hi; copied as they are), and the
    between-seed n, mean, SD (ddof 1) with its chi-square ``ci_level`` interval, min, max, range, the primary
    minus the seed mean, the CI's width, the SE that width implies (width / 2z), SD / that SE and range /
    width. Fewer than two seeds with a value: NaN spread and a ``note`` saying why."""
    from scipy.stats import chi2, norm

    if primary_seed not in set(per_seed["seed"]):
        raise ValueError(f"the primary seed {primary_seed} has no row among seeds {list(per_seed['seed'])}")
    ci = intervals.set_index("metric")
    z = float(norm.ppf(0.5 + ci_level / 2))
    primary = per_seed.set_index("seed").loc[primary_seed]
    rows = []
    for metric in (m for m in SEED_METRICS if m in per_seed.columns):
        values = per_seed[metric].astype(float).to_numpy()
        finite = values[np.isfinite(values)]
        n = len(finite)
        lo = float(ci.at[metric, "ci_lo"]) if metric in ci.index else np.nan
        hi = float(ci.at[metric, "ci_hi"]) if metric in ci.index else np.nan
        row = {
            "metric": metric,
            "n_seeds": n,
            "primary_seed": int(primary_seed),
            "primary": float(primary[metric]),
            "ci_lo": lo,
            "ci_hi": hi,
            "ci_level": ci_level,
        }
        nan = float("nan")
        row |= dict.fromkeys(
            (
                "seed_mean",
                "seed_sd",
                "seed_sd_ci_lo",
                "seed_sd_ci_hi",
                "seed_min",
                "seed_max",
                "seed_range",
                "primary_minus_mean",
            ),
            nan,
        )
        if n:
            row |= {
                "seed_mean": float(finite.mean()),
                "seed_min": float(finite.min()),
                "seed_max": float(finite.max()),
            }
        if n >= 2:
            sd = float(finite.std(ddof=1))
            row |= {
                "seed_sd": sd,
                "seed_range": row["seed_max"] - row["seed_min"],
                "seed_sd_ci_lo": sd * math.sqrt((n - 1) / chi2.ppf(0.5 + ci_level / 2, n - 1)),
                "seed_sd_ci_hi": sd * math.sqrt((n - 1) / chi2.ppf(0.5 - ci_level / 2, n - 1)),
                "primary_minus_mean": row["primary"] - row["seed_mean"],
            }
        width = hi - lo
        row["ci_width"] = width
        row["bootstrap_se"] = width / (2 * z)
        with np.errstate(divide="ignore", invalid="ignore"):
            row["sd_over_se"] = float(np.divide(row["seed_sd"], row["bootstrap_se"]))
            row["range_over_ci_width"] = float(np.divide(row["seed_range"], width))
        row["note"] = (
            ONE_SEED if len(values) < 2 else f"not estimable: {n} seed(s) with a value" if n < 2 else ""
        )
        rows.append(row)
    return pd.DataFrame(rows)


def note_of(row: Mapping) -> str:
    """A row's ``note`` ('' when there is none, also when a CSV reader made it NaN)."""
    note = row.get("note")
    return note if isinstance(note, str) else ""


def sentence(row: Mapping, operating_iou: float = 0.5) -> str:
    """One plain sentence for a row of :func:`spread_table`."""
    label = LABELS.get(row["metric"], row["metric"]).format(iou=operating_iou)
    level = f"{row['ci_level']:.0%}"
    boot = (
        f"its {level} bootstrap CI over the test scans is {row['ci_lo']:.3f}–{row['ci_hi']:.3f}"
        if np.isfinite(row["ci_lo"])
        else "its bootstrap CI was not computed"
    )
    if note_of(row):
        return f"{label}: {row['primary']:.3f} for seed {row['primary_seed']}, {boot}; between seeds {note_of(row)}."
    ratio = ""
    if np.isfinite(row["range_over_ci_width"]):
        ratio = (
            f": the seed range is {row['range_over_ci_width']:.0%} of the CI's width and the between-seed SD "
            f"{row['sd_over_se']:.2f} times the bootstrap SE"
        )
    return (
        f"{label}: {int(row['n_seeds'])} seeds gave {row['seed_min']:.3f}–{row['seed_max']:.3f} (mean "
        f"{row['seed_mean']:.3f}, SD {row['seed_sd']:.3f}, {level} CI of the SD "
        f"{row['seed_sd_ci_lo']:.3f}–{row['seed_sd_ci_hi']:.3f}); seed {row['primary_seed']}'s "
        f"{row['primary']:.3f} is the run's, and {boot}{ratio}."
    )


def seed_variance(
    layout: RunLayout,
    cases: pd.DataFrame,
    config,
    seeds: Sequence[int],
    seed: int,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Evaluate every other seed's model on the external test and write the spread to ``out_dir``
    (default ``RUN/analysis``, after :func:`~amt_core.pipeline.analysis.analyse`); returns ``{"per_seed":
    ..., "spread": ...}``.

    The primary's numbers are read from ``RUN/evaluation/test`` and its intervals from ``out_dir``; both must
    come from ``config`` (the EvalConfig of the cell before), else a ``ValueError`` says to rerun
    03_evaluate. Each other seed's ``RUN/seeds/seed_<k>/{predictions,evaluation}/test`` is replaced whole.
    """
    from amt_core.evaluation import evaluate_predictions
    from amt_core.model.inference import predict

    others = other_seeds(seeds, seed)
    out = Path(out_dir) if out_dir is not None else layout.analysis_dir
    iou = float(config.operating_iou)
    intervals = primary_intervals(out, iou)  # first: a missing analysis fails before any prediction
    summary = _primary_summary(layout, config)
    rows = [_row(seed, True, seed_metrics(summary, iou), layout.train_dir, layout.root)]
    _check_primary(rows[0], intervals, out)
    for k in others:
        model = layout.seed_model_path(k)
        if not model.is_file():
            raise FileNotFoundError(
                f"{model} not found: seed {k}'s model was not trained; rerun 02_train with "
                f"the same seeds ({list(seeds)})"
            )
        predict(
            model,
            layout.cases_csv,
            layout.seed_predictions(k),
            split="test",
            overwrite=True,
            progress=progress,
        )
        result = evaluate_predictions(
            cases, layout.seed_predictions(k), split="test", config=config, progress=progress
        )
        result.save(layout.seed_evaluation(k), overwrite=True)
        rows.append(_row(k, False, seed_metrics(result.summary, iou), layout.seed_train_dir(k), layout.root))
    per_seed = pd.DataFrame(rows)
    spread = spread_table(per_seed, intervals, primary_seed=seed, ci_level=float(config.ci_level))
    write_csv(out / "seed_metrics.csv", per_seed)
    write_csv(out / "seed_variance.csv", spread)
    incomplete = [int(r["seed"]) for r in rows if not r["training_complete"]]
    write_json(
        out / "seed_variance.json",
        {
            "seeds": [int(seed), *others],
            "primary_seed": int(seed),
            "n_seeds": len(rows),
            "estimable": len(rows) >= 2,
            "note": ONE_SEED if len(rows) < 2 else "computed",
            "split": "test",
            "n_scans": int(summary.get("n_scans", 0)),
            "operating_iou": iou,
            "ci_level": float(config.ci_level),
            "ci_method": config.ci_method,
            "n_bootstrap": int(config.n_bootstrap),
            "sd": "sample SD (ddof 1) over seeds; its interval from the chi-square distribution (normal values)",
            "bootstrap_se": "the primary's CI width / (2 z): the SE a normal interval of that width implies",
            "describes": DESCRIBES,
            "incomplete_training": incomplete,
            "sentences": {r["metric"]: sentence(r, iou) for r in spread.to_dict("records")},
        },
    )
    return {"per_seed": per_seed, "spread": spread}


def _primary_summary(layout: RunLayout, config) -> dict:
    import json

    from amt_core.evaluation import EvalConfig

    path = layout.evaluation("test") / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: evaluate the primary model first (03_evaluate)")
    summary = json.loads(path.read_text())
    try:
        recorded = EvalConfig.from_dict(summary.get("config") or {})
    except (TypeError, ValueError) as exc:  # e.g. written before a setting was renamed
        raise ValueError(f"{path}: {exc}; rerun 03_evaluate") from None
    if recorded.to_dict() != config.to_dict():
        raise ValueError(
            f"{path}: evaluated with other settings than this EvalConfig; the seeds must be "
            "evaluated as the primary was: rerun 03_evaluate"
        )
    return summary


def _check_primary(row: Mapping, intervals: pd.DataFrame, analysis_dir: Path) -> None:
    """The statistics in ``analysis_dir`` must be of the primary's evaluation (not a stale run)."""
    for r in intervals.itertuples():
        mine = row[r.metric]
        same = (np.isnan(mine) and np.isnan(r.value)) or math.isclose(
            mine, r.value, rel_tol=_TOL, abs_tol=_TOL
        )
        if not same:
            raise ValueError(
                f"{analysis_dir}: {r.metric} is {r.value} there but {mine} in evaluation/test/"
                "summary.json: the statistics are of another evaluation; rerun 03_evaluate"
            )


def _row(seed: int, primary: bool, metrics: dict, train_dir: Path, root: Path) -> dict:
    from amt_core.model.run_control import FINISH_RUN, incomplete_note, read_status

    note = incomplete_note(read_status(train_dir), FINISH_RUN)  # a seed of an `amt run` folder
    where = str(train_dir.relative_to(root)) if train_dir.is_relative_to(root) else str(train_dir)
    return {
        "seed": int(seed),
        "primary": primary,
        **metrics,
        "model": where,
        "training_complete": note is None,
        "training_note": note or "",
    }


# --- the report -----------------------------------------------------------------------------------------
def report_lines(layout: RunLayout) -> list[str]:
    """The report's "Training randomness" section from ``RUN/analysis/seed_variance.*`` (nothing when the
    run has no such files)."""
    import json

    path = layout.analysis_dir / "seed_variance.json"
    table = layout.analysis_dir / "seed_variance.csv"
    if not (path.is_file() and table.is_file()):
        return []
    info = json.loads(path.read_text())
    n, primary = int(info.get("n_seeds", 1)), info.get("primary_seed")
    head = [f"## Training randomness: {n} seed{'s' if n != 1 else ''}", ""]
    words = (
        f"Two kinds of interval answer two questions: {DESCRIBES['bootstrap']}; {DESCRIBES['seeds']}. "
        "Neither says how the model would do at institutions of another population."
    )
    if not info.get("estimable"):
        return [
            *head,
            f"**Between-seed spread {info.get('note', ONE_SEED)}.** Every interval in this report is a "
            f"bootstrap over the test scans of the one model (seed {primary}). " + words,
            "",
        ]
    rest = [str(k) for k in info["seeds"] if k != primary]
    spread = pd.read_csv(table)
    lines = [
        *head,
        f"The run's model is seed {primary}'s (`train/`); seed{'s' if len(rest) > 1 else ''} "
        f"{', '.join(rest)} {'were' if len(rest) > 1 else 'was'} trained on the same cohort with the same "
        "settings (`seeds/`) and evaluated on the same external test. " + words + f" With {n} seeds the SD "
        "is itself imprecise: its chi-square interval is given.",
        "",
        *[f"- {sentence(r, info.get('operating_iou', 0.5))}" for r in spread.to_dict("records")],
        "",
        "Table: [`tables/seed_variance.md`](tables/seed_variance.md); per seed: "
        "[`analysis/seed_metrics.csv`](analysis/seed_metrics.csv).",
        "",
    ]
    if info.get("incomplete_training"):
        lines += [
            f"> **Incomplete training** of seed(s) {info['incomplete_training']} (`training.json`): their "
            "numbers are not their seeds' full training.",
            "",
        ]
    return lines
