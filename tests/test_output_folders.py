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


def test_predict_resume_picks_up_a_first_prediction_that_was_killed(models, toy, tmp_path):
    """A first prediction works in a staging folder beside --out (so --out appears only when complete). Killed,
    it leaves that folder behind: --resume adopts it and predicts only what is missing; a fresh prediction into
    --out removes it (a killed writer's leftovers are not kept for ever)."""
    import subprocess

    out = tmp_path / "pred"
    assert main(_predict(models["a"], toy, out)) == 0
    done = snapshot(out)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer runs: the killed writer's
    staging = tmp_path / f".pred.{dead.pid}.abc123.staging"
    out.rename(staging)
    (staging / "TOY003.nii.gz").unlink()  # killed before its last case was written
    kept = (staging / "TOY002.nii.gz").stat().st_mtime_ns
    other = (
        tmp_path / f".other.{dead.pid}.abc123.staging"
    )  # another output's leftovers: not this one's to remove
    other.mkdir()
    assert main(_predict(models["a"], toy, out, "--resume")) == 0
    assert snapshot(out) == done and (out / "TOY002.nii.gz").stat().st_mtime_ns == kept
    assert not staging.exists() and other.exists()
    again = tmp_path / f".pred.{dead.pid}.def456.staging"
    again.mkdir()
    assert main(_predict(models["a"], toy, out, "--overwrite")) == 0
    assert not again.exists() and snapshot(out) == done


def test_predict_warns_when_a_trained_checkpoint_lacks_its_post_processing(models, toy, tmp_path, capsys):
    """A checkpoint of `amt train` whose config asks for the tuning split's component filter but records none
    (last.pt; a best.pt whose training stopped while choosing it) is predicted without it: said, not silent."""
    import torch

    state = torch.load(models["a"], weights_only=True)
    state["extra"] = json.dumps({"best_dice": 0.5})
    torch.save(state, tmp_path / "last.pt")
    capsys.readouterr()
    assert main(_predict(tmp_path / "last.pt", toy, tmp_path / "p1")) == 0
    assert "records no choice" in capsys.readouterr().err
    state["extra"] = json.dumps({"best_dice": 0.5, "postprocessing": {"min_ml": 0.0, "min_conf": 0.0}})
    torch.save(state, tmp_path / "best.pt")
    assert main(_predict(tmp_path / "best.pt", toy, tmp_path / "p2")) == 0
    assert "records no choice" not in capsys.readouterr().err


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
def _tiny_params(folder: Path) -> Path:
    """The smoke preset on 6 scans without example slices, as a params file in ``folder``."""
    params = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text()) | {
        "n_cases": 6,
        "n_example_slices": 0,
    }
    tiny = folder / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(params))
    return tiny


def test_run_refuses_a_folder_that_is_not_a_run_folder(tmp_path, capsys):
    tiny = _tiny_params(tmp_path)
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


# --- an output folder never holds an input of its command -------------------------------------------------
def test_overwrite_never_deletes_an_input_of_the_command(models, toy, tiny_cohort, tmp_path, capsys):
    """`--out` that is, or holds, what the command reads (the cohort of `amt train`, the checkpoint or
    input of `amt predict`, the results of `amt figures`) is refused even with --overwrite: the folder
    would be replaced and the input deleted."""
    import shutil

    cohort = tiny_cohort.parent
    problem = "an input of this command"
    refused(capsys, ["train", "--cohort", str(tiny_cohort), "--preset", "cpu", "--out", str(cohort),
                     "--overwrite", "--max-steps", "1"], cohort, problem)  # fmt: skip
    # a folder of the images or labels the case table lists (cohort/labelsTr, cohort/imagesTs)
    table, labels, images = (tiny_cohort / name for name in ("cases.csv", "labelsTr", "imagesTs"))
    refused(capsys, ["train", "--cohort", str(table), "--preset", "cpu", "--out", str(labels),
                     "--overwrite", "--max-steps", "1"], labels, problem)  # fmt: skip
    refused(capsys, _predict(models["a"], table, images, "--overwrite"), images, problem)
    kept = tmp_path / "models"
    shutil.copytree(models["a"].parent, kept)
    refused(capsys, _predict(kept / "a.pt", toy, kept, "--overwrite"), kept, problem)
    refused(capsys, _predict(models["a"], toy, toy.parent, "--overwrite"), toy.parent, problem)
    run = tmp_path / "run"
    (run / ".steps").mkdir(parents=True)
    (run / "evaluation" / "test").mkdir(parents=True)
    (run / "evaluation" / "test" / "summary.json").write_text("{}")
    (run / "predictions" / "test").mkdir(parents=True)
    for out in (run, run / "evaluation", run / "predictions"):
        refused(capsys, ["figures", "--run", str(run), "--out", str(out), "--overwrite"], out, problem)


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--steps-per-epoch", "0"], "steps_per_epoch=0"),
        (["--steps-per-epoch", "-1"], "steps_per_epoch=-1"),
        (["--max-steps", "-5"], "max_steps=-5"),
        (["--max-epochs", "0"], "max_epochs=0"),
        (["--eval-every", "-1"], "eval_every=-1"),
        (["--max-minutes", "-1"], "max_minutes=-1"),
    ],
)
def test_train_refuses_a_schedule_that_trains_nothing_or_forever(
    tiny_cohort, tmp_path, capsys, flags, problem
):
    """A zero or negative count ran forever (0 steps per epoch, endless epochs), divided by zero, or trained
    one step and called it complete: one clear line, exit 2, and no folder."""
    out = tmp_path / "train"
    capsys.readouterr()
    assert main(["train", "--cohort", str(tiny_cohort), "--preset", "cpu", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and problem in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_a_clear_error(models, toy, tmp_path, capsys):
    import torch

    state = torch.load(models["a"], weights_only=True)
    config = json.loads(state["config"])
    config["channels"] = [4, 8]
    state["config"] = json.dumps(config)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    capsys.readouterr()
    assert main(_predict(bad, toy, tmp_path / "pred")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "do not fit the network" in err, err
    assert "size mismatch" in err and not (tmp_path / "pred").exists()


def test_results_are_readable_by_the_group_as_the_umask_says(tmp_path):
    """mkstemp and mkdtemp make owner-only files and folders: the results on a shared machine were
    unreadable by the rest of the group. They now get the modes a plain write would (umask 022 here)."""
    import os

    from amt_core.atomic import replacing_dir, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with replacing_dir(tmp_path / "folder") as staging:
            write_text(staging / "b.txt", "y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "folder" / "b.txt").stat().st_mode & 0o777 == 0o644


def test_an_unfinished_run_is_marked_and_its_figures_refused(tmp_path, capsys, monkeypatch):
    """A run stopped between steps (killed, or --only) leaves folders of two parameter sets; .steps/
    incomplete.json says which step is undone, `amt figures` refuses the mix naming the command that
    finishes it, and a second `amt run` into a folder being written is refused at once."""
    from amt_core.atomic import OutputExistsError
    from amt_core.layout import RunLayout
    from amt_core.pipeline import run as runner

    tiny = _tiny_params(tmp_path)
    out = tmp_path / "run"
    argv = ["run", "--params", str(tiny), "--out", str(out), "--only", "01_cohort", "--quiet"]
    assert main(argv) == 0
    marker = json.loads((out / ".steps" / "incomplete.json").read_text())
    assert marker["step"] == "02_train" and marker["left_out"] == ["02_train", "03_evaluate", "04_figures"]
    capsys.readouterr()
    assert main(["figures", "--run", str(out), "--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert "did not finish (step 02_train)" in err and f"amt run --params {tiny} --out {out}" in err
    assert not (tmp_path / "figs").exists()

    def killed(step, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_execute", killed)
    assert main([*argv, "--force"]) == 130
    assert json.loads((out / ".steps" / "incomplete.json").read_text())["step"] == "01_cohort"

    with runner.run_lock(RunLayout.of(out)), pytest.raises(OutputExistsError, match="another `amt run`"):
        with runner.run_lock(RunLayout.of(out)):
            pass
    capsys.readouterr()
    assert main(["figures", "--run", str(tmp_path / "nosuch"), "--out", str(tmp_path / "f2")]) == 2
    assert "not a run folder (no .steps/, params.yaml or evaluation/test/)" in capsys.readouterr().err


def test_a_run_level_parameter_is_in_the_report_steps_key():
    """`preview` is declared by no notebook but read by the report: changing it re-runs the report's step
    (and nothing upstream of it); before, every step was skipped and the report kept its old banner."""
    from amt_core.pipeline.params import NOTEBOOKS, notebook_parameters
    from amt_core.pipeline.run import REPORT_STEP, key_parameters

    params = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    for notebook in NOTEBOOKS:
        keys = [
            key_parameters(notebook, p, notebook_parameters(notebook, p, "run"))
            for p in (params | {"preview": False}, params | {"preview": True})
        ]
        assert (keys[0] != keys[1]) == (notebook == REPORT_STEP), notebook


def test_predict_says_when_the_model_comes_from_an_unfinished_training(models, toy, tmp_path, capsys):
    import shutil

    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(models["a"], folder / "best.pt")
    status = {
        "complete": False,
        "stopped_by": "time cap",
        "max_minutes": 5,
        "steps": 40,
        "configured_steps": 90,
    }
    (folder / "training.json").write_text(json.dumps(status))
    capsys.readouterr()
    assert main(_predict(folder / "best.pt", toy, tmp_path / "pred")) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "stopped by the time cap" in err and "40 of 90 configured steps" in err
    (folder / "training.json").write_text(json.dumps(status | {"complete": True, "stopped_by": "steps"}))
    assert main(_predict(folder / "best.pt", toy, tmp_path / "pred2")) == 0
    assert "warning" not in capsys.readouterr().err


def test_predict_takes_split_all_as_evaluate_does(toy):
    import pandas as pd

    from amt_core.model.inference import resolve_inputs

    cases = pd.read_csv(toy)
    assert [c for c, _ in resolve_inputs(toy, "all")] == list(cases["case_id"])
    assert [c for c, _ in resolve_inputs(toy, "test")] == list(cases.loc[cases["split"] == "test", "case_id"])
    with pytest.raises(ValueError, match="no case of split 'validation'"):
        resolve_inputs(toy, "validation")


def test_saved_configs_of_earlier_versions_still_load_and_writers_never_set_the_umask(tmp_path):
    """eval_max_cases 0 meant "no cap" in saved checkpoints: still valid. Concurrent atomic writes read the
    umask without setting it (setting and restoring it raced between threads and could leave it widened)."""
    import os
    import threading

    from amt_core.atomic import write_text
    from amt_core.model.presets import get_config

    assert get_config("cpu", eval_max_cases=0).eval_max_cases == 0
    with pytest.raises(ValueError, match="eval_max_cases=-1"):
        get_config("cpu", eval_max_cases=-1)
    old = os.umask(0o077)
    try:
        threads = [
            threading.Thread(
                target=lambda k=k: [write_text(tmp_path / f"{k}_{i}.txt", "x") for i in range(50)]
            )
            for k in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert os.umask(0o077) == 0o077  # unchanged by the writers
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in tmp_path.glob("*.txt")} == {0o600}


def test_predict_warns_when_a_bf16_model_runs_emulated_on_this_cpu(
    models, toy, tmp_path, capsys, monkeypatch
):
    """A model whose training recorded bf16, predicted on a CPU without native bf16, still computes in bf16
    (as it was trained), emulated and slower: `amt predict` says so, as `amt train --resume` does."""
    import torch

    from amt_core.model import network

    state = torch.load(models["a"], weights_only=True)
    for precision in ("bf16", "fp32"):
        state["config"] = json.dumps({**json.loads(state["config"]), "precision": precision})
        torch.save(state, tmp_path / f"{precision}.pt")
    monkeypatch.setattr(network, "cpu_has_bf16", lambda: False)
    capsys.readouterr()
    assert main(_predict(tmp_path / "bf16.pt", toy, tmp_path / "p1", "--device", "cpu")) == 0
    assert "no native bf16: emulated" in capsys.readouterr().err
    assert main(_predict(tmp_path / "fp32.pt", toy, tmp_path / "p2", "--device", "cpu")) == 0
    assert "bf16" not in capsys.readouterr().err
    monkeypatch.setattr(network, "cpu_has_bf16", lambda: True)
    assert main(_predict(tmp_path / "bf16.pt", toy, tmp_path / "p3", "--device", "cpu")) == 0
    assert "bf16" not in capsys.readouterr().err
