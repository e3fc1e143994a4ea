"""Lesion-wise detection: hand-made 3D cases with the expected counts written beside them, and the
building blocks (components, overlaps, assignment, the exact sweep) against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from amt_core.evaluation import lesions
from amt_core.evaluation.api import evaluate_case
from amt_core.evaluation.config import EvalConfig

SHAPE = (40, 40, 12)


def _scan(lesion_boxes, candidate_boxes):
    """label and probability map from boxes: lesions [(x0,x1,y0,y1,z0,z1)], candidates [(box, confidence)]."""
    label = np.zeros(SHAPE, np.uint8)
    prob = np.zeros(SHAPE, np.float32)
    for x0, x1, y0, y1, z0, z1 in lesion_boxes:
        label[x0:x1, y0:y1, z0:z1] = 1
    for (x0, x1, y0, y1, z0, z1), conf in candidate_boxes:
        prob[x0:x1, y0:y1, z0:z1] = conf
    return label, prob


# name: (lesion boxes, candidate boxes, config overrides, expected (n_lesions, n_candidates, tp, fp, fn))
CASES = {
    # one lesion 20x10x6 = 1200 voxels, predicted as two halves of 540 voxels: IoU 0.45 each
    "split lesion, IoU 0.5": (
        [(5, 25, 5, 15, 2, 8)],
        [((5, 14, 5, 15, 2, 8), 0.9), ((16, 25, 5, 15, 2, 8), 0.8)],
        {},
        (1, 2, 0, 2, 1),
    ),
    "split lesion, IoU 0.3, extra ignored": (
        [(5, 25, 5, 15, 2, 8)],
        [((5, 14, 5, 15, 2, 8), 0.9), ((16, 25, 5, 15, 2, 8), 0.8)],
        {"operating_iou": 0.3},
        (1, 2, 1, 0, 0),
    ),
    "split lesion, IoU 0.3, extra is FP": (
        [(5, 25, 5, 15, 2, 8)],
        [((5, 14, 5, 15, 2, 8), 0.9), ((16, 25, 5, 15, 2, 8), 0.8)],
        {"operating_iou": 0.3, "extra_hits": "fp"},
        (1, 2, 1, 1, 0),
    ),
    # two lesions of 600 voxels, one merged prediction of 1320: IoU 0.4545 with each
    "merged prediction, IoU 0.5": (
        [(5, 15, 5, 15, 2, 8), (17, 27, 5, 15, 2, 8)],
        [((5, 27, 5, 15, 2, 8), 0.9)],
        {},
        (2, 1, 0, 1, 2),
    ),
    "merged prediction, IoU 0.3, one-to-one": (
        [(5, 15, 5, 15, 2, 8), (17, 27, 5, 15, 2, 8)],
        [((5, 27, 5, 15, 2, 8), 0.9)],
        {"operating_iou": 0.3},
        (2, 1, 1, 0, 1),
    ),
    # two lesions touching only at a corner: one lesion with 26-connectivity, two with 6
    "touching pair, 26-connected": (
        [(5, 10, 5, 10, 2, 6), (10, 15, 10, 15, 6, 10)],
        [((5, 10, 5, 10, 2, 6), 0.9), ((10, 15, 10, 15, 6, 10), 0.9)],
        {},
        (1, 1, 1, 0, 0),
    ),
    "touching pair, 6-connected": (
        [(5, 10, 5, 10, 2, 6), (10, 15, 10, 15, 6, 10)],
        [((5, 10, 5, 10, 2, 6), 0.9), ((10, 15, 10, 15, 6, 10), 0.9)],
        {"connectivity": 6},
        (2, 2, 2, 0, 0),
    ),
    # 400-voxel lesion, prediction = exactly half of it: IoU = 0.5 exactly
    "IoU at the threshold, >= hits": (
        [(5, 15, 5, 15, 2, 6)],
        [((5, 10, 5, 15, 2, 6), 0.9)],
        {},
        (1, 1, 1, 0, 0),
    ),
    "IoU at the threshold, > misses": (
        [(5, 15, 5, 15, 2, 6)],
        [((5, 10, 5, 15, 2, 6), 0.9)],
        {"hit_criterion": ">"},
        (1, 1, 0, 1, 1),
    ),
    "Dice at the threshold": (
        [(5, 15, 5, 15, 2, 6)],
        [((5, 10, 5, 15, 2, 6), 0.9)],
        {"match_metric": "dice", "operating_iou": 2 / 3},
        (1, 1, 1, 0, 0),
    ),
    "empty scan": ([], [], {}, (0, 0, 0, 0, 0)),
    "false alarm on an empty reference": ([], [((5, 10, 5, 10, 2, 6), 0.7)], {}, (0, 1, 0, 1, 0)),
    "missed lesion": ([(5, 10, 5, 10, 2, 6)], [], {}, (1, 0, 0, 0, 1)),
    # 5400-voxel lesion holding three 1800-voxel candidates: IoU 1/3 each
    "many candidates, IoU 0.3, extras ignored": (
        [(5, 35, 5, 35, 2, 8)],
        [((5, 15, 5, 35, 2, 8), 0.9), ((15, 25, 5, 35, 2, 8), 0.8), ((25, 35, 5, 35, 2, 8), 0.7)],
        {"operating_iou": 0.3},
        (1, 1, 1, 0, 0),
    ),
    "many candidates, separated, IoU 0.3, extras ignored": (
        [(5, 35, 5, 35, 2, 8)],
        [((5, 14, 5, 35, 2, 8), 0.9), ((15, 24, 5, 35, 2, 8), 0.8), ((25, 34, 5, 35, 2, 8), 0.7)],
        {"operating_iou": 0.3},
        (1, 3, 1, 0, 0),
    ),
    "many candidates, separated, IoU 0.3, extras FP": (
        [(5, 35, 5, 35, 2, 8)],
        [((5, 14, 5, 35, 2, 8), 0.9), ((15, 24, 5, 35, 2, 8), 0.8), ((25, 34, 5, 35, 2, 8), 0.7)],
        {"operating_iou": 0.3, "extra_hits": "fp"},
        (1, 3, 1, 2, 0),
    ),
    "many candidates, separated, IoU 0.5": (
        [(5, 35, 5, 35, 2, 8)],
        [((5, 14, 5, 35, 2, 8), 0.9), ((15, 24, 5, 35, 2, 8), 0.8), ((25, 34, 5, 35, 2, 8), 0.7)],
        {},
        (1, 3, 0, 3, 1),
    ),
    "candidate below the size limit": (
        [(5, 15, 5, 15, 2, 6)],
        [((5, 15, 5, 15, 2, 6), 0.9), ((30, 31, 30, 31, 9, 10), 0.9)],
        {"min_candidate_voxels": 2},
        (1, 1, 1, 0, 0),
    ),
    "candidate below the operating threshold": (
        [(5, 15, 5, 15, 2, 6)],
        [((5, 15, 5, 15, 2, 6), 0.9), ((30, 34, 30, 34, 8, 10), 0.6)],
        {"operating_threshold": 0.7},
        (1, 2, 1, 0, 0),
    ),
}


@pytest.mark.parametrize("candidates", ["dynamic", "threshold"])
@pytest.mark.parametrize("name", list(CASES))
def test_hand_made_case(name, candidates):
    """Flat boxes of one probability each (all >= 0.5, so both extraction rules find the same boxes)."""
    lesion_boxes, candidate_boxes, overrides, expected = CASES[name]
    label, prob = _scan(lesion_boxes, candidate_boxes)
    config = EvalConfig(**overrides, candidates=candidates)
    out = evaluate_case(label, prob >= 0.5, (1.0, 1.0, 1.0), config, prob=prob)
    r = out.record
    assert (r["n_lesions"], r["n_candidates"], r["tp"], r["fp"], r["fn"]) == expected
    assert sum(row["hit"] for row in out.lesions) == expected[2]
    statuses = [row["status"] for row in out.candidates]
    assert statuses.count("tp") == expected[2]


def test_low_confidence_candidate_cannot_take_a_lesion_away():
    """picai_eval's complaint: B (conf 0.6, IoU 0.45) wins the one-to-one match over A (conf 0.9,
    IoU 0.35); at a confidence threshold of 0.7, where B does not exist, A must still detect the lesion."""
    label, prob = _scan([(5, 25, 5, 15, 2, 8)], [((5, 12, 5, 15, 2, 8), 0.9), ((13, 22, 5, 15, 2, 8), 0.6)])
    out = evaluate_case(label, prob >= 0.5, (1, 1, 1), EvalConfig(operating_iou=0.3), prob=prob)
    assert [c["status"] for c in out.candidates] == ["extra", "tp"]  # B holds the match at the full set
    ev = [e for e in out.events if e["iou_threshold"] == 0.3]
    assert [(e["confidence"], e["d_tp"], e["d_fp"]) for e in ev] == [(pytest.approx(0.9), 1, 0)]


# assignment table: overlap matrix (candidates x lesions), confidences, method -> assigned lesion per candidate
ASSIGN_CASES = [
    # A hits L1 (.6) and L2 (.4); B hits L1 only (.5); threshold .3
    ([[0.6, 0.4], [0.5, 0.0]], [0.9, 0.5], "hungarian", [1, 0]),  # two matches beat one
    ([[0.6, 0.4], [0.5, 0.0]], [0.9, 0.5], "greedy", [0, -1]),  # A first takes its best, B left over
    ([[0.6, 0.4], [0.5, 0.0]], [0.9, 0.5], "best", [0, -1]),
    # greedy order follows confidence, not index
    ([[0.5, 0.0], [0.6, 0.4]], [0.5, 0.9], "greedy", [-1, 0]),
    # equal cardinality: Hungarian takes the larger summed overlap
    ([[0.9, 0.4], [0.8, 0.35]], [0.9, 0.8], "hungarian", [0, 1]),
    ([[0.35, 0.9], [0.4, 0.8]], [0.9, 0.8], "hungarian", [1, 0]),
    # best: the candidate's best lesion is taken -> extra even if another lesion is free
    ([[0.7, 0.4], [0.6, 0.5]], [0.9, 0.8], "best", [0, -1]),
    ([[0.7, 0.4], [0.6, 0.5]], [0.9, 0.8], "greedy", [0, 1]),
]


@pytest.mark.parametrize("overlap,conf,method,expected", ASSIGN_CASES)
def test_assignment_table(overlap, conf, method, expected):
    overlap = np.array(overlap)
    got = lesions.assign(overlap, lesions.is_hit(overlap, 0.3), np.array(conf), method)
    assert got.tolist() == expected


def _brute_sweep(overlap, conf, t, criterion, method, extra):
    """Re-match from scratch at every distinct confidence: (level, tp, fp) triples."""
    out = []
    for level in sorted(set(conf.tolist()), reverse=True):
        act = np.flatnonzero(conf >= level)
        hits = lesions.is_hit(overlap[act], t, criterion)
        got = lesions.assign(overlap[act], hits, conf[act], method)
        tp, fp, _ = lesions.count(got, hits, overlap.shape[1], extra)
        out.append((level, tp, fp))
    return out


@pytest.mark.parametrize(
    "method,extra,criterion",
    list(itertools.product(("hungarian", "greedy", "best"), ("ignore", "fp"), (">=", ">"))),
)
def test_sweep_equals_rematching_at_every_threshold(method, extra, criterion):
    rng = np.random.default_rng(7)
    for _ in range(60):
        n_c, n_l = rng.integers(0, 7), rng.integers(0, 4)
        overlap = np.round(rng.random((n_c, n_l)) * (rng.random((n_c, n_l)) < 0.5), 1)
        conf = np.round(rng.uniform(0.5, 1.0, n_c), 1)  # ties on purpose
        levels, d_tp, d_fp = lesions.sweep(
            overlap, conf, 0.3, criterion=criterion, method=method, extra_hits=extra
        )
        brute = _brute_sweep(overlap, conf, 0.3, criterion, method, extra)
        for level, tp, fp in brute:
            assert (d_tp[levels >= level].sum(), d_fp[levels >= level].sum()) == (tp, fp)
        assert np.all(d_tp >= 0) and np.all(d_fp >= 0)


def test_components_confidence_equals_scipy_over_the_whole_volume():
    rng = np.random.default_rng(3)
    prob = ndimage.gaussian_filter(rng.random((30, 30, 20)), 1.5).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    mask = prob >= 0.65
    for how, ref_fn in (("max", ndimage.maximum), ("mean", ndimage.mean)):
        comp = lesions.find_components(mask, prob=prob, confidence=how)
        labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        assert len(comp) == n > 1
        expected = sorted(ref_fn(prob, labels, np.arange(1, n + 1)))
        np.testing.assert_allclose(sorted(comp.confidence), expected, rtol=1e-6)
        assert sorted(comp.voxels) == sorted(np.bincount(labels.ravel())[1:])


def test_overlap_matrix_equals_brute_force():
    rng = np.random.default_rng(4)
    a = ndimage.gaussian_filter(rng.random((25, 25, 15)), 1.5) > 0.52
    b = ndimage.gaussian_filter(rng.random((25, 25, 15)), 1.5) > 0.52
    ca, cb = lesions.find_components(a, min_voxels=3), lesions.find_components(b)
    got = lesions.overlap_matrix(ca, cb)
    want = np.array([[np.count_nonzero((ca.labels == i) & (cb.labels == j)) for j in cb.ids] for i in ca.ids])
    assert got.shape == (len(ca), len(cb)) and np.array_equal(got, want)
    iou = lesions.pair_overlap(got, ca.voxels, cb.voxels)
    union = np.array(
        [[np.count_nonzero((ca.labels == i) | (cb.labels == j)) for j in cb.ids] for i in ca.ids]
    )
    np.testing.assert_allclose(iou, want / union, rtol=1e-12)  # IoU = |A and B| / |A or B|, pair by pair


def test_mask_only_prediction_gets_confidence_one():
    label, prob = _scan([(5, 15, 5, 15, 2, 6)], [((5, 15, 5, 15, 2, 6), 0.9), ((30, 34, 30, 34, 8, 10), 0.6)])
    out = evaluate_case(label, (prob >= 0.5).astype(np.uint8), (1, 1, 1))
    assert [c["confidence"] for c in out.candidates] == [1.0, 1.0]
    assert (out.record["tp"], out.record["fp"]) == (1, 1)


def test_probability_map_as_the_prediction():
    label, prob = _scan([(5, 15, 5, 15, 2, 6)], [((5, 15, 5, 15, 2, 6), 0.9), ((30, 34, 30, 34, 8, 10), 0.3)])
    out = evaluate_case(label, prob, (1, 1, 1))
    # the mask is prob >= 0.5; the dynamic candidates reach below it (the 0.3 box), the old rule does not
    assert out.record["dice"] == 1.0 and out.record["n_candidates"] == 2
    assert [c["confidence"] for c in out.candidates] == pytest.approx([0.9, 0.3])
    assert [c["status"] for c in out.candidates] == ["tp", "below_threshold"]
    old = evaluate_case(label, prob, (1, 1, 1), EvalConfig(candidates="threshold"))
    assert old.record["dice"] == 1.0 and old.record["n_candidates"] == 1
    with pytest.raises(ValueError, match=r"probabilities must lie in \[0, 1\]"):
        evaluate_case(label, prob >= 0.5, (1, 1, 1), prob=prob * 255)


def test_fortran_ordered_arrays_give_the_same_result():
    """nibabel returns NIfTI data Fortran-ordered; the engine must not depend on (or copy for) the order."""
    label, prob = _scan(
        [(5, 15, 5, 15, 2, 6), (20, 30, 22, 33, 3, 9)],
        [((6, 15, 5, 14, 2, 6), 0.9), ((30, 34, 30, 34, 8, 10), 0.6)],
    )
    a = evaluate_case(label, prob >= 0.5, (0.7, 0.8, 2.0), prob=prob)
    b = evaluate_case(
        np.asfortranarray(label),
        np.asfortranarray(prob >= 0.5),
        (0.7, 0.8, 2.0),
        prob=np.asfortranarray(prob),
    )
    assert a == b


def test_counts_equal_picai_eval_where_installed():
    """picai_eval (Hungarian, most matches then most overlap, overlap >= min_overlap) on random scans:
    its allow_unmatched_candidates_with_minimal_overlap=True/False is our extra_hits ignore/fp. Runs
    where picai_eval is installed (it needs scikit-learn); 1,814 such comparisons matched when written."""
    pe = pytest.importorskip("picai_eval.eval")
    rng = np.random.default_rng(0)
    for _ in range(40):
        label = np.zeros(SHAPE, np.uint8)
        prob = np.zeros(SHAPE, np.float32)
        for _ in range(rng.integers(0, 3)):
            x, y, z = rng.integers(0, 30), rng.integers(0, 30), rng.integers(0, 8)
            label[x : x + rng.integers(3, 12), y : y + rng.integers(3, 12), z : z + rng.integers(2, 5)] = 1
        for _ in range(rng.integers(0, 5)):
            x, y, z = rng.integers(0, 30), rng.integers(0, 30), rng.integers(0, 8)
            prob[x : x + rng.integers(2, 12), y : y + rng.integers(2, 12), z : z + rng.integers(2, 5)] = (
                rng.uniform(0.5, 1)
            )
        lab, n = ndimage.label(prob >= 0.5, structure=np.ones((3, 3, 3)))  # one confidence per component
        prob = np.where(lab > 0, np.asarray(ndimage.maximum(prob, lab, np.arange(n + 1)))[lab], 0).astype(
            np.float32
        )
        for thr, extra in itertools.product((0.1, 0.3, 0.5), ("ignore", "fp")):
            r = evaluate_case(
                label, prob >= 0.5, (1, 1, 1), EvalConfig(operating_iou=thr, extra_hits=extra), prob=prob
            ).record
            rows, *_ = pe.evaluate_case(
                prob,
                label,
                min_overlap=thr,
                overlap_func="IoU",
                allow_unmatched_candidates_with_minimal_overlap=extra == "ignore",
            )
            theirs = (
                sum(1 for les, c, _ in rows if les and c > 0),
                sum(1 for les, _, _ in rows if not les),
                sum(1 for les, c, _ in rows if les and c == 0),
            )
            assert (r["tp"], r["fp"], r["fn"]) == theirs
