"""Post-processing chosen on the tuning split (nnU-Net decides its post-processing on validation data too):
drop connected components of the thresholded probability map that are smaller than ``min_component_ml``
or whose confidence (maximum probability) is below ``min_component_conf``, never the scan's largest one.
A filter is used only if it raises the mean per-scan tuning Dice (:func:`choose`; training infers the
tuning scans and calls it)."""

from __future__ import annotations

import itertools

import numpy as np

#: the grid searched on the tuning split
MIN_ML = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
MIN_CONF = (0.0, 0.7, 0.8, 0.9, 0.95)


def components(prob: np.ndarray, threshold: float, spacing):
    """(Components of ``prob >= threshold`` in the mask's box, the box, their volumes in ml) or None."""
    from amt_core.evaluation.lesions import find_components
    from amt_core.evaluation.segmentation import bounding_box

    mask = prob >= threshold
    box = bounding_box(mask)
    if box is None:
        return None
    comps = find_components(mask[box], prob=prob[box])
    return comps, box, comps.voxels * (float(np.prod(spacing)) / 1000.0)


def keep_flags(volumes_ml: np.ndarray, confidence: np.ndarray, min_ml: float, min_conf: float) -> np.ndarray:
    """Components that pass both limits; the largest one is always kept (every scan of the study holds a
    tumour, and a filter must never empty a scan's prediction)."""
    keep = (volumes_ml >= min_ml) & (confidence >= min_conf)
    if volumes_ml.size:
        keep[int(np.argmax(volumes_ml))] = True
    return keep


def filter_mask(
    prob: np.ndarray, threshold: float, spacing, min_ml: float = 0.0, min_conf: float = 0.0
) -> np.ndarray:
    """The binary mask (uint8) after dropping small or unconfident components."""
    mask = np.zeros(prob.shape, dtype=np.uint8)
    found = components(prob, threshold, spacing)
    if found is None:
        return mask
    comps, box, ml = found
    keep = comps.ids[keep_flags(ml, comps.confidence, min_ml, min_conf)]
    mask[box] = np.isin(comps.labels, keep)
    return mask


def choose(scans, threshold: float) -> dict:
    """Pick (min_ml, min_conf) maximising mean Dice over ``scans`` = [(prob, label, spacing), ...]."""
    from amt_core.evaluation.segmentation import overlap_scores

    # per case and component: voxels, overlap with the reference, volume, confidence
    per_case: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for prob, label, spacing in scans:
        ref = np.asarray(label) > 0
        n_ref = int(ref.sum())
        found = components(prob, threshold, spacing)
        if found is None:
            per_case.append((n_ref, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)))
            continue
        comps, box, ml = found
        inter = np.bincount(comps.labels[ref[box]].ravel(), minlength=int(comps.labels.max()) + 1)
        per_case.append((n_ref, comps.voxels, inter[comps.ids], ml, comps.confidence))
    scores = {}
    for min_ml, min_conf in itertools.product(MIN_ML, MIN_CONF):
        dice = []
        for n_ref, vox, inter, ml, conf in per_case:
            k = keep_flags(ml, conf, min_ml, min_conf)
            dice.append(overlap_scores(n_ref, int(vox[k].sum()), int(inter[k].sum()))["dice"])
        scores[(min_ml, min_conf)] = float(np.mean(dice)) if dice else float("nan")
    base = scores[(0.0, 0.0)]
    best = max(scores, key=lambda k: (round(scores[k], 6), -k[0], -k[1]))
    if not scores[best] > base:
        best = (0.0, 0.0)
    return {
        "min_component_ml": best[0],
        "min_component_conf": best[1],
        "tune_dice_raw": base,
        "tune_dice_postprocessed": scores[best],
    }
