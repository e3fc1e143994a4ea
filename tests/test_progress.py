"""Progress where the user waits (amt_core.progress): the records a loop writes, the lines `amt run` prints
from them (one per update off a terminal, rate-limited with an injected clock, every epoch end), the thread
that follows the file, and training's epoch marks with an ETA that leave the trained model unchanged."""

from __future__ import annotations

import io
import json
import os

import pytest

from amt_core.progress import ENV_FILE, Console, Follower, Progress, duration, following, format_record


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_progress_writes_rate_limited_records_with_elapsed_and_eta(tmp_path):
    path, clock = tmp_path / "p.jsonl", Clock()
    bar = Progress("cohort", 10, unit="case", path=path, clock=clock, every=1.0)
    for _ in range(4):  # four updates within 0.4 s: only the start is written so far
        clock.t += 0.1
        bar.update(1)
    clock.t += 1.0
    bar.update(1, loss=float("nan"))  # a second later: written, NaN as null
    bar.mark(epoch=1)
    bar.close()
    bar.close()  # twice is once
    recs = _records(path)
    assert [r["event"] for r in recs] == ["start", "update", "mark", "end"]
    assert [r["done"] for r in recs] == [0, 5, 5, 5]
    up = recs[1]
    assert up["elapsed"] == pytest.approx(1.4) and up["total"] == 10
    assert up["eta"] == pytest.approx(1.4 / 5 * 5)  # elapsed per unit done, times the units left
    assert up["fields"] == {"loss": None} and recs[2]["fields"] == {"loss": None, "epoch": 1}
    assert len({r["id"] for r in recs}) == 1


def test_resumed_progress_leaves_earlier_units_out_of_the_eta(tmp_path):
    path, clock = tmp_path / "p.jsonl", Clock()
    bar = Progress("train", 100, unit="step", initial=60, path=path, clock=clock, every=0)
    clock.t += 10
    bar.update(10)
    assert _records(path)[-1]["eta"] == pytest.approx(30.0)  # 10 steps in 10 s, 30 left


def test_a_time_cap_caps_the_eta_at_the_time_it_leaves_and_says_so(tmp_path):
    """Training's progress with max_minutes: the rate's ETA (20m 54s here) is not shown when the cap will stop
    the loop first; the time left under the cap is, marked "(time cap)"."""
    path, clock = tmp_path / "p.jsonl", Clock()
    bar = Progress("train", 600, unit="step", path=path, clock=clock, every=0, deadline=clock.t + 480.0)
    clock.t += 170.0
    bar.update(75)  # 75 steps in 170 s: 525 left would take 1190 s, the cap leaves 310 s
    rec = _records(path)[-1]
    assert rec["eta"] == pytest.approx(310.0) and rec["eta_by"] == "time cap"
    assert format_record(rec).endswith(", elapsed 2m 50s, ETA 5m 10s (time cap)")
    clock.t += 400.0  # past the deadline (the cap stops at an epoch end): nothing left, never negative
    bar.update(1)
    assert _records(path)[-1]["eta"] == 0.0 and _records(path)[-1]["eta_by"] == "time cap"
    bar.close()
    assert _records(path)[-1]["event"] == "end" and "time cap" not in format_record(_records(path)[-1])


def test_a_time_cap_the_loop_ends_before_leaves_the_eta_alone(tmp_path):
    path, clock = tmp_path / "p.jsonl", Clock()
    bar = Progress("train", 100, unit="step", path=path, clock=clock, every=0, deadline=clock.t + 600.0)
    clock.t += 10.0
    bar.update(50)
    rec = _records(path)[-1]
    assert rec["eta"] == pytest.approx(10.0) and rec["eta_by"] is None
    assert format_record(rec).endswith("ETA 10s")
    # the start, before any step: no rate yet, the time the cap leaves is the most there is
    assert _records(path)[0]["eta"] == pytest.approx(600.0) and _records(path)[0]["eta_by"] == "time cap"


def test_without_a_progress_file_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_FILE, raising=False)
    bar = Progress("bootstrap", 5, unit="resample")
    bar.update(5)
    bar.close()
    assert bar.path is None and bar.bar is None
    monkeypatch.setenv(ENV_FILE, str(tmp_path / "p.jsonl"))
    with Progress("predict", 2, enabled=False) as off:
        off.update(2)
    assert not (tmp_path / "p.jsonl").exists()
    with Progress("predict", 2) as on:  # the variable names the file
        on.update(2)
    recs = _records(tmp_path / "p.jsonl")
    assert [(r["event"], r["done"]) for r in recs] == [
        ("start", 0),
        ("end", 2),
    ]  # the update within 1 s waits


def test_an_unwritable_progress_file_never_stops_the_loop(tmp_path):
    bar = Progress("cohort", 3, path=tmp_path / "missing" / "p.jsonl")
    bar.update(3)
    bar.close()
    assert bar.path is None


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (65, "1m 05s"), (3725, "1h 02m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_a_training_record_reads_as_one_line():
    rec = {
        "task": "train",
        "desc": "train",
        "unit": "step",
        "event": "mark",
        "done": 750,
        "total": 7500,
        "elapsed": 155.0,
        "eta": 1390.0,
        "fields": {"epoch": 3, "epochs": 30, "loss": 0.41234, "tune_dice": 0.7129},
    }
    assert format_record(rec) == (
        "train: epoch 3/30, 750/7500 steps (10%), loss 0.412, tune Dice 0.713, elapsed 2m 35s, ETA 23m 10s"
    )
    end = {**rec, "event": "end", "done": 7500, "fields": {}}
    assert format_record(end) == "train: 7500/7500 steps (100%), elapsed 2m 35s, done"


def _rec(task_id, event, done, total=100, **fields):
    return {
        "task": "cohort",
        "desc": "cohort",
        "unit": "case",
        "id": task_id,
        "event": event,
        "done": done,
        "total": total,
        "elapsed": 1.0,
        "eta": 9.0,
        "fields": fields,
    }


def test_off_a_terminal_one_line_per_update_rate_limited_with_every_mark():
    out, clock = io.StringIO(), Clock()
    follower = Follower("unused", Console(out, tty=False), interval=10.0, indent="", clock=clock)
    lines = [json.dumps(r) for r in (_rec("a", "start", 0), _rec("a", "update", 5))]
    follower.feed("\n".join(lines) + "\n")  # at once: the start is printed, the update waits
    clock.t += 10
    follower.feed(json.dumps(_rec("a", "update", 50)) + "\n")  # the interval passed
    clock.t += 1
    follower.feed(json.dumps(_rec("a", "mark", 60, epoch=1)) + "\n")  # a mark always
    half = json.dumps(_rec("a", "end", 100))
    follower.feed(half[:20])  # a torn line: nothing until its end arrives
    assert out.getvalue().count("\n") == 3
    follower.feed(half[20:] + "\n")  # the end of a task that was shown
    follower.feed(
        json.dumps(_rec("b", "start", 0)) + "\n" + json.dumps(_rec("b", "end", 100)) + "\n" + "noise\n"
    )
    printed = out.getvalue().splitlines()
    assert [p.split(":")[0] for p in printed] == ["cohort"] * 4  # task b (never shown) is left out
    assert [p.split(", ")[0] for p in printed] == [
        "cohort: 0/100 cases (0%)",
        "cohort: 50/100 cases (50%)",
        "cohort: epoch 1",
        "cohort: 100/100 cases (100%)",
    ]
    assert "\r" not in out.getvalue() and printed[-1].endswith("done") and "ETA 9s" in printed[1]


def test_on_a_terminal_the_line_is_redrawn_in_place_and_marks_stay():
    out, clock = io.StringIO(), Clock()
    console = Console(out, tty=True)
    follower = Follower("unused", console, interval=0.2, indent="", clock=clock)
    follower.handle(_rec("a", "start", 0))
    clock.t += 1
    follower.handle(_rec("a", "mark", 10, epoch=1))
    clock.t += 1
    follower.handle(_rec("a", "update", 20))
    console.line("[2/5] 02_train: train")
    text = out.getvalue()
    assert text.startswith("\rcohort: 0/100") and "\r\x1b[Kcohort: epoch 1," in text
    assert text.endswith("\r\x1b[K[2/5] 02_train: train\n")  # the in-place line is cleared for a line


def test_following_shows_what_a_writer_in_the_block_reports(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_FILE, raising=False)
    out = io.StringIO()
    path = tmp_path / ".steps" / "02_train.progress.jsonl"
    with following(path, Console(out, tty=False), every=60.0, interval=0.0) as follower:
        assert os.environ[ENV_FILE] == str(path)
        with Progress("train", 4, unit="step") as bar:  # as a kernel would, through the variable
            for _ in range(4):
                bar.update(1, epoch=1, epochs=1, loss=0.5)
            bar.mark(epoch=1, tune_dice=0.25)
        follower.say("[3/5] 03_evaluate: statistics")  # a cell's label comes after the records before it
        Progress("bootstrap", 10, unit="resample").close()  # read at the end of the block
    assert ENV_FILE not in os.environ
    lines = out.getvalue().splitlines()
    assert lines.index("[3/5] 03_evaluate: statistics") == len(lines) - 3
    assert lines[-2:] == [
        "  bootstrap: 0/10 resamples (0%), elapsed 0s",
        "  bootstrap: 0/10 resamples (0%), elapsed 0s, done",
    ]
    lines = lines[:-3]
    assert lines[0] == "  train: 0/4 steps (0%), elapsed 0s"  # the start: no ETA before a step is done
    assert any("4/4 steps (100%), loss 0.500, tune Dice 0.250" in ln and "ETA" in ln for ln in lines)
    assert lines[-1].endswith("done")


def test_training_marks_every_epoch_with_eta_and_the_model_is_unchanged(tmp_path, monkeypatch):
    """The epochs of a tiny training, as `amt run` prints them; the same weights as a run without progress."""
    import torch
    from conftest import torch_threads
    from toy import toy_cohort

    from amt_core.model.checkpoint import load_checkpoint
    from amt_core.model.train import train

    tiny = dict(
        patch_size=(32, 32, 32),
        channels=(8, 16, 32),
        strides=(2, 2),
        batch_size=1,
        steps_per_epoch=2,
        max_epochs=2,
        eval_every=1,
        num_workers=0,
        target_spacing=(4.0, 4.0, 4.0),
        postprocess=False,
    )
    cohort = toy_cohort(tmp_path / "toy", n_train=2, n_tune=1, n_test=1)
    path = tmp_path / "progress.jsonl"
    with torch_threads(1):
        monkeypatch.setenv(ENV_FILE, str(path))
        a = train(cohort, tmp_path / "a", cache_dir=tmp_path / "cache", **tiny)
        monkeypatch.delenv(ENV_FILE)
        b = train(cohort, tmp_path / "b", cache_dir=tmp_path / "cache", progress=False, **tiny)
    recs = [r for r in _records(path) if r["task"] == "train"]
    marks = [r for r in recs if r["event"] == "mark"]
    assert [(m["fields"]["epoch"], m["done"]) for m in marks] == [(1, 2), (2, 4)]
    assert all(m["eta"] is not None and m["fields"]["tune_dice"] is not None for m in marks)
    assert recs[-1]["event"] == "end" and recs[-1]["done"] == recs[-1]["total"] == 4
    line = format_record(marks[0])
    assert (
        line.startswith("train: epoch 1/2, 2/4 steps (50%), loss ") and "tune Dice" in line and "ETA" in line
    )
    wa, wb = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not any(r["eta_by"] for r in recs)  # no time cap, no capped ETA
    # a time cap long passed when the first step ends: the ETA is the nothing it leaves, said to be the cap's
    capped = tmp_path / "capped.jsonl"
    with torch_threads(1):
        monkeypatch.setenv(ENV_FILE, str(capped))
        train(cohort, tmp_path / "c", cache_dir=tmp_path / "cache", max_minutes=1e-6, **tiny)
    mark = next(r for r in _records(capped) if r["task"] == "train" and r["event"] == "mark")
    assert mark["done"] == 2 and mark["eta"] == 0.0 and format_record(mark).endswith("ETA 0s (time cap)")


# --- issue 12 §4: the quick preset, a preview that says so -------------------------------------------------
def test_quick_preset_is_a_preview_big_enough_to_look_at():
    from pathlib import Path

    from amt_core.evaluation.bootstrap import MIN_CLUSTERS
    from amt_core.model.presets import RUN_CONTROLS, get_config
    from amt_core.pipeline.params import NOTEBOOKS, load_params, notebook_parameters
    from amt_core.synth.design import study_design

    params_dir = Path(__file__).resolve().parents[1] / "params"
    quick, demo = (load_params(params_dir / f"{name}.yaml") for name in ("quick", "demo"))
    assert quick["preview"] is True and not demo.get("preview")
    # the preview flag is the run's, not a notebook's: it changes no step's parameters
    assert all("preview" not in notebook_parameters(nb, quick, "run") for nb in NOTEBOOKS)
    test = study_design(n_cases=quick["n_cases"], seed=quick["seed"]).query("split == 'test'")
    assert test["institution_id"].nunique() >= MIN_CLUSTERS  # an institution-cluster bootstrap is estimable

    def steps(p):
        cfg = get_config(
            p["model_preset"], **{k: v for k, v in p["train_overrides"].items() if k not in RUN_CONTROLS}
        )
        return cfg.max_epochs * cfg.steps_per_epoch

    assert steps(quick) * 5 <= steps(demo) and quick["n_cases"] * 4 <= demo["n_cases"]


def test_a_preview_run_says_so_at_the_top_of_its_report(tmp_path):
    from amt_core.pipeline.report import build_report

    run = tmp_path / "run"
    (run / "cohort").mkdir(parents=True)
    (run / "train").mkdir()
    (run / "cohort" / "cases.csv").write_text("case_id,split\na,train\nb,train\nc,tune\nd,test\n")
    (run / "train" / "training.json").write_text(json.dumps({"configured_steps": 600, "steps": 600}))
    prov = {"config": {"params_file": "quick.yaml", "params": {"seed": 0, "preview": True}}}
    (run / "provenance.json").write_text(json.dumps(prov))
    top = build_report(run).split("## ")[0]
    assert "> **Preview, not the study's design.**" in top
    assert "4 scans (2 train / 1 tune / 1 test)" in top and "600 steps" in top and "711 scans" in top
    prov["config"]["params"]["preview"] = False
    (run / "provenance.json").write_text(json.dumps(prov))
    assert "Preview" not in build_report(run)
