"""Every fault of issue 9 that a user can hit from the command line, in one table.

Each row sets up a bad input or a folder that must not be written over, runs the ``amt`` command
in-process and asserts: exit status 2, one line on stderr that names the file (or folder) and the problem,
no traceback, and every file under the row's watched folders byte-identical to before (nothing lost,
nothing half-written; a refused output folder is not even created).

Behaviours that are not errors (a re-run that must notice a changed volume, training that must not depend
on the clock, a killed run that resumes) are tested beside their code: test_pipeline.py, test_model_train.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import torch_threads
from toy import toy_cohort

from amt_core.cli import main
from amt_core.evaluation.config import EvalConfig

#: a network small enough to train a few steps in seconds (settings of `amt train --set`)
TINY = {
    "patch_size": [32, 32, 32],
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "batch_size": 1,
    "target_spacing": [3.0, 3.0, 3.0],
}


@dataclass
class Env:
    """What the rows share: a toy cohort, a finished training run and its test predictions (never changed)."""

    cohort: Path  # cases.csv
    run: Path  # amt train --out
    pred: Path  # amt predict --out (test split)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("faults")
    cohort = toy_cohort(root / "cohort", n_train=2, n_tune=1, n_test=2)
    with torch_threads(1):
        sets = [f"--set={k}={v}".replace(" ", "") for k, v in TINY.items()]
        assert (
            main(
                [
                    "train",
                    "--cohort",
                    str(cohort),
                    "--out",
                    str(root / "run"),
                    "--max-epochs",
                    "1",
                    "--steps-per-epoch",
                    "2",
                    "--cache-dir",
                    str(root / "cache"),
                    "--no-progress",
                    *sets,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(root / "run" / "best.pt"),
                    "--input",
                    str(cohort),
                    "--split",
                    "test",
                    "--out",
                    str(root / "pred"),
                    "--no-progress",
                ]
            )
            == 0
        )
    return Env(cohort, root / "run", root / "pred")


# --- making bad files --------------------------------------------------------------------------------------
def _bad_crc(src: Path, dst: Path) -> Path:
    """A copy of a .gz file whose deflate data decode in full but whose CRC-32 trailer is wrong."""
    data = bytearray(src.read_bytes())
    data[-8] ^= 0x01
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    with pytest.raises((OSError, zlib.error, EOFError)):  # the file really is corrupt: gzip -t says so
        gzip.decompress(bytes(data))
    return dst


def _copy_cohort(env: Env, dst: Path) -> Path:
    shutil.copytree(env.cohort.parent, dst)
    return dst / "cases.csv"


def _copy_pred(env: Env, dst: Path, *, foreign: bool = False) -> Path:
    """A copy of the predictions; ``foreign``: without amt's manifest, as another tool would write them."""
    shutil.copytree(env.pred, dst)
    if foreign:
        for name in ("predictions.json", "predictions.csv"):
            (dst / name).unlink(missing_ok=True)
    return dst


def _test_case(env: Env) -> str:
    cases = pd.read_csv(env.cohort)
    return str(cases.loc[cases["split"] == "test", "case_id"].iloc[0])


def _rewrite_prob(pred: Path, case_id: str, values: Callable[[np.ndarray], np.ndarray], dtype) -> Path:
    path = pred / f"{case_id}_prob.nii.gz"
    img = nib.load(path)
    prob = np.asarray(img.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(values(prob).astype(dtype), img.affine), path)
    return path


def _metadata(tmp: Path, image: Path, label: Path, **extra) -> Path:
    rows = [
        {
            "image": str(image),
            "label": str(label),
            "split": "train",
            "institution": "Hospital A",
            "sex": "F",
            "age": 60,
            "histology": "thymoma_B1",
            "contrast": "venous",
            "vendor": "GE",
            **extra,
        }
    ]
    pd.DataFrame(rows).to_csv(tmp / "meta.csv", index=False)
    return tmp / "meta.csv"


def _toy_image_and_label(env: Env) -> tuple[Path, Path]:
    cases = pd.read_csv(env.cohort)
    root = env.cohort.parent
    return root / cases["image"].iloc[0], root / cases["label"].iloc[0]


# --- the rows: (tmp, env) -> (argv, [what the message must name], problem regex, [watched paths]) ----------
def row_predict_corrupt_gzip(tmp, env):
    bad = _bad_crc(_toy_image_and_label(env)[0], tmp / "bad_crc_0000.nii.gz")
    return (
        [
            "predict",
            "--model",
            str(env.run / "best.pt"),
            "--input",
            str(bad),
            "--out",
            str(tmp / "out"),
            "--no-progress",
        ],
        [bad.name],
        r"CRC|corrupt",
        [tmp / "out"],
    )


def row_import_corrupt_gzip(tmp, env):
    image, label = _toy_image_and_label(env)
    bad = _bad_crc(image, tmp / "src" / "bad_crc.nii.gz")
    meta = _metadata(tmp, bad, label)
    return (
        ["import", "--source", str(tmp / "src"), "--metadata", str(meta), "--out", str(tmp / "out")],
        [bad.name],
        r"CRC|corrupt",
        [tmp / "out", tmp / "src"],
    )


def row_evaluate_corrupt_label(tmp, env):
    cases = _copy_cohort(env, tmp / "cohort")
    table = pd.read_csv(cases)
    label = cases.parent / table.loc[table["case_id"] == _test_case(env), "label"].iloc[0]
    _bad_crc(label, label)
    return (
        [
            "evaluate",
            "--cohort",
            str(cases),
            "--predictions",
            str(env.pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [label.name],
        r"CRC|corrupt",
        [tmp / "out", tmp / "cohort"],
    )


def row_evaluate_corrupt_prediction(tmp, env):
    pred = _copy_pred(env, tmp / "pred", foreign=True)
    mask = pred / f"{_test_case(env)}.nii.gz"
    _bad_crc(mask, mask)
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [mask.name],
        r"CRC|corrupt",
        [tmp / "out", pred],
    )


def row_prob_map_above_one(tmp, env):
    pred = _copy_pred(env, tmp / "pred", foreign=True)
    path = _rewrite_prob(
        pred, _test_case(env), lambda p: p * 0 + np.linspace(0, 200, p.size).reshape(p.shape), np.float32
    )
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [path.name, "200"],
        r"\[0, 1\]",
        [tmp / "out", pred],
    )


def row_prob_map_negative(tmp, env):
    pred = _copy_pred(env, tmp / "pred", foreign=True)
    path = _rewrite_prob(pred, _test_case(env), lambda p: p - 0.5, np.float32)
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [path.name, "-0.5"],
        r"\[0, 1\]",
        [tmp / "out", pred],
    )


def row_prob_map_int16_0_255(tmp, env):
    """Integers are 0..255 probabilities only when stored as uint8."""
    pred = _copy_pred(env, tmp / "pred", foreign=True)
    path = _rewrite_prob(pred, _test_case(env), lambda p: np.round(p * 255), np.int16)
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [path.name],
        r"int16",
        [tmp / "out", pred],
    )


def row_import_two_dicom_series(tmp, env):
    from conftest import write_dicom_series

    hu = np.full((24, 24, 6), -1000.0)
    hu[4:20, 4:20] = 30.0
    folder = tmp / "src" / "scan"
    for k, (vendor, n) in enumerate((("SIEMENS", 6), ("GE MEDICAL SYSTEMS", 4))):
        part = write_dicom_series(tmp / f"series{k}", hu[:, :, :n], manufacturer=vendor)
        folder.mkdir(parents=True, exist_ok=True)
        for f in part.iterdir():
            shutil.move(f, folder / f"s{k}_{f.name}")
    label = tmp / "src" / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 6), np.uint8), np.eye(4)), label)
    meta = _metadata(tmp, Path("scan"), Path("label.nii.gz"))
    return (
        ["import", "--source", str(tmp / "src"), "--metadata", str(meta), "--out", str(tmp / "out")],
        ["scan"],
        r"series",
        [tmp / "out", tmp / "src"],
    )


def row_import_not_ct(tmp, env):
    _, label = _toy_image_and_label(env)
    ref = nib.load(label)
    bad = tmp / "src" / "zero_one.nii.gz"
    bad.parent.mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).uniform(0, 1, ref.shape).astype(np.float32), ref.affine), bad
    )
    meta = _metadata(tmp, bad, label)
    return (
        ["import", "--source", str(tmp / "src"), "--metadata", str(meta), "--out", str(tmp / "out")],
        [bad.name],
        r"not (a )?CT",
        [tmp / "out", tmp / "src"],
    )


def row_predict_into_another_models_folder(tmp, env):
    pred = _copy_pred(env, tmp / "pred")
    return (
        [
            "predict",
            "--model",
            str(env.run / "best.pt"),
            "--input",
            str(env.cohort),
            "--split",
            "tune",
            "--out",
            str(pred),
            "--no-progress",
        ],
        [str(pred)],
        r"not empty.*--overwrite",
        [pred],
    )


def row_evaluate_predictions_of_two_models(tmp, env):
    """One case re-predicted by another model (a valid mask, other voxels) among the first model's files."""
    pred = _copy_pred(env, tmp / "pred")
    mask = pred / f"{_test_case(env)}.nii.gz"
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.roll(np.asarray(img.dataobj), 3, axis=0), img.affine), mask)
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [mask.name],
        r"not predictions of the model",
        [tmp / "out", pred],
    )


def row_evaluate_into_results(tmp, env):
    (tmp / "out").mkdir()
    (tmp / "out" / "summary.json").write_text("{}\n")
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(env.pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [str(tmp / "out")],
        r"not empty.*--overwrite",
        [tmp / "out"],
    )


def row_resume_without_last_checkpoint(tmp, env):
    (tmp / "empty").mkdir()
    return (
        ["train", "--cohort", str(env.cohort), "--out", str(tmp / "empty"), "--resume", "--no-progress"],
        [str(tmp / "empty")],
        r"last\.pt",
        [tmp / "empty"],
    )


def row_resume_with_another_cohort(tmp, env):
    run = tmp / "run"
    shutil.copytree(env.run, run)
    other = toy_cohort(tmp / "other", n_train=2, n_tune=1, n_test=1, seed=7)
    return (
        ["train", "--cohort", str(other), "--out", str(run), "--resume", "--no-progress"],
        ["cohort"],
        r"cohort",
        [run, tmp / "other"],
    )


def row_train_over_a_finished_run(tmp, env):
    run = tmp / "run"
    shutil.copytree(env.run, run)
    sets = [f"--set={k}={v}".replace(" ", "") for k, v in TINY.items()]
    return (
        [
            "train",
            "--cohort",
            str(env.cohort),
            "--out",
            str(run),
            "--max-epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--no-progress",
            *sets,
        ],
        [str(run)],
        r"not empty.*--overwrite",
        [run],
    )


def row_cohort_over_another_cohort(tmp, env):
    cases = _copy_cohort(env, tmp / "cohort")
    return (
        ["cohort", "--preset", "tiny", "--n-cases", "6", "--out", str(cases.parent), "--no-progress"],
        [str(cases.parent)],
        r"--overwrite",
        [cases.parent],
    )


def row_run_into_a_folder_that_is_not_a_run(tmp, env):
    folder = tmp / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("\\chapter{Introduction}\n")
    return (
        ["run", "--params", "params/smoke.yaml", "--out", str(folder), "--quiet"],
        [str(folder)],
        r"--overwrite",
        [folder],
    )


def row_evaluate_config_with_an_old_name(tmp, env):
    """A summary.json written before the renames (issue 14) as --config: its file and the new name."""
    old = tmp / "summary.json"
    old.write_text(json.dumps({"config": {**EvalConfig().to_dict(), "n_boot": 10}}))
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(env.pred),
            "--out",
            str(tmp / "out"),
            "--config",
            str(old),
            "--no-progress",
        ],
        [str(old), "'n_boot' is now 'n_bootstrap'"],
        r"renamed",
        [tmp / "out", old],
    )


def row_validate_corrupt_gzip_table(tmp, env):
    data = gzip.compress(env.cohort.read_bytes())
    bad = tmp / "cases.csv.gz"
    bad.write_bytes(data[: len(data) // 2])
    return (["validate", str(bad)], [bad.name], r"corrupt|truncated|cannot read|gzip", [tmp])


def row_validate_not_gzip(tmp, env):
    bad = tmp / "cases.csv.gz"
    bad.write_text("case_id,split\nA,train\n")
    return (["validate", str(bad)], [bad.name], r"gzip|cannot read|corrupt", [tmp])


def row_validate_reads_a_corrupt_volume(tmp, env):
    cases = _copy_cohort(env, tmp / "cohort")
    table = pd.read_csv(cases)
    image = cases.parent / table["image"].iloc[0]
    _bad_crc(image, image)
    return (
        ["validate", str(cases), "--volumes", "--no-progress"],
        [image.name, str(table["case_id"].iloc[0])],
        r"CRC",
        [tmp / "cohort"],
    )


def row_model_is_a_text_file(tmp, env):
    notes = tmp / "notes.txt"
    notes.write_text("my model is in the other folder\n")
    return (
        [
            "predict",
            "--model",
            str(notes),
            "--input",
            str(env.cohort),
            "--out",
            str(tmp / "out"),
            "--no-progress",
        ],
        [notes.name],
        r"not an amt (model )?checkpoint",
        [tmp / "out"],
    )


def row_prediction_on_another_grid(tmp, env):
    pred = _copy_pred(env, tmp / "pred", foreign=True)
    mask = pred / f"{_test_case(env)}.nii.gz"
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), mask)
    return (
        [
            "evaluate",
            "--cohort",
            str(env.cohort),
            "--predictions",
            str(pred),
            "--out",
            str(tmp / "out"),
            "--n-bootstrap",
            "10",
            "--no-progress",
        ],
        [mask.name],
        r"prediction .* reference label",
        [tmp / "out", pred],
    )


ROWS = {name[4:]: fn for name, fn in dict(globals()).items() if name.startswith("row_")}


def _snapshot(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        if not root.exists():
            out[str(root)] = "absent"
        elif root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        else:
            for f in sorted(root.rglob("*")):
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "dir"
    return out


@pytest.mark.parametrize("name", sorted(ROWS))
def test_fault(name, env, tmp_path, capsys):
    argv, named, problem, watched = ROWS[name](tmp_path, env)
    before, env_before = _snapshot(watched), _snapshot([env.run, env.pred, env.cohort.parent])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}; stderr: {err}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"amt {argv[0]}: error: "), err
    for thing in named:
        assert thing in err, f"{thing!r} not named in: {err}"
    import re

    assert re.search(problem, err), f"{problem!r} not in: {err}"
    assert "weights_only=False" not in err
    assert _snapshot(watched) == before, "a watched file or folder changed"
    assert _snapshot([env.run, env.pred, env.cohort.parent]) == env_before


def test_validate_says_what_it_read(env, capsys):
    assert main(["validate", str(env.cohort)]) == 0
    assert "all files present (not read: --volumes reads them)" in capsys.readouterr().out
    assert main(["validate", str(env.cohort), "--volumes", "--no-progress"]) == 0
    assert "every volume read and usable" in capsys.readouterr().out
