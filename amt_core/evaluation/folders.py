"""Evaluate a predictions folder against a labels folder, with no case table: nnU-Net's layout
(``labelsTs/{case}.nii.gz`` beside ``{case}.nii.gz`` predictions), the way ``picai_eval`` or
``nnUNetv2_evaluate_folder`` are used on any model's outputs.

- Cases are matched by name with a pattern (``{case}.nii.gz`` by default; ``--pattern`` for other
  naming). Probabilities, when present, are ``{case}_prob.nii.gz`` (amt) or ``{case}.npz`` (nnU-Net
  ``--save_probabilities``; :mod:`amt_core.data.nnunet`) in the predictions folder.
- A label without a prediction is an error listing the cases, unless ``allow_missing``: the missing
  prediction is then scored as an empty mask (every lesion missed), and the cases are named in
  ``summary.json`` (``missing_predictions``). A prediction without a label is always an error: it cannot
  be scored.
- Metadata (a CSV with ``case_id`` and any case-table columns: ``institution_id``, ``sex``, ``age``,
  ``histology``, ``tumour_volume_ml``, ``contrast``, ``slice_thickness_mm``, ``vendor``) is optional; the
  cohort's ``cases.csv`` will do. With institutions: the per-institution table and the institution-cluster
  bootstrap are available; with sub-group columns: the sub-group tables. What was and was not possible
  is written in ``summary.json`` (``metadata``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from amt_core import registry
from amt_core.evaluation.config import EvalConfig
from amt_core.evaluation.results import EvaluationResult, summarise

DEFAULT_PATTERN = "{case}.nii.gz"
#: institutions needed for a per-institution table (fewer are pooled into one row)
MIN_INSTITUTION_SCANS = 3


def match_files(
    folder: str | os.PathLike, pattern: str = DEFAULT_PATTERN, *, role: str = "labels"
) -> dict[str, Path]:
    """Case id -> file of every file of ``folder`` whose name matches ``pattern`` (one ``{case}``; no
    folders). Hidden files are skipped; on the predictions side ``{case}_prob`` beside ``{case}`` is
    the probability map of that case, not a case."""
    folder = Path(folder)
    if pattern.count("{case}") != 1 or "/" in pattern or os.sep in pattern:
        raise ValueError(f"pattern {pattern!r} must hold '{{case}}' once and name a file (no folder)")
    if not folder.is_dir():
        raise FileNotFoundError(f"{role} folder {folder} does not exist (set --{role})")
    head, tail = pattern.split("{case}")
    found = {}
    for f in sorted(folder.iterdir()):
        name = f.name
        if (
            f.is_file()
            and not name.startswith(".")
            and name.startswith(head)
            and name.endswith(tail)
            and len(name) > len(head) + len(tail)
        ):
            found[name[len(head) : len(name) - len(tail)]] = f
    if role == "predictions":
        found = {c: f for c, f in found.items() if not (c.endswith("_prob") and c[:-5] in found)}
    if not found:
        raise FileNotFoundError(f"{role} folder {folder} has no file named {pattern} (set --pattern)")
    return found


def read_metadata(path: str | os.PathLike, case_ids) -> pd.DataFrame:
    """The metadata rows of ``case_ids`` (in that order); every case must have one row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata table {path} does not exist (set --metadata)")
    try:
        meta = pd.read_csv(path, dtype={"case_id": str, "institution_id": str, "patient_id": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: unreadable CSV ({str(exc).splitlines()[0]})") from None
    if "case_id" not in meta.columns:
        raise ValueError(f"{path}: no case_id column (columns: {list(meta.columns)})")
    dup = meta["case_id"][meta["case_id"].duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{path}: {len(dup)} case id(s) appear twice, e.g. {dup[0]}")
    known = set(meta["case_id"])
    missing = [c for c in case_ids if c not in known]
    if missing:
        raise ValueError(f"{path}: {len(missing)} evaluated case(s) have no row: {_some(missing)}")
    meta = meta.set_index("case_id").loc[list(case_ids)].reset_index()
    if "institution_id" in meta.columns and meta["institution_id"].isna().any():
        raise ValueError(
            f"{path}: institution_id is empty for some evaluated cases, e.g. "
            f"{meta['case_id'][meta['institution_id'].isna()].iloc[0]}; fill it or drop the column"
        )
    return meta


def evaluate_folders(
    labels_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    *,
    metadata: str | os.PathLike | None = None,
    pattern: str = DEFAULT_PATTERN,
    label_pattern: str | None = None,
    allow_missing: bool = False,
    config: EvalConfig | None = None,
    progress: bool = True,
    check_manifest: bool = True,
) -> EvaluationResult:
    """Evaluate the predictions folder against the labels folder (module docstring for the rules)."""
    from amt_core.evaluation.api import ScanFiles, evaluate_files, prob_file

    config = config or EvalConfig()
    labels = match_files(labels_dir, label_pattern or pattern, role="labels")
    preds = match_files(predictions_dir, pattern, role="predictions")
    extra = sorted(set(preds) - set(labels))
    if extra:
        raise ValueError(
            f"{predictions_dir}: {len(extra)} prediction(s) have no label in {labels_dir}: "
            f"{_some(extra)}; a prediction without a reference cannot be scored"
        )
    missing = sorted(set(labels) - set(preds))
    if missing and not allow_missing:
        raise ValueError(
            f"{predictions_dir}: {len(missing)} case(s) of {labels_dir} have no prediction: "
            f"{_some(missing)}; predict them, or --allow-missing to score them as empty masks"
        )
    case_ids = sorted(labels)
    meta = read_metadata(metadata, case_ids) if metadata is not None else None
    has_inst = meta is not None and "institution_id" in meta.columns
    if config.cluster_bootstrap and not has_inst:
        raise ValueError(
            "the institution-cluster bootstrap needs institutions: give --metadata with an "
            "institution_id column"
        )
    if check_manifest:
        from amt_core.data.predictions import check_evaluable

        check_evaluable(predictions_dir, [c for c in case_ids if c in preds])
    inst = meta["institution_id"].tolist() if has_inst else [None] * len(case_ids)
    pred_dir = Path(predictions_dir)
    jobs = [
        ScanFiles(c, i, labels[c], preds.get(c), prob_file(pred_dir, c) if c in preds else None)
        for c, i in zip(case_ids, inst, strict=True)
    ]
    tables = evaluate_files(jobs, config, progress=progress)
    extra_tables, info = _metadata_tables(tables["per_case"], meta, config)
    result = summarise(tables, config, extra_tables=extra_tables)
    n_prob = sum(j.prob is not None for j in jobs)
    result.summary.update(
        {
            "inputs": {
                "labels": str(labels_dir),
                "predictions": str(predictions_dir),
                "pattern": pattern,
                "label_pattern": label_pattern or pattern,
                "probabilities": f"{n_prob} of {len(jobs)} scans"
                + ("" if n_prob else ": candidates are the mask's components, confidence 1"),
            },
            "missing_predictions": missing,
            "metadata": {"file": str(metadata) if metadata else None, **info},
        }
    )
    return result


def _metadata_tables(per_case: pd.DataFrame, meta: pd.DataFrame | None, config: EvalConfig):
    """The sub-group and per-institution tables that the metadata allow, and a record of what was done."""
    from amt_core.evaluation import stats

    subgroups = [
        name
        for name, (column, _, _) in registry.SUBGROUPS.items()
        if meta is not None and column in meta.columns and meta[column].notna().any()
    ]
    has_inst = meta is not None and "institution_id" in meta.columns
    boot = dict(
        n_bootstrap=config.n_bootstrap, seed=config.seed, ci_method=config.ci_method, ci_level=config.ci_level
    )
    tables = {}
    if subgroups:
        table = stats.subgroup_table(per_case, meta, subgroups=subgroups, **boot)
        tables["subgroups"] = stats.adjust_family(table)
    if has_inst:
        tables["institutions"] = stats.institution_table(per_case, min_scans=MIN_INSTITUTION_SCANS, **boot)
    notes = []
    if not has_inst:
        notes.append(
            "no institution_id: no per-institution table and no institution-cluster bootstrap; "
            "intervals resample scans"
        )
    if not subgroups:
        notes.append(
            "no sub-group column ("
            + ", ".join(col for col, _, _ in registry.SUBGROUPS.values())
            + "): no sub-group table"
        )
    return tables, {"institutions": has_inst, "subgroups": subgroups, "note": "; ".join(notes) or "complete"}


def _some(ids, k: int = 10) -> str:
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")
