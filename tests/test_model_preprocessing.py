"""Model preprocessing: orientation, spacing, body crop, normalisation, CT checks and the case cache."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from toy import toy_cohort

from amt_core.data.volume import Volume, read_label, read_volume
from amt_core.model.cache import CaseCache, cache_key
from amt_core.model.preprocessing import (
    NotCTError,
    check_ct,
    intensity_stats,
    invert,
    median_spacing,
    normalise,
    preprocess,
)
from amt_core.model.presets import ModelConfig, get_config


def _phantom(shape=(30, 24, 20)):
    """Air around a soft-tissue box with a bright marker block near one corner of the body."""
    a = np.full(shape, -1000.0, dtype=np.float32)
    a[4:26, 4:20, 3:17] = 30.0
    a[6:9, 6:9, 4:7] = 500.0
    return a


def test_preprocess_reorients_resamples_and_crops_to_the_body(tmp_path):
    array = _phantom()
    affine = np.diag([-1.5, -1.5, 2.0, 1.0])  # LPS-like voxel order on disk
    affine[:3, 3] = [40.0, 30.0, -20.0]
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "ct.nii.gz")
    vol = read_volume(tmp_path / "ct.nii.gz")
    cfg = get_config("cpu", target_spacing=(3.0, 3.0, 3.0), body_margin_mm=0.0)
    pre = preprocess(vol, cfg)
    out_affine = np.asarray(pre.image.affine)
    assert np.allclose(np.diag(out_affine)[:3], [3.0, 3.0, 3.0])  # RAS+, target spacing
    img = pre.image[0].numpy()
    # cropped to the body (22 x 16 x 14 voxels of 1.5/1.5/2 mm) then resampled to 3 mm
    assert img.shape == (11, 8, 9) or np.allclose(img.shape, (11, 8, 9), atol=1)
    assert (img > -500).mean() > 0.9

    def marker_world(arr, aff):
        idx = np.argwhere(arr > 300).mean(axis=0)
        return (aff @ np.append(idx, 1.0))[:3]

    assert np.allclose(marker_world(array, affine), marker_world(img, out_affine), atol=3.0)


def test_invert_restores_the_reader_grid():
    vol = Volume(_phantom(), np.diag([1.5, 1.5, 2.0, 1.0]), "phantom")
    pre = preprocess(vol, get_config("cpu", target_spacing=(3.0, 3.0, 3.0)))
    back = invert(pre, pre.image[0].numpy())
    assert back.shape == vol.shape
    body = vol.array > -500
    assert np.abs(back[body] - vol.array[body]).mean() < 150  # a 2x down/up-sampled copy


@pytest.mark.parametrize("array,message", [
    (np.full((20, 20, 20), 300.0), "not a CT"),      # no air: e.g. an MR or a mask
    (np.full((20, 20, 20), -50.0), "not a CT"),      # all negative
])  # fmt: skip
def test_not_ct_is_refused(array, message):
    array = array.copy()
    array[0, 0, 0] += 1
    with pytest.raises(NotCTError, match=message):
        check_ct(array, (1.0, 1.0, 1.0), "x.nii.gz", 15.0)


def test_too_small_is_refused():
    array = np.full((4, 40, 40), -1000.0)
    array[:, 10:30, 10:30] = 40.0
    with pytest.raises(NotCTError, match="needs at least 15 mm"):
        check_ct(array, (1.0, 1.0, 1.0), "small.nii.gz", 15.0)


def test_normalisation_window_and_foreground_stats():
    cfg = get_config("cpu", normalisation="window", hu_window=(-160.0, 240.0))
    out = normalise(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]), cfg)
    assert np.allclose(out, [-1.0, -1.0, 0.0, 1.0, 1.0])
    samples = np.random.default_rng(0).normal(40, 20, 10000)
    stats = intensity_stats(samples)
    assert stats["lo"] < 0 < stats["hi"] and abs(stats["mean"] - 40) < 1 and abs(stats["std"] - 20) < 1
    z = normalise(samples, get_config("cpu", intensity_stats=stats))
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    with pytest.raises(ValueError, match="intensity_stats"):
        normalise(samples, get_config("cpu"))


def test_median_spacing_and_config_round_trip():
    assert median_spacing([(1, 1, 5), (2, 2, 1), (3, 3, 2)]) == (2.0, 2.0, 2.0)
    cfg = get_config(
        "cpu", target_spacing=(2.5, 2.5, 3.0), intensity_stats={"lo": 1.0, "hi": 2.0, "mean": 0, "std": 1}
    )
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown model setting"):
        get_config("cpu", patchsize=(1, 2, 3))
    with pytest.raises(ValueError, match="unknown model preset"):
        get_config("gpu")


def test_cache_key_follows_files_and_settings(tmp_path):
    csv = toy_cohort(tmp_path / "cohort", n_train=1, n_tune=0, n_test=0)
    image, label = csv.parent / "imagesTr/TOY000_0000.nii.gz", csv.parent / "labelsTr/TOY000.nii.gz"
    cfg = get_config("cpu", target_spacing=(3.0, 3.0, 3.0))
    cache = CaseCache(tmp_path / "cache", cfg, (3.0, 3.0, 3.0))
    first = cache.get("TOY000", image, label)
    assert first.image().dtype == np.int16 and first.label().dtype == np.uint8
    assert first.image().shape == first.label().shape == tuple(first.meta["shape"])
    assert first.meta["n_fg"] == int(first.label().sum()) == first.fg_indices().size
    assert cache.get("TOY000", image, label).image_path == first.image_path  # a hit, not a rebuild

    # another setting that shapes the arrays: another key, other arrays
    other = CaseCache(tmp_path / "cache", cfg.replace(body_margin_mm=0.0), (3.0, 3.0, 3.0)).get(
        "TOY000", image, label
    )
    assert other.meta["key"] != first.meta["key"]
    coarse = CaseCache(tmp_path / "cache", cfg, (6.0, 6.0, 6.0)).get("TOY000", image, label)
    assert coarse.meta["key"] != first.meta["key"] and coarse.shape != first.shape
    assert cache_key("a", "b", cfg, (3, 3, 3)) == cache_key("a", "b", cfg.replace(lr=0.5), (3, 3, 3))

    # the input file changes: the stale arrays are never reused
    vol = read_volume(image)
    lab = read_label(label, vol)
    brighter = nib.Nifti1Image((vol.array + 100).astype(np.int16), vol.affine)
    nib.save(brighter, image)
    os.utime(image, ns=(1, 1))  # even with an old mtime the size/content differ
    fresh = CaseCache(tmp_path / "cache", cfg, (3.0, 3.0, 3.0)).get("TOY000", image, label)
    assert fresh.meta["key"] != first.meta["key"]
    assert np.allclose(fresh.image().astype(float).mean() - first.image().astype(float).mean(), 100, atol=1)
    assert lab.array.sum() > 0
