"""Per-scan segmentation metrics against MONAI (an independent implementation) and the empty-mask table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amt_core.evaluation.segmentation import bounding_box, overlap_scores, segmentation_metrics, union_box


def _blobby(rng, shape, n_blobs=3, p_noise=0.002):
    """Random 3D mask: a few boxes/ellipsoids plus speckle (surfaces of every kind, borders included)."""
    m = rng.random(shape) < p_noise
    grid = np.indices(shape)
    for _ in range(n_blobs):
        c = rng.uniform(0, np.array(shape))
        r = rng.uniform(2, np.array(shape) / 3)
        m |= (((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
    return m


PAIRS = [(seed, shape) for seed, shape in enumerate([(24, 20, 16), (32, 32, 12), (17, 23, 29), (40, 8, 30)])]


@pytest.mark.parametrize("seed,shape", PAIRS)
def test_dice_iou_precision_recall_equal_monai(seed, shape):
    import torch
    from monai.metrics import DiceMetric, MeanIoU, get_confusion_matrix

    rng = np.random.default_rng(seed)
    ref, pred = _blobby(rng, shape), _blobby(rng, shape)
    ours = segmentation_metrics(ref, pred, (0.8, 0.8, 2.5))
    y, yp = torch.from_numpy(ref)[None, None].float(), torch.from_numpy(pred)[None, None].float()
    assert ours["dice"] == pytest.approx(float(DiceMetric(include_background=True)(yp, y)), abs=1e-6)
    assert ours["iou"] == pytest.approx(float(MeanIoU(include_background=True)(yp, y)), abs=1e-6)
    tp, fp, tn, fn = get_confusion_matrix(yp, y, include_background=True)[0, 0].tolist()
    assert ours["precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert ours["recall"] == pytest.approx(tp / (tp + fn), abs=1e-12)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # a MONAI-internal deprecation
@pytest.mark.parametrize("seed,shape", PAIRS)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.8, 2.5)])
def test_hd95_and_mean_surface_distance_equal_monai(seed, shape, spacing):
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(100 + seed)
    ref, pred = _blobby(rng, shape), _blobby(rng, shape)
    ours = segmentation_metrics(ref, pred, spacing)
    y, yp = torch.from_numpy(ref)[None, None].float(), torch.from_numpy(pred)[None, None].float()
    hd95 = float(compute_hausdorff_distance(yp, y, include_background=True, percentile=95, spacing=spacing))
    asd = float(
        compute_average_surface_distance(yp, y, include_background=True, symmetric=True, spacing=spacing)
    )
    # MONAI works in float32 (torch.quantile); ours in float64
    assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-5, abs=1e-5)
    assert ours["msd_mm"] == pytest.approx(asd, rel=1e-5, abs=1e-5)


def test_volumes_honour_spacing():
    ref = np.zeros((10, 10, 10), bool)
    ref[2:6, 2:6, 2:6] = True  # 64 voxels
    out = segmentation_metrics(ref, ref, (0.5, 2.0, 3.0))
    assert out["ref_volume_ml"] == pytest.approx(64 * 3.0 / 1000)
    assert out["dice"] == out["iou"] == 1.0
    assert out["hd95_mm"] == 0.0 and out["msd_mm"] == 0.0


def test_shifted_cube_distances_in_mm():
    ref = np.zeros((30, 10, 10), bool)
    ref[5:15, 2:8, 2:8] = True
    pred = np.roll(ref, 3, axis=0)  # 3 voxels along x at 2 mm
    out = segmentation_metrics(ref, pred, (2.0, 1.0, 1.0))
    assert out["hd95_mm"] == pytest.approx(6.0)
    assert 0 < out["msd_mm"] < 6.0


NAN = math.nan
#: (n_ref, n_pred, n_both, empty_both, empty_one) -> dice, iou, precision, recall
EMPTY_CASES = [
    (0, 0, 0, "one", "zero", (1.0, 1.0, 1.0, 1.0)),
    (0, 0, 0, "zero", "zero", (0.0, 0.0, 0.0, 0.0)),
    (0, 0, 0, "nan", "zero", (NAN, NAN, NAN, NAN)),
    (10, 0, 0, "one", "zero", (0.0, 0.0, 0.0, 0.0)),  # missed scan: precision 0/0 -> 0
    (10, 0, 0, "one", "nan", (0.0, 0.0, NAN, 0.0)),
    (0, 7, 0, "one", "zero", (0.0, 0.0, 0.0, 0.0)),  # false alarm on a normal scan: recall 0/0 -> 0
    (0, 7, 0, "one", "nan", (0.0, 0.0, 0.0, NAN)),
    (10, 10, 5, "one", "zero", (0.5, 1 / 3, 0.5, 0.5)),
]


@pytest.mark.parametrize("n_ref,n_pred,n_both,empty_both,empty_one,expected", EMPTY_CASES)
def test_empty_mask_policy_table(n_ref, n_pred, n_both, empty_both, empty_one, expected):
    out = overlap_scores(n_ref, n_pred, n_both, empty_both=empty_both, empty_one=empty_one)
    got = (out["dice"], out["iou"], out["precision"], out["recall"])
    np.testing.assert_allclose(got, expected, equal_nan=True)


def test_empty_arrays_give_nan_surface_metrics_and_the_policy():
    z = np.zeros((8, 8, 8), np.uint8)
    out = segmentation_metrics(z, z)
    assert out["dice"] == 1.0 and math.isnan(out["hd95_mm"]) and math.isnan(out["msd_mm"])
    one = z.copy()
    one[2:4, 2:4, 2:4] = 1
    out = segmentation_metrics(one, z, empty_one="nan")
    assert out["dice"] == 0.0 and out["recall"] == 0.0 and math.isnan(out["precision"])
    assert math.isnan(out["hd95_mm"])


@pytest.mark.parametrize("seed", range(5))
def test_bounding_box_matches_nonzero(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((13, 17, 11)) < 0.01
    box = bounding_box(m)
    idx = np.nonzero(m)
    if idx[0].size == 0:
        assert box is None
        return
    assert box == tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    assert union_box(box, None) == box
    assert bounding_box(np.zeros((3, 3, 3), np.uint8)) is None


def test_shape_mismatch_quotes_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4, 4\) vs \(4, 4, 5\)"):
        segmentation_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
