"""Training: a tiny run writes loadable checkpoints and a log; a stopped run resumes to the same weights; the
machine's load never shapes the result; resume, overwrite and stale temp files follow the folder policy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import torch_threads
from toy import toy_cohort

from amt_core.atomic import OutputExistsError
from amt_core.model.checkpoint import load_checkpoint
from amt_core.model.run_control import IncompleteTrainingWarning, check_status
from amt_core.model.train import LOG_COLUMNS, train

#: a network and patch small enough for a few steps per second on one core
TINY = dict(
    patch_size=(32, 32, 32),
    channels=(8, 16, 32),
    strides=(2, 2),
    batch_size=2,
    steps_per_epoch=2,
    max_epochs=2,
    eval_every=1,
    num_workers=0,
    target_spacing=(3.0, 3.0, 3.0),
    p_affine=0.5,
)
#: four epochs, evaluated every second one: the runs that a slowed clock or a time cap must not reshape
TIMED = {**TINY, "max_epochs": 4, "eval_every": 2, "postprocess": False}
RUN_CONTROLS = {"stop_after", "max_minutes", "num_workers"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return toy_cohort(tmp_path_factory.mktemp("toy"), n_train=3, n_tune=1, n_test=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(cohort, cache, tmp_path_factory):
    """An uninterrupted TIMED run on an unloaded machine (one thread, as every test here)."""
    with torch_threads(1):
        return train(cohort, tmp_path_factory.mktemp("ref") / "run", cache_dir=cache, progress=False, **TIMED)


@pytest.fixture
def slow_clock(monkeypatch):
    """``time.monotonic`` runs ahead by ``clock.seconds(g)`` each time training patch ``g`` is drawn: a loaded
    machine, without the wait. Patch g belongs to step g // batch_size."""
    from amt_core.model.patches import PatchDataset

    class Clock:
        offset = 0.0
        seconds = staticmethod(lambda g: 0.0)

    clock, real, draw = Clock(), time.monotonic, PatchDataset.__getitem__

    def slowed(self, g):
        clock.offset += clock.seconds(g)
        return draw(self, g)

    monkeypatch.setattr(time, "monotonic", lambda: real() + clock.offset)
    monkeypatch.setattr(PatchDataset, "__getitem__", slowed)
    return clock


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a["step"] == b["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def _poly_lr(lr, step, total, exponent=0.9):
    return lr * (1.0 - min(step, total - 1) / total) ** exponent


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_tiny_run_writes_checkpoints_log_and_config(cohort, cache, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **TINY)
    for name in ("best.pt", "last.pt", "train_log.csv", "config.json", "provenance.json", "training.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "training.json").read_text())
    assert summary["complete"] is True and summary["stopped_by"] == "steps"
    assert summary["steps"] == summary["configured_steps"] == 4
    assert summary["best_tune_dice_source"] == "tuning evaluation"
    last = _weights(run / "last.pt")  # weights_only=True: tensors and plain containers only
    assert last["epoch"] == 2 and last["step"] == 4
    assert set(last) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config", "versions"}
    cfg = json.loads(last["config"])
    assert cfg["patch_size"] == [32, 32, 32] and cfg["intensity_stats"]["std"] > 0
    assert cfg["target_spacing"] == [3.0, 3.0, 3.0] and len(cfg["roi_box"]) == 4
    assert not RUN_CONTROLS & set(cfg)  # run control is no part of the model
    assert json.loads(last["versions"])["torch"]
    config = json.loads((run / "config.json").read_text())
    assert config["cohort"]["cases_csv"] == str(cohort.resolve()) and len(config["cohort"]["sha256"]) == 64
    log = pd.read_csv(run / "train_log.csv")
    assert list(log.columns) == list(LOG_COLUMNS) and len(log) == 2
    assert log["tune_dice"].between(0, 1).all()
    # the LR after each epoch is the poly schedule of the configured steps
    assert list(log["lr"]) == pytest.approx([_poly_lr(cfg["lr"], s, 4) for s in log["step"]], rel=1e-12)
    best = _weights(run / "best.pt")
    assert json.loads(best["extra"])["best_dice"] == pytest.approx(log["tune_dice"].max())
    assert summary["best_tune_dice"] == pytest.approx(log["tune_dice"].max())
    assert summary["best_tune_dice_epoch"] == best["epoch"] == log.loc[log["tune_dice"].idxmax(), "epoch"]
    chosen = json.loads(
        (run / "postprocessing.json").read_text()
    )  # the component filter, from the tune split
    assert json.loads(best["config"])["min_component_ml"] == chosen["min_component_ml"]
    # chosen with best.pt's weights: unfiltered, they score the Dice that selected best.pt
    assert chosen["tune_dice_raw"] == pytest.approx(json.loads(best["extra"])["best_dice"], abs=1e-9)


def test_stopped_run_resumes_to_identical_weights(cohort, cache, tmp_path):
    """``stop_after`` is not saved with the run: a plain ``resume`` (no stop_after) finishes it."""
    full = train(cohort, tmp_path / "full", cache_dir=cache, progress=False, **TINY)
    # stop after 3 of 4 steps (mid-epoch, a checkpoint is written as a kill would find it), then resume
    # with a DataLoader worker: the patches depend on (seed, sample index) only
    part = train(cohort, tmp_path / "part", cache_dir=cache, progress=False, **{**TINY, "stop_after": 3})
    assert _weights(part / "last.pt")["step"] == 3
    assert json.loads((part / "training.json").read_text())["stopped_by"] == "stop_after"
    train(cohort, part, cache_dir=cache, progress=False, resume=True, num_workers=1)
    assert json.loads((part / "training.json").read_text())["complete"] is True
    a, b = _weights(full / "last.pt"), _weights(part / "last.pt")
    assert a["step"] == b["step"] == 4
    _assert_same_weights(full / "last.pt", part / "last.pt")
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for name in sa:
            assert torch.equal(torch.as_tensor(sa[name]), torch.as_tensor(sb[name])), name
    log_a, log_b = pd.read_csv(full / "train_log.csv"), pd.read_csv(part / "train_log.csv")
    pd.testing.assert_series_equal(log_a["loss"], log_b["loss"])
    pd.testing.assert_series_equal(log_a["tune_dice"], log_b["tune_dice"])


def test_older_checkpoint_with_run_controls_still_loads_and_resumes(cohort, cache, tmp_path):
    """Checkpoints of earlier versions saved stop_after/max_minutes/num_workers in the config: ignored."""
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **{**TINY, "stop_after": 3})
    state = _weights(run / "last.pt")
    state["config"] = json.dumps(
        {**json.loads(state["config"]), "stop_after": 3, "max_minutes": 1e-9, "num_workers": 0}
    )
    state["extra"] = json.dumps({k: v for k, v in json.loads(state["extra"]).items() if k != "cohort"})
    torch.save(state, run / "last.pt")
    assert not any(hasattr(load_checkpoint(run / "last.pt")["config"], k) for k in RUN_CONTROLS)
    train(cohort, run, cache_dir=cache, progress=False, resume=True)
    assert _weights(run / "last.pt")["step"] == 4
    assert json.loads((run / "training.json").read_text())["complete"] is True


def test_resume_accepts_the_same_settings_and_names_a_changed_one(cohort, cache, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **{**TINY, "stop_after": 1})
    for changed, message in [
        ({"lr": 0.5}, "lr was 0.001, now 0.5"),
        ({"max_epochs": 3}, "max_epochs was 2, now 3"),
        ({"preset": "full"}, "preset was 'cpu', now 'full'"),
        ({"seed": 1}, "seed was 0, now 1"),
    ]:
        with pytest.raises(ValueError, match="--resume continues the run as it was started") as info:
            train(cohort, run, cache_dir=cache, progress=False, resume=True, **{**TINY, **changed})
        assert message in str(info.value) and "last.pt" in str(info.value)
    assert _weights(run / "last.pt")["step"] == 1  # refused before anything was trained or written
    # the first call's flags again, with --resume: accepted
    train(cohort, run, cache_dir=cache, progress=False, resume=True, preset="cpu", seed=0, **TINY)
    assert _weights(run / "last.pt")["step"] == 4


@pytest.mark.parametrize("make", [False, True], ids=["missing", "empty"])
def test_resume_without_last_pt_is_refused(cohort, cache, tmp_path, make):
    out = tmp_path / "run"
    if make:
        out.mkdir()
    with pytest.raises(FileNotFoundError, match="nothing to resume") as info:
        train(cohort, out, cache_dir=cache, progress=False, resume=True, **TINY)
    assert str(out) in str(info.value)
    assert not out.exists() or not any(out.iterdir())  # nothing trained


def test_resume_on_another_cohort_is_refused_a_moved_copy_is_accepted(cohort, cache, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **{**TINY, "stop_after": 1})
    other = toy_cohort(tmp_path / "other", n_train=3, n_tune=1, n_test=1, seed=7)
    with pytest.raises(ValueError, match="must continue on the cohort the run started on") as info:
        train(other, run, cache_dir=cache, progress=False, resume=True)
    assert str(cohort.resolve()) in str(info.value) and str(other.resolve()) in str(info.value)
    assert _weights(run / "last.pt")["step"] == 1
    moved = shutil.copytree(cohort.parent, tmp_path / "moved") / "cases.csv"
    train(moved, run, cache_dir=cache, progress=False, resume=True)
    assert _weights(run / "last.pt")["step"] == 4


def test_a_finished_run_is_kept_unless_overwrite(cohort, cache, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **{**TINY, "max_steps": 1})
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(cohort, run, cache_dir=cache, progress=False, **{**TINY, "max_steps": 1})
    # an overwrite that fails (no tune split) leaves the old run as it was, and no staging folder
    bad = toy_cohort(tmp_path / "bad", n_train=2, n_tune=0, n_test=0)
    with pytest.raises(ValueError, match="'tune' split"):
        train(bad, run, cache_dir=cache, progress=False, overwrite=True, **TINY)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "run"]
    train(cohort, run, cache_dir=cache, progress=False, overwrite=True, seed=1, **{**TINY, "max_steps": 1})
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert (run / "best.pt").read_bytes() != before["best.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "run"]


def test_temp_files_of_a_killed_writer_are_removed(cohort, cache, tmp_path):
    pid = _dead_pid()
    out = tmp_path / "run"
    out.mkdir()
    (out / f".last.pt.{pid}.x1y2.tmp.pt").write_bytes(b"half a checkpoint")  # all a killed writer left
    train(cohort, out, cache_dir=cache, progress=False, **{**TINY, "stop_after": 1})
    assert not list(out.glob(".*.tmp*"))
    (out / f".best.pt.{pid}.x3y4.tmp.pt").write_bytes(b"half a checkpoint")
    train(cohort, out, cache_dir=cache, progress=False, resume=True, stop_after=2)
    assert not list(out.glob(".*.tmp*"))


def test_a_loaded_machine_gives_the_same_model(cohort, cache, tmp_path, reference, slow_clock):
    """Under a time cap that is not reached, a slow first epoch (other processes on the machine) and fast
    later ones give the unloaded run's weights: nothing that shapes the result reads the clock."""
    slow_clock.seconds = lambda g: 40.0 if g < 4 else 0.0  # epoch 1 takes 160 s, the others no time
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, max_minutes=10, **TIMED)
    assert json.loads((run / "training.json").read_text())["complete"] is True
    _assert_same_weights(reference / "last.pt", run / "last.pt")
    _assert_same_weights(reference / "best.pt", run / "best.pt")
    assert list(pd.read_csv(run / "train_log.csv")["lr"]) == list(
        pd.read_csv(reference / "train_log.csv")["lr"]
    )


def test_a_time_cap_stops_without_reshaping(cohort, cache, tmp_path, reference, slow_clock):
    """A cap that is reached stops the run at an epoch end, marked incomplete (with a model: no evaluation had
    run yet, so the last weights stand in as best.pt); resumed, it ends as the uninterrupted run."""
    slow_clock.seconds = lambda g: 40.0  # 160 s per epoch: the second would pass the 2.5-minute cap
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, max_minutes=2.5, **TIMED)
    summary = json.loads((run / "training.json").read_text())
    assert summary["complete"] is False and summary["stopped_by"] == "time cap"
    assert summary["steps"] == 2 and summary["configured_steps"] == 8 and summary["max_minutes"] == 2.5
    stopgap = json.loads(_weights(run / "best.pt")["extra"])
    assert stopgap["selected_by"] == "time cap"
    # training.json's best Dice is that stopgap evaluation, and says so (no scheduled evaluation had run)
    assert pd.read_csv(run / "train_log.csv")["tune_dice"].isna().all()
    assert summary["best_tune_dice_source"] == "time cap" and summary["best_tune_dice_epoch"] == 1
    assert summary["best_tune_dice"] == stopgap["stopgap_tune_dice"] and 0 <= summary["best_tune_dice"] <= 1
    ref_log = pd.read_csv(reference / "train_log.csv")
    assert list(pd.read_csv(run / "train_log.csv")["lr"]) == list(ref_log["lr"][:1])
    with pytest.warns(
        IncompleteTrainingWarning, match="stopped by the time cap .* after 2 of 8 configured steps"
    ):
        check_status(run)
    slow_clock.seconds = lambda g: 0.0
    # a resumed call that stops again before its first evaluation keeps the earlier stopgap, and says so
    again = shutil.copytree(run, tmp_path / "again")
    train(cohort, again, cache_dir=cache, progress=False, resume=True, stop_after=3)
    later = json.loads((again / "training.json").read_text())
    assert later["stopped_by"] == "stop_after" and later["steps"] == 3
    assert later["best_tune_dice_source"] == "time cap" and later["best_tune_dice_epoch"] == 1
    assert later["best_tune_dice"] == summary["best_tune_dice"]
    train(cohort, run, cache_dir=cache, progress=False, resume=True)
    summary = json.loads((run / "training.json").read_text())
    assert summary["complete"] is True and summary["best_tune_dice_source"] == "tuning evaluation"
    _assert_same_weights(reference / "last.pt", run / "last.pt")
    _assert_same_weights(reference / "best.pt", run / "best.pt")
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "train_log.csv")[["step", "loss", "tune_dice", "lr"]],
        ref_log[["step", "loss", "tune_dice", "lr"]],
    )


def test_an_incomplete_training_heads_the_report(tmp_path):
    from amt_core.pipeline.report import build_report

    (tmp_path / "train").mkdir()
    status = {
        "complete": False,
        "stopped_by": "time cap",
        "steps": 500,
        "configured_steps": 7500,
        "max_minutes": 45,
    }
    (tmp_path / "train" / "training.json").write_text(json.dumps(status))
    head = build_report(tmp_path).split("## ")[0]
    assert "Incomplete training" in head and "500 of 7500 configured steps" in head
    # the report is of an `amt run` folder: how to finish it there, not by `amt train`
    assert "`resume: true`" in head and "`amt run` again" in head and "amt train --resume" not in head
    (tmp_path / "train" / "training.json").write_text(json.dumps({**status, "complete": True, "steps": 7500}))
    assert "Incomplete training" not in build_report(tmp_path)


def test_the_preview_banner_counts_the_steps_trained_when_a_stop_cut_them(tmp_path):
    from amt_core.pipeline.report import build_report

    (tmp_path / "train").mkdir()
    (tmp_path / "provenance.json").write_text(json.dumps({"config": {"params": {"preview": True}}}))
    status = {"complete": False, "stopped_by": "time cap", "steps": 150, "configured_steps": 600}
    (tmp_path / "train" / "training.json").write_text(json.dumps(status))
    head = build_report(tmp_path).split("## ")[0]
    assert (
        "Preview, not the study's design" in head and "a short training (150 of 600 configured steps)" in head
    )
    (tmp_path / "train" / "training.json").write_text(json.dumps({**status, "complete": True, "steps": 600}))
    assert "a short training (600 steps)" in build_report(tmp_path)


def test_max_steps_caps_training_and_still_selects(cohort, cache, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **{**TINY, "max_steps": 3})
    log = pd.read_csv(run / "train_log.csv")
    assert list(log["step"]) == [2, 3] and (run / "best.pt").is_file()
    assert _weights(run / "last.pt")["step"] == 3


def test_training_needs_a_tune_split(cache, tmp_path):
    csv = toy_cohort(tmp_path / "c", n_train=2, n_tune=0, n_test=1)
    with pytest.raises(ValueError, match="'tune' split"):
        train(csv, tmp_path / "run", cache_dir=cache, progress=False, **TINY)


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", None], ids=["text", "foreign-pickle"])
def test_a_file_that_is_not_a_checkpoint_is_named(cohort, tmp_path, capsys, content):
    from amt_core.cli import main

    path = tmp_path / "notes.txt"
    if content is None:
        torch.save({"net": torch.nn.Linear(2, 2)}, path)  # a pickle that only unsafe loading would open
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="not an amt model checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "weights_only" not in str(info.value)
    scan = cohort.parent / "imagesTs" / "TOY004_0000.nii.gz"
    assert main(["predict", "--model", str(path), "--input", str(scan), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("amt predict: error: ") and str(path) in err and "weights_only" not in err
    assert len(err.splitlines()) == 1


def test_training_keeps_the_cache_under_its_cap_pruning_other_entries_first(cohort, tmp_path, monkeypatch):
    """``AMT_CACHE_MAX_GB`` 0: after training, only the entries of the run's own cases are left."""
    import os

    from amt_core.data.cases import read_cases
    from amt_core.model.cache import cache_entries

    cache = tmp_path / "cache"
    cache.mkdir()
    month_ago = time.time() - 30 * 86400.0
    for suffix in (".npy", "_label.npy", "_fg.npy", ".json"):  # an entry of another cohort, unused for long
        (cache / f"OTHER-{'0' * 20}{suffix}").write_bytes(b"\0" * 4096)
        os.utime(cache / f"OTHER-{'0' * 20}{suffix}", (month_ago, month_ago))
    monkeypatch.setenv("AMT_CACHE_MAX_GB", "0")
    train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **TINY)
    cases = read_cases(cohort)
    used = set(cases.case_id[cases.split.isin(["train", "tune"])])
    assert {e.name.rsplit("-", 1)[0] for e in cache_entries(cache)} == used


def test_a_diverging_training_stops_with_one_line_and_no_nan_model(cohort, cache, tmp_path, capsys):
    """lr 1e6: the loss turns non-finite within a few steps; the run stops there (exit 2, one line naming the
    step and the lr), is never called complete, and leaves no NaN checkpoint."""
    from amt_core.cli import main

    out = tmp_path / "run"
    args = ["train", "--cohort", str(cohort), "--out", str(out), "--cache-dir", str(cache), "--no-progress"]
    for name, value in {**TINY, "lr": 1e6, "max_epochs": 4}.items():
        args += ["--set", f"{name}={json.dumps(value)}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("amt train: error: training diverged at step ")
    assert "lower the learning rate" in err and "Traceback" not in err
    status = json.loads((out / "training.json").read_text())
    assert status["complete"] is False and status["stopped_by"] == "diverged" and "step" in status["error"]
    for name in ("best.pt", "last.pt"):  # whatever was kept is from before the divergence: finite
        if (out / name).is_file():
            assert all(torch.isfinite(v).all() for v in load_checkpoint(out / name)["model"].values())


def test_training_json_says_complete_only_after_postprocessing_is_in_best_pt(
    cohort, cache, tmp_path, monkeypatch
):
    """A run that dies while choosing the post-processing (here: the choice raises, as a kill would stop it)
    is not complete: best.pt does not hold the filter yet."""
    import amt_core.model.postprocess as pp

    def killed(*args, **kwargs):
        raise RuntimeError("killed while choosing the post-processing")

    monkeypatch.setattr(pp, "choose", killed)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed while choosing"):
        train(cohort, out, cache_dir=cache, progress=False, **TINY)
    assert (out / "best.pt").is_file() and not (out / "postprocessing.json").exists()
    assert json.loads((out / "training.json").read_text())["complete"] is False


def test_the_callers_thread_count_does_not_change_the_model(cohort, cache, tmp_path, reference):
    """Training runs on cfg.cpu_threads threads (2), whatever torch's count before (1 for the reference): the
    same weights, and the caller's count is restored."""
    with torch_threads(2):
        run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **TIMED)
        assert torch.get_num_threads() == 2
    _assert_same_weights(reference / "last.pt", run / "last.pt")
    _assert_same_weights(reference / "best.pt", run / "best.pt")


def test_threads_and_precision_are_recorded_and_used_by_the_whole_run(cohort, cache, tmp_path, monkeypatch):
    """The thread count and the precision bf16 resolved to are in config.json and the checkpoints; every step
    runs with them, a resume on a CPU that would resolve otherwise keeps the recorded precision, and a resume
    asking for another thread count or precision is refused."""
    from amt_core.model import network
    from amt_core.model.trainer import Trainer

    seen = []
    step = Trainer.train_step

    def spy(self, batch):
        seen.append((torch.get_num_threads(), network.resolve_precision(self.cfg, self.dev)))
        return step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", spy)
    run = train(cohort, tmp_path / "run", cache_dir=cache, progress=False, **{**TINY, "stop_after": 1})
    recorded = "bf16" if network.cpu_has_bf16() else "fp32"
    config = json.loads((run / "config.json").read_text())
    assert config["precision"] == recorded and config["cpu_threads"] == 2
    assert load_checkpoint(run / "last.pt")["config"].precision == recorded
    assert seen == [(2, recorded)] and torch.get_num_threads() == 1  # the fixture's count, restored
    other = "fp32" if recorded == "bf16" else "bf16"
    for changed, message in [
        ({"cpu_threads": 1}, "cpu_threads was 2, now 1"),
        ({"precision": other}, f"precision was '{recorded}', now '{other}'"),
    ]:
        with pytest.raises(ValueError, match="--resume continues the run as it was started") as info:
            train(cohort, run, cache_dir=cache, progress=False, resume=True, **{**TINY, **changed})
        assert message in str(info.value)
    # another CPU (native bf16 or not): the resumed run still computes at the recorded precision
    monkeypatch.setattr(network, "cpu_has_bf16", lambda: recorded != "bf16")
    train(cohort, run, cache_dir=cache, progress=False, resume=True, **TINY)
    assert {p for _, p in seen} == {recorded} and {t for t, _ in seen} == {2} and len(seen) == 4
    assert load_checkpoint(run / "best.pt")["config"].precision == recorded


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"threshold": 1.5}, "threshold=1.5 (a probability in (0, 1])"),
        ({"threshold": 0.0}, "threshold=0.0"),
        (
            {"patch_size": (40, 40, 40), "strides": (2, 2, 2, 2)},
            "patch_size=[40, 40, 40] (each size a multiple of [16, 16, 16]",
        ),
        ({"mirror_axes": (5,)}, "mirror_axes=[5] (axes 0, 1 or 2)"),
        ({"hu_window": (240.0, -160.0)}, "hu_window=[240.0, -160.0] (low < high"),
        ({"fg_ratio": 1.5}, "fg_ratio=1.5"),
        ({"p_noise": -0.1}, "p_noise=-0.1"),
        ({"scale_range": (1.2, 0.8)}, "scale_range=[1.2, 0.8]"),
        ({"min_component_ml": -1.0}, "min_component_ml=-1.0 (0 or more)"),
        ({"body_margin_mm": -5.0}, "body_margin_mm=-5.0"),
        ({"cpu_threads": 0}, "cpu_threads=0"),
        ({"precision": "fp8"}, "precision='fp8'"),
    ],
)
def test_settings_out_of_range_are_refused_before_any_file_is_written(
    cohort, cache, tmp_path, setting, message
):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="invalid model settings") as info:
        train(cohort, out, cache_dir=cache, progress=False, **{**TINY, **setting})
    assert message in str(info.value)
    assert not out.exists()


def test_dynunet_strides_multiply_per_axis():
    from amt_core.model.presets import get_config

    assert get_config("full").patch_size == (128, 128, 128)  # strides (1, 2, 2, 2, 2, 2): multiples of 32
    get_config("full", patch_size=(96, 96, 64))
    with pytest.raises(
        ValueError, match=r"patch_size=\[96, 96, 48\] \(each size a multiple of \[32, 32, 32\]"
    ):
        get_config("full", patch_size=(96, 96, 48))
    get_config("full", strides=(1, 2, 2, 2, 2, (2, 2, 1)), patch_size=(96, 96, 48))  # z halved 4 times
