"""The evaluation's typed API: one scan (:func:`evaluate_case`), a set of scans from tables
(:func:`summarise`), and a predictions folder (:func:`evaluate_predictions`).

A scan is reduced to table rows at once (its per-scan metrics, its lesions, its candidates and its FROC
events), so scans stream through one at a time and every statistic is then computed from the tables,
for all scans or for any subset (``EvaluationResult.subset``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core.evaluation import lesions
from amt_core.evaluation.config import EvalConfig
from amt_core.evaluation.results import EvaluationResult, summarise
from amt_core.evaluation.segmentation import bounding_box, segmentation_metrics

_NONE = lesions._empty()

_BOX_COLS = ("x0", "x1", "y0", "y1", "z0", "z1")


@dataclass
class CaseEvaluation:
    """One scan reduced to rows: ``record`` (per-scan), ``lesions``, ``candidates``, ``events``."""

    record: dict
    lesions: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)


def evaluate_case(
    label: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    config: EvalConfig | None = None,
    *,
    prob: np.ndarray | None = None,
) -> CaseEvaluation:
    """Evaluate one scan.

    ``label``: reference mask (non-zero = tumour). ``prediction``: the binary mask, or a floating-point
    probability map (then the mask is ``prediction >= config.threshold`` and it is also ``prob``).
    ``prob``: optional probability map in [0, 1]; the candidates are extracted from it
    (:func:`amt_core.evaluation.lesions.extract_candidates`: ``config.candidates``, by default picai_eval's
    dynamic extraction); without it the mask's components are the candidates, with confidence 1.
    ``spacing``: mm per array axis.
    """
    config = config or EvalConfig()
    if label.shape != prediction.shape or (prob is not None and prob.shape != label.shape):
        shapes = f"label {label.shape}, prediction {prediction.shape}" + (
            f", prob {prob.shape}" if prob is not None else ""
        )
        raise ValueError(f"arrays of one scan must have the same shape: {shapes}")
    mask = prediction
    if prob is None and prediction.dtype.kind == "f":
        prob, mask = prediction, prediction >= config.threshold
    # every array is read once for its bounding box, then only inside boxes
    box_ref, box_mask = bounding_box(label), bounding_box(mask)
    seg = segmentation_metrics(
        label,
        mask,
        spacing,
        empty_both=config.empty_both,
        empty_one=config.empty_one,
        hd_percentile=config.hd_percentile,
        boxes=(box_ref, box_mask),
    )
    les = (
        lesions.find_components(
            label, box=box_ref, connectivity=config.connectivity, min_voxels=config.min_lesion_voxels
        )
        if box_ref
        else _NONE
    )
    if prob is not None:
        cands = lesions.extract_candidates(prob, config)
    else:
        cands = (
            lesions.find_components(
                mask, box=box_mask, connectivity=config.connectivity, min_voxels=config.min_candidate_voxels
            )
            if box_mask
            else _NONE
        )
    inter = lesions.overlap_matrix(cands, les)
    iou = lesions.pair_overlap(inter, cands.voxels, les.voxels, "iou")
    dice = lesions.pair_overlap(inter, cands.voxels, les.voxels, "dice")
    metric = iou if config.match_metric == "iou" else dice
    conf = cands.confidence

    events = []
    for t in config.match_thresholds:
        levels, d_tp, d_fp = lesions.sweep(
            metric,
            conf,
            t,
            criterion=config.hit_criterion,
            method=config.assignment,
            extra_hits=config.extra_hits,
        )
        events += [
            {"iou_threshold": t, "confidence": float(c), "d_tp": int(a), "d_fp": int(b)}
            for c, a, b in zip(levels, d_tp, d_fp, strict=True)
        ]

    # headline matching: candidates at the operating threshold, operating_iou
    active = np.flatnonzero(conf >= config.operating_point)
    hits = lesions.is_hit(metric[active], config.operating_iou, config.hit_criterion)
    got = lesions.assign(metric[active], hits, conf[active], config.assignment)
    tp, fp, fn = lesions.count(got, hits, len(les), config.extra_hits)
    cand_status = np.full(len(cands), "below_threshold", dtype=object)
    cand_status[active] = lesions.status(got, hits)
    cand_match = np.full(len(cands), -1)
    cand_match[active] = got
    ml = float(np.prod(spacing)) / 1000.0

    lesion_rows = []
    for j in range(len(les)):
        i = int(np.flatnonzero(cand_match == j)[0]) if (cand_match == j).any() else -1
        lesion_rows.append({
            "lesion_id": j + 1, "voxels": int(les.voxels[j]), "volume_ml": les.voxels[j] * ml,
            **_box_cols(les.boxes[j]),
            "best_iou": float(iou[:, j].max()) if len(cands) else 0.0,
            "best_dice": float(dice[:, j].max()) if len(cands) else 0.0,
            "hit": i >= 0, "matched_candidate": i + 1 if i >= 0 else 0,
            "matched_iou": float(iou[i, j]) if i >= 0 else np.nan,
            "matched_confidence": float(conf[i]) if i >= 0 else np.nan,
        })  # fmt: skip
    cand_rows = []
    for i in range(len(cands)):
        best = int(np.argmax(metric[i])) if len(les) else -1
        cand_rows.append({
            "candidate_id": i + 1, "voxels": int(cands.voxels[i]), "volume_ml": cands.voxels[i] * ml,
            **_box_cols(cands.boxes[i]), "confidence": float(conf[i]),
            "best_iou": float(iou[i].max()) if len(les) else 0.0,
            "best_dice": float(dice[i].max()) if len(les) else 0.0,
            "best_lesion": best + 1, "status": cand_status[i], "matched_lesion": int(cand_match[i]) + 1,
        })  # fmt: skip
    record = {**seg, "n_lesions": len(les), "n_candidates": len(cands), "tp": tp, "fp": fp, "fn": fn}
    return CaseEvaluation(record, lesion_rows, cand_rows, events)


def _box_cols(box) -> dict[str, int]:
    return {
        f"{name}{end}": int(getattr(box[a], attr))
        for a, name in enumerate("xyz")
        for end, attr in ((0, "start"), (1, "stop"))
    }


def collect(
    evaluations: Sequence[CaseEvaluation],
    case_ids: Sequence[str],
    institutions: Sequence[str | None] | None = None,
) -> dict[str, pd.DataFrame]:
    """Stack per-scan evaluations into the four row tables (per_case, lesions, candidates, events)."""
    institution_ids = list(institutions) if institutions is not None else [None] * len(case_ids)
    if not len(evaluations) == len(case_ids) == len(institution_ids):
        raise ValueError("one case id (and institution) is needed per evaluation")
    keyed = list(zip(evaluations, case_ids, institution_ids, strict=True))
    rows = {"per_case": [{"case_id": c, "institution_id": i, **ev.record} for ev, c, i in keyed]}
    for name in ("lesions", "candidates", "events"):
        rows[name] = [
            {"case_id": c, "institution_id": i, **r} for ev, c, i in keyed for r in getattr(ev, name)
        ]
    # fixed columns and dtypes, so that tables without rows look like the others
    return {
        name: pd.DataFrame(rows[name], columns=list(cols)).astype({k: v for k, v in cols.items() if v})
        for name, cols in _SCHEMA.items()
    }


_INT, _FLOAT = "int64", "float64"
_IDS = {"case_id": None, "institution_id": None}
_SCHEMA: dict[str, dict[str, str | None]] = {
    "per_case": {
        **_IDS,
        **dict.fromkeys(
            ("dice", "iou", "precision", "recall", "hd95_mm", "msd_mm", "ref_volume_ml", "pred_volume_ml"),
            _FLOAT,
        ),
        **dict.fromkeys(
            ("ref_voxels", "pred_voxels", "overlap_voxels", "n_lesions", "n_candidates", "tp", "fp", "fn"),
            _INT,
        ),
    },
    "lesions": {
        **_IDS,
        "lesion_id": _INT,
        "voxels": _INT,
        "volume_ml": _FLOAT,
        **dict.fromkeys(_BOX_COLS, _INT),
        "best_iou": _FLOAT,
        "best_dice": _FLOAT,
        "hit": "bool",
        "matched_candidate": _INT,
        "matched_iou": _FLOAT,
        "matched_confidence": _FLOAT,
    },
    "candidates": {
        **_IDS,
        "candidate_id": _INT,
        "voxels": _INT,
        "volume_ml": _FLOAT,
        **dict.fromkeys(_BOX_COLS, _INT),
        "confidence": _FLOAT,
        "best_iou": _FLOAT,
        "best_dice": _FLOAT,
        "best_lesion": _INT,
        "status": None,
        "matched_lesion": _INT,
    },
    "events": {"case_id": None, "iou_threshold": _FLOAT, "confidence": _FLOAT, "d_tp": _INT, "d_fp": _INT},
}


def evaluate_predictions(
    cases: pd.DataFrame,
    predictions_dir: str | os.PathLike,
    *,
    split: str | None = "test",
    config: EvalConfig | None = None,
    progress: bool = True,
    check_manifest: bool = True,
) -> EvaluationResult:
    """Evaluate a predictions folder against the reference labels of a case table.

    ``cases``: the case table (``amt_core.data.cases.read_cases``: ``case_id``, ``institution_id``,
    ``split``, ``label`` as a path). ``predictions_dir`` holds ``{case_id}.nii.gz`` (binary mask on the
    label's grid) and optionally ``{case_id}_prob.nii.gz`` (probability in [0, 1], float or uint8/255) or
    nnU-Net's ``{case_id}.npz`` (``--save_probabilities``); a folder without a case table:
    :func:`amt_core.evaluation.folders.evaluate_folders`. With ``check_manifest`` (default) a folder
    written by ``amt predict`` must show, in its
    ``predictions.json``, that every evaluated case came unchanged from its one model
    (:func:`amt_core.data.predictions.check_evaluable`); a folder written elsewhere has no manifest.
    Scans are read and evaluated one at a time (the next one is read while the current one is
    evaluated), so memory stays at about two scans.
    """
    config = config or EvalConfig()
    pred_dir = Path(predictions_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"predictions folder {pred_dir} does not exist (set --predictions)")
    chosen = cases if split is None else cases[cases["split"] == split]
    if chosen.empty:
        raise ValueError(
            f"no case of split {split!r} in the case table (splits present: "
            f"{sorted(cases['split'].dropna().unique().tolist()) if 'split' in cases else []})"
        )
    missing = [c for c in chosen["case_id"] if not (pred_dir / f"{c}.nii.gz").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} prediction(s) missing in {pred_dir}, e.g. {missing[0]}.nii.gz"
        )
    if check_manifest:  # every scored case from the one model of the folder's predictions.json
        from amt_core.data.predictions import check_evaluable

        check_evaluable(pred_dir, list(chosen["case_id"]))
    jobs = [
        ScanFiles(
            r.case_id,
            r.institution_id,
            r.label,
            pred_dir / f"{r.case_id}.nii.gz",
            prob_file(pred_dir, r.case_id),
        )
        for r in chosen[["case_id", "institution_id", "label"]].itertuples(index=False)
    ]
    return summarise(evaluate_files(jobs, config, progress=progress), config)


@dataclass(frozen=True)
class ScanFiles:
    """The files of one scan to evaluate: its reference label, its mask (None = no prediction: scored as
    an empty mask) and its probability (``{case}_prob.nii.gz``, nnU-Net's ``{case}.npz`` or None)."""

    case_id: str
    institution_id: str | None
    label: str | os.PathLike
    mask: Path | None
    prob: Path | None = None


def prob_file(pred_dir: Path, case_id: str) -> Path | None:
    """The probability file of a case in a predictions folder: ``{case}_prob.nii.gz`` (amt) or
    ``{case}.npz`` (nnU-Net ``--save_probabilities``); None when neither; both is an error."""
    found = [f for f in (pred_dir / f"{case_id}_prob.nii.gz", pred_dir / f"{case_id}.npz") if f.is_file()]
    if len(found) > 1:
        raise ValueError(
            f"{pred_dir}: case {case_id} has two probability maps ({found[0].name} and "
            f"{found[1].name}); keep the one that belongs to the masks"
        )
    return found[0] if found else None


def evaluate_files(
    jobs: Sequence[ScanFiles], config: EvalConfig, *, progress: bool = True
) -> dict[str, pd.DataFrame]:
    """Evaluate scans one at a time (the next one is read while the current one is evaluated) into the
    row tables of :func:`collect`."""
    from concurrent.futures import ThreadPoolExecutor

    evaluations = []
    bar = _progress(len(jobs), progress)
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(_read_case, jobs[0].label, jobs[0].mask, jobs[0].prob, config.threshold)
        for k in range(len(jobs)):
            label, mask, prob, spacing = nxt.result()
            if k + 1 < len(jobs):
                job = jobs[k + 1]
                nxt = pool.submit(_read_case, job.label, job.mask, job.prob, config.threshold)
            evaluations.append(evaluate_case(label, mask, spacing, config, prob=prob))
            del label, mask, prob
            bar.update(1)
    bar.close()
    return collect(evaluations, [j.case_id for j in jobs], [j.institution_id for j in jobs])


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="scan", disable=not enabled)


def _read_case(
    label_path: str | os.PathLike,
    mask_path: Path | None,
    prob_path: Path | None = None,
    threshold: float = 0.5,
):
    """(label, mask, prob or None, spacing) of one scan, every array on the reference label's grid.

    ``mask_path`` None: no prediction, scored as an empty mask. ``prob_path``: ``{case}_prob.nii.gz``, float
    in [0, 1] or uint8 0..255 (:func:`amt_core.data.volume.read_probability`; any other range is an error,
    never a silent rescale), or nnU-Net's ``{case}.npz`` (:func:`amt_core.data.nnunet.read_npz_probability`).
    A probability map must be the mask's own: every mask voxel at probability >= ``threshold`` (the
    evaluation's mask threshold), else an error naming both files (a map of another case or model)."""
    from amt_core.data.volume import (
        check_probability_fits_mask,
        read_geometry,
        read_label,
        read_probability,
    )

    ref = read_label(label_path, read_geometry(label_path))  # the label's own header is its grid
    if mask_path is None:
        return ref.array, np.zeros(ref.shape, np.uint8), None, ref.spacing
    mask = read_label(mask_path, ref, role="prediction", grid_of="reference label")
    prob = None
    if prob_path is not None and str(prob_path).endswith(".npz"):
        from amt_core.data.nnunet import read_npz_probability

        prob = read_npz_probability(prob_path, mask_path, mask.array, threshold)
    elif prob_path is not None:
        prob = read_probability(prob_path, ref, grid_of="reference label").array
        check_probability_fits_mask(prob, mask.array, threshold, str(prob_path), str(mask_path))
    return ref.array, mask.array, prob, ref.spacing
