"""nnU-Net v2 itself accepts amt's cohort folders, and amt reads nnU-Net's predictions folder unchanged.

Runs the blocks of docs/nnunet.md marked ``<!-- tested: NAME -->`` verbatim with bash (so the doc's
commands are the commands tested); the GPU steps (train, predict) are replaced by nnU-Net's own
preprocessing and export function (``nnunetv2.inference.export_prediction``), the code
``nnUNetv2_predict --save_probabilities`` ends with, fed logits made from the reference label.
Skipped when nnunetv2 is not installed (``pip install -e '.[nnunet]'``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (pip install -e '.[nnunet]')")

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "nnunet.md"


def doc_block(name: str) -> str:
    """The bash block of docs/nnunet.md that follows ``<!-- tested: name -->``."""
    found = re.search(rf"<!-- tested: {name} -->\s*```bash\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"docs/nnunet.md has no block marked 'tested: {name}'"
    return found.group(1)


def run_doc(name: str, cwd: Path) -> str:
    """Run the ``env`` block and then block ``name`` in ``cwd`` with bash -e; returns the output."""
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        nnUNet_def_n_proc="1",
        nnUNet_n_proc_DA="1",
    )
    script = "set -euo pipefail\n" + doc_block("env") + doc_block(name)
    run = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, (
        f"docs/nnunet.md block {name!r} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )
    return run.stdout + run.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The doc's cohort block run once: a tiny cohort, linked as Dataset501_AMT, verified and planned."""
    root = tmp_path_factory.mktemp("nnunet")
    out = run_doc("cohort", root)
    assert "If you didn't see any error messages then your dataset is most likely OK!" in out
    return root


def test_amt_cohort_passes_nnunet_verification(workspace):
    pre = workspace / "nnunet" / "preprocessed" / "Dataset501_AMT"
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    assert (
        len(fingerprint["spacings"])
        == json.loads((workspace / "data/amt_tiny/dataset.json").read_text())["numTraining"]
    )
    assert (pre / "nnUNetPlans.json").is_file()


def test_amt_import_passes_nnunet_verification(tmp_path, make_dicom_series):
    """A DICOM series, a NIfTI in LPS and an NRRD, imported with `amt import`, pass nnU-Net's check."""
    import SimpleITK as sitk

    from amt_core.data.volume import read_volume, write_volume

    src = tmp_path / "scans"
    rng = np.random.default_rng(0)

    def ct(shape):
        hu = np.full(shape, -1000.0)
        hu[2:-2, 2:-2, :] = rng.normal(40, 10, (shape[0] - 4, shape[1] - 4, shape[2])).round()
        return hu

    a = make_dicom_series(src / "dicom_a", ct((12, 10, 6)))
    b = write_volume(ct((12, 10, 8)).astype(np.float32), np.diag([-0.7, -0.7, 3.0, 1]), src / "b.nii.gz")
    nrrd = sitk.GetImageFromArray(ct((8, 10, 12)).astype(np.int16))
    nrrd.SetSpacing((0.9, 0.9, 1.5))
    sitk.WriteImage(nrrd, str(src / "c.nrrd"))
    for name, image in (("a", a), ("b", b), ("c", src / "c.nrrd")):
        vol = read_volume(image)
        mask = np.zeros(vol.shape, np.uint8)
        mask[3:7, 3:6, 1:4] = 1
        write_volume(mask, vol.affine, src / f"{name}_mask.nii.gz")
    pd.DataFrame(
        {
            "image": ["dicom_a", "b.nii.gz", "c.nrrd"],
            "label": [f"{n}_mask.nii.gz" for n in "abc"],
            "split": ["train", "tune", "test"],
            "institution": ["Clinic A", "Clinic A", "Clinic B"],
            "sex": ["F", "M", "F"],
        }
    ).to_csv(src / "metadata.csv", index=False)
    out = run_doc("import", tmp_path)
    assert "If you didn't see any error messages then your dataset is most likely OK!" in out
    assert (tmp_path / "nnunet/preprocessed/Dataset502_AMTreal/dataset_fingerprint.json").is_file()


def _nnunet_predictions(workspace: Path, out: Path) -> list[str]:
    """What `nnUNetv2_predict -d 501 -c 3d_fullres --save_probabilities` writes for imagesTs, made by nnU-Net's
    preprocessing and export code from logits of the reference label (+3 inside, -3 outside)."""
    import torch
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw = workspace / "nnunet/raw/Dataset501_AMT"
    plans = PlansManager(str(workspace / "nnunet/preprocessed/Dataset501_AMT/nnUNetPlans.json"))
    config = plans.get_configuration("3d_fullres")
    dataset = json.loads((raw / "dataset.json").read_text())
    preprocessor = config.preprocessor_class(verbose=False)
    out.mkdir(parents=True)
    cases = []
    for image in sorted((raw / "imagesTs").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        _, seg, props = preprocessor.run_case(
            [str(image)], str(raw / "labelsTs" / f"{case}.nii.gz"), plans, config, dataset
        )
        ref = torch.from_numpy((seg[0] > 0).astype(np.float32))
        logits = torch.stack([torch.zeros_like(ref), 6 * ref - 3])
        export_prediction_from_logits(
            logits, props, config, plans, dataset, str(out / case), save_probabilities=True
        )
        cases.append(case)
    return cases


def test_nnunet_predictions_are_read_by_amt_evaluate(workspace):
    preds = workspace / "predictions" / "nnunet_test"
    cases = _nnunet_predictions(workspace, preds)
    assert cases and {p.name for p in preds.iterdir()} == {
        f"{c}{e}" for c in cases for e in (".nii.gz", ".npz", ".pkl")
    }
    out = run_doc("evaluate", workspace)
    assert f"{len(cases)} scans:" in out
    res = workspace / "results" / "nnunet_test"
    per_case = pd.read_csv(res / "per_case.csv", dtype={"case_id": str})
    assert per_case["case_id"].tolist() == cases
    # the mask is the reference resampled there and back by nnU-Net: close, not equal
    assert (per_case["dice"] > 0.8).all() and (per_case["tp"] == per_case["n_lesions"]).all()
    cands = pd.read_csv(res / "candidates.csv", dtype={"case_id": str})
    hits = cands[cands["status"] == "tp"]
    # confidences come from the .npz (softmax of +3 = 0.95), so they were placed on the lesions
    assert len(hits) == per_case["n_lesions"].sum() and (hits["confidence"] > 0.9).all()
    summary = json.loads((res / "summary.json").read_text())
    assert summary["inputs"]["probabilities"] == f"{len(cases)} of {len(cases)} scans"
    assert summary["metadata"]["institutions"] and summary["missing_predictions"] == []
    for name in ("lesions.csv", "froc_confidence.csv", "froc_iou.csv", "subgroups.csv", "institutions.csv"):
        assert (res / name).is_file()

    # report and figures from the same predictions
    run_doc("figures", workspace)
    run = workspace / "runs" / "nnunet"
    assert (run / "report.md").is_file() and (run / "analysis" / "analysis.json").is_file()
    assert {"froc_confidence.png", "froc_iou.png", "examples.png"} <= {
        p.name for p in (run / "figures").iterdir()
    }
