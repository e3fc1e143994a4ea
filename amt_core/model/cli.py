"""``amt train`` and ``amt predict``: parse arguments, call the API (heavy imports inside the handlers); and
the options of ``torchrun -m amt_core.model.ddp`` (:func:`ddp_main`), the same as ``amt train``'s."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amt_core.registry import MODEL_PRESETS


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cohort", required=True, help="the cohort's case table (cases.csv)")
    p.add_argument("--out", required=True, help="run folder (best.pt, last.pt, train_log.csv, config.json)")
    p.add_argument(
        "--preset", choices=MODEL_PRESETS, help="model preset (default: cpu; a resumed run keeps its own)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run from OUT/last.pt (same cohort, preset, seed and settings)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in OUT (trained beside it, swapped in when training ends)",
    )
    p.add_argument("--seed", type=int, help="random seed (default: 0; a resumed run keeps its own)")
    p.add_argument("--max-epochs", type=int, help="epochs (of steps-per-epoch steps)")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument(
        "--max-minutes",
        type=float,
        help="time cap of this call: stop at an epoch end when the next epoch would pass it (the run "
        "is then incomplete, see training.json; --resume finishes it); never changes the schedule",
    )
    p.add_argument("--max-steps", type=int, help="train at most this many steps (the LR schedule ends there)")
    p.add_argument(
        "--stop-after", type=int, help="stop after this many steps with last.pt only (resume later)"
    )
    p.add_argument("--eval-every", type=int, help="epochs between tuning-set evaluations")
    p.add_argument("--num-workers", type=int, help="DataLoader workers")
    p.add_argument(
        "--cache-dir", help="preprocessed-case cache (default: $AMT_CACHE or ~/.cache/amt/preprocessed)"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other model setting, e.g. --set lr=0.005 --set patch_size=[64,64,64]",
    )
    p.add_argument("--no-progress", action="store_true")


def train_kwargs(args: argparse.Namespace) -> dict:
    import json

    overrides = {}
    for name in (
        "max_epochs",
        "steps_per_epoch",
        "max_minutes",
        "max_steps",
        "stop_after",
        "eval_every",
        "num_workers",
    ):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        try:
            overrides[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name.strip()] = value
    return dict(
        cohort_csv=args.cohort,
        out_dir=args.out,
        preset=args.preset,
        resume=args.resume,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.no_progress,
        cache_dir=args.cache_dir,
        device=args.device,
        **overrides,
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the 3D U-Net (tuning-set model selection)",
        description="Train on the train split, keep the checkpoint with the best tuning Dice.",
    )
    add_train_arguments(p)
    p.set_defaults(func=_train)

    q = subparsers.add_parser(
        "predict",
        help="segment CT volumes with a trained model",
        description="Write {case}.nii.gz, {case}_prob.nii.gz and {case}_candidates.csv, "
        "with predictions.csv and predictions.json (the model's hash).",
    )
    q.add_argument("--model", required=True, help="RUN_DIR/best.pt (or the run folder)")
    q.add_argument(
        "--input",
        required=True,
        help="a NIfTI/NRRD file, a DICOM series folder or a case table "
        "(a DICOM series also gets {case}_seg.dcm, the mask as a DICOM-SEG over it)",
    )
    q.add_argument(
        "--series",
        metavar="UID",
        help="with a DICOM folder holding several series: the SeriesInstanceUID of the one to read "
        "(the error of such a folder without it lists them)",
    )
    q.add_argument("--out", required=True, help="predictions folder (new or empty, else see below)")
    q.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out whole (predicted beside it, swapped in when complete)",
    )
    q.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted prediction of the same model, settings and inputs",
    )
    q.add_argument("--overlap", type=float, help="sliding-window overlap (default: the model's)")
    q.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    q.add_argument("--split", help="with a case table: only this split (e.g. test; 'all' for every case)")
    q.add_argument("--device", help="cpu, cuda or cuda:N")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_predict)

    c = subparsers.add_parser(
        "cache",
        help="show or prune the preprocessed-case cache",
        description="The preprocessed-case cache (default: $AMT_CACHE or ~/.cache/amt/preprocessed) holds one "
        "preprocessed copy of every case trained on, per cohort and preprocessing setting. Training keeps it "
        "under $AMT_CACHE_MAX_GB GiB (default 20; 'off': no cap), least recently used entries first; entries used in "
        "the last 6 hours are never removed.",
    )
    c.add_argument("action", choices=("info", "prune"), help="info: size and entries; prune: remove entries")
    c.add_argument("--cache-dir", help="the cache folder (default: $AMT_CACHE or ~/.cache/amt/preprocessed)")
    c.add_argument(
        "--max-gb", type=float, help="prune: least recently used entries until at most this (GiB, 2^30 bytes)"
    )
    c.add_argument("--older-than-days", type=float, help="prune: entries unused for longer than this")
    c.add_argument("--dry-run", action="store_true", help="prune: list what would be removed, remove nothing")
    c.set_defaults(func=_cache)


def _train(args) -> int:
    from amt_core.model.train import train

    out = train(**train_kwargs(args))
    print(out)
    return 0


def _predict(args) -> int:
    from amt_core.model.inference import predict
    from amt_core.model.run_control import incomplete_note, read_status

    model = Path(args.model)
    note = incomplete_note(read_status(model if model.is_dir() else model.parent))
    if note:  # a model of a stopped training is usable, but never silently taken for the finished one
        print(f"amt predict: warning: {args.model}: {note}", file=sys.stderr)
    from amt_core.model.checkpoint import load_checkpoint
    from amt_core.model.network import emulated_bf16_note, pick_device

    state = load_checkpoint(model)
    if bf16 := emulated_bf16_note(state["config"], pick_device(args.device)):
        print(f"amt predict: warning: {args.model}: the model {bf16}", file=sys.stderr)
    if not note:
        extra = state["extra"]  # "best_dice": written by amt train
        if state["config"].postprocess and "best_dice" in extra and "postprocessing" not in extra:
            print(
                f"amt predict: warning: {args.model}: its config asks for the post-processing chosen on the "
                "tuning split, but this checkpoint records no choice (last.pt never does; best.pt of a "
                "training stopped while choosing it): no component filter is applied",
                file=sys.stderr,
            )
    from amt_core.cli import warnings_on_stderr

    with warnings_on_stderr("amt predict"):  # e.g. a DICOM series no DICOM-SEG can be made over
        out = predict(
            args.model,
            args.input,
            args.out,
            overlap=args.overlap,
            tta=args.tta,
            progress=not args.no_progress,
            split=args.split,
            device=args.device,
            overwrite=args.overwrite,
            resume=args.resume,
            series_uid=args.series,
        )
    print(out)
    return 0


def ddp_main(argv: list[str] | None = None) -> int:
    """Entry point of ``torchrun ... -m amt_core.model.ddp``: the same options as ``amt train``."""
    from amt_core.model.train import train

    parser = argparse.ArgumentParser(
        prog="python -m amt_core.model.ddp",
        description="Data-parallel training with PyTorch DDP, launched by torchrun.",
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    from amt_core.cli import UserError

    try:
        train(**train_kwargs(args))
    except (UserError, FileNotFoundError, ValueError) as exc:  # as `amt train` reports them
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from amt_core.cli import os_error_line

        print(f"{parser.prog}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    return 0


def _cache(args) -> int:
    from pathlib import Path

    from amt_core.model.cache import (
        KEEP_RECENT_S,
        cache_cap_bytes,
        cache_entries,
        default_cache_dir,
        prune_cache,
    )

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: not a folder (the cache is a folder)")
    if args.cache_dir and not root.is_dir():
        raise FileNotFoundError(f"{root}: no such cache folder")
    entries = cache_entries(root)
    if args.action == "info":
        if args.max_gb is not None or args.older_than_days is not None or args.dry_run:
            raise ValueError("--max-gb, --older-than-days and --dry-run go with 'amt cache prune'")
        cap = cache_cap_bytes()
        print(f"cache: {root}{'' if root.is_dir() else ' (not created yet)'}")
        print(f"entries: {len(entries)} ({sum(not e.complete for e in entries)} unfinished)")
        print(f"size: {sum(e.nbytes for e in entries) / 2**30:.2f} GiB")
        print(f"cap applied by training: {'none' if cap is None else f'{cap / 2**30:g} GiB'}")
        if entries:
            print(
                f"least recently used: {_when(entries[0].last_used)}; most recently: {_when(entries[-1].last_used)}"
            )
        return 0
    if args.max_gb is None and args.older_than_days is None:
        raise ValueError(
            "amt cache prune needs --max-gb and/or --older-than-days (--max-gb 0: all not in use)"
        )
    for name in ("max_gb", "older_than_days"):
        value = getattr(args, name)
        if value is not None and not value >= 0:
            raise ValueError(f"--{name.replace('_', '-')} {value:g}: must be 0 or more")
    if root.is_dir() and not (root / "hashes.json").is_file() and not any(e.complete for e in entries):
        raise ValueError(
            f"{root}: not a preprocessed-case cache (no hashes.json, no cached case): nothing removed"
        )
    result = prune_cache(
        root,
        max_bytes=None if args.max_gb is None else args.max_gb * 2**30,
        older_than_s=None if args.older_than_days is None else args.older_than_days * 86400.0,
        dry_run=args.dry_run,
    )
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{root}: {verb} {_n(len(result.removed), 'entry', 'entries')} ({result.freed / 2**30:.2f} GiB); kept "
        f"{len(result.kept)} ({result.kept_bytes / 2**30:.2f} GiB)"
    )
    if result.in_use:
        print(
            f"{_n(result.in_use, 'kept entry was', 'kept entries were')} used in the last {KEEP_RECENT_S / 3600:g} h: never removed"
        )
    if result.temp_files:
        print(
            f"removed {_n(result.temp_files, 'temporary file', 'temporary files')} of builds that were killed"
        )
    for e in result.removed if args.dry_run else ():
        print(f"  {e.name} ({e.nbytes / 2**20:.1f} MiB, last used {_when(e.last_used)})")
    for line in result.failed:
        print(f"amt cache: could not remove {line}", file=sys.stderr)
    return 1 if result.failed else 0


def _n(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _when(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M")
