"""Every volume and series in ../shared/realdata reads with its known geometry and HU range.

The expected values are those written in ../shared/realdata/SOURCES.md (shape, spacing, HU percentiles
[0, 1, 5, 25, 50, 75, 95, 99, 100]); after reading, every volume is in RAS+ orientation.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from amt_core.data.volume import Volume, read_label, read_volume, write_volume

pytestmark = pytest.mark.realdata

# path -> (shape, spacing mm, HU min, HU median, HU max); None where SOURCES.md gives no value
CT = {
    "cip_thorax_lowres/ct.nrrd": ((64, 64, 79), (4.1719, 4.1719, 3.9873), -1007, -469, 1095),
    "cip_thorax_lowres/ct.nii.gz": ((64, 64, 79), (4.1719, 4.1719, 3.9873), -1007, -469, 1095),
    "cip_thorax_lowres/dicom": ((64, 64, 79), (4.1719, 4.1719, 3.9873), -1007, -469, 1095),
    "cip_thorax_lowres/ct2_testinput.nrrd": ((64, 64, 50), (5.281, 5.281, 6.99), -1141, -754, 3362),
    "cip_thorax_lowres/ct2_testinput.nii.gz": ((64, 64, 50), (5.281, 5.281, 6.99), -1141, -754, 3362),
    "itkelastix_thorax/dicom_subset": ((512, 512, 10), (0.9766, 0.9766, 2.0), -1024, None, 1215),
    "ts_abdomen_3mm/ct.nii.gz": ((122, 101, 30), (3.0, 3.0, 3.0), -1100, -91, 1207),
    # JPEG 2000 lossless DICOM (transfer syntax 1.2.840.10008.1.2.4.90), uint16 + intercept -1024
    "ts_abdomen_dicom/dicom": ((512, 512, 20), (0.9766, 0.9766, 2.0), -1024, -981, 1839),
    # SOURCES.md section 6: TCIA chest CTs, int16 HU, RAS, downsampled 2x in-plane
    "chest_backgrounds/lung_dx_a0001.nii.gz": ((256, 167, 64), (1.684, 1.684, 5.0), -1024, -825, 2976),
    "chest_backgrounds/lung_dx_a0002.nii.gz": ((256, 193, 30), (1.293, 1.293, 8.0), -1024, -128, 1682),
    "chest_backgrounds/acrin_flt_breast_001.nii.gz": (
        (216, 142, 35),
        (1.953, 1.953, 4.25),
        -1024,
        -211,
        1277,
    ),
    "chest_backgrounds/acrin_flt_breast_013.nii.gz": ((148, 89, 49), (2.734, 2.734, 4.0), -1024, -640, 2918),
}

# label -> (its image, values that must be present, voxel count of label > 0 or None)
LABELS = {
    "cip_thorax_lowres/lm_cip.nrrd": ("cip_thorax_lowres/ct.nrrd", {0, 9, 14, 512, 782}, None),
    "cip_thorax_lowres/lm_cip.nii.gz": ("cip_thorax_lowres/ct.nii.gz", {0, 9, 14, 512, 782}, None),
    "cip_thorax_lowres/wholelung.nrrd": ("cip_thorax_lowres/ct.nrrd", {0, 1}, 65624),
    "cip_thorax_lowres/lung_lr_airway_derived.nii.gz": (
        "cip_thorax_lowres/dicom",
        {0, 1, 2, 3},
        34858 + 30766 + 510,
    ),
    "ts_abdomen_3mm/seg_totalsegmentator.nii.gz": ("ts_abdomen_3mm/ct.nii.gz", {0, 1, 5, 117}, None),
    "ts_abdomen_dicom/seg_totalsegmentator.nii.gz": ("ts_abdomen_dicom/dicom", {0, 1, 5, 117}, None),
}


def test_every_realdata_volume_is_listed(realdata):
    """No volume or series in realdata escapes this file's checks."""
    found = set()
    for p in realdata.rglob("*"):
        rel = p.relative_to(realdata).as_posix()
        if p.is_file() and p.name.endswith((".nii.gz", ".nrrd")):
            found.add(rel)
        elif p.is_dir() and any(f.suffix == ".dcm" or f.name.startswith("CT.") for f in p.iterdir()):
            found.add(rel)
    assert found == set(CT) | set(LABELS)


@pytest.mark.parametrize("rel", sorted(CT))
def test_read_volume(realdata, rel):
    shape, spacing, hu_min, hu_median, hu_max = CT[rel]
    vol = read_volume(realdata / rel)
    assert isinstance(vol, Volume)
    assert vol.shape == shape
    assert vol.spacing == pytest.approx(spacing, abs=2e-3)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.array.dtype == np.float32
    assert vol.affine.shape == (4, 4) and vol.affine.dtype == np.float64
    assert float(vol.array.min()) == pytest.approx(hu_min, abs=0.5)
    assert float(vol.array.max()) == pytest.approx(hu_max, abs=0.5)
    if hu_median is not None:
        assert float(np.median(vol.array)) == pytest.approx(hu_median, abs=1.0)
    assert vol.source == str(realdata / rel)


def test_itkelastix_lung_fraction(realdata):
    """SOURCES.md: lung fraction (-950 < HU < -700) of the native RT slices is 0.20."""
    arr = read_volume(realdata / "itkelastix_thorax/dicom_subset").array
    assert np.mean((arr > -950) & (arr < -700)) == pytest.approx(0.20, abs=0.01)


def test_cip_three_formats_identical(realdata):
    """The NRRD, its NIfTI copy and its DICOM copy agree voxel for voxel and in world position."""
    nrrd = read_volume(realdata / "cip_thorax_lowres/ct.nrrd")
    nifti = read_volume(realdata / "cip_thorax_lowres/ct.nii.gz")
    dicom = read_volume(realdata / "cip_thorax_lowres/dicom")
    np.testing.assert_array_equal(nrrd.array, dicom.array)
    np.testing.assert_array_equal(nrrd.array, nifti.array)
    # the DICOM positions are rounded (SimpleITK: "non uniform sampling, max 0.00066 mm")
    np.testing.assert_allclose(nrrd.affine, dicom.affine, atol=1e-3)
    np.testing.assert_allclose(nrrd.affine, nifti.affine, atol=1e-3)


def _centroid_world(vol: Volume, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return vol.affine[:3, :3] @ ijk + vol.affine[:3, 3]


@pytest.mark.parametrize("image", ["cip_thorax_lowres/ct.nrrd", "cip_thorax_lowres/dicom"])
def test_patient_right_is_plus_x(realdata, image):
    """RAS+: world x grows towards the patient's right. The right lung (label 1) centroid lies at
    x = +55 mm and the left lung (label 2) at x = -67 mm (SOURCES.md gives +67 / -55 in LPS, where
    patient left is +x). In voxel terms, the right lung has the larger x index."""
    ct = read_volume(realdata / image)
    lab = read_label(realdata / "cip_thorax_lowres/lung_lr_airway_derived.nii.gz", ct, allowed=None)
    right = _centroid_world(ct, lab.array == 1)
    left = _centroid_world(ct, lab.array == 2)
    assert right[0] == pytest.approx(55, abs=2)
    assert left[0] == pytest.approx(-67, abs=2)
    assert np.argwhere(lab.array == 1)[:, 0].mean() > np.argwhere(lab.array == 2)[:, 0].mean()
    # the lungs are air: mean HU inside well below -700
    assert ct.array[lab.array == 1].mean() < -700
    # superior: the apices (top slices with lung) are above the airway's lowest slice
    assert _centroid_world(ct, lab.array == 3)[2] > min(right[2], left[2])


@pytest.mark.parametrize("rel", sorted(LABELS))
def test_read_label(realdata, rel):
    image_rel, must_have, n_fg = LABELS[rel]
    image = read_volume(realdata / image_rel)
    lab = read_label(realdata / rel, image, allowed=None)
    assert lab.shape == image.shape
    assert nib.aff2axcodes(lab.affine) == ("R", "A", "S")
    values = set(np.unique(lab.array).tolist())
    assert must_have <= values
    assert lab.array.dtype == (np.uint16 if max(values) > 255 else np.uint8)
    if n_fg is not None:
        assert int((lab.array > 0).sum()) == n_fg


def test_multiclass_label_is_not_binary(realdata):
    """A multi-class map read as a tumour mask (the default, binary) is an error."""
    from amt_core.data.volume import VolumeError

    image = read_volume(realdata / "ts_abdomen_3mm/ct.nii.gz")
    with pytest.raises(VolumeError, match="seg_totalsegmentator.nii.gz.*outside the allowed"):
        read_label(realdata / "ts_abdomen_3mm/seg_totalsegmentator.nii.gz", image)


def test_totalsegmentator_liver_hu(realdata):
    """Label and image line up: the liver (id 5) has soft-tissue HU (SOURCES.md: median 46 / 93)."""
    for image_rel, lo, hi in [("ts_abdomen_3mm/ct.nii.gz", 20, 80), ("ts_abdomen_dicom/dicom", 60, 130)]:
        image = read_volume(realdata / image_rel)
        seg_rel = image_rel.split("/")[0] + "/seg_totalsegmentator.nii.gz"
        lab = read_label(realdata / seg_rel, image, allowed=None)
        assert lo < float(np.median(image.array[lab.array == 5])) < hi


def test_write_read_roundtrip(realdata, tmp_path):
    """A volume written and read back is unchanged (array, affine, orientation)."""
    vol = read_volume(realdata / "ts_abdomen_dicom/dicom")
    out = write_volume(vol, None, tmp_path / "ct.nii.gz")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.5, -1000.0), (2.0, -2048.0)])
def test_dicom_hu_rescale_and_lps_to_ras(tmp_path, make_dicom_series, slope, intercept):
    """DICOM stored values become HU (value * slope + intercept), and the LPS series comes out in RAS:
    DICOM column index i (towards patient left) becomes RAS x index (n - 1 - i)."""
    hu = np.arange(6 * 5 * 4, dtype=np.float64).reshape(6, 5, 4) * 2 - 1000  # even, exact for slope 2
    folder = make_dicom_series(tmp_path / "series", hu, spacing=(0.7, 0.9, 2.0), origin=(-10.0, 20.0, 50.0),
                               slope=slope, intercept=intercept)  # fmt: skip
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.array, hu[::-1, ::-1, :].astype(np.float32))
    assert vol.spacing == pytest.approx((0.7, 0.9, 2.0))
    # the first stored voxel (LPS position -10, 20, 50) is at RAS (10, -20, 50)
    ijk = np.array([5, 4, 0, 1.0])
    np.testing.assert_allclose(vol.affine @ ijk, [10.0, -20.0, 50.0, 1.0], atol=1e-6)


@pytest.mark.parametrize(
    "rel", ["cip_thorax_lowres/ct.nrrd", "cip_thorax_lowres/ct2_testinput.nii.gz", "cip_thorax_lowres/dicom"]
)
def test_header_geometry_equals_the_read_volumes(realdata, rel):
    """read_geometry (NIfTI/NRRD header only; a DICOM folder read whole) gives the reader's RAS+ grid."""
    from amt_core.data.volume import read_geometry, to_stored_grid

    grid, volume = read_geometry(realdata / rel), read_volume(realdata / rel)
    assert grid.shape == volume.shape and np.allclose(grid.affine, volume.affine)
    back, affine = to_stored_grid(volume.array, volume.affine, grid)
    assert back.shape == grid.stored_shape and np.allclose(affine, grid.stored_affine)
