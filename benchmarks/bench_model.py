"""Model speed: our training and inference pipelines vs plain MONAI with the same network, side by side.

    python benchmarks/bench_model.py --model runs/cpu_demo/best.pt --cohort data/demo_cohort/cases.csv
    python benchmarks/bench_model.py --model ... --cohort ... --n-scans 10 --steps 30 --write

Training: steps per second of the ``cpu`` preset as trained (preprocessed-case cache, foreground-
oversampled crops, bf16 autocast where the CPU has native bf16, channels_last_3d) vs the same network
with MONAI's tutorial defaults (``LoadImaged`` -> ``Orientationd`` -> ``Spacingd`` -> HU window ->
``RandCropByPosNegLabeld`` on every step, no cache, float32, contiguous memory).

Inference: seconds per whole scan (reading included) of ``amt_core.model.inference.predict_volume``
(windows only inside the body/mediastinal box, the model's overlap, bf16/channels-last) vs plain
``monai.inferers.sliding_window_inference`` over the full resampled volume at overlap 0.5 (float32),
both mapped back to the scan's grid with MONAI's inverse, with the per-scan Dice of both against the
reference (evaluation engine) and the Dice of our pipeline in float32 (the bf16 check on trained weights).
``--write`` replaces the model section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- model:start -->", "<!-- model:end -->"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def bench_training(cohort_csv: str, cfg, steps: int, cache_dir: str) -> dict:
    """(steps/s ours, steps/s MONAI defaults) for ``steps`` timed steps after 3 warm-up steps each."""
    import torch
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        RandCropByPosNegLabeld,
        RandFlipd,
        ScaleIntensityRanged,
        Spacingd,
        SpatialPadd,
    )

    from amt_core.data.cases import read_cases
    from amt_core.model.cache import CaseCache
    from amt_core.model.network import autocast, build_network, to_memory_format
    from amt_core.model.patches import PatchDataset, StepSampler, worker_init

    cases = read_cases(cohort_csv)
    train = cases[cases["split"] == "train"].head(40)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)

    def run(net, loader, ours: bool) -> float:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        it = iter(loader)
        t0 = None
        for k in range(steps + 3):
            if k == 3:
                t0 = time.perf_counter()
            batch = next(it)
            x, y = batch["image"], batch["label"]
            if ours:
                x = to_memory_format(x, cfg)
            with autocast(cfg, "cpu") if ours else torch.autocast("cpu", enabled=False):
                out = net(x)
            loss = loss_fn(out.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return steps / (time.perf_counter() - t0)

    cache = CaseCache(cache_dir, cfg, cfg.target_spacing)
    cached = cache.build_all([(r.case_id, r.image, r.label) for r in train.itertuples()], workers=2)
    torch.manual_seed(0)
    ours_loader = torch.utils.data.DataLoader(
        PatchDataset(cached, cfg, 0),
        batch_size=cfg.batch_size,
        num_workers=1,
        worker_init_fn=worker_init,
        sampler=StepSampler(0, steps + 3, cfg.batch_size),
    )
    ours = run(to_memory_format(build_network(cfg), cfg), ours_loader, True)

    lo, hi = cfg.hu_window
    monai_tf = Compose(
        [
            LoadImaged(["image", "label"]),
            EnsureChannelFirstd(["image", "label"]),
            Orientationd(["image", "label"], axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(["image", "label"], pixdim=cfg.target_spacing, mode=("bilinear", "nearest")),
            ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True),
            SpatialPadd(["image", "label"], spatial_size=cfg.patch_size),
            RandCropByPosNegLabeld(
                ["image", "label"], "label", spatial_size=cfg.patch_size, pos=1, neg=2, num_samples=1
            ),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=0),
        ]
    )
    files = [{"image": r.image, "label": r.label} for r in train.itertuples()] * 10
    monai_loader = DataLoader(
        Dataset(files, monai_tf), batch_size=cfg.batch_size, num_workers=1, shuffle=True
    )
    torch.manual_seed(0)
    plain = run(build_network(cfg), monai_loader, False)
    return {"ours_steps_s": ours, "monai_steps_s": plain}


def _dice(ref: np.ndarray, pred: np.ndarray) -> float:
    from amt_core.evaluation.segmentation import segmentation_metrics

    return float(segmentation_metrics(ref, pred)["dice"])


def plain_monai(net, cfg, volume, device, mode: str = "constant") -> np.ndarray:
    """MONAI defaults: the full volume resampled, sliding windows at overlap 0.5, float32, inverted back."""
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Compose, Orientationd, Spacingd

    from amt_core.model.preprocessing import normalise

    tf = Compose(
        [
            Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd("image", pixdim=cfg.target_spacing, mode="bilinear"),
        ]
    )
    data = tf(
        {"image": MetaTensor(torch.from_numpy(volume.array)[None], affine=torch.as_tensor(volume.affine))}
    )
    img = data["image"]
    x = normalise(img.as_tensor().float(), cfg)[None]
    with torch.inference_mode():
        logits = sliding_window_inference(x, cfg.patch_size, cfg.sw_batch_size, net, overlap=0.5, mode=mode)
        prob = torch.softmax(logits, 1)[0, 1:2]
    out = MetaTensor(prob, meta={k: v for k, v in img.meta.items() if k != "affine"})
    out.affine = img.affine.clone()
    out.applied_operations = img.applied_operations
    return tf.inverse({"image": out})["image"][0].numpy()


def bench_inference(model: str, cohort_csv: str, n_scans: int) -> dict:
    import torch

    from amt_core.data.cases import read_cases
    from amt_core.data.volume import read_label, read_volume
    from amt_core.model.inference import load_model, predict_volume
    from amt_core.model.network import build_network

    net, cfg, state = load_model(model, "cpu")
    plain_net = build_network(cfg)
    plain_net.load_state_dict(state["model"])
    plain_net.eval()
    fp32_cfg = cfg.replace(bf16=False)
    cases = read_cases(cohort_csv)
    test = cases[cases["split"] == "test"].head(n_scans)
    rows = []
    for r in test.itertuples():
        t = time.perf_counter()
        vol = read_volume(r.image)
        prob = predict_volume(net, cfg, vol, "cpu")
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        vol2 = read_volume(r.image)
        plain = plain_monai(plain_net, cfg, vol2, "cpu")
        t_plain = time.perf_counter() - t
        ref = read_label(r.label, vol).array
        fp32 = predict_volume(net, fp32_cfg, vol, "cpu")
        gauss = plain_monai(plain_net, cfg, vol, "cpu", mode="gaussian")
        rows.append(
            {
                "case": r.case_id,
                "shape": vol.shape,
                "t_ours": t_ours,
                "t_plain": t_plain,
                "dice_ours": _dice(ref, prob >= cfg.threshold),
                "dice_plain": _dice(ref, plain >= 0.5),
                "dice_ours_fp32": _dice(ref, fp32 >= cfg.threshold),
                "dice_plain_gauss": _dice(ref, gauss >= 0.5),
                "agree_bf16": float(((prob >= 0.5) == (fp32 >= 0.5)).mean()),
            }
        )
        print(
            f"  {r.case_id} {vol.shape}: ours {t_ours:.2f} s  plain {t_plain:.2f} s  "
            f"dice {rows[-1]['dice_ours']:.4f} / {rows[-1]['dice_plain']:.4f}",
            flush=True,
        )
    del torch
    return {"rows": rows, "cfg": cfg}


def big_scan(cohort_csv: str, path: Path, shape=(512, 512, 300)) -> Path:
    """A 512x512x300 CT (a test scan of the cohort resampled to 0.7 x 0.7 x 1.0 mm-like voxels)."""
    from scipy import ndimage

    from amt_core.data.cases import read_cases
    from amt_core.data.volume import read_volume, write_volume

    cases = read_cases(cohort_csv)
    vol = read_volume(cases["image"].iloc[0])
    zoom = [n / m for n, m in zip(shape, vol.shape, strict=True)]
    big = ndimage.zoom(vol.array, zoom, order=1).astype(np.int16)
    affine = vol.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.array(zoom)
    return write_volume(big, affine, path)


def gpu_full(cohort_csv: str, out: Path, steps: int) -> dict:
    """The ``full`` preset on CUDA: training throughput and peak memory, then whole-scan inference."""
    import torch

    from amt_core.data.volume import read_volume
    from amt_core.model.inference import load_model, predict_volume
    from amt_core.model.train import train

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the --gpu benchmark needs a GPU")
    name = torch.cuda.get_device_name(0)
    spe = max(10, steps // 3)
    torch.cuda.reset_peak_memory_stats()
    run = train(
        cohort_csv,
        out / "run",
        preset="full",
        device="cuda",
        max_epochs=3,
        steps_per_epoch=spe,
        eval_every=3,
        eval_max_cases=2,
        target_spacing=(1.2, 1.2, 1.5),
        cache_dir=out / "cache",
        progress=False,
    )
    peak_train = torch.cuda.max_memory_allocated() / 2**30
    import pandas as pd

    log = pd.read_csv(run / "train_log.csv")
    timed = (
        log.iloc[1:] if len(log) > 1 else log
    )  # the first epoch holds the warm-up (cuDNN autotune, workers)
    steps_s = float(timed["step"].diff().fillna(timed["step"].iloc[0]).sum() / timed["seconds"].sum())
    net, cfg, _ = load_model(run / "best.pt", "cuda")
    scan = big_scan(cohort_csv, out / "big_0000.nii.gz")
    vol = read_volume(scan)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(2):
        torch.cuda.synchronize()
        t = time.perf_counter()
        predict_volume(net, cfg, read_volume(scan), "cuda")
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {
        "card": name,
        "steps_s": steps_s,
        "samples_s": steps_s * cfg.batch_size,
        "peak_train_gib": peak_train,
        "peak_infer_gib": torch.cuda.max_memory_allocated() / 2**30,
        "s_per_scan": min(times),
        "shape": vol.shape,
        "patch": list(cfg.patch_size),
        "steps": int(log["step"].iloc[-1]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a trained checkpoint (RUN/best.pt)")
    p.add_argument(
        "--cohort",
        required=True,
        help="the cohort's cases.csv (train split for training, test for inference)",
    )
    p.add_argument("--gpu", metavar="WORK_DIR", help="run the full-preset GPU benchmark in WORK_DIR instead")
    p.add_argument("--n-scans", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cache-dir", default=None, help="preprocessed-case cache (default: the library default)")
    p.add_argument("--write", action="store_true", help="replace the model section of benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    if args.gpu:
        r = gpu_full(args.cohort, Path(args.gpu), args.steps)
        line = (
            f"| {r['card']} | full | {r['steps']} | {list(r['patch'])} | {r['steps_s']:.2f} | {r['samples_s']:.2f} | "
            f"{r['peak_train_gib']:.1f} | {r['s_per_scan']:.1f} ({'x'.join(map(str, r['shape']))}) | "
            f"{r['peak_infer_gib']:.1f} |"
        )
        print(line)
        if args.write:
            _append_gpu(line)
        return 0
    if not args.model:
        p.error("--model is required (except with --gpu)")

    from amt_core.model.cache import default_cache_dir
    from amt_core.model.network import cpu_has_bf16

    print(f"CPU threads {_threads()}, native bf16 {cpu_has_bf16()}, torch {torch.__version__}", flush=True)
    inf = bench_inference(args.model, args.cohort, args.n_scans)
    rows, cfg = inf["rows"], inf["cfg"]
    t_ours, t_plain = np.mean([r["t_ours"] for r in rows]), np.mean([r["t_plain"] for r in rows])
    d_ours, d_plain = np.mean([r["dice_ours"] for r in rows]), np.mean([r["dice_plain"] for r in rows])
    d_fp32 = np.mean([r["dice_ours_fp32"] for r in rows])
    d_gauss = np.mean([r["dice_plain_gauss"] for r in rows])
    agree = np.mean([r["agree_bf16"] for r in rows])
    print("training steps ...", flush=True)
    tr = bench_training(args.cohort, cfg, args.steps, args.cache_dir or str(default_cache_dir()))
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {_threads()} torch threads, native bf16: "
        f"{cpu_has_bf16()}; torch {torch.__version__}. Network: {cfg.network} {list(cfg.channels)}, patch "
        f"{list(cfg.patch_size)}, batch {cfg.batch_size}, spacing {list(cfg.target_spacing)} mm.",
        "",
        "| measure | ours | plain MONAI | ratio |",
        "|---|---|---|---|",
        f"| training steps/s ({args.steps} steps) | {tr['ours_steps_s']:.3f} | {tr['monai_steps_s']:.3f} | "
        f"{tr['ours_steps_s'] / tr['monai_steps_s']:.2f}x |",
        f"| inference s/scan ({len(rows)} test scans) | {t_ours:.2f} | {t_plain:.2f} | {t_plain / t_ours:.2f}x faster |",
        f"| mean per-scan Dice | {d_ours:.4f} | {d_plain:.4f} | diff {d_ours - d_plain:+.4f} |",
        f"| mean per-scan Dice, plain with Gaussian blending | {d_ours:.4f} | {d_gauss:.4f} | diff {d_ours - d_gauss:+.4f} |",
        "",
        f"Ours: roi={cfg.roi}, overlap {cfg.overlap}, Gaussian blending, bf16 autocast + channels_last_3d. "
        f"Plain: full resampled volume, overlap 0.5, constant blending, float32. bf16 check on the trained "
        f"weights: Dice {d_ours:.4f} (bf16) vs {d_fp32:.4f} (float32), {100 * agree:.4f} % of voxels agree.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        section = f"{START}\n## Model (`benchmarks/bench_model.py`)\n\n{text}\n{END}\n"
        old = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n\n"
        if START in old and END in old:
            new = old[: old.index(START)] + section.rstrip("\n") + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip("\n") + "\n\n" + section
        RESULTS.write_text(new)
    return 0


GPU_START, GPU_END = "<!-- model-gpu:start -->", "<!-- model-gpu:end -->"
GPU_HEADER = (
    "| card | preset | steps | patch | steps/s | samples/s | peak GPU memory training (GiB) | "
    "s/scan (scan voxels) | peak GPU memory inference (GiB) |\n|---|---|---|---|---|---|---|---|---|"
)


def _append_gpu(line: str) -> None:
    """Add one row to the GPU table of the model section of RESULTS.md (created if missing)."""
    old = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if GPU_START in old and GPU_END in old:
        head, rest = old.split(GPU_START, 1)
        table, tail = rest.split(GPU_END, 1)
        new = f"{head}{GPU_START}{table.rstrip()}\n{line}\n{GPU_END}{tail}"
    else:
        new = (
            old.rstrip("\n") + f"\n\n### Model on GPU (`benchmarks/gpu.sh`)\n\n{GPU_START}\n{GPU_HEADER}\n"
            f"{line}\n{GPU_END}\n"
        )
    RESULTS.write_text(new)


if __name__ == "__main__":
    raise SystemExit(main())
