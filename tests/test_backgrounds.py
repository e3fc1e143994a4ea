"""Tumours inserted into real chest CT (amt_core.synth.backgrounds / hybrid): placement, label, checks,
determinism, the hybrid cohort folder, and that no HU window finds the tumour. Uses the bundled backgrounds
(downsampled real CT shipped with the package), so it needs no ../shared data."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from amt_core.data.volume import read_volume
from amt_core.synth.backgrounds import (
    MAX_CLIPPED,
    VOLUME_TOLERANCE,
    InsertionRejected,
    find_prevascular_space,
    insert_tumour,
    outline_composition,
)
from amt_core.synth.hybrid import bundled_backgrounds

#: the smallest bundled background (thoracic inlet to upper abdomen, 8 mm slices)
SMALL = "lung_dx_a0002.nii.gz"
HISTOLOGIES = ("thymoma_AB", "thymic_carcinoma", "lymphoma")


@pytest.fixture(scope="module")
def background():
    vol = read_volume(bundled_backgrounds() / SMALL)
    return vol, find_prevascular_space(vol.array, vol.spacing, vol.source)


def _insert(vol, anatomy, histology, seed, diameter=45.0, tries=6):
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        try:
            return insert_tumour(
                vol.array,
                vol.spacing,
                histology,
                diameter,
                rng,
                anatomy=anatomy,
                affine=vol.affine,
                source=vol.source,
            )
        except InsertionRejected:
            continue
    pytest.fail(f"{histology}: no insertion in {tries} tries")


@pytest.fixture(scope="module")
def inserted(background):
    vol, anatomy = background
    return [(h, *_insert(vol, anatomy, h, seed)) for seed, h in enumerate(HISTOLOGIES)]


def test_bundle_is_there_with_its_licences_and_sources():
    folder = bundled_backgrounds()
    names = {p.name for p in folder.iterdir()}
    assert {
        "LICENSE-Lung-PET-CT-Dx.txt",
        "LICENSE-ACRIN-FLT-Breast.txt",
        "SOURCES.md",
        "backgrounds.csv",
    } <= names
    assert len([n for n in names if n.endswith(".nii.gz")]) == 4


def test_prevascular_position_is_behind_the_sternum_between_the_lungs(background, inserted):
    vol, anatomy = background
    hu, sp = vol.array, np.asarray(vol.spacing)
    assert anatomy.z_levels[0] <= anatomy.z_levels[1]
    for histology, _, _, rec in inserted:
        i, j, k = (int(round(v)) for v in rec.position_voxel)
        # bone in front of it within 6 cm (the sternum), in the midline
        ahead = hu[i - 2 : i + 3, j : j + int(60 / sp[1]), k]
        assert (ahead > 150).any(), f"{histology}: no sternum in front of the tumour at {rec.position_voxel}"
        # aerated lung on both sides within 9 cm, in the same slice and about the same depth
        rows = slice(max(j - int(25 / sp[1]), 0), j + int(10 / sp[1]))
        right = hu[i : i + int(90 / sp[0]), rows, k]
        left = hu[max(i - int(90 / sp[0]), 0) : i + 1, rows, k]
        assert (right < -700).any() and (left < -700).any(), f"{histology}: not between the lungs"
        # the background there was fat or soft tissue, not lung or bone
        assert -200 < hu[i, j, k] < 150, f"{histology}: centroid on {hu[i, j, k]:.0f} HU"


def test_label_is_inside_the_body_and_never_in_aerated_lung(background, inserted):
    vol, anatomy = background
    for histology, image, label, _ in inserted:
        t = label > 0
        assert t.any() and anatomy.body[t].all(), histology
        assert not (vol.array[t] < -500).any(), f"{histology}: label on aerated lung"
        # outside the tumour's box the image is untouched
        assert np.count_nonzero(image != vol.array) < 0.05 * image.size


def test_volume_within_tolerance_of_the_plan(background, inserted):
    vol, _ = background
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    for histology, image, label, rec in inserted:
        assert rec.volume_ml == pytest.approx(label.sum() * voxel_ml, abs=0.01)
        lo = rec.planned_volume_ml * (1 - MAX_CLIPPED - VOLUME_TOLERANCE)
        assert lo <= rec.volume_ml <= rec.planned_volume_ml * (1 + VOLUME_TOLERANCE), histology
        assert 0.0 <= rec.clipped_fraction <= MAX_CLIPPED
        assert abs(rec.contrast_hu) >= 15.0
        # the record says how much of the outline a reader sees; it holds for the image rounded to int16 as
        # it is written (render_hybrid_case)
        written = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
        outline = outline_composition(written, label, vol.spacing)
        assert rec.border_contrast == pytest.approx(outline["border_contrast"], abs=0.02)
        assert rec.border_lung == pytest.approx(outline["lung"], abs=0.02)
        assert 0.0 < rec.border_contrast <= 1.0 and rec.border_lung <= rec.border_contrast


def test_impossible_requests_are_rejected_with_their_reason(background):
    vol, anatomy = background
    with pytest.raises(
        InsertionRejected,
        match=r"does not fit the prevascular space: \d+% of it is clipped \((lung|outside the anterior mediastinum) \d+%",
    ):
        insert_tumour(
            vol.array,
            vol.spacing,
            "lymphoma",
            160.0,
            np.random.default_rng(0),
            anatomy=anatomy,
            max_shrinks=0,
        )
    # a "CT" of soft tissue in air: a body with no lungs
    block = np.full((40, 40, 12), -1000.0, np.float32)
    block[5:35, 5:35, :] = 40.0
    with pytest.raises(InsertionRejected, match="no aerated lung"):
        insert_tumour(block, (3.0, 3.0, 5.0), "thymoma_AB", 40.0, np.random.default_rng(0))


def test_insertion_is_deterministic(background, inserted):
    vol, anatomy = background
    histology, image, label, rec = inserted[0]
    again = _insert(vol, anatomy, histology, 0)
    assert np.array_equal(again[0], image) and np.array_equal(again[1], label)
    assert again[2] == rec


def _slab(vol, anatomy, first: int):
    """The scan from slice ``first`` up and its anatomy (the same levels): the same chest, scanned from
    higher up, so a tumour planned as in the whole scan reaches below the slab's first slice."""
    arrays = ("body", "lungs", "bone", "mediastinum", "anterior", "space")
    cut = dataclasses.replace(
        anatomy,
        **{name: getattr(anatomy, name)[:, :, first:] for name in arrays},
        sternum_y=anatomy.sternum_y[first:],
        z_levels=(anatomy.z_levels[0] - first, anatomy.z_levels[1] - first),
    )
    return vol.array[:, :, first:], cut


def test_a_tumour_beyond_the_scan_counts_as_clipped(background, inserted):
    """thymoma_AB, seed 0 in the whole scan: label on slices 11-15, recorded as before the field of view was
    counted (these values); in a slab from slice 10 it is the same tumour; from slice 12 its part below (slice
    11: 8 % of it) is clipped at the field of view, from slice 13 (a third of it) it does not fit (it was
    recorded 'clipped 0.004' there, planned 18 ml: only its part inside the slab)."""
    vol, anatomy = background
    _, _, label, rec = inserted[0]
    assert np.flatnonzero(label.any(axis=(0, 1)))[[0, -1]].tolist() == [11, 15]
    assert (rec.planned_volume_ml, rec.volume_ml, rec.clipped_fraction, rec.clipped_at) == (
        26.43,
        26.11,
        0.008,
        "none",
    )
    assert int(label.sum()) == 488

    def insert(first):
        image, cut = _slab(vol, anatomy, first)
        rng = np.random.default_rng(0)
        return insert_tumour(image, vol.spacing, "thymoma_AB", 45.0, rng, anatomy=cut, max_shrinks=0)

    _, inside, inside_rec = insert(10)  # the tumour's box reaches below the slab, the tumour does not
    assert np.array_equal(inside, label[:, :, 10:])
    assert (inside_rec.planned_volume_ml, inside_rec.clipped_fraction, inside_rec.clipped_at) == (
        26.43,
        0.008,
        "none",
    )
    _, cut_label, cut_rec = insert(12)
    assert np.array_equal(cut_label, label[:, :, 12:])  # the same tumour, less its slice 11
    assert cut_rec.planned_volume_ml == rec.planned_volume_ml
    below = float(label[:, :, :12].sum()) / float(label.sum())
    assert cut_rec.clipped_fraction == pytest.approx(rec.clipped_fraction + below, abs=0.01)
    assert cut_rec.clipped_at == "outside the field of view"
    # the rejection names where it is clipped: here beyond the scan's first slice, not in the lung or bone
    with pytest.raises(InsertionRejected, match=r"33% of it is clipped \(outside the field of view 3\d%\)"):
        insert(13)


def _best_window_dice(image, label, lo=-300, hi=600, step=5):
    """Best Dice of any HU window [a, b] (the yardstick of test_synth_realism, on inserted tumours)."""
    edges = np.arange(lo, hi + step, step, dtype=float)
    t = label > 0
    ct = np.concatenate([[0], np.cumsum(np.histogram(image[t], edges)[0])])
    ca = np.concatenate([[0], np.cumsum(np.histogram(image, edges)[0])])
    tp, pp = ct[None, :] - ct[:, None], ca[None, :] - ca[:, None]
    return float((2.0 * np.clip(tp, 0, None) / np.maximum(pp + t.sum(), 1)).max())


def test_no_hu_window_segments_an_inserted_tumour(inserted):
    for histology, image, label, _ in inserted:
        best = _best_window_dice(image, label)
        assert best < 0.25, f"{histology}: a HU window reaches Dice {best:.2f} on the inserted tumour"


def test_hybrid_cohort_validates_and_is_patient_disjoint(tmp_path, capsys):
    import pandas as pd

    from amt_core.cli import main
    from amt_core.data.cases import read_cases

    out = tmp_path / "hybrid"
    assert main(["cohort", "--backgrounds", "bundled", "--out", str(out), "--seed", "1", "--summary"]) == 0
    # --summary prints Table 1 of the hybrid cohort as it does of a synthetic one; a bar counts the cases
    captured = capsys.readouterr()
    printed = captured.out
    assert "institutions" in printed and "histology:" in printed and "all" in printed
    assert "insert tumours" in captured.err and "4/4" in captured.err
    df = read_cases(out / "cases.csv")
    assert len(df) == 4 and set(df.anatomy) == {"real"}
    splits = df.groupby("patient_id").split.nunique()
    assert (splits == 1).all()
    test_inst = set(df.institution_id[df.split == "test"])
    assert not test_inst & set(df.institution_id[df.split != "test"])
    records = pd.read_csv(out / "insertions.csv")
    assert list(records.case_id) == list(df.case_id)
    assert (out / "rejections.csv").is_file()
    # the folder policy: refused without --overwrite (exit 2), and --resume is not offered
    assert main(["cohort", "--backgrounds", "bundled", "--out", str(out)]) == 2
    assert main(["cohort", "--backgrounds", "bundled", "--out", str(out), "--resume"]) == 2
    # options of the synthetic generator are refused, never silently ignored; nothing is written
    capsys.readouterr()
    for flags in (["--preset", "full"], ["--n-institutions", "5", "--workers", "2"], ["--real-anatomy", "2"]):
        assert main(["cohort", "--backgrounds", "bundled", "--out", str(tmp_path / "x"), *flags]) == 2
        err = capsys.readouterr().err
        assert f"--backgrounds cannot be combined with {flags[0]}" in err and "Traceback" not in err
        assert not (tmp_path / "x").exists()


def test_real_anatomy_subset_of_a_synthetic_cohort(tmp_path):
    import pandas as pd

    from amt_core.data.cases import read_cases
    from amt_core.synth.generate import build_cohort

    csv = build_cohort(
        tmp_path / "c", preset="tiny", n_cases=3, seed=0, real_anatomy=1, workers=1, progress=False
    )
    df = read_cases(csv)
    real = df[df.anatomy == "real"]
    assert len(real) == 1 and set(df.anatomy) == {"real", "synthetic"}
    assert (real.split == "test").all()
    # its institution is its own, seen in no other scan; its patient is a bundled background's
    assert not set(real.institution_id) & set(df.institution_id[df.anatomy == "synthetic"])
    bundled = pd.read_csv(bundled_backgrounds() / "backgrounds.csv")
    assert set(real.patient_id) <= set(bundled.patient_id)
    records = pd.read_csv(csv.parent / "insertions.csv")
    assert list(records.case_id) == list(real.case_id)
    assert records.volume_ml.iloc[0] == pytest.approx(real.tumour_volume_ml.iloc[0], abs=0.01)


def test_a_thin_bright_object_in_front_of_the_sternum_is_not_taken_for_it(background):
    """An ECG lead or skin marker (a thin line of metal HU under the skin, in the midline) must not move the
    back of the sternum forward: the prevascular space would then reach through the sternum."""
    vol, anatomy = background
    image = vol.array.copy()
    z0, z1 = anatomy.z_levels
    found = [k for k in range(z0, z1 + 1) if anatomy.sternum_y[k] >= 0]
    assert found, "the fixture's background has a sternum"
    for k in found:
        xs = np.flatnonzero(anatomy.body[:, :, k].any(axis=1))
        x = int(round(0.5 * (xs[0] + xs[-1])))
        y_skin = int(np.flatnonzero(anatomy.body[x, :, k]).max())
        image[x - 1 : x + 2, y_skin - 2, k] = 2000.0  # one row thick, 3 voxels wide
    again = find_prevascular_space(image, vol.spacing, vol.source)
    assert np.array_equal(again.sternum_y[found], anatomy.sternum_y[found])


def _retrosternal_widths(anatomy, k):
    """The mediastinum's width (voxels) per row in front of the lungs' anterior tips up to the sternum."""
    xs = np.flatnonzero(anatomy.body[:, :, k].any(axis=1))
    xm = 0.5 * (xs[0] + xs[-1])
    lung = anatomy.lungs[:, :, k]
    x = np.arange(lung.shape[0])[:, None]
    both = (lung & (x < xm)).any(axis=0) & (lung & (x > xm)).any(axis=0)
    j0 = int(np.flatnonzero(both).max())
    return [int(anatomy.mediastinum[:, j, k].sum()) for j in range(j0 + 1, int(anatomy.sternum_y[k]))]


def test_retrosternal_mediastinum_narrows_towards_the_sternum(background):
    """In front of the lungs' anterior tips the mediastinum narrows to the sternum along a rounded edge (not a
    rectangle as wide as the gap between the tips, whose straight sides would cut a tumour off straight)."""
    _, anatomy = background
    z0, z1 = anatomy.z_levels
    deep = [
        k
        for k in range(z0, z1 + 1)
        if anatomy.sternum_y[k] >= 0 and len(_retrosternal_widths(anatomy, k)) >= 3
    ]
    assert deep, "the fixture's background has levels with at least 3 rows behind the sternum"
    for k in deep:
        w = _retrosternal_widths(anatomy, k)
        assert w[-1] < w[0] and (np.diff(w) <= 0).all(), f"slice {k}: widths {w}"


def _arterial(image, anatomy, rise=300.0):
    """A synthetic arterial phase: the great vessels and the heart (soft tissue thicker than a vessel's radius
    in the front half of the mediastinum, at least 1 cm behind the sternum) raised by ``rise`` HU."""
    from scipy import ndimage

    from amt_core.synth.backgrounds import VESSEL_RADIUS_MM

    sp = np.asarray(anatomy.spacing)
    r = max(1, int(round(VESSEL_RADIUS_MM / sp[0])))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    soft = (ndimage.uniform_filter(image, size=(3, 3, 1)) > -20.0) & anatomy.anterior
    ys = np.arange(image.shape[1])[None, :, None]
    behind = (anatomy.sternum_y >= 0)[None, None, :] & (
        ys < (anatomy.sternum_y - 10.0 / sp[1])[None, None, :]
    )
    vessels = ndimage.binary_opening(soft & behind, structure=(xx**2 + yy**2 <= r * r)[:, :, None])
    out = image.copy()
    out[vessels] += np.float32(rise)
    return out, vessels


def test_an_arterial_phase_aorta_is_not_bone(background):
    """Contrast-filled great vessels and heart (above ``BONE_HU``) are blood, not bone: the tumour is pushed
    against them, not cut off at them; the sternum is still found, and the phase is read as arterial."""
    vol, anatomy = background
    image, vessels = _arterial(vol.array, anatomy)
    assert vessels.sum() > 1000 and (image[vessels] > 250.0).mean() > 0.9
    arterial = find_prevascular_space(image, vol.spacing, vol.source)
    assert (arterial.bone & vessels).sum() < 0.02 * vessels.sum()
    assert np.array_equal(arterial.sternum_y, anatomy.sternum_y)
    assert arterial.mediastinum[vessels].mean() > 0.95
    scan = SimpleNamespace(array=image, spacing=vol.spacing, affine=vol.affine, source=vol.source)
    _, label, rec = _insert(scan, arterial, "thymoma_AB", 0)
    assert rec.contrast == "arterial" and rec.blood_hu > 250.0 and label.any()


def test_mass_effect_memory_scales_with_few_float32_arrays(background):
    """``displace`` on a background at twice the fixture's resolution: its peak memory stays below 250 bytes
    per voxel of the displaced region (about a dozen float32 arrays; the float64 version took about 400)."""
    import dataclasses
    import tracemalloc

    from amt_core.synth.backgrounds import displace

    vol, anatomy = background

    def up(v):
        return np.repeat(np.repeat(np.repeat(v, 2, 0), 2, 1), 2, 2)

    sp = np.asarray(vol.spacing) / 2
    fine = dataclasses.replace(
        anatomy,
        spacing=tuple(sp),
        mediastinum=up(anatomy.mediastinum),
        lungs=up(anatomy.lungs),
        bone=up(anatomy.bone),
    )
    k = (anatomy.z_levels[0] + anatomy.z_levels[1]) // 2
    c = np.array([vol.array.shape[0], 2 * anatomy.sternum_y[k] - 15.0 / sp[1], 2 * k])
    box = tuple(slice(int(ci - 20.0 / s), int(ci + 20.0 / s) + 1) for ci, s in zip(c, sp, strict=True))
    g = np.meshgrid(
        *[(np.arange(b.start, b.stop) - ci) * s for b, ci, s in zip(box, c, sp, strict=True)], indexing="ij"
    )
    occ = np.clip(15.0 - np.sqrt(sum(x * x for x in g)), 0.0, 1.0).astype(np.float32)
    bg = up(vol.array)
    tracemalloc.start()
    try:
        region, out, shift = displace(bg, occ, box, fine, 10.0, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.float32 and out.shape == tuple(s.stop - s.start for s in region)
    assert shift > 1.0 and np.isfinite(out).all()
    assert peak < 250 * out.size, f"peak {peak / 2**20:.0f} MiB for {out.size} voxels"


def _outline_scene(left: float, right: float):
    """A 40 HU box in the middle of a slab whose left half is ``left`` HU and right half ``right`` HU."""
    image = np.full((60, 60, 6), right, np.float32)
    image[:30] = left
    label = np.zeros(image.shape, np.uint8)
    label[24:36, 20:40, 1:5] = 1
    image[label > 0] = 40.0
    return image, label


def test_outline_composition_splits_the_outline_by_what_lies_beside_it():
    image, label = _outline_scene(-850.0, 45.0)  # lung on one side, unenhanced blood on the other
    c = outline_composition(image, label, (1.0, 1.0, 2.0))
    assert c["lung"] == pytest.approx(0.5, abs=0.08)
    assert c["like_tumour"] == pytest.approx(0.5, abs=0.08)
    assert c["fat"] == pytest.approx(0.0, abs=0.02)
    assert c["border_contrast"] == pytest.approx(1.0 - c["like_tumour"])
    image, label = _outline_scene(
        -100.0, 160.0
    )  # fat and enhanced blood: all of it stands out, none of it lung
    c = outline_composition(image, label, (1.0, 1.0, 2.0))
    assert c["border_contrast"] > 0.97  # all but where the 3 x 3 median straddles the seam and the tumour
    assert c["lung"] == 0.0 and c["fat"] == pytest.approx(0.5, abs=0.08)


def _dicom_background(folder, make_dicom_series, patient="PID-1", sex="M", manufacturer="GE MEDICAL SYSTEMS"):
    hu = np.full((6, 6, 4), -1000.0)
    identity = {"PatientID": patient, "PatientName": "Doe^Jane"}
    return make_dicom_series(folder, hu, identity=identity, sex=sex, manufacturer=manufacturer)


def test_two_backgrounds_of_one_patient_are_refused(tmp_path, make_dicom_series):
    """One patient in two splits would leak: two DICOM series with one PatientID, or one scan copied under
    two names, are refused naming both; another patient is fine, and the header states sex and vendor."""
    import shutil

    from amt_core.cli import main
    from amt_core.synth.hybrid import list_backgrounds

    folder = tmp_path / "bgs"
    _dicom_background(folder / "scan_a", make_dicom_series)
    _dicom_background(folder / "scan_b", make_dicom_series, sex="F", manufacturer="SIEMENS")
    with pytest.raises(ValueError, match=r"scan_a, scan_b hold the same DICOM PatientID"):
        list_backgrounds(folder)
    assert main(["cohort", "--backgrounds", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    # anonymised series often share one PatientID: patient ids stated in backgrounds.csv overrule it
    (folder / "backgrounds.csv").write_text("file,patient_id\nscan_a,P1\nscan_b,P2\n")
    assert list(list_backgrounds(folder).patient_id) == ["P1", "P2"]
    (folder / "backgrounds.csv").unlink()

    shutil.rmtree(folder / "scan_b")
    _dicom_background(folder / "scan_b", make_dicom_series, patient="PID-2", sex="F", manufacturer="SIEMENS")
    rows = list_backgrounds(folder).set_index("file")
    assert rows.loc["scan_a", ["sex", "vendor"]].tolist() == ["M", "GE"]
    assert rows.loc["scan_b", ["sex", "vendor"]].tolist() == ["F", "Siemens"]
    assert "PID" not in " ".join(rows.astype(str).to_numpy().ravel())  # the PatientID is never carried
    # a vendor written in backgrounds.csv as a Manufacturer tag would be is the header's vendor
    (folder / "backgrounds.csv").write_text("file,vendor\nscan_a,SIEMENS\n")
    assert list(list_backgrounds(folder).vendor) == ["Siemens", "Siemens"]
    (folder / "backgrounds.csv").unlink()

    shutil.copy(bundled_backgrounds() / SMALL, folder / "one.nii.gz")
    shutil.copy(bundled_backgrounds() / SMALL, folder / "two.nii.gz")
    with pytest.raises(ValueError, match=r"one\.nii\.gz, two\.nii\.gz hold the same bytes"):
        list_backgrounds(folder)


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("file,patient_id,sex\nscan.nii.gz,P 1/x,Q\n", r"row 2, patient_id 'P 1/x'.*row 2, sex 'Q'"),
        ("file,contrast\nscan.nii.gz,maybe\n", r"row 2, contrast 'maybe': expected one of"),
        (
            "file,slice_thickness_mm\nscan.nii.gz,abc\n",
            r"row 2, slice_thickness_mm 'abc': expected a positive",
        ),
        (
            "file,sex\nother.nii.gz,M\nscan.nii.gz,M\nscan.nii.gz,F\n",
            r"names no scan.*other.*described twice",
        ),
        (  # one patient twice is named with the other problems, not in a second error after them
            "file,patient_id,sex\nscan.nii.gz,P1,Q\nother.nii.gz,P1,M\n",
            r"row 2, sex 'Q'.*rows 2, 3, patient_id 'P1': one scan per patient",
        ),
        (b"\xff\xfe\x00binary", r"backgrounds\.csv: not a readable CSV table"),
    ],
)
def test_a_bad_manifest_is_refused_naming_file_row_and_column(tmp_path, manifest, expected):
    """backgrounds.csv is read as strictly as a case table: a value the cohort could not carry (or would
    silently replace) is an error naming the file, the row and the column, before anything is written."""
    import shutil

    from amt_core.synth.hybrid import list_backgrounds

    shutil.copy(bundled_backgrounds() / SMALL, tmp_path / "scan.nii.gz")
    path = tmp_path / "backgrounds.csv"
    path.write_bytes(manifest if isinstance(manifest, bytes) else manifest.encode())
    with pytest.raises(ValueError, match=r"backgrounds\.csv: .*" + expected.split("backgrounds\\.csv: ")[-1]):
        list_backgrounds(tmp_path)


def test_a_killed_hybrid_build_leaves_no_staging_folder_after_the_next_build(tmp_path):
    """``amt cohort --backgrounds`` builds beside ``--out``; a SIGKILL leaves that staging folder (a cohort's
    worth of images) behind, and the next build into the same ``--out`` removes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from amt_core.cli import main

    out = tmp_path / "hybrid"
    cmd = [sys.executable, "-m", "amt_core.cli", "cohort", "--backgrounds", "bundled", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.monotonic()
    while not list(tmp_path.glob(".hybrid.*.staging/images*/*.nii.gz")):  # one case written, three to go
        assert victim.poll() is None, "the build ended before the kill"
        assert time.monotonic() - t < 120, "no case written after 120 s"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert list(tmp_path.glob(".hybrid.*.staging")) and not out.exists()
    assert main(["cohort", "--backgrounds", "bundled", "--out", str(out), "--seed", "1"]) == 0
    assert (out / "cases.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hybrid"]


def test_backgrounds_that_cannot_hold_a_tumour_are_all_named_before_any_insertion(tmp_path):
    """A folder with an upper-abdomen slab and a scan cropped to a few centimetres among real chest CTs:
    the build is refused at once, naming each unusable scan with its reason, and writes nothing."""
    import shutil

    import nibabel as nib

    from amt_core.cli import main

    folder = tmp_path / "bgs"
    folder.mkdir()
    for name in ("lung_dx_a0001.nii.gz", "lung_dx_a0002.nii.gz", "acrin_flt_breast_001.nii.gz"):
        shutil.copy(bundled_backgrounds() / name, folder / name)
    chest = nib.load(bundled_backgrounds() / "lung_dx_a0001.nii.gz")
    hu = np.asarray(chest.dataobj)
    for name, start, stop in (
        ("abdomen_slab.nii.gz", (0, 0, 0), (256, 167, 6)),  # liver and stomach
        ("cropped.nii.gz", (100, 90, 30), (130, 120, 34)),  # 5 x 5 cm of mediastinum
    ):
        affine = chest.affine.copy()
        affine[:3, 3] = chest.affine[:3, :3] @ start + chest.affine[:3, 3]
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        nib.save(nib.Nifti1Image(hu[box], affine), folder / name)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"2 of 5 backgrounds cannot hold") as err:
        from amt_core.synth.hybrid import build_hybrid_cohort

        build_hybrid_cohort(folder, out)
    assert "abdomen_slab.nii.gz: " in str(err.value) and "cropped.nii.gz: " in str(err.value)
    assert str(folder / "cropped.nii.gz") not in str(err.value)  # named once, by its file name
    assert main(["cohort", "--backgrounds", str(folder), "--out", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
