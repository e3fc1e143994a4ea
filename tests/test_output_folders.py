"""The output-folder policy at the command line (docs/architecture.md): a command that writes a folder
refuses a non-empty one (exit 2, one line naming the folder and the problem, the folder byte-identical)
unless told --overwrite (replaced whole: no file of the old folder left) or --resume (only when everything
that shaped the result is the same). `amt figures` and the pipeline's own steps are tested in
test_pipeline.py (they need a finished run)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from amt_core.cli import main

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (hidden ones too)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(capsys, argv: list[str], folder: Path, problem: str) -> None:
    """``amt argv`` exits 2 with one line naming ``folder`` and ``problem``, and leaves ``folder`` as it was."""
    before = snapshot(folder)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder) in err and problem in err, err
    assert snapshot(folder) == before


# --- amt cohort ------------------------------------------------------------------------------------------
def _cohort(out: Path, seed: int, *flags: str) -> list[str]:
    return [
        "cohort",
        "--preset",
        "tiny",
        "--n-cases",
        "4",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
        *flags,
    ]


def test_cohort_refuses_an_existing_cohort_and_overwrite_replaces_it_whole(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(_cohort(out, 0)) == 0
    refused(capsys, _cohort(out, 1), out, "not empty; pass --overwrite to replace it or --resume")
    refused(capsys, _cohort(out, 1, "--resume"), out, "made with other settings (seed 0, not 1)")
    (out / "imagesTr" / "STRAY_0000.nii.gz").write_bytes(b"a case of another cohort")
    assert main(_cohort(out, 1, "--overwrite")) == 0
    cases = pd.read_csv(out / "cases.csv")
    on_disk = {
        p.relative_to(out).as_posix()
        for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
        for p in (out / d).glob("*")
    }
    assert on_disk == {*cases["image"], *cases["label"]}  # no case of seed 0 and no stray case left
    n_training = json.loads((out / "dataset.json").read_text())["numTraining"]
    assert len(list((out / "imagesTr").glob("*"))) == n_training == (cases["split"] != "test").sum()
    # --resume of the same settings keeps the cases and still removes a stray one
    before = snapshot(out)
    (out / "labelsTs" / "STRAY.nii.gz").write_bytes(b"x")
    assert main(_cohort(out, 1, "--resume")) == 0
    after = snapshot(out)
    assert after.pop("provenance.json") and after == {
        k: v for k, v in before.items() if k != "provenance.json"
    }


# --- amt predict and amt evaluate -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two untrained tiny checkpoints (different weights): "a" and "b"."""
    import torch

    from amt_core.model.checkpoint import save_checkpoint
    from amt_core.model.network import build_network
    from amt_core.model.presets import get_config

    cfg = get_config(
        "cpu",
        patch_size=(32, 32, 32),
        channels=(8, 16),
        strides=(2,),
        target_spacing=(4.0, 4.0, 4.0),
        intensity_stats={"lo": -200.0, "hi": 300.0, "mean": 40.0, "std": 60.0},
        roi="body",
    )
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        out[name] = folder / f"{name}.pt"
        save_checkpoint(out[name], model=build_network(cfg), cfg=cfg)
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from toy import toy_cohort

    return toy_cohort(tmp_path_factory.mktemp("toy"), n_train=1, n_tune=1, n_test=2)


def _predict(model: Path, input: Path, out: Path, *flags: str) -> list[str]:
    return [
        "predict",
        "--model",
        str(model),
        "--input",
        str(input),
        "--out",
        str(out),
        "--no-progress",
        *(["--split", "test"] if input.suffix == ".csv" else []),
        *flags,
    ]


def test_predict_refuses_another_models_folder_and_overwrite_replaces_it_whole(models, toy, tmp_path, capsys):
    from amt_core.atomic import file_hash

    out = tmp_path / "pred"
    assert main(_predict(models["a"], toy, out)) == 0
    one = toy.parent / "imagesTs" / "TOY002_0000.nii.gz"
    refused(
        capsys, _predict(models["b"], one, out), out, "not empty; pass --overwrite to replace it or --resume"
    )
    refused(capsys, _predict(models["b"], one, out, "--resume"), out, "holds predictions of another model")
    assert main(_predict(models["b"], one, out, "--overwrite")) == 0
    assert set(snapshot(out)) == {
        "TOY002.nii.gz",
        "TOY002_prob.nii.gz",
        "TOY002_candidates.csv",
        "predictions.json",
        "predictions.csv",
    }  # model a's TOY003 is gone
    assert json.loads((out / "predictions.json").read_text())["model_sha256"] == file_hash(models["b"])


def test_predict_resume_finishes_only_what_is_missing(models, toy, tmp_path):
    out = tmp_path / "pred"
    assert main(_predict(models["a"], toy, out)) == 0
    done = snapshot(out)
    for name in ("TOY003.nii.gz", "TOY003_prob.nii.gz", "TOY003_candidates.csv"):
        (out / name).unlink()  # as if interrupted before its last case
    (out / "TOY099.nii.gz").write_bytes(b"not a case of this input")
    kept = (out / "TOY002.nii.gz").stat().st_mtime_ns
    assert main(_predict(models["a"], toy, out, "--resume")) == 0
    assert snapshot(out) == done and (out / "TOY002.nii.gz").stat().st_mtime_ns == kept


def _evaluate(cohort: Path, preds: Path, out: Path, *flags: str) -> list[str]:
    return [
        "evaluate",
        "--cohort",
        str(cohort),
        "--predictions",
        str(preds),
        "--out",
        str(out),
        "--n-bootstrap",
        "0",
        "--no-progress",
        *flags,
    ]


def test_evaluate_refuses_predictions_of_two_models(models, toy, tmp_path, capsys):
    pa, pb = tmp_path / "a", tmp_path / "b"
    assert main(_predict(models["a"], toy, pa)) == 0
    assert main(_predict(models["b"], toy, pb)) == 0
    assert main(_evaluate(toy, pa, tmp_path / "eval_a")) == 0  # one model's folder: fine
    # a case overwritten by the other model
    shutil.copy2(pb / "TOY003.nii.gz", pa / "TOY003.nii.gz")
    refused(
        capsys,
        _evaluate(toy, pa, tmp_path / "e1"),
        pa,
        "not predictions of the model in its predictions.json",
    )
    assert not (tmp_path / "e1").exists()
    # a case the model never predicted (its manifest does not list it)
    single = tmp_path / "single"
    assert main(_predict(models["a"], toy.parent / "imagesTs" / "TOY002_0000.nii.gz", single)) == 0
    for name in ("TOY003.nii.gz", "TOY003_prob.nii.gz"):
        shutil.copy2(pb / name, single / name)
    refused(capsys, _evaluate(toy, single, tmp_path / "e2"), single, "TOY003 is not listed in it")


def test_evaluate_out_is_refused_unless_overwrite_which_replaces_it_whole(tiny_cohort, tmp_path, capsys):
    from amt_core.data.volume import write_volume

    preds = tmp_path / "preds"
    for case_id in ("case_005", "case_006"):  # hand-made predictions (no manifest: not checked)
        mask = np.zeros((12, 10, 8), np.uint8)
        mask[4:8, 3:6, 2:6] = 1
        write_volume(mask, np.diag([0.8, 0.8, 2.5, 1.0]), preds / f"{case_id}.nii.gz")
    out = tmp_path / "eval"
    out.mkdir()
    (out / "per_case.csv").write_text("results of another evaluation\n")
    (out / "stale_table.csv").write_text("x\n")
    refused(
        capsys,
        _evaluate(tiny_cohort / "cases.csv", preds, out),
        out,
        "not empty; pass --overwrite to replace it,",
    )
    assert main(_evaluate(tiny_cohort / "cases.csv", preds, out, "--overwrite")) == 0
    assert not (out / "stale_table.csv").exists()
    assert pd.read_csv(out / "per_case.csv")["case_id"].tolist() == ["case_005", "case_006"]
    refused(
        capsys,
        _evaluate(tiny_cohort / "cases.csv", preds, preds, "--overwrite"),
        preds,
        "would replace the predictions folder",
    )


# --- amt run ------------------------------------------------------------------------------------------------
def test_run_refuses_a_folder_that_is_not_a_run_folder(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text()) | {
        "n_cases": 6,
        "n_example_slices": 0,
    }
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(params))
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("months of work")
    argv = ["run", "--params", str(tiny), "--out", str(out), "--only", "01_cohort", "--quiet"]
    refused(capsys, argv, out, "is not empty and not an amt run folder")
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "chapter1.tex").exists() and (out / "cohort" / "cases.csv").is_file()
    before = snapshot(out)
    assert main(argv) == 0  # a run folder is its own resume: nothing changed, nothing re-ran
    cache = ".steps/hashes.json"  # the hash cache may refresh entries of files written seconds before
    assert {k: v for k, v in snapshot(out).items() if k != cache} == {
        k: v for k, v in before.items() if k != cache
    }
