"""The voxel sample of the calibration study does not depend on how the arrays lie in memory: a NIfTI
reader gives Fortran-ordered arrays, and the sample (C-order voxel indices, seeded draws) is the one of
their C-ordered copies, and the one of the sampling rule written out plainly."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from amt_core.evaluation import calibration as cal


def _plain_sample(label, prob, spacing, near_mm, min_prob, n_rest, rng):
    """The two strata written out over C-ordered copies: within near_mm of the tumour (Euclidean distance in
    mm over the whole scan) or probability >= min_prob, and n_rest draws of the rest."""
    ref, prob = np.ascontiguousarray(label) > 0, np.ascontiguousarray(prob)
    near = (prob >= min_prob) | (ndimage.distance_transform_edt(~ref, sampling=spacing) <= near_mm)
    inside, rest = np.flatnonzero(near), np.flatnonzero(~near)
    take = rng.choice(rest, size=n_rest, replace=False)
    idx = np.r_[inside, take]
    return (
        prob.ravel()[idx],
        ref.ravel()[idx].astype(float),
        np.r_[np.ones(inside.size), np.full(n_rest, rest.size / n_rest)],
        np.r_[np.ones(inside.size, bool), np.zeros(n_rest, bool)],
    )


def test_voxel_sample_is_the_same_for_fortran_ordered_arrays():
    rng = np.random.default_rng(3)
    label = np.zeros((40, 36, 16), np.uint8)
    label[10:22, 12:20, 5:11] = 1
    label[30:33, 5:8, 2:4] = 1
    prob = ndimage.gaussian_filter(label.astype(np.float32), 2.0) + rng.random(label.shape, np.float32) * 0.06
    spacing = (0.8, 0.8, 2.5)
    args = dict(near_mm=3.0, min_prob=0.05, n_rest=500)
    fortran = (np.asfortranarray(label), np.asfortranarray(prob))  # as a NIfTI reader gives them
    fortran = cal.sample_voxels(*fortran, spacing, **args, rng=np.random.default_rng(0))
    c_order = cal.sample_voxels(label, prob, spacing, **args, rng=np.random.default_rng(0))
    plain = _plain_sample(label, prob, spacing, rng=np.random.default_rng(0), **args)
    for a, b, c in zip(fortran, c_order, plain, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
