"""One geometry reader and one NIfTI writer (``amt_core.data.volume``): a file's grid from its header
equals the grid of the volume read whole, and an output returns to the file's own voxel order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from amt_core.data.volume import (
    Geometry,
    VolumeError,
    nifti_gz_bytes,
    read_geometry,
    read_label,
    read_probability,
    read_volume,
    to_stored_grid,
    write_volume,
)

# a file stored in L-P-I order with its axes permuted (z, x, y), not on RAS axes: the reader reorients it
_AFFINE = np.array([[0.0, -0.8, 0.0, 40.0], [0.0, 0.0, -1.2, 30.0], [2.5, 0.0, 0.0, -60.0], [0, 0, 0, 1]])


@pytest.fixture
def stored(tmp_path):
    rng = np.random.default_rng(0)
    array = (rng.normal(-400, 200, (6, 9, 7))).astype(np.float32)
    path = write_volume(array, _AFFINE, tmp_path / "ct.nii.gz")
    return path, array


def test_header_geometry_is_the_read_volumes_grid_and_returns_to_the_file(stored, tmp_path):
    path, array = stored
    grid, volume = read_geometry(path), read_volume(path)
    assert isinstance(grid, Geometry) and grid.shape == volume.shape == (9, 7, 6)
    assert np.allclose(grid.affine, volume.affine) and grid.spacing == pytest.approx(volume.spacing)
    assert grid.stored_shape == (6, 9, 7) and np.allclose(grid.stored_affine, _AFFINE)
    back, affine = to_stored_grid(volume.array, volume.affine, grid)
    assert np.array_equal(back, array) and np.allclose(affine, _AFFINE)
    # a label is checked against the header's grid as against the image
    label = np.zeros(array.shape, np.uint8)
    label[2:4, 3:6, 1:5] = 1
    write_volume(label, _AFFINE, tmp_path / "label.nii.gz")
    assert read_label(tmp_path / "label.nii.gz", grid).array.sum() == 24
    write_volume(label, np.diag([1.0, 1.0, 1.0, 1.0]), tmp_path / "other.nii.gz")
    with pytest.raises(VolumeError, match="other.nii.gz is not on the grid of image .*ct.nii.gz"):
        read_label(tmp_path / "other.nii.gz", grid)


def test_geometry_of_a_damaged_or_missing_file_is_the_readers_error(tmp_path):
    with pytest.raises(VolumeError, match="missing.nii.gz: no such file"):
        read_geometry(tmp_path / "missing.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(VolumeError, match="bad.nii.gz: cannot read"):
        read_geometry(tmp_path / "bad.nii.gz")


def test_the_one_writer_scales_probabilities_and_writes_the_same_bytes(tmp_path):
    prob = np.linspace(0, 1, 6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    q = np.round(prob * 255).astype(np.uint8)
    path = write_volume(q, _AFFINE, tmp_path / "p_prob.nii.gz", slope=1 / 255)
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.uint8 and img.dataobj.slope == pytest.approx(1 / 255)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    grid = read_geometry(path)
    prob_ras = read_probability(path, grid).array
    assert prob_ras.shape == grid.shape and np.allclose(
        to_stored_grid(prob_ras, grid.affine, grid)[0], q / 255
    )
    assert nifti_gz_bytes(q, _AFFINE) == nifti_gz_bytes(q, _AFFINE)  # deterministic (gzip mtime 0)
