"""DDP: two CPU ranks on gloo (launched by torchrun) train a few steps and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from toy import toy_cohort


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    cohort = toy_cohort(tmp_path / "toy", n_train=2, n_tune=1, n_test=0)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "amt_core.model.ddp",
        "--cohort",
        str(cohort),
        "--out",
        str(run),
        "--device",
        "cpu",
        "--max-epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--num-workers",
        "0",
        "--cache-dir",
        str(tmp_path / "c"),
        "--set",
        "patch_size=[32,32,32]",
        "--set",
        "channels=[8,16]",
        "--set",
        "strides=[2]",
        "--set",
        "target_spacing=[4,4,4]",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = json.loads((run / "ddp_check.json").read_text())
    assert check["world"] == 2 and check["step"] == 2
    assert len(check["digests"]) == 2 and check["digests"][0] == check["digests"][1]
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 2
