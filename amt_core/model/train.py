"""Training: patches from the preprocessed cache, Dice + CE, SGD/Nesterov + poly LR, tuning-set model
selection (``best.pt``), resumable checkpoints (``last.pt``), a CSV log, optional DDP."""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path

import numpy as np

from amt_core.model import ddp
from amt_core.model.checkpoint import load_checkpoint, save_checkpoint, set_rng_state, unwrap
from amt_core.model.presets import ModelConfig, get_config

log = logging.getLogger(__name__)
#: settings that may change when a run is resumed (they do not change what is computed up to the stop)
RESUMABLE = ("stop_after", "max_minutes", "num_workers")
LOG_COLUMNS = ("epoch", "step", "loss", "tune_dice", "seconds", "eval_seconds", "lr", "elapsed_min")


def train(cohort_csv, out_dir, *, preset: str = "cpu", resume: bool = False, seed: int = 0, progress: bool = True,
          cache_dir=None, device: str | None = None, **overrides) -> Path:
    """Train on the ``train`` split of a cohort, select on its ``tune`` split; returns the run folder.

    ``overrides`` are :class:`ModelConfig` settings. ``resume=True`` continues from ``out_dir/last.pt``
    (only ``stop_after``, ``max_minutes`` and ``num_workers`` may change) and reaches the same weights as an
    uninterrupted run on CPU.
    """
    import torch

    from amt_core.model.network import pick_device

    t0 = time.monotonic()
    out = Path(out_dir)
    dev = pick_device(device)
    info = ddp.init_from_env(dev.type)
    if dev.type == "cuda" and info.world > 1:
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    state = None
    if resume and (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt")
        bad = sorted(set(overrides) - set(RESUMABLE))
        if bad:
            raise ValueError(f"a resumed run keeps its config; only {', '.join(RESUMABLE)} may change (got {bad})")
        cfg = state["config"].replace(**overrides)
        seed = int(state["extra"]["seed"])
    else:
        cfg = get_config(preset, **overrides)
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        # the NaN fill of fresh buffers (a debugging aid of deterministic mode) leaked into DynUNet's
        # gradients on CPU here; results do not depend on it
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        return _run(cohort_csv, out, cfg, state, seed, dev, info, progress, cache_dir, t0)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        ddp.cleanup(info)


def _prepare(cohort_csv, out: Path, cfg: ModelConfig, fresh: bool, info, progress, cache_dir):
    """Cache the train/tune cases; on a fresh run fill in spacing, intensity statistics and ROI box."""
    from amt_core.data.cases import read_cases
    from amt_core.model.cache import CaseCache, default_cache_dir, spacing_of
    from amt_core.model.preprocessing import intensity_stats, median_spacing

    cases = read_cases(cohort_csv)
    rows = {s: [(r.case_id, r.image, r.label) for r in cases[cases["split"] == s].itertuples()] for s in ("train", "tune")}
    for split, picked in rows.items():
        if not picked:
            raise ValueError(f"{cohort_csv}: no case in the {split!r} split; training needs train and tune cases")
    if cfg.eval_max_cases:
        rows["tune"] = rows["tune"][: cfg.eval_max_cases]
    spacing = cfg.target_spacing or median_spacing(spacing_of(r[1]) for r in rows["train"])
    cache = CaseCache(cache_dir or default_cache_dir(), cfg, spacing)
    if info.main:
        import os

        cache.build_all(rows["train"] + rows["tune"], progress=progress, workers=min(2, os.cpu_count() or 1))
    ddp.barrier(info)
    train_cases = cache.build_all(rows["train"])
    tune_cases = cache.build_all(rows["tune"])
    if fresh:
        stats = cfg.intensity_stats or intensity_stats(np.concatenate([c.meta["fg_values"] for c in train_cases]))
        cfg = cfg.replace(target_spacing=tuple(spacing), intensity_stats=stats,
                          roi_box=cfg.roi_box or _roi_box(train_cases))
    return cfg, train_cases, tune_cases


def _roi_box(cases, margin: float = 0.08) -> tuple[float, float, float, float] | None:
    """x/y extent of the training tumours as fractions of the body box (2nd-98th percentile, + margin)."""
    lo, hi = [], []
    for c in cases:
        box = c.meta["tumour_box"]
        if box:
            lo.append([box[a][0] / c.shape[a] for a in range(2)])
            hi.append([box[a][1] / c.shape[a] for a in range(2)])
    if not lo:
        return None
    a = np.clip(np.percentile(np.array(lo), 2, axis=0) - margin, 0, 1)
    b = np.clip(np.percentile(np.array(hi), 98, axis=0) + margin, 0, 1)
    return (float(a[0]), float(b[0]), float(a[1]), float(b[1]))


def evaluate_tune(net, cases, cfg: ModelConfig, device) -> list[float]:
    """Per-scan Dice on the tuning cases: sliding windows over each whole (preprocessed) scan."""
    from amt_core.evaluation.segmentation import overlap_scores
    from amt_core.model.inference import infer_array
    from amt_core.model.preprocessing import normalise

    out = []
    for case in cases:
        image = normalise(np.asarray(case.image(), dtype=np.float32), cfg)
        pred = infer_array(net, image, cfg, device) >= cfg.threshold
        ref = np.asarray(case.label()) > 0
        out.append(overlap_scores(int(ref.sum()), int(pred.sum()), int((ref & pred).sum()))["dice"])
    return out


def _run(cohort_csv, out: Path, cfg: ModelConfig, state, seed, dev, info, progress, cache_dir, t0) -> Path:
    import torch
    from monai.losses import DeepSupervisionLoss, DiceCELoss
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from amt_core.atomic import write_csv, write_json
    from amt_core.model.network import autocast, build_network, to_memory_format, uses_grad_scaler
    from amt_core.model.patches import PatchDataset, StepSampler, worker_init

    cfg, train_cases, tune_cases = _prepare(cohort_csv, out, cfg, state is None, info, progress, cache_dir)
    if info.main:
        from amt_core.provenance import write_provenance

        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {"seed": seed, **cfg.to_dict()})
        write_provenance(out, {"seed": seed, "cohort": str(cohort_csv), **cfg.to_dict()}, [cohort_csv])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    net = to_memory_format(build_network(cfg).to(dev), cfg)
    if cfg.optimiser == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    spe = cfg.steps_per_epoch
    total = cfg.max_epochs * spe if cfg.max_steps is None else min(cfg.max_epochs * spe, cfg.max_steps)
    plan = {"steps": max(1, total)}  # fitted to max_minutes after the first epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (1.0 - min(s, plan["steps"] - 1) / plan["steps"]) ** cfg.poly_exponent)
    scaler = torch.amp.GradScaler(dev.type, enabled=uses_grad_scaler(cfg, dev))
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    loss_fn = DeepSupervisionLoss(dice_ce) if cfg.deep_supervision else dice_ce
    step, epoch, best, history, acc = 0, 0, -1.0, [], [0.0, 0]
    rescheduled = False
    if state is not None:
        unwrap(net).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step, epoch = state["step"], state["epoch"]
        ex = state["extra"]
        best, history, acc, plan["steps"] = ex["best_dice"], ex["history"], ex["acc"], ex["planned_steps"]
    model = ddp.wrap(net, info, dev)
    if cfg.compile:
        model = torch.compile(model)
    dataset = PatchDataset(train_cases, cfg, seed)
    budget = cfg.max_minutes * 60.0 if cfg.max_minutes else math.inf
    t_eval = 0.0
    bar = tqdm(total=plan["steps"], initial=step, desc="train", unit="step",
               disable=not (progress and info.main))

    def checkpoint(name: str) -> None:
        extra = {"seed": seed, "best_dice": best, "history": history, "acc": acc, "planned_steps": plan["steps"]}
        save_checkpoint(out / name, model=net, cfg=cfg, optimizer=opt, scheduler=sched, scaler=scaler,
                        epoch=epoch, step=step, extra=extra)

    while step < plan["steps"]:
        t_ep = time.monotonic()
        end = min((epoch + 1) * spe, plan["steps"])
        stop = end if cfg.stop_after is None else min(end, cfg.stop_after)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                            sampler=StepSampler(step, stop, cfg.batch_size, info.rank, info.world),
                            worker_init_fn=worker_init, pin_memory=dev.type == "cuda")
        model.train()
        for batch in loader:
            x = to_memory_format(batch["image"].to(dev, non_blocking=True), cfg)
            y = batch["label"].to(dev, non_blocking=True)
            with autocast(cfg, dev):
                logits = model(x)
            if cfg.deep_supervision and logits.dim() == 6:
                logits = list(torch.unbind(logits, dim=1))
            loss = loss_fn([t.float() for t in logits] if isinstance(logits, list) else logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            acc = [acc[0] + float(loss.detach()), acc[1] + 1]
            bar.update(1)
            bar.set_postfix(loss=f"{acc[0] / acc[1]:.3f}", best=f"{max(best, 0):.3f}")
        if step < end:  # stopped by stop_after: a simulated kill, checkpoint and leave
            if info.main:
                checkpoint("last.pt")
            break
        epoch += 1
        seconds = time.monotonic() - t_ep
        elapsed = time.monotonic() - t0
        timed = math.isfinite(budget)
        last = step >= plan["steps"] or elapsed + 2 * seconds + t_eval > budget
        dice = math.nan
        if (epoch % cfg.eval_every == 0 or last or (timed and epoch == 1)) and info.main:
            t_ev = time.monotonic()
            dice = float(np.mean(evaluate_tune(unwrap(model), tune_cases, cfg, dev)))
            t_eval = time.monotonic() - t_ev
        if timed and not last:  # fit the schedule into what is left of the budget, from the last epoch's pace
            left = budget - (time.monotonic() - t0) - 1.5 * t_eval
            per_epoch = seconds + t_eval / cfg.eval_every
            more = max(1, int(left // per_epoch))
            plan["steps"] = ddp.broadcast(min(cfg.max_epochs * spe, (epoch + more) * spe), info)
            rescheduled = rescheduled or plan["steps"] < total  # the LR schedule was fitted to the clock
            bar.total = plan["steps"]
        row = {"epoch": epoch, "step": step, "loss": acc[0] / max(acc[1], 1), "tune_dice": dice,
               "seconds": seconds, "eval_seconds": t_eval if not math.isnan(dice) else 0.0,
               "lr": opt.param_groups[0]["lr"], "elapsed_min": (time.monotonic() - t0) / 60.0}
        history.append(row)
        acc = [0.0, 0]
        if info.main:
            if not math.isnan(dice) and dice > best:
                best = dice
                checkpoint("best.pt")
            checkpoint("last.pt")
            import pandas as pd

            write_csv(out / "train_log.csv", pd.DataFrame(history, columns=list(LOG_COLUMNS)))
            _tensorboard(out, row)
            log.info("epoch %d step %d loss %.4f tune_dice %.4f (%.1f s)", epoch, step, row["loss"], dice, seconds)
        if ddp.broadcast(last and step < plan["steps"], info):
            break  # out of time: stop early with the best checkpoint kept
    bar.close()
    if info.main and cfg.stop_after is None:
        # a wall-clock budget makes the run's length (and so its weights) depend on the machine's speed:
        # say so where the run is read, instead of leaving a silent difference between two runs of one seed
        # (a resumed run reports what its own call saw: minutes and re-planning since the resume)
        stopped_by = "time budget" if step < total else "steps"
        if stopped_by == "time budget" or rescheduled:
            log.warning("the %s-minute budget shaped training (%d of %d configured steps, LR schedule fitted "
                        "to the clock: %s): the weights depend on this machine's speed (set max_epochs/max_steps "
                        "and a larger max_minutes for a fixed length)", cfg.max_minutes, step, total, rescheduled)
        write_json(out / "training.json", {"steps": step, "configured_steps": total, "epochs": epoch,
                                           "stopped_by": stopped_by, "rescheduled_by_time_budget": rescheduled,
                                           "max_minutes": cfg.max_minutes,
                                           "minutes_this_call": (time.monotonic() - t0) / 60.0,
                                           "best_tune_dice": best})
    if info.main and cfg.postprocess and cfg.stop_after is None and (out / "best.pt").is_file():
        _choose_postprocessing(out, cfg, tune_cases, dev, seed)
    if info.world > 1:  # every rank must hold the same weights: record (and check) it
        digests = ddp.gather(ddp.weights_digest(net), info)
        if info.main:
            write_json(out / "ddp_check.json", {"world": info.world, "step": step, "digests": digests})
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks diverged: weight digests {digests}")
    ddp.barrier(info)
    return out


def _choose_postprocessing(out: Path, cfg: ModelConfig, tune_cases, dev, seed: int) -> None:
    """Choose the component filter on the tuning split with the best checkpoint; record it in best.pt."""
    from amt_core.atomic import write_json
    from amt_core.model.checkpoint import update_config
    from amt_core.model.network import build_network, to_memory_format
    from amt_core.model.postprocess import tune_postprocessing

    t = time.monotonic()
    state = load_checkpoint(out / "best.pt")
    net = build_network(cfg)
    net.load_state_dict(state["model"])
    net = to_memory_format(net.to(dev), cfg).eval()
    choice = tune_postprocessing(net, tune_cases, cfg, dev)
    best_cfg = state["config"].replace(min_component_ml=choice["min_component_ml"],
                                       min_component_conf=choice["min_component_conf"])
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
