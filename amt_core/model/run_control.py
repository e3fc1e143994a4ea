"""How one ``train()`` call runs, as opposed to what it computes (the :class:`ModelConfig`).

Run-control settings (a planned stop, a time cap, DataLoader workers) may differ between the calls that
make up one run and are never saved in a checkpoint. A time cap only *stops* a run, at an epoch end,
with ``last.pt`` to resume it; it never reshapes the LR schedule, so one seed gives one model whatever
the machine's load.

Also here: the checks that ``resume`` continues the same run (same cohort, preset, seed and settings),
and the run's status file ``training.json`` (did training complete?) that the 02_train notebook and the
report read.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amt_core.model.presets import PRESET_NUM_WORKERS, RUN_CONTROLS, ModelConfig

log = logging.getLogger(__name__)
__all__ = [
    "FINISH_RUN",
    "FINISH_TRAIN",
    "RUN_CONTROLS",
    "RunControl",
    "check_status",
    "incomplete_note",
    "load_resume_state",
    "read_status",
]
STATUS_FILE = "training.json"


@dataclass(frozen=True)
class RunControl:
    stop_after: int | None = None  # stop (with last.pt only) after this many steps of the run
    max_minutes: float | None = (
        None  # time cap of this call: stop at an epoch end (the run is then incomplete)
    )
    num_workers: int | None = None  # DataLoader workers; None: the preset's (PRESET_NUM_WORKERS)

    def __post_init__(self) -> None:
        problems = []
        if self.stop_after is not None and not (isinstance(self.stop_after, int) and self.stop_after >= 1):
            problems.append(f"stop_after={self.stop_after} (1 or more steps, or none)")
        if self.max_minutes is not None and not self.max_minutes > 0:
            problems.append(f"max_minutes={self.max_minutes} (a positive number of minutes, or none)")
        if self.num_workers is not None and not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            problems.append(f"num_workers={self.num_workers} (0 or more)")
        if problems:
            raise ValueError("invalid run control: " + "; ".join(problems))

    def workers(self, cfg: ModelConfig) -> int:
        return PRESET_NUM_WORKERS.get(cfg.preset, 1) if self.num_workers is None else int(self.num_workers)


# --- resume -----------------------------------------------------------------------------------------
def cohort_record(cohort_csv: str | Path) -> dict[str, str]:
    """Where the cohort's case table is and what it holds (SHA-256): a resumed run must find the same."""
    from amt_core.atomic import file_hash

    path = Path(cohort_csv).resolve()
    return {"cases_csv": str(path), "sha256": file_hash(path)}


def load_resume_state(
    out: Path, cohort_csv, *, preset: str | None, seed: int | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """``out/last.pt``, after checking that this call continues that run: the same cohort (its case table may
    have moved), and ``preset``, ``seed`` and model ``overrides`` either not given or equal to the stored ones."""
    from amt_core.model.checkpoint import load_checkpoint

    last = out / "last.pt"
    if not last.is_file():
        what = "does not exist" if not out.exists() else "holds no last.pt"
        raise FileNotFoundError(
            f"{out}: nothing to resume: the folder {what}; start a new training without --resume (with --overwrite if the folder is not empty)"
        )
    state = load_checkpoint(last)
    cfg: ModelConfig = state["config"]
    stored_seed = state["extra"].get("seed")
    differ = []
    if preset is not None and preset != cfg.preset:
        differ.append(f"preset was {cfg.preset!r}, now {preset!r}")
    if seed is not None and stored_seed is not None and int(seed) != int(stored_seed):
        differ.append(f"seed was {stored_seed}, now {seed}")
    for name, value in overrides.items():
        new, old = getattr(cfg.replace(**{name: value}), name), getattr(cfg, name)
        if new != old:
            differ.append(f"{name} was {_show(old)}, now {_show(new)}")
    if differ:
        raise ValueError(
            f"{last}: --resume continues the run as it was started, but {'; '.join(differ)} "
            "(resume with the same settings, or start a new run with --overwrite or another --out)"
        )
    _check_cohort(last, state["extra"].get("cohort"), cohort_csv)
    return state


def _check_cohort(last: Path, stored: dict | None, cohort_csv) -> None:
    now = cohort_record(cohort_csv)
    if not stored:
        log.warning(
            "%s records no cohort (an older checkpoint): cannot check that %s is the cohort it was "
            "trained on",
            last,
            now["cases_csv"],
        )
        return
    if stored["sha256"] != now["sha256"]:
        raise ValueError(
            f"{last}: --resume must continue on the cohort the run started on, "
            f"{stored['cases_csv']} (sha256 {stored['sha256'][:12]}), not {now['cases_csv']} "
            f"(sha256 {now['sha256'][:12]})"
        )
    if stored["cases_csv"] != now["cases_csv"]:
        log.info("resuming on %s: the same case table as %s (moved)", now["cases_csv"], stored["cases_csv"])


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | dict) or value is None else repr(value)


# --- the run's status -------------------------------------------------------------------------------
class IncompleteTrainingWarning(UserWarning):
    """The run's training did not reach its configured steps."""


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """``training.json`` of a training run folder (``{}`` when there is none)."""
    path = Path(run_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


#: how to finish an incomplete training run by ``amt train``
FINISH_TRAIN = "finish it with `amt train --resume` and a larger or no time cap"
#: how to finish the training of an ``amt run`` folder (its 02_train step reruns on the changed parameters)
FINISH_RUN = (
    "finish it with `resume: true` and a larger or no `max_minutes` under `train_overrides` in the "
    "parameters, then `amt run` again on this folder"
)


def incomplete_note(status: dict[str, Any], finish: str = FINISH_TRAIN) -> str | None:
    """Why this run's model is not the seed's full training (one sentence), or None when it is; ``finish``
    says how to finish it (:data:`FINISH_TRAIN`, or :data:`FINISH_RUN` in an ``amt run`` folder)."""
    if not status:
        return None
    steps = f"{status.get('steps', '?')} of {status.get('configured_steps', '?')} configured steps"
    if status.get(
        "rescheduled_by_time_budget"
    ):  # written by versions that fitted the LR schedule to the clock
        return (
            f"an older version fitted the LR schedule to the clock ({steps}): the weights depend on the "
            "machine's load, not only on the seed; train again"
        )
    complete = status.get("complete", status.get("stopped_by") == "steps")
    if complete:
        return None
    if status.get("stopped_by") == "diverged":
        return (
            f"{status.get('error') or 'training diverged'}; a best.pt it left is from before the divergence, "
            "not the seed's result"
        )
    how = {
        "time cap": f"stopped by the time cap (max_minutes {status.get('max_minutes')})",
        "time budget": f"stopped by the time budget (max_minutes {status.get('max_minutes')})",
        "stop_after": f"stopped by stop_after={status.get('stop_after')}",
    }.get(status.get("stopped_by"), "did not finish (still running, or killed)")
    return f"{how} after {steps}; this model is not the seed's result ({finish})"


def check_status(run_dir: str | Path, finish: str = FINISH_TRAIN) -> dict[str, Any]:
    """The run's ``training.json``, with an :class:`IncompleteTrainingWarning` when training is incomplete
    (what the 02_train notebook shows, with ``finish``: :data:`FINISH_RUN`)."""
    status = read_status(run_dir)
    note = incomplete_note(status, finish)
    if note:
        warnings.warn(
            f"{Path(run_dir)}: incomplete training: {note}", IncompleteTrainingWarning, stacklevel=2
        )
    return status
