"""Training: a tiny run writes loadable checkpoints and a log; a killed run resumes to the same weights."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from amt_core.model.toy import toy_cohort
from amt_core.model.train import LOG_COLUMNS, train

#: a network and patch small enough for a few steps per second on one core
TINY = dict(patch_size=(32, 32, 32), channels=(8, 16, 32), strides=(2, 2), batch_size=2, steps_per_epoch=2,
            max_epochs=2, eval_every=1, num_workers=0, target_spacing=(3.0, 3.0, 3.0), p_affine=0.5)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return toy_cohort(tmp_path_factory.mktemp("toy"), n_train=3, n_tune=1, n_test=1)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state


def test_tiny_run_writes_checkpoints_log_and_config(cohort, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, **TINY)
    for name in ("best.pt", "last.pt", "train_log.csv", "config.json", "provenance.json", "training.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "training.json").read_text())
    assert summary["stopped_by"] == "steps" and summary["steps"] == summary["configured_steps"] == 4
    assert summary["rescheduled_by_time_budget"] is False
    last = _weights(run / "last.pt")  # weights_only=True: tensors and plain containers only
    assert last["epoch"] == 2 and last["step"] == 4
    assert set(last) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config", "versions"}
    cfg = json.loads(last["config"])
    assert cfg["patch_size"] == [32, 32, 32] and cfg["intensity_stats"]["std"] > 0
    assert cfg["target_spacing"] == [3.0, 3.0, 3.0] and len(cfg["roi_box"]) == 4
    assert json.loads(last["versions"])["torch"]
    log = pd.read_csv(run / "train_log.csv")
    assert list(log.columns) == list(LOG_COLUMNS) and len(log) == 2
    assert log["tune_dice"].between(0, 1).all() and (log["seconds"] > 0).all()
    best = _weights(run / "best.pt")
    assert json.loads(best["extra"])["best_dice"] == pytest.approx(log["tune_dice"].max())
    chosen = json.loads((run / "postprocessing.json").read_text())  # the component filter, from the tune split
    assert json.loads(best["config"])["min_component_ml"] == chosen["min_component_ml"]
    assert chosen["tune_dice_postprocessed"] >= chosen["tune_dice_raw"]


def test_killed_run_resumes_to_identical_weights(cohort, tmp_path):
    cache = tmp_path / "cache"
    full = train(cohort, tmp_path / "full", cache_dir=cache, progress=False, **TINY)
    # stop after 3 of 4 steps (mid-epoch, a checkpoint is written as a kill would find it), then resume
    # with a DataLoader worker: the patches depend on (seed, sample index) only
    part = train(cohort, tmp_path / "part", cache_dir=cache, progress=False, **{**TINY, "stop_after": 3})
    assert _weights(part / "last.pt")["step"] == 3
    train(cohort, part, cache_dir=cache, progress=False, resume=True, stop_after=None, num_workers=1)
    a, b = _weights(full / "last.pt"), _weights(part / "last.pt")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for name in sa:
            assert torch.equal(torch.as_tensor(sa[name]), torch.as_tensor(sb[name])), name
    log_a, log_b = pd.read_csv(full / "train_log.csv"), pd.read_csv(part / "train_log.csv")
    pd.testing.assert_series_equal(log_a["loss"], log_b["loss"])
    pd.testing.assert_series_equal(log_a["tune_dice"], log_b["tune_dice"])


def test_resume_refuses_a_changed_config(cohort, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, **{**TINY, "stop_after": 1})
    with pytest.raises(ValueError, match="keeps its config"):
        train(cohort, run, cache_dir=tmp_path / "cache", progress=False, resume=True, lr=0.5)


def test_max_steps_caps_training_and_still_selects(cohort, tmp_path):
    run = train(cohort, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, **{**TINY, "max_steps": 3})
    log = pd.read_csv(run / "train_log.csv")
    assert list(log["step"]) == [2, 3] and (run / "best.pt").is_file()
    assert _weights(run / "last.pt")["step"] == 3


def test_training_needs_a_tune_split(tmp_path):
    csv = toy_cohort(tmp_path / "c", n_train=2, n_tune=0, n_test=1)
    with pytest.raises(ValueError, match="'tune' split"):
        train(csv, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, **TINY)


def test_a_time_budget_that_cuts_training_is_recorded(cohort, tmp_path, caplog):
    """A wall-clock budget makes the length machine-dependent: training.json and the log say so."""
    run = train(cohort, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                **{**TINY, "max_epochs": 50, "max_minutes": 1e-4})
    summary = json.loads((run / "training.json").read_text())
    assert summary["stopped_by"] == "time budget"
    assert summary["steps"] < summary["configured_steps"] == 100
    assert "depend on this machine's speed" in caplog.text
