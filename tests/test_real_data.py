"""docs/real-data.md, run on real CT: four chest CTs and two DICOM series of ../shared/realdata, each given a
synthetic tumour in the prevascular space, go through the walk-through's commands (import, validate,
Table 1, train, evaluate, figures, report) at tiny training sizes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from amt_core.cli import main

#: (source in ../shared/realdata, split, institution, patient, sex) — test institutions appear nowhere else
SCANS = [
    ("chest_backgrounds/acrin_flt_breast_001.nii.gz", "train", "ACRIN site", "P1", "F"),
    ("chest_backgrounds/acrin_flt_breast_013.nii.gz", "train", "ACRIN site", "P2", "F"),
    ("chest_backgrounds/lung_dx_a0001.nii.gz", "train", "Lung-Dx site", "P3", "M"),
    ("cip_thorax_lowres/dicom", "tune", "CIP site", "P4", "M"),
    ("chest_backgrounds/lung_dx_a0002.nii.gz", "test", "External site 1", "P5", "M"),
    ("itkelastix_thorax/dicom_subset", "test", "External site 2", "P6", "F"),
]


def prevascular_tumour(volume, radius_mm: float = 14.0) -> np.ndarray:
    """A spherical mask in front of the great vessels: on the axial slice where the lungs are widest in the
    upper half of their extent, midway between the lungs, just behind the anterior lung edges (the
    prevascular space), kept out of lung and air. A test fixture, not a model of anatomy."""
    from scipy import ndimage

    hu, spacing = volume.array, np.array(volume.spacing)
    body = ndimage.binary_fill_holes(hu > -500, structure=np.ones((3, 3, 1)))
    lung = (hu < -500) & body
    lung_area = lung.sum(axis=(0, 1))
    zs = np.flatnonzero(lung_area > 0.3 * lung_area.max())
    upper = zs[len(zs) // 2 :] if len(zs) > 1 else zs
    z = int(upper[np.argmax(lung_area[upper])])
    xs, ys = np.nonzero(body[:, :, z])
    x0 = int(round(xs.mean()))
    lx, ly = np.nonzero(lung[:, :, z])
    y_front = int(np.percentile(ly, 95))  # the anterior lung edges (RAS: y grows anteriorly)
    centre = np.array([x0, y_front - radius_mm / spacing[1], z])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij"), axis=-1)
    ball = (((grid - centre) * spacing) ** 2).sum(-1) <= radius_mm**2
    return (ball & body & ~lung).astype(np.uint8)


@pytest.fixture(scope="module")
def hospital(realdata, tmp_path_factory) -> Path:
    """The walk-through's source folder: each real scan with a tumour painted in (soft tissue, 45 HU) and its
    mask, and metadata.csv."""
    from amt_core.data.volume import read_volume, write_volume

    root = tmp_path_factory.mktemp("hospital")
    rows, rng = [], np.random.default_rng(0)
    for k, (rel, split, institution, patient, sex) in enumerate(SCANS):
        volume = read_volume(realdata / rel)
        mask = prevascular_tumour(volume)
        assert mask.sum() > 50, rel
        image = volume.array.copy()
        image[mask > 0] = rng.normal(45.0, 12.0, int(mask.sum())).round()
        write_volume(image.astype(np.int16), volume.affine, root / "scans" / f"ct_{k:04d}.nii.gz")
        write_volume(mask, volume.affine, root / "masks" / f"ct_{k:04d}.nii.gz")
        rows.append(
            {
                "image": f"scans/ct_{k:04d}.nii.gz",
                "label": f"masks/ct_{k:04d}.nii.gz",
                "split": split,
                "institution": institution,
                "patient_id": patient,
                "sex": sex,
                "age": 60,
                "histology": "thymoma_B2",
                "contrast": "venous",
                "vendor": "GE",
            }
        )
    # one scan stays a DICOM series, as a hospital would hand it over: the tumour painted into the mask only
    dicom = realdata / SCANS[3][0]
    shutil.copytree(dicom, root / "scans" / "ct_dicom")
    write_volume(
        prevascular_tumour(read_volume(dicom)), read_volume(dicom).affine, root / "masks" / "ct_dicom.nii.gz"
    )
    rows[3].update(image="scans/ct_dicom", label="masks/ct_dicom.nii.gz", vendor="")
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_the_tumour_fixture_lies_in_the_anterior_mediastinum(realdata):
    from amt_core.data.volume import read_volume

    volume = read_volume(realdata / "chest_backgrounds" / "lung_dx_a0001.nii.gz")
    mask = prevascular_tumour(volume)
    hu = volume.array[mask > 0]
    assert np.median(hu) > -200  # soft tissue or vessel, not lung or air
    x, y, _ = np.nonzero(mask)
    body_x = np.nonzero(volume.array[:, :, int(np.nonzero(mask)[2].mean())] > -500)[0]
    assert abs(x.mean() - body_x.mean()) < 0.15 * (body_x.max() - body_x.min())  # near the midline


@pytest.mark.slow
@pytest.mark.realdata
def test_the_walkthrough_on_real_ct(hospital, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AMT_PSEUDONYM_KEY", "walk-through")
    cohorts = tmp_path / "cohorts"
    assert (
        main(
            [
                "import",
                "--source",
                str(hospital),
                "--metadata",
                str(hospital / "metadata.csv"),
                "--out",
                str(cohorts / "hospital"),
            ]
        )
        == 0
    )
    assert main(["validate", str(cohorts / "hospital" / "cases.csv"), "--volumes", "--no-progress"]) == 0
    assert "every volume read and usable" in capsys.readouterr().out
    cases = pd.read_csv(cohorts / "hospital" / "cases.csv")
    assert sorted(cases["split"]) == sorted(s[1] for s in SCANS)
    assert cases.loc[cases["image"].str.contains("Tr/"), "split"].isin(["train", "tune"]).all()
    dicom_row = cases.iloc[3]
    assert dicom_row["vendor"] == "GE" and dicom_row["slice_thickness_mm"] > 3  # from the DICOM header

    # the docs' params file, with the training made tiny (a GPU trains the study preset as it is)
    from amt_core.resources import preset_path

    study = yaml.safe_load(preset_path("study").read_text())
    assert study["model_preset"] == "full" and study["cohort_preset"] == "full"
    assert study["seeds"] == [0, 1, 2]  # the study reports the spread between three trainings
    params = {
        **{k: v for k, v in study.items() if k not in ("cohort_preset", "n_cases")},
        "cohort_csv": "hospital/cases.csv",
        "n_bootstrap": 100,
        "n_example_slices": 1,
        "seeds": [0, 1],  # two trainings are enough to check the study preset's seed path
        "train_overrides": {
            "patch_size": [32, 32, 32],
            "channels": [8, 16, 32],
            "strides": [1, 2, 2],
            "kernels": [3, 3, 3],
            "batch_size": 1,
            "max_epochs": 2,
            "steps_per_epoch": 2,
            "target_spacing": [4.0, 4.0, 4.0],
            "num_workers": 0,
            "bf16": False,
        },
    }
    (cohorts / "study.yaml").write_text(yaml.safe_dump(params))
    run = tmp_path / "runs" / "hospital"
    assert main(["run", "--params", str(cohorts / "study.yaml"), "--out", str(run), "--quiet"]) == 0, (
        capsys.readouterr().err
    )

    table1 = pd.read_csv(run / "tables" / "table1.csv")
    assert len(table1) > 0
    plans = json.loads((run / "train" / "plans.json").read_text())
    assert plans["network"] == "dynunet" and plans["dataset"]["n_train_cases"] == 3
    assert json.loads((run / "train" / "training.json").read_text())["complete"] is True
    config = json.loads((run / "train" / "config.json").read_text())
    assert config["network"] == "dynunet" and config["deep_supervision"] is True
    summary = json.loads((run / "evaluation" / "test" / "summary.json").read_text())
    assert summary["n_scans"] == 2 and summary["n_lesions"] == 2 and summary["n_institutions"] == 2
    assert summary["config"]["ci_method"] == "bca"  # the study preset's interval
    assert sorted(pd.read_csv(run / "analysis" / "seed_metrics.csv")["seed"]) == [0, 1]
    report = (run / "report.md").read_text()
    assert "Institution-cluster bootstrap: not estimable" in report  # 2 test institutions
    for stem in ("froc_iou", "examples"):
        assert (run / "figures" / f"{stem}.png").is_file()
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["config"]["params"]["cohort_csv"].endswith("hospital/cases.csv")
