"""Training: patches from the preprocessed cache, Dice + CE, the preset's optimiser (AdamW for ``cpu``,
SGD/Nesterov for ``full``) + poly LR, tuning-set model
selection (``best.pt``), resumable checkpoints (``last.pt``), a CSV log, optional DDP.

:func:`train` checks the output folder and the resume, plans (``plans.json``: spacing, intensity statistics,
ROI box, patch, network, before the first step), then drives :class:`amt_core.model.trainer.Trainer` epoch
by epoch and writes ``training.json`` (did it complete?)."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from pathlib import Path

import numpy as np

from amt_core.model import ddp
from amt_core.model.checkpoint import load_checkpoint
from amt_core.model.presets import ModelConfig, get_config
from amt_core.model.run_control import STATUS_FILE, RunControl, cohort_record, incomplete_note
from amt_core.model.trainer import LOG_COLUMNS, Trainer, TrainingDiverged

log = logging.getLogger(__name__)
#: the training plan, written before the first step (spacing, intensity statistics, ROI box, patch, network)
PLANS_FILE = "plans.json"
__all__ = ["LOG_COLUMNS", "PLANS_FILE", "train", "training_plan"]


def train(
    cohort_csv,
    out_dir,
    *,
    preset: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    seed: int | None = None,
    progress: bool = True,
    cache_dir=None,
    device: str | None = None,
    stop_after: int | None = None,
    max_minutes: float | None = None,
    num_workers: int | None = None,
    **overrides,
) -> Path:
    """Train on the ``train`` split of a cohort, select on its ``tune`` split; returns the run folder.

    ``overrides`` are :class:`ModelConfig` settings (with ``preset``, default ``cpu``, and ``seed``, default 0,
    they fix the result). ``stop_after``, ``max_minutes`` and ``num_workers`` control this call only
    (:class:`~amt_core.model.run_control.RunControl`): the time cap stops training at an epoch end, never
    reshapes it, and ``training.json`` then says the run is incomplete.

    A non-empty ``out_dir`` is refused unless ``overwrite`` (the new run is trained in a staging folder beside
    it that replaces it when training ends; a failed run leaves the old one as it was) or ``resume``
    (continue from ``out_dir/last.pt``, on the same cohort with the same preset, seed and settings; this
    reaches the same weights as an uninterrupted run on CPU).
    """
    import torch

    from amt_core.atomic import check_output_dir, is_nonempty_dir, remove_stale_temps, replacing_dir
    from amt_core.model.network import pick_device
    from amt_core.model.run_control import load_resume_state

    t0 = time.monotonic()
    out = Path(out_dir)
    control = RunControl(stop_after=stop_after, max_minutes=max_minutes, num_workers=num_workers)
    dev = pick_device(device)
    info = ddp.init_from_env(dev.type)
    if dev.type == "cuda" and info.world > 1:
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    threads = torch.get_num_threads()
    try:
        if info.main:  # one rank looks (another node would take rank 0's live temp files for dead ones)
            remove_stale_temps(out)  # left by a writer killed mid-write
            remove_stale_temps(out.parent, of=out.name)  # the staging folder of a killed --overwrite training
            check_output_dir(
                out,
                overwrite=overwrite,
                resume=resume,
                what="training run folder",
                inputs=_cohort_inputs(cohort_csv, cache_dir),
            )
        if resume:
            state = load_resume_state(out, cohort_csv, preset=preset, seed=seed, overrides=overrides)
            cfg, seed = state["config"], int(state["extra"]["seed"])
        else:
            state, cfg, seed = (
                None,
                get_config(preset or "cpu", **overrides),
                0 if seed is None else int(seed),
            )
        cfg = _fix_numerics(cfg, dev)
        if dev.type == "cpu":
            torch.set_num_threads(cfg.cpu_threads)  # the weights depend on it: a recorded model setting
            torch.use_deterministic_algorithms(True, warn_only=True)
            # the NaN fill of fresh buffers (a debugging aid of deterministic mode) leaked into DynUNet's
            # gradients on CPU here; results do not depend on it
            torch.utils.deterministic.fill_uninitialized_memory = False
        staged = overwrite and info.main and is_nonempty_dir(out)  # the old run stays until the new one ends
        with replacing_dir(out) if staged else contextlib.nullcontext(out) as work:
            try:
                _run(cohort_csv, Path(work), cfg, state, seed, dev, info, progress, cache_dir, t0, control)
            except TrainingDiverged as exc:
                if info.main:
                    _record_divergence(Path(work), exc)
                raise
        return out
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        ddp.cleanup(info)


def _fix_numerics(cfg: ModelConfig, dev) -> ModelConfig:
    """The run's precision, resolved once (a fresh run: from ``bf16`` and this device) and then kept in its
    config, so that a resumed run and its predictions compute as the run started; a CPU without native bf16
    still runs a recorded bf16 run in bf16 (emulated: slower, and its last bits may differ)."""
    from amt_core.model.network import emulated_bf16_note, resolve_precision

    if cfg.precision is None:
        cfg = cfg.replace(precision=resolve_precision(cfg, dev))
    elif note := emulated_bf16_note(cfg, dev):
        log.warning(f"this run {note}")
    return cfg


def _record_divergence(out: Path, exc: TrainingDiverged) -> None:
    """``training.json`` says why the run stopped (it was written incomplete at the start of the run)."""
    from amt_core.atomic import write_json
    from amt_core.model.run_control import read_status

    if (out / STATUS_FILE).is_file():
        status = read_status(out)
        write_json(
            out / STATUS_FILE, {**status, "complete": False, "stopped_by": "diverged", "error": str(exc)}
        )


def _prepare(cohort_csv, cfg: ModelConfig, fresh: bool, info, progress, cache_dir):
    """Cache the train/tune cases; on a fresh run fill in spacing, intensity statistics and ROI box."""
    from amt_core.data.cases import read_cases
    from amt_core.data.volume import read_geometry
    from amt_core.model.cache import CaseCache, cache_cap_bytes, default_cache_dir
    from amt_core.model.preprocessing import intensity_stats, median_spacing

    cache_cap_bytes()  # a malformed AMT_CACHE_MAX_GB is an error before any work, not after it
    cases = read_cases(cohort_csv)
    rows = {
        s: [(r.case_id, r.image, r.label) for r in cases[cases["split"] == s].itertuples()]
        for s in ("train", "tune")
    }
    for split, picked in rows.items():
        if not picked:
            raise ValueError(
                f"{cohort_csv}: no case in the {split!r} split; training needs train and tune cases"
            )
    if cfg.eval_max_cases:
        rows["tune"] = rows["tune"][: cfg.eval_max_cases]
    spacing = cfg.target_spacing or median_spacing(read_geometry(r[1]).spacing for r in rows["train"])
    cache = CaseCache(cache_dir or default_cache_dir(), cfg, spacing)
    if info.main:
        import os

        built = cache.build_all(
            rows["train"] + rows["tune"], progress=progress, workers=min(2, os.cpu_count() or 1)
        )
        _prune_cache(cache.root, keep={c.image_path.stem for c in built})
    ddp.barrier(info)
    train_cases = cache.build_all(rows["train"])
    tune_cases = cache.build_all(rows["tune"])
    if fresh:
        stats = cfg.intensity_stats or intensity_stats(
            np.concatenate([c.meta["fg_values"] for c in train_cases])
        )
        cfg = cfg.replace(
            target_spacing=tuple(spacing), intensity_stats=stats, roi_box=cfg.roi_box or _roi_box(train_cases)
        )
    return cfg, train_cases, tune_cases


def _prune_cache(root, keep) -> None:
    """The cache's size cap (``AMT_CACHE_MAX_GB``) after this run's cases (``keep``) are built: older entries
    (other cohorts, other settings) go, least recently used first; says what it removed. A cache it cannot
    prune (read-only, shared) costs a warning, never the run."""
    from amt_core.model.cache import auto_prune

    try:
        pruned = auto_prune(root, keep=keep)
    except OSError as exc:
        log.warning("%s: the preprocessed-case cache could not be pruned: %s", root, exc)
        return
    if pruned is not None and pruned.removed:
        log.warning(
            "%s: the preprocessed-case cache was over its cap (AMT_CACHE_MAX_GB): removed the %d least "
            "recently used entries (%.1f GiB), kept %d (%.1f GiB)",
            root,
            len(pruned.removed),
            pruned.freed / 2**30,
            len(pruned.kept),
            pruned.kept_bytes / 2**30,
        )
    if pruned is not None and pruned.failed:
        log.warning(
            "%s: %d cache files could not be removed (first: %s)", root, len(pruned.failed), pruned.failed[0]
        )


def _roi_box(cached_cases, margin: float = 0.08) -> tuple[float, float, float, float] | None:
    """x/y extent of the training tumours as fractions of the body box (2nd-98th percentile, + margin)."""
    lo, hi = [], []
    for c in cached_cases:
        box = c.meta["tumour_box"]
        if box:
            lo.append([box[a][0] / c.shape[a] for a in range(2)])
            hi.append([box[a][1] / c.shape[a] for a in range(2)])
    if not lo:
        return None
    a = np.clip(np.percentile(np.array(lo), 2, axis=0) - margin, 0, 1)
    b = np.clip(np.percentile(np.array(hi), 98, axis=0) + margin, 0, 1)
    return (float(a[0]), float(b[0]), float(a[1]), float(b[1]))


def _cohort_inputs(cohort_csv: str | Path, cache_dir) -> list:
    """What a training reads: the case table, every image and label it lists, and the cache folder (an
    --out holding any of them, e.g. cohort/labelsTr, would delete it under --overwrite)."""
    from amt_core.data.cases import read_cases

    given = [cohort_csv, *([cache_dir] if cache_dir else [])]
    try:
        cases = read_cases(cohort_csv, check_files=False)
    except (ValueError, OSError):  # an unreadable table is reported by the training itself
        return given
    return [*given, *cases["image"], *cases["label"]]


def _run(
    cohort_csv,
    out: Path,
    cfg: ModelConfig,
    state,
    seed,
    dev,
    info,
    progress,
    cache_dir,
    t0,
    control: RunControl,
) -> Path:
    """Plan (``plans.json``), then train epoch by epoch with a :class:`~amt_core.model.trainer.Trainer`."""
    import torch
    from torch.utils.data import DataLoader

    from amt_core.atomic import write_json
    from amt_core.model.cache import mark_used
    from amt_core.model.patches import PatchDataset, StepSampler, worker_init
    from amt_core.progress import Progress

    cfg, train_cases, tune_cases = _prepare(cohort_csv, cfg, state is None, info, progress, cache_dir)
    cohort = cohort_record(cohort_csv)
    spe = cfg.steps_per_epoch
    # the LR schedule is a function of the configured steps only: no clock, no run-control setting shapes it
    total = max(
        1, cfg.max_epochs * spe if cfg.max_steps is None else min(cfg.max_epochs * spe, cfg.max_steps)
    )
    status = {
        "complete": False,
        "stopped_by": None,
        "configured_steps": total,
        "seed": seed,
        "max_minutes": control.max_minutes,
        "stop_after": control.stop_after,
    }
    if info.main:
        _write_run_records(out, cfg, seed, cohort, cohort_csv, train_cases, total)
        write_json(out / STATUS_FILE, {**status, "steps": state["step"] if state else 0})  # until it ends
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    trainer = Trainer(cfg, dev, info, total, out, extra={"seed": seed, "cohort": cohort})
    if state is not None:
        trainer.restore(state)
    trainer.wrap()
    dataset = PatchDataset(train_cases, cfg, seed)
    budget = control.max_minutes * 60.0 if control.max_minutes else math.inf
    stop_at = total if control.stop_after is None else min(total, control.stop_after)
    t_eval, stopped_by, stopgap = 0.0, None, None
    # steps, epoch, loss, tuning Dice, elapsed and ETA: to amt run's progress file when it follows one, else a bar
    bar = Progress(
        "train",
        total,
        unit="step",
        initial=trainer.step,
        bar=True,
        enabled=progress and info.main,
        clock=time.monotonic,  # t0's clock: the ETA is at most the time the cap leaves (display only)
        deadline=t0 + budget if math.isfinite(budget) else None,
    )
    while trainer.step < total:
        t_ep = time.monotonic()
        end = min((trainer.epoch + 1) * spe, total)
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            num_workers=control.workers(cfg),
            sampler=StepSampler(trainer.step, min(end, stop_at), cfg.batch_size, info.rank, info.world),
            worker_init_fn=worker_init,
            pin_memory=dev.type == "cuda",
        )
        trainer.run_epoch(loader, bar)
        if trainer.step < end:  # stopped by stop_after (mid-epoch, as a kill would): checkpoint and leave
            stopped_by = "stop_after"
            if info.main:
                trainer.checkpoint("last.pt")
            break
        trainer.epoch += 1
        seconds = time.monotonic() - t_ep
        mark_used(train_cases + tune_cases)  # still in use: never pruned by another run meanwhile
        dice = math.nan
        if trainer.evaluation_due() and info.main:
            t_ev = time.monotonic()
            dice = trainer.mean_tune_dice(tune_cases)
            t_eval = time.monotonic() - t_ev
        row = trainer.on_epoch_end(seconds, dice, t_eval, (time.monotonic() - t0) / 60.0)
        if info.main:
            _log_epoch(out, trainer.history, row)
        # the time cap reads the clock only to stop here, when the next epoch would not fit (last.pt resumes)
        if trainer.over_time(t0, seconds, t_eval, budget):
            stopped_by = "time cap"
            if info.main and not (out / "best.pt").is_file():
                # no scheduled evaluation yet: keep these weights as best.pt so that the run has a model, outside
                # the selection (best_dice stays; a resumed run replaces it at its first evaluation)
                stopgap = {"tune_dice": trainer.mean_tune_dice(tune_cases), "epoch": trainer.epoch}
                trainer.checkpoint("best.pt", selected_by="time cap", stopgap_tune_dice=stopgap["tune_dice"])
            break
    bar.close()
    if trainer.step >= total:
        stopped_by = "steps"
    status.update(
        complete=stopped_by == "steps",
        stopped_by=stopped_by,
        steps=trainer.step,
        epochs=trainer.epoch,
        minutes_this_call=(time.monotonic() - t0) / 60.0,
    )
    # post-processing first: training.json says complete only once best.pt holds the chosen filter
    if info.main and cfg.postprocess and stopped_by != "stop_after" and (out / "best.pt").is_file():
        _choose_postprocessing(out, cfg, tune_cases, dev)
    if info.main:
        status.update(_best_record(out, trainer, stopgap))
        write_json(out / STATUS_FILE, status)
        if stopped_by == "time cap":
            log.warning("%s: incomplete training: %s", out, incomplete_note(status))
    if info.world > 1:  # every rank must hold the same weights: record (and check) it
        digests = ddp.gather(ddp.weights_digest(trainer.net), info)
        if info.main:
            write_json(
                out / "ddp_check.json", {"world": info.world, "step": trainer.step, "digests": digests}
            )
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks diverged: weight digests {digests}")
    ddp.barrier(info)
    return out


#: what ``training.json``'s ``best_tune_dice`` is (``best_tune_dice_source``): the tuning Dice that selected
#: ``best.pt``, or the stopgap evaluation of the weights the time cap kept as ``best.pt`` before any scheduled
#: evaluation had run (a model, not a selection: ``selected_by="time cap"`` in the checkpoint)
BEST_SOURCES = ("tuning evaluation", "time cap")


def _best_record(out: Path, trainer: Trainer, stopgap: dict | None) -> dict:
    """``best_tune_dice`` with its ``best_tune_dice_source`` and ``best_tune_dice_epoch``: from the selection
    (``trainer.best``), this call's stopgap, or a stopgap ``best.pt`` an earlier call of this run left (a
    resumed run stopped by the cap again before its first evaluation); None each when there is no best.pt."""
    if trainer.best >= 0:
        scored = [r for r in trainer.history if not math.isnan(r["tune_dice"])]
        epoch = next((r["epoch"] for r in scored if r["tune_dice"] == trainer.best), None)
        return {"best_tune_dice": trainer.best, "best_tune_dice_source": "tuning evaluation", **_epoch(epoch)}
    if stopgap is not None:
        return {
            "best_tune_dice": stopgap["tune_dice"],
            "best_tune_dice_source": "time cap",
            **_epoch(stopgap["epoch"]),
        }
    if (out / "best.pt").is_file():
        state = load_checkpoint(out / "best.pt")
        if state["extra"].get("selected_by") == "time cap":
            return {
                "best_tune_dice": state["extra"].get("stopgap_tune_dice"),
                "best_tune_dice_source": "time cap",
                **_epoch(state["epoch"]),
            }
    return {"best_tune_dice": None, "best_tune_dice_source": None, "best_tune_dice_epoch": None}


def _epoch(epoch) -> dict:
    return {"best_tune_dice_epoch": None if epoch is None else int(epoch)}


def _write_run_records(
    out: Path, cfg: ModelConfig, seed: int, cohort: dict, cohort_csv, train_cases, total: int
) -> None:
    """``config.json``, ``provenance.json`` and the training plan ``plans.json``, before the first step."""
    from amt_core.atomic import write_json
    from amt_core.provenance import write_provenance

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"seed": seed, "cohort": cohort, **cfg.to_dict()})
    write_provenance(out, {"seed": seed, "cohort": str(cohort_csv), **cfg.to_dict()}, [cohort_csv])
    write_json(out / PLANS_FILE, training_plan(cfg, train_cases, total))


def training_plan(cfg: ModelConfig, train_cases, total: int) -> dict:
    """What training was planned on, from the training cases (as nnU-Net writes its plans before training):
    the target spacing, the intensity statistics, the mediastinal ROI box, the patch and batch, the network
    and the schedule, with the shapes of the preprocessed training cases that they were derived from."""
    shapes = np.array([c.shape for c in train_cases]) if train_cases else np.zeros((0, 3))
    keys = (
        "preset",
        "network",
        "channels",
        "strides",
        "kernels",
        "deep_supervision",
        "num_res_units",
        "normalisation",
        "hu_window",
        "optimiser",
        "lr",
        "poly_exponent",
        "steps_per_epoch",
        "max_epochs",
        "max_steps",
        "fg_ratio",
    )
    return {
        "target_spacing_mm": list(cfg.target_spacing or ()),
        "intensity_stats": cfg.intensity_stats,
        "roi": cfg.roi,
        "roi_box": list(cfg.roi_box) if cfg.roi_box else None,
        "patch_size": list(cfg.patch_size),
        "batch_size": cfg.batch_size,
        "total_steps": total,
        **{k: getattr(cfg, k) for k in keys},
        "dataset": {
            "n_train_cases": len(train_cases),
            "median_shape": [int(v) for v in np.median(shapes, axis=0)] if len(shapes) else None,
            "min_shape": [int(v) for v in shapes.min(axis=0)] if len(shapes) else None,
        },
    }


def _log_epoch(out: Path, history: list[dict], row: dict) -> None:
    import pandas as pd

    from amt_core.atomic import write_csv

    write_csv(out / "train_log.csv", pd.DataFrame(history, columns=list(LOG_COLUMNS)))
    _tensorboard(out, row)
    log.info(
        "epoch %d step %d loss %.4f tune_dice %.4f (%.1f s)",
        row["epoch"],
        row["step"],
        row["loss"],
        row["tune_dice"],
        row["seconds"],
    )


def _choose_postprocessing(out: Path, cfg: ModelConfig, tune_cases, dev) -> None:
    """Choose the component filter on the tuning split with the best checkpoint; record it in best.pt."""
    from amt_core.atomic import write_json
    from amt_core.model.checkpoint import update_config
    from amt_core.model.inference import infer_array
    from amt_core.model.network import build_network, to_memory_format
    from amt_core.model.postprocess import choose
    from amt_core.model.preprocessing import normalise

    t = time.monotonic()
    state = load_checkpoint(out / "best.pt")
    net = build_network(cfg)
    net.load_state_dict(state["model"])
    net = to_memory_format(net.to(dev), cfg).eval()
    # the tuning scans inferred whole on their preprocessed grid, then the filter that serves them best
    scans = [
        (
            infer_array(net, normalise(np.asarray(c.image(), dtype=np.float32), cfg), cfg, dev),
            c.label(mmap=False),
            c.meta["spacing"],
        )
        for c in tune_cases
    ]
    choice = choose(scans, cfg.threshold)
    best_cfg = state["config"].replace(
        min_component_ml=choice["min_component_ml"], min_component_conf=choice["min_component_conf"]
    )
    update_config(out / "best.pt", best_cfg, postprocessing=choice)
    write_json(out / "postprocessing.json", {**choice, "seconds": time.monotonic() - t})
    log.info("post-processing chosen on the tuning split: %s", choice)


def _tensorboard(out: Path, row: dict) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return
    with SummaryWriter(str(out / "tensorboard")) as writer:
        for key in ("loss", "tune_dice", "seconds", "lr"):
            if row[key] == row[key]:
                writer.add_scalar(key, row[key], row["epoch"])
