"""Synthetic volumes: the cohort folder, determinism, parallel == serial, resumability, geometry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amt_core import registry
from amt_core.synth.design import study_design
from amt_core.synth.generate import build_cohort, render_case

N = 12


def _digests(root: Path) -> dict[str, str]:
    """SHA-256 of every volume, cases.csv and dataset.json of a cohort folder."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and (rel.endswith(".nii.gz") or rel in ("cases.csv", "dataset.json", "design.csv")):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    build_cohort(root, preset="tiny", n_cases=N, seed=0, workers=2, progress=False)
    return root


def test_folder_layout_and_case_table(cohort):
    from amt_core.data.cases import read_cases

    cases = read_cases(cohort / "cases.csv")  # validated: columns, files, no leakage
    assert len(cases) == N
    raw = pd.read_csv(cohort / "cases.csv")
    assert list(raw.columns) == list(registry.CASE_COLUMNS)
    for split, folder in (("train", "imagesTr"), ("tune", "imagesTr"), ("test", "imagesTs")):
        assert raw.loc[raw.split == split, "image"].str.startswith(folder + "/").all()
    assert (cohort / "dataset.json").is_file() and (cohort / "provenance.json").is_file()
    assert len(list((cohort / "imagesTr").glob("*_0000.nii.gz"))) == (raw.split != "test").sum()
    assert len(list((cohort / "labelsTs").glob("*.nii.gz"))) == (raw.split == "test").sum()
    # no temporary files left behind by the atomic writes
    assert not [p for p in cohort.rglob("*") if ".tmp" in p.name]


def test_volumes_read_back_in_ras_with_binary_labels_on_the_image_grid(cohort):
    from amt_core.data.volume import read_label, read_volume

    cases = pd.read_csv(cohort / "cases.csv")
    for row in cases.itertuples():
        img = read_volume(cohort / row.image)
        lab = read_label(cohort / row.label, img)
        assert img.shape == (48, 48, 32)
        assert img.axcodes == ("R", "A", "S")
        assert set(np.unique(lab.array)) <= {0, 1}
        assert lab.array.sum() > 0, f"{row.case_id}: empty tumour label"
        voxel_ml = float(np.prod(img.spacing)) / 1000.0
        assert row.tumour_volume_ml == pytest.approx(lab.array.sum() * voxel_ml, abs=0.01)
        assert -1024 <= img.array.min() and img.array.max() <= 3071


def test_same_seed_gives_byte_identical_files_serial_or_parallel(cohort, tmp_path):
    again = tmp_path / "again"
    build_cohort(again, preset="tiny", n_cases=N, seed=0, workers=1, progress=False)
    a, b = _digests(cohort), _digests(again)
    assert a == b
    assert sum(k.endswith(".nii.gz") for k in a) == 2 * N


def test_different_seed_gives_different_cohort(cohort, tmp_path):
    other = tmp_path / "other"
    build_cohort(other, preset="tiny", n_cases=N, seed=1, workers=2, progress=False)
    a, b = _digests(cohort), _digests(other)
    common = sorted(set(a) & set(b) - {"dataset.json"})
    assert common
    assert all(a[k] != b[k] for k in common if k.endswith(".nii.gz") and "images" in k)


def test_resume_regenerates_only_missing_or_damaged_cases(tmp_path):
    root = tmp_path / "resume"
    build_cohort(root, preset="tiny", n_cases=N, seed=0, workers=2, progress=False)
    cases = pd.read_csv(root / "cases.csv")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    digests = _digests(root)
    gone = root / cases.image[3]
    gone.unlink()
    damaged = root / cases.label[5]
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated
    stray = root / "imagesTs" / "OTHER_0000.nii.gz"  # a case that is not in the design
    stray.write_bytes(b"x")
    build_cohort(root, preset="tiny", n_cases=N, seed=0, workers=2, progress=False, resume=True)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    regenerated = {p for p in after if after[p] != before.get(p)}
    expected = {root / cases.image[3], root / cases.label[3], root / cases.image[5], root / cases.label[5]}
    assert regenerated == expected
    assert _digests(root) == digests  # and they came back identical, the stray case gone


def test_changed_settings_are_not_taken_for_valid_cases(tmp_path):
    from amt_core.atomic import OutputExistsError

    root = tmp_path / "c"
    build_cohort(root, preset="tiny", n_cases=4, seed=0, workers=1, progress=False)
    first = _digests(root)
    with pytest.raises(OutputExistsError, match="made with other settings .*seed 0, not 5"):
        build_cohort(root, preset="tiny", n_cases=4, seed=5, workers=1, progress=False, resume=True)
    assert _digests(root) == first
    # a killed build into it left its staging folder (a cohort's worth of images): the next build removes it
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".c.{dead.pid}.abc123.staging"
    (stale / "imagesTr").mkdir(parents=True)
    build_cohort(root, preset="tiny", n_cases=4, seed=5, workers=1, progress=False, overwrite=True)
    assert not stale.exists()
    build_cohort(tmp_path / "fresh", preset="tiny", n_cases=4, seed=5, workers=1, progress=False)
    assert _digests(root) == _digests(tmp_path / "fresh") != first  # replaced whole: no case of seed 0 left


def test_second_lesions_are_separate_components():
    from scipy import ndimage

    df = study_design(n_cases=60, seed=0)
    rows = df[df.n_lesions == 2].head(3).to_dict("records")
    assert rows
    for row in rows:
        _, label, _ = render_case(row, "demo", seed=0)
        n = ndimage.label(label)[1]
        assert n >= 2, f"{row['case_id']}: expected two lesions, found {n} component(s)"


def test_bad_preset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        build_cohort(tmp_path / "x", preset="huge", n_cases=4, progress=False)


def test_cli_writes_a_cohort(tmp_path):
    from amt_core.cli import main

    out = tmp_path / "cli"
    assert (
        main(
            [
                "cohort",
                "--preset",
                "tiny",
                "--n-cases",
                "4",
                "--seed",
                "2",
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out / "cases.csv")) == 4
    assert main(["cohort", "--preset", "tiny", "--n-cases", "2", "--out", str(out)]) == 2


def test_demo_grid_follows_the_preset_rules():
    df = study_design(n_cases=30, seed=0)
    for row in df.head(3).to_dict("records"):
        image, label, affine = render_case(row, "demo", seed=0)
        sp = np.sqrt((affine[:3, :3] ** 2).sum(0))
        assert image.shape[:2] == (128, 128) and image.shape[2] <= 130
        assert sp[2] == pytest.approx(max(row["slice_thickness_mm"], 2.5))
        assert 250 <= image.shape[2] * sp[2] <= 325
        assert image.dtype == np.int16 and label.dtype == np.uint8


def test_splat_segments_keeps_a_thin_vessels_volume():
    """A 0.5 mm vessel in 2.5 mm voxels adds the tissue it holds (a few per cent of each voxel), not a
    voxel-wide tube."""
    from amt_core.synth.canvas import Canvas, splat_segments

    cv = Canvas((40, 40, 40), (2.5, 2.5, 2.5), (0.0, 0.0, 0.0))
    p0, p1 = np.array([[20.0, 20.0, 20.0]]), np.array([[80.0, 60.0, 50.0]])
    box, frac = splat_segments(cv, p0, p1, np.array([0.5]), blur=0.6)
    length = float(np.linalg.norm(p1 - p0))
    assert frac.sum() * 2.5**3 == pytest.approx(np.pi * 0.5**2 * length, rel=0.02)
    assert 0.0 < frac.max() < 0.15
    assert splat_segments(cv, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)) == (None, None)


@pytest.mark.parametrize("dx", [0.7, 2.8])
def test_kernel_noise_is_blotchy_for_soft_and_fine_for_sharp_kernels(dx):
    from amt_core.synth.design import KERNELS
    from amt_core.synth.scanner import kernel_noise, kernel_nps

    def lag1(a):
        return float((a[1:] * a[:-1]).mean() / a.var())

    high = {}
    for kernel in ("soft", "sharp"):
        psf = KERNELS[kernel][1]
        nps = kernel_nps((64, 64), dx, psf)
        f = np.hypot(np.fft.fftfreq(64)[:, None], np.fft.rfftfreq(64)[None, :])
        high[kernel] = float(
            nps[f > 0.25].sum() / nps.sum()
        )  # share of power above half the Nyquist frequency
        noise = kernel_noise(np.random.default_rng(0), (64, 64, 6), dx, psf)
        assert (
            noise.dtype == np.float32
            and abs(float(noise.mean())) < 0.05
            and float(noise.std()) == pytest.approx(1.0)
        )
        high[kernel + "_lag1"] = lag1(noise)
    assert high["soft"] < high["sharp"]
    assert high["soft_lag1"] > high["sharp_lag1"]
