"""A real kill: ``amt train`` killed with SIGKILL in the middle of its second epoch (no clean stop, nothing
written at the kill), then ``amt train --resume`` with the same flags, ends with the weights, the selected
model and the log of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import torch
from toy import toy_cohort

from amt_core.model.run_control import IncompleteTrainingWarning, check_status

SPE = 30  # steps per epoch: the kill lands in epoch 2, with most of it still to run
FLAGS = [
    "--max-epochs",
    "2",
    "--steps-per-epoch",
    str(SPE),
    "--eval-every",
    "1",
    "--num-workers",
    "0",
    "--seed",
    "0",
    "--set",
    "patch_size=[32,32,32]",
    "--set",
    "channels=[8,16,32]",
    "--set",
    "strides=[2,2]",
    "--set",
    "batch_size=2",
    "--set",
    "target_spacing=[3,3,3]",
    "--set",
    "postprocess=false",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train(cohort, out, cache, *extra, **popen):
    cmd = [
        sys.executable,
        "-m",
        "amt_core.cli",
        "train",
        "--cohort",
        str(cohort),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        *FLAGS,
        *extra,
    ]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


class Progress:
    """The step count of the ``train`` progress bar on a process's stderr, read as it is written."""

    def __init__(self, proc):
        self.step, self.text = 0, b""
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.text += chunk
            found = re.findall(rb"train:[^\r\n|]*\|[^|]*\|\s*(\d+)/\d+", self.text[-2000:])
            if found:
                self.step = max(self.step, int(found[-1]))


def _wait(proc, until, what, timeout=240.0):
    t = time.monotonic()
    while not until():
        assert proc.poll() is None, f"training ended before {what}"
        assert time.monotonic() - t < timeout, f"no {what} after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_from_the_cli(tmp_path):
    cohort = toy_cohort(tmp_path / "toy", n_train=3, n_tune=1, n_test=0)
    full = _train(cohort, tmp_path / "full", tmp_path / "cache_full", "--no-progress")
    victim = _train(cohort, tmp_path / "run", tmp_path / "cache")
    progress = Progress(victim)
    # epoch 1 ended (its last.pt is written before epoch 2 begins) and a few steps of epoch 2 ran
    _wait(victim, lambda: progress.step >= SPE + 3, f"step {SPE + 3}")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert (
        torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == SPE
    )  # the kill wrote nothing
    status = json.loads((tmp_path / "run" / "training.json").read_text())
    assert status["complete"] is False and status["stopped_by"] is None
    with pytest.warns(IncompleteTrainingWarning, match="did not finish"):
        check_status(tmp_path / "run")

    resumed = _train(cohort, tmp_path / "run", tmp_path / "cache", "--no-progress", "--resume")
    for proc in (resumed, full):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    assert json.loads((tmp_path / "run" / "training.json").read_text())["complete"] is True
    for name in ("last.pt", "best.pt"):
        a = torch.load(tmp_path / "full" / name, weights_only=True)
        b = torch.load(tmp_path / "run" / name, weights_only=True)
        assert a["step"] == b["step"] and (name == "best.pt" or a["step"] == 2 * SPE)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), f"{name}: {key}"
    columns = ["epoch", "step", "loss", "tune_dice", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "full" / "train_log.csv")[columns],
        pd.read_csv(tmp_path / "run" / "train_log.csv")[columns],
    )
