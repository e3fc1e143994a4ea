"""Candidate extraction from a probability map: picai_eval's dynamic rule on hand-made maps with the
answer written beside them, the same candidates and FROC curve as picai_eval on random maps, and the
predictions folder's candidate table listing the evaluation's candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amt_core.evaluation import lesions
from amt_core.evaluation.api import collect, evaluate_case
from amt_core.evaluation.config import EvalConfig
from amt_core.evaluation.results import summarise

SHAPE = (40, 40, 12)


def _nested():
    """A tumour-like blob: a 0.9 core (4x4x2 = 32 voxels) inside a 0.5 shell (8x8x4 = 256 voxels in all)
    inside a 0.2 shell (12x12x6 = 864 in all); elsewhere a 0.2 box (3x3x2 = 18) and a 0.005 box."""
    prob = np.zeros(SHAPE, np.float32)
    prob[2:14, 2:14, 2:8] = 0.2
    prob[4:12, 4:12, 3:7] = 0.5
    prob[6:10, 6:10, 4:6] = 0.9
    prob[30:33, 30:33, 8:10] = 0.2
    prob[20:23, 30:33, 1:3] = 0.005
    return prob


def test_dynamic_extraction_of_a_hand_made_map():
    comps = lesions.dynamic_components(_nested())
    # peak 0.9 -> component of >= 0.36: core + 0.5 shell (256 voxels); the 0.2 shell left behind touches
    # it and is dropped; the separate 0.2 box (peak 0.2 -> >= 0.08) is the second; 0.005 < min_confidence
    assert list(comps.voxels) == [256, 18]
    assert comps.confidence == pytest.approx([0.9, 0.2])
    assert [tuple((s.start, s.stop) for s in b) for b in comps.boxes] == [
        ((4, 12), (4, 12), (3, 7)),
        ((30, 33), (30, 33), (8, 10)),
    ]
    # a factor of 5 takes the 0.2 shell into the first candidate (>= 0.18)
    assert list(lesions.dynamic_components(_nested(), factor=5.0).voxels) == [864, 18]
    # min_confidence below 0.005 adds the faint box; max_candidates caps the count
    assert list(lesions.dynamic_components(_nested(), min_confidence=0.001).voxels) == [256, 18, 18]
    assert list(lesions.dynamic_components(_nested(), max_candidates=1).voxels) == [256]
    # min_voxels: the 18-voxel box is too small, and nothing else remains
    assert list(lesions.dynamic_components(_nested(), min_voxels=19).voxels) == [256]


def test_dynamic_candidates_give_the_froc_its_low_confidence_points():
    """The evaluation with the default (dynamic) candidates vs the old 0.5-threshold components: the mask's
    metrics are the same, the candidates below 0.5 exist only in the dynamic table."""
    prob = _nested()
    label = np.zeros(SHAPE, np.uint8)
    label[4:12, 4:12, 3:7] = 1
    new = evaluate_case(label, prob, (1, 1, 1))
    old = evaluate_case(label, prob, (1, 1, 1), EvalConfig(candidates="threshold"))
    assert new.record["dice"] == old.record["dice"] == 1.0
    assert (new.record["n_candidates"], old.record["n_candidates"]) == (2, 1)
    assert [c["status"] for c in new.candidates] == ["tp", "below_threshold"]
    # reading B (confidence >= 0.5) is the same for both; the dynamic events add an FP at confidence 0.2
    assert (new.record["tp"], new.record["fp"]) == (old.record["tp"], old.record["fp"]) == (1, 0)
    at_half = [(e["confidence"], e["d_tp"], e["d_fp"]) for e in new.events if e["iou_threshold"] == 0.5]
    assert at_half == [(pytest.approx(0.9), 1, 0), (pytest.approx(0.2), 0, 1)]


def _random_map(rng):
    """One ellipsoidal lesion and a smooth probability map: a blob near it with a random peak, and 0-5
    false blobs elsewhere with peaks from 0.02 to 0.95 (float32, as picai_eval works)."""
    zz = np.indices(SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    prob = np.zeros(SHAPE, np.float32)
    c = rng.uniform((10, 10, 4), (30, 30, 8))
    r = rng.uniform((3, 3, 1.5), (6, 6, 3))
    label[(((zz - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1] = 1
    blobs = [(c + rng.normal(0, 1, 3), r * rng.uniform(0.6, 1.2), rng.uniform(0.1, 1.0))]
    blobs += [
        (rng.uniform((0, 0, 0), SHAPE), rng.uniform((1.5, 1.5, 1), (4, 4, 2)), rng.uniform(0.02, 0.95))
        for _ in range(rng.integers(0, 6))
    ]
    for centre, radii, peak in blobs:
        d2 = (
            ((zz - np.asarray(centre)[:, None, None, None]) / np.asarray(radii)[:, None, None, None]) ** 2
        ).sum(0)
        prob = np.maximum(prob, (peak * np.exp(-d2 / 2)).astype(np.float32))
    return label, prob


def test_candidates_equal_picai_eval_dynamic_extraction():
    """report_guided_annotation.extract_lesion_candidates(threshold="dynamic-v2") on 30 random maps: the
    same candidates voxel for voxel, in the same order, with the same confidences."""
    rga = pytest.importorskip("report_guided_annotation")
    rng = np.random.default_rng(0)
    n_total = 0
    for _ in range(30):
        _, prob = _random_map(rng)
        for m, k in ((10, 5), (0, 10)):
            _, confs, indexed = rga.extract_lesion_candidates(
                prob, threshold="dynamic-v2", min_voxels_detection=m, num_lesions_to_extract=k
            )
            comps = lesions.dynamic_components(prob, max_candidates=k, min_voxels=m + 1)
            ours = np.zeros(SHAPE, np.int32)
            ours[tuple(slice(o, o + n) for o, n in zip(comps.offset, comps.labels.shape, strict=True))] = (
                comps.labels
            )
            assert np.array_equal(ours, indexed)
            np.testing.assert_allclose(comps.confidence, [c for _, c in confs], rtol=1e-6)
            n_total += len(comps)
    assert n_total > 60  # the maps do hold several candidates each


def test_froc_curve_equals_picai_eval_on_the_same_probability_maps():
    """picai_eval.evaluate with its dynamic extraction vs our reading A, at IoU 0.1 and 0.5, on 40 random
    scans. picai_eval matches once over all candidates and we re-match at every threshold; the two agree
    when no lesion is hit by two candidates, which these maps satisfy (checked)."""
    pe = pytest.importorskip("picai_eval")
    from report_guided_annotation import extract_lesion_candidates

    rng = np.random.default_rng(1)
    labels, probs = zip(*[_random_map(rng) for _ in range(40)], strict=True)
    config = EvalConfig(n_bootstrap=0, max_candidates=5, min_candidate_voxels=11)  # picai_eval's defaults
    evaluations = [evaluate_case(y, p, (1, 1, 1), config) for y, p in zip(labels, probs, strict=True)]
    tables = collect(evaluations, [f"s{k:02d}" for k in range(40)])
    result = summarise(tables, config)
    cands = result.candidates
    for t in (0.1, 0.5):
        hits = cands[cands["best_iou"] >= t].groupby(["case_id", "best_lesion"]).size()
        assert hits.max() == 1  # the precondition: one candidate at most on each lesion
        metrics = pe.evaluate(
            y_det=list(probs),
            y_true=list(labels),
            min_overlap=t,
            num_parallel_calls=1,
            y_det_postprocess_func=lambda p: extract_lesion_candidates(p, threshold="dynamic-v2")[0],
        )
        tpr, fpr = metrics.lesion_TPR, metrics.lesion_FPR  # these set metrics.thresholds
        theirs = pd.DataFrame({"threshold": metrics.thresholds, "sensitivity": tpr, "fp_per_scan": fpr})
        theirs = theirs[theirs["threshold"] > 0].iloc[:-1]  # their last point is extended to FP = inf
        curve = result.froc_confidence[np.isclose(result.froc_confidence["iou_threshold"], t)]
        curve = curve[np.isfinite(curve["threshold"])]
        ours = curve.set_index(curve["threshold"].astype(np.float32))
        theirs = theirs.set_index(theirs["threshold"].astype(np.float32))
        common = theirs.index.intersection(ours.index)
        assert len(common) >= 0.9 * len(theirs) > 20
        np.testing.assert_allclose(
            ours.loc[common, "sensitivity"], theirs.loc[common, "sensitivity"], atol=1e-9
        )
        np.testing.assert_allclose(
            ours.loc[common, "fp_per_scan"], theirs.loc[common, "fp_per_scan"], atol=1e-9
        )
        # the curve reaches from a small FP/scan to over one per scan
        assert curve["fp_per_scan"].iloc[0] <= 0.05 and curve["fp_per_scan"].iloc[-1] > 1.0


def test_candidate_table_lists_the_evaluation_candidates():
    from amt_core.model.inference import candidate_table
    from amt_core.model.presets import ModelConfig

    prob = np.round(_nested() * 255) / 255
    table = candidate_table(prob.astype(np.float32), ModelConfig(), (1.0, 1.0, 2.0))
    comps = lesions.extract_candidates(prob.astype(np.float32), EvalConfig())
    assert list(table["voxels"]) == list(comps.voxels) == [256, 18]
    np.testing.assert_allclose(table["confidence"], comps.confidence)
    assert list(table["volume_ml"]) == pytest.approx([256 * 2e-3, 18 * 2e-3])
    assert list(table["kept"]) == [True, False]  # only the first holds voxels of the 0.5 mask
    assert (table["x0"].iloc[0], table["x1"].iloc[0]) == (4, 12)


def test_invalid_dynamic_settings_are_refused():
    with pytest.raises(ValueError, match="candidates='peaks'"):
        EvalConfig(candidates="peaks")
    with pytest.raises(ValueError, match="dynamic_factor"):
        EvalConfig(dynamic_factor=1.0)


def _whole_map_dynamic(
    prob, factor=2.5, max_candidates=10, min_confidence=0.01, connectivity=26, min_voxels=1
):
    """The dynamic extraction written plainly over the whole map at every step (no boxes): (voxel counts,
    confidences, label image) of the candidates, the reference for the box-restricted loop (scipy's labelling,
    not cc3d's)."""
    from scipy import ndimage

    work = np.array(prob, dtype=np.float32)
    out = np.zeros(work.shape, np.int32)
    near = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    conf = []
    while len(conf) < max_candidates:
        peak = work.max()
        if peak < min_confidence:
            break
        labels = ndimage.label(work >= peak / factor, structure=near)[0]
        counts = np.bincount(labels.ravel())
        ok = [i for i in range(1, counts.size) if counts[i] >= min_voxels]
        if not ok:
            work[work > peak / factor] = 0
            continue
        tops = {i: work[labels == i].max() for i in ok}
        top = max(tops.values())
        # of the components reaching the highest value, the one reached first in C order (picai_eval)
        chosen = next(i for i in labels.ravel() if i in ok and tops[i] == top)
        comp = labels == chosen
        if not (len(conf) and (ndimage.binary_dilation(comp, near) & (out > 0)).any()):
            conf.append(float(top))
            out[comp] = len(conf)
        work[comp] = 0
    return [int((out == k).sum()) for k in range(1, len(conf) + 1)], conf, out


def test_dynamic_extraction_equals_the_whole_map_loop_on_random_maps():
    """Each step works inside the box of the voxels >= peak / factor only: the candidates (voxels, order,
    confidences, label image) are those of the plain whole-map loop, ties and thin shapes included."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    maps = [np.zeros((1, 1, 5)), np.zeros((6, 1, 1))]
    maps[0][0, 0, [0, 2, 4]] = [0.5, 0.9, 0.5]  # a line: separate voxels on one row
    maps[1][[1, 4], 0, 0] = 0.7  # a tie between two one-voxel components
    for k in range(30):
        x = ndimage.gaussian_filter(rng.random(tuple(rng.integers(2, 16, 3))), rng.uniform(0.5, 2.0))
        x = (x - x.min()) / (np.ptp(x) + 1e-12)
        maps.append(np.round(x * 12) / 12 if k % 2 else x)  # coarse levels: many tied peaks
    for x in maps:
        for kw in ({}, {"min_voxels": 4}, {"connectivity": 6, "factor": 1.5, "max_candidates": 20}):
            comps = lesions.dynamic_components(x.astype(np.float32), **kw)
            voxels, conf, out = _whole_map_dynamic(x.astype(np.float32), **kw)
            assert list(comps.voxels) == voxels and list(comps.confidence) == conf
            full = np.zeros(x.shape, np.int32)
            full[tuple(slice(o, o + n) for o, n in zip(comps.offset, comps.labels.shape, strict=True))] = (
                comps.labels
            )
            assert np.array_equal(full, out)


def test_components_of_a_one_voxel_line():
    """cc3d's 26-connected labelling fails on some 1-voxel-thick lines; a lesion mask or a step of the dynamic
    extraction whose box is such a line still gives its separate components."""
    mask = np.zeros((4, 4, 7), np.uint8)
    mask[2, 1, [0, 2, 3, 6]] = 1
    line = (slice(2, 3), slice(1, 2), slice(0, 7))
    assert list(lesions.find_components(mask, box=line).voxels) == [1, 2, 1]
    prob = mask * np.float32(0.8)
    assert list(lesions.dynamic_components(prob).voxels) == [1, 2, 1]
