"""The training loop, read the way nnU-Net's trainer is read: one object holding the network, optimiser,
schedule and counters, and one named method per phase (:meth:`Trainer.train_step`, :meth:`Trainer.run_epoch`,
:meth:`Trainer.on_epoch_end` with :meth:`Trainer.select` and :meth:`Trainer.checkpoint`, :meth:`Trainer.restore`).

What is computed depends only on the config, the seed and the configured number of steps: the LR schedule is
the poly schedule of ``total`` steps, never of the clock (a time cap only *stops* a run: see
:mod:`amt_core.model.run_control`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from amt_core.model import ddp
from amt_core.model.checkpoint import save_checkpoint, set_rng_state, unwrap
from amt_core.model.presets import ModelConfig

LOG_COLUMNS = ("epoch", "step", "loss", "tune_dice", "seconds", "eval_seconds", "lr", "elapsed_min")


class TrainingDiverged(ValueError):
    """The loss (or the gradients) became non-finite: training stops; the message names the step."""

    def __init__(self, message: str, step: int = 0):
        super().__init__(message)
        self.step = step


class Trainer:
    """One training run's state; the caller (:func:`amt_core.model.train.train`) drives the epochs."""

    def __init__(self, cfg: ModelConfig, dev, info, total: int, out: Path, extra: dict[str, Any]):
        import torch
        from monai.losses import DeepSupervisionLoss, DiceCELoss

        from amt_core.model.network import build_network, to_memory_format, uses_grad_scaler

        self.cfg, self.dev, self.info, self.total, self.out, self.extra = cfg, dev, info, total, out, extra
        self.net = to_memory_format(build_network(cfg).to(dev), cfg)
        if cfg.optimiser == "sgd":
            self.opt = torch.optim.SGD(
                self.net.parameters(),
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=True,
                weight_decay=cfg.weight_decay,
            )
        else:
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: (1.0 - min(s, total - 1) / total) ** cfg.poly_exponent
        )
        self.scaler = torch.amp.GradScaler(dev.type, enabled=uses_grad_scaler(cfg, dev))
        dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        self.loss_fn = DeepSupervisionLoss(dice_ce) if cfg.deep_supervision else dice_ce
        self.step, self.epoch, self.best = 0, 0, -1.0
        self.history: list[dict] = []
        self.acc = [0.0, 0]  # loss sum and steps of the current epoch
        self.model = self.net
        self.bar = (
            None  # the progress of :meth:`run_epoch` (amt_core.progress.Progress), marked at epoch ends
        )
        self.last_dice = math.nan  # the latest tuning Dice, shown with the progress

    # --- state ---------------------------------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` (weights, optimiser, schedule, scaler, random states, counters)."""
        unwrap(self.net).load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.epoch = state["step"], state["epoch"]
        ex = state["extra"]
        self.best, self.history, self.acc = ex["best_dice"], ex["history"], ex["acc"]
        self.last_dice = next(
            (r["tune_dice"] for r in reversed(self.history) if not math.isnan(r["tune_dice"])), math.nan
        )

    def wrap(self) -> None:
        """DDP and/or torch.compile around the network (after :meth:`restore`)."""
        import torch

        self.model = ddp.wrap(self.net, self.info, self.dev)
        if self.cfg.compile:
            self.model = torch.compile(self.model)

    def checkpoint(self, name: str, **more) -> None:
        """``out/name`` with everything a resumed run needs (written atomically)."""
        extra = {**self.extra, "best_dice": self.best, "history": self.history, "acc": self.acc, **more}
        save_checkpoint(
            self.out / name,
            model=self.net,
            cfg=self.cfg,
            optimizer=self.opt,
            scheduler=self.sched,
            scaler=self.scaler,
            epoch=self.epoch,
            step=self.step,
            extra=extra,
        )

    # --- one step, one epoch -------------------------------------------------------------------------
    def train_step(self, batch) -> float:
        """Forward, Dice + CE (deep supervision when the network gives several outputs), backward, clip, step."""
        import torch

        from amt_core.model.network import autocast, to_memory_format

        cfg, dev = self.cfg, self.dev
        x = to_memory_format(batch["image"].to(dev, non_blocking=True), cfg)
        y = batch["label"].to(dev, non_blocking=True)
        with autocast(cfg, dev):
            logits = self.model(x)
        if cfg.deep_supervision and logits.dim() == 6:
            logits = list(torch.unbind(logits, dim=1))
        loss = self.loss_fn([t.float() for t in logits] if isinstance(logits, list) else logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        value = float(loss.detach())
        # a non-finite loss (or, without a grad scaler that skips such steps, gradient norm: the same on every
        # DDP rank) would make every weight NaN from this step on: stop before the optimiser takes it
        if not math.isfinite(value) or (not self.scaler.is_enabled() and not math.isfinite(float(norm))):
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1}: the loss is {value:g} and the gradient norm "
                f"{float(norm):g} (lr {self.opt.param_groups[0]['lr']:g}); lower the learning rate (e.g. "
                f"--set lr={cfg.lr / 10:g}) and train again (--overwrite); no weights of this step were kept",
                step=self.step + 1,
            )
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        self.acc = [self.acc[0] + value, self.acc[1] + 1]
        return value

    def run_epoch(self, loader, bar) -> None:
        """One pass over ``loader``; ``bar`` (an :class:`amt_core.progress.Progress`) gets each step with the
        epoch, the epoch's mean loss and the latest tuning Dice (display only: nothing here reads it back)."""
        self.model.train()
        self.bar = bar
        epochs = math.ceil(self.total / self.cfg.steps_per_epoch)
        for batch in loader:
            self.train_step(batch)
            bar.update(
                1,
                epoch=self.epoch + 1,
                epochs=epochs,
                loss=self.acc[0] / self.acc[1],
                tune_dice=self.last_dice,
            )

    # --- epoch end -----------------------------------------------------------------------------------
    def evaluation_due(self) -> bool:
        return self.epoch % self.cfg.eval_every == 0 or self.step >= self.total

    def on_epoch_end(self, seconds: float, dice: float, eval_seconds: float, elapsed_min: float) -> dict:
        """Log the epoch, keep the best checkpoint (:meth:`select`) and ``last.pt``; returns the log row."""
        row = {
            "epoch": self.epoch,
            "step": self.step,
            "loss": self.acc[0] / max(self.acc[1], 1),
            "tune_dice": dice,
            "seconds": seconds,
            "eval_seconds": eval_seconds if not math.isnan(dice) else 0.0,
            "lr": self.opt.param_groups[0]["lr"],
            "elapsed_min": elapsed_min,
        }
        self.history.append(row)
        self.acc = [0.0, 0]
        if self.info.main:
            self.select(dice)
            self.checkpoint("last.pt")
        if not math.isnan(dice):
            self.last_dice = dice
        if self.bar is not None:  # every epoch end is a line of amt run's output, with its ETA
            self.bar.mark(epoch=self.epoch, loss=row["loss"], tune_dice=self.last_dice)
        return row

    def select(self, dice: float) -> bool:
        """Model selection on the tuning split: a better tuning Dice becomes ``best.pt``."""
        if math.isnan(dice) or dice <= self.best:
            return False
        self.best = dice
        self.checkpoint("best.pt")
        return True

    def over_time(self, t0: float, seconds: float, eval_seconds: float, budget: float) -> bool:
        """Whether the next epoch would pass the time cap (the only place the clock is read to decide)."""
        return self.step < self.total and ddp.broadcast(
            time.monotonic() - t0 + seconds + eval_seconds > budget, self.info
        )

    def mean_tune_dice(self, tune_cases) -> float:
        from amt_core.model.inference import evaluate_tune

        return float(np.mean(evaluate_tune(unwrap(self.model), tune_cases, self.cfg, self.dev)))
