"""Training patches: image and label stay aligned through every spatial augmentation, and a patch depends
only on (seed, index)."""

from __future__ import annotations

import numpy as np
import pytest

from amt_core.model.patches import PatchDataset
from amt_core.model.presets import get_config

#: spatial augmentation always on, intensity augmentation off: the image is then a picture of the label
SPATIAL = dict(
    patch_size=(24, 24, 16),
    channels=(8, 8),
    strides=(1,),  # no network is built here: strides of 1 accept any patch size, odd ones too
    normalisation="window",
    hu_window=(-100.0, 100.0),
    fg_ratio=1.0,
    p_affine=1.0,
    rotate_deg=30.0,
    scale_range=(0.8, 1.25),
    p_elastic=1.0,
    mirror_axes=(0, 1, 2),
    p_noise=0.0,
    p_blur=0.0,
    p_intensity=0.0,
    p_gamma=0.0,
    p_lowres=0.0,
)


class _Case:
    """What PatchDataset reads of a cached case: an image whose HU is +100 inside the label, -100 outside."""

    def __init__(self, label: np.ndarray):
        self._label = label
        self.shape = label.shape

    def image(self):
        return np.where(self._label > 0, 100.0, -100.0).astype(np.float32)

    def label(self):
        return self._label

    def fg_indices(self):
        return np.flatnonzero(self._label)


def _label(seed: int = 0) -> np.ndarray:
    """An off-centre, asymmetric tumour (an ellipsoid and a knob), so a flip or a shift shows."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n) for n in (48, 40, 32)], indexing="ij")
    c = rng.uniform([18, 16, 12], [28, 24, 18])
    lab = ((x - c[0]) / 7) ** 2 + ((y - c[1]) / 5) ** 2 + ((z - c[2]) / 4) ** 2 <= 1
    lab |= (np.abs(x - c[0] - 8) <= 2) & (np.abs(y - c[1]) <= 2) & (np.abs(z - c[2] - 3) <= 2)
    return lab.astype(np.uint8)


def _misplaced(sample) -> tuple[int, int]:
    """(voxels where image and label disagree away from the label's boundary shell, label voxels).

    Linear interpolation of the image against nearest-neighbour interpolation of the label may differ on
    the one-voxel shell around the label's surface; anywhere else a disagreement means the two were moved
    differently."""
    from scipy import ndimage

    image = sample["image"][0].numpy()
    label = sample["label"][0].numpy().astype(bool)
    inside = image > 0.0  # the window maps +100 HU to 1 and -100 HU to -1
    ball = ndimage.generate_binary_structure(3, 3)
    shell = ndimage.binary_dilation(label, ball) & ~ndimage.binary_erosion(label, ball, border_value=1)
    return int(((inside ^ label) & ~shell).sum()), int(label.sum())


def test_image_and_label_patches_stay_aligned_through_every_augmentation():
    cfg = get_config("cpu", **SPATIAL)
    data = PatchDataset([_Case(_label(k)) for k in range(3)], cfg, seed=0)
    checked = 0
    for g in range(24):
        sample = data[g]
        assert sample["image"].shape == sample["label"].shape == (1, 24, 24, 16)
        misplaced, size = _misplaced(sample)
        assert misplaced <= 2, (g, misplaced, size)
        checked += size > 100
    assert checked >= 12  # most patches hold a good part of the tumour (fg_ratio 1)


def test_the_alignment_check_catches_a_misaligned_pair():
    """The check above fails when the label is moved without the image (what a broken transform does)."""
    cfg = get_config("cpu", **{**SPATIAL, "p_affine": 0.0, "p_elastic": 0.0, "mirror_axes": ()})
    sample = PatchDataset([_Case(_label())], cfg, seed=0)[0]
    assert _misplaced(sample)[0] == 0
    for moved in (sample["label"].flip(1), sample["label"].roll(2, dims=1)):
        assert _misplaced({"image": sample["image"], "label": moved})[0] > 20


@pytest.mark.parametrize("g", [0, 7])
def test_a_patch_depends_only_on_seed_and_index(g):
    cfg = get_config("cpu", **{**SPATIAL, "p_noise": 0.5, "p_intensity": 0.5})
    cached_cases = [_Case(_label(k)) for k in range(3)]
    a, b = PatchDataset(cached_cases, cfg, seed=3), PatchDataset(cached_cases, cfg, seed=3)
    _ = b[g + 1]  # another index drawn first must not change patch g
    assert np.array_equal(a[g]["image"].numpy(), b[g]["image"].numpy())
    assert not np.array_equal(
        a[g]["image"].numpy(), PatchDataset(cached_cases, cfg, seed=4)[g]["image"].numpy()
    )


class _Ball(_Case):
    """A ball of radius 6 voxels whose only foreground index is its centre: every patch is centred on it."""

    def __init__(self):
        x, y, z = np.meshgrid(*[np.arange(n) for n in (48, 40, 32)], indexing="ij")
        super().__init__(((x - 24) ** 2 + (y - 20) ** 2 + (z - 16) ** 2 <= 36).astype(np.uint8))

    def fg_indices(self):
        return np.array([np.ravel_multi_index((24, 20, 16), self.shape)])


@pytest.mark.parametrize("patch", [(24, 24, 16), (21, 24, 17)])
@pytest.mark.parametrize("p_elastic", [0.0, 1.0])
def test_a_resampled_patch_is_centred_where_an_unresampled_one_is(patch, p_elastic):
    """The affine writes the patch's size straight from the larger crop (with the elastic deformation, the
    middle of the crop is cut out): rotated and scaled about the crop's centre, a ball centred there stays
    centred in the patch, at the ball's size times the scale cubed; odd patch sizes too."""
    plain = dict(SPATIAL, patch_size=patch, p_elastic=0.0, mirror_axes=())
    unmoved = PatchDataset([_Ball()], get_config("cpu", **{**plain, "p_affine": 0.0}), seed=0)[0]
    centre = (np.array(patch) - 1) / 2.0  # even sizes: the voxel just past the middle, as crop() puts it
    assert unmoved["label"].sum() == _Ball().label().sum()  # the whole ball, cropped, not resampled
    assert np.allclose(np.argwhere(unmoved["label"][0].numpy()).mean(0), np.floor(centre + 0.5))
    warped = get_config("cpu", **{**plain, "p_elastic": p_elastic, "rotate_deg": 30.0})
    for g in range(6):
        moved = PatchDataset([_Ball()], warped, seed=0)[g]["label"][0].numpy()
        assert moved.shape == patch
        tolerance = 0.6 if p_elastic == 0 else 2.5  # the elastic field moves the ball a little too
        assert np.abs(np.argwhere(moved).mean(0) - np.floor(centre + 0.5)).max() <= tolerance, g
        assert 0.8**3 * 0.85 <= moved.sum() / _Ball().label().sum() <= 1.25**3 * 1.15, g


def test_only_the_patches_drawn_for_a_spatial_augmentation_are_resampled():
    """With ``p_affine`` 0.5 about half the patches are resampled (rotated: they differ from the crop of
    the same centre) and the rest are that crop exactly; both kinds keep image and label aligned."""
    cfg = get_config("cpu", **{**SPATIAL, "p_affine": 0.5, "p_elastic": 0.0, "mirror_axes": ()})
    cases = [_Case(_label(k)) for k in range(3)]
    data = PatchDataset(cases, cfg, seed=1)
    resampled = 0
    for g in range(40):
        sample = data[g]
        assert _misplaced(sample)[0] <= 2, g
        image = sample["image"][0].numpy()
        # an unresampled patch holds only the two window values; interpolation makes values in between
        resampled += bool((np.abs(np.abs(image) - 1.0) > 1e-6).any())
    assert 10 <= resampled <= 30
