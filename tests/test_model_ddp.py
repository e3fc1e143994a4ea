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
    written = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
    assert proc.returncode == 0, f"written: {written}\n{proc.stderr[:1500]}\n...\n{proc.stderr[-3000:]}"
    check = json.loads((run / "ddp_check.json").read_text())
    assert check["world"] == 2 and check["step"] == 2
    assert len(check["digests"]) == 2 and check["digests"][0] == check["digests"][1]
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 2


def test_a_missing_cohort_is_one_clear_error(tmp_path):
    """Without torchrun (one rank) the entry point reports bad input as `amt train` does: exit 2, no traceback."""
    missing = tmp_path / "nowhere" / "cases.csv"
    cmd = [sys.executable, "-m", "amt_core.model.ddp", "--cohort", str(missing), "--out", str(tmp_path / "r")]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
