"""Whole-scan inference: sliding windows (MONAI, Gaussian blending) inside the body or mediastinal box,
optional mirroring TTA, and outputs in the input's own geometry.

``predict`` writes a predictions folder (docs/architecture.md): ``{case}.nii.gz`` (uint8 mask),
``{case}_prob.nii.gz`` (uint8 with scl_slope 1/255) and ``{case}_candidates.csv`` (one row per candidate of
the evaluation engine's candidate extraction, ``amt_core.evaluation.lesions.extract_candidates``).
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np

from amt_core.model.presets import ModelConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def roi_slices(shape, cfg: ModelConfig) -> tuple[slice, slice, slice]:
    """The box (in the preprocessed, body-cropped grid) where windows run: the whole body box, or the
    mediastinal box (x/y fractions of the body box learnt from the training labels; all of z)."""
    if cfg.roi != "mediastinum" or not cfg.roi_box:
        return tuple(slice(0, int(n)) for n in shape)
    x0, x1, y0, y1 = cfg.roi_box
    out = []
    for n, (a, b) in zip(shape[:2], ((x0, x1), (y0, y1)), strict=True):
        lo, hi = int(np.floor(a * n)), int(np.ceil(b * n))
        out.append(slice(max(0, min(lo, n - 1)), max(min(hi, n), min(lo, n - 1) + 1)))
    return out[0], out[1], slice(0, int(shape[2]))


def infer_array(
    net,
    image,
    cfg: ModelConfig,
    device,
    *,
    overlap: float | None = None,
    tta: bool = False,
    roi: tuple[slice, ...] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Tumour probability (X, Y, Z) for a normalised image (X, Y, Z) in the network's grid; zero outside
    ``roi`` (default: :func:`roi_slices`)."""
    import torch
    from monai.inferers import sliding_window_inference

    from amt_core.model.network import autocast, to_memory_format

    image = torch.as_tensor(np.asarray(image, dtype=np.float32))
    roi = roi_slices(image.shape, cfg) if roi is None else roi
    x = image[roi][None, None].to(device)
    overlap = cfg.overlap if overlap is None else overlap

    def predictor(window):
        with autocast(cfg, device):
            out = net(to_memory_format(window, cfg))
        if isinstance(out, list | tuple):
            out = out[0]
        return torch.softmax(out.float(), dim=1)[:, 1:2]

    flips = [()]
    if tta:
        axes = [a + 2 for a in cfg.mirror_axes]
        flips = [c for k in range(len(axes) + 1) for c in itertools.combinations(axes, k)]
    net.eval()
    acc = None
    with torch.inference_mode():
        for dims in flips:
            xin = torch.flip(x, dims) if dims else x
            p = sliding_window_inference(
                xin,
                roi_size=list(cfg.patch_size),
                sw_batch_size=cfg.sw_batch_size,
                predictor=predictor,
                overlap=overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=float(x.min()),
                progress=progress,
            )
            p = torch.flip(p, dims) if dims else p
            acc = p if acc is None else acc + p
    prob = (acc / len(flips))[0, 0].float().cpu().numpy()
    out = np.zeros(tuple(image.shape), dtype=np.float32)
    out[roi] = prob
    return out


def evaluate_tune(net, cached_cases, cfg: ModelConfig, device) -> list[float]:
    """Per-scan Dice on the cached tuning cases: sliding windows over each whole (preprocessed) scan."""
    from amt_core.evaluation.segmentation import overlap_scores
    from amt_core.model.preprocessing import normalise

    out = []
    for case in cached_cases:
        image = normalise(np.asarray(case.image(), dtype=np.float32), cfg)
        pred = infer_array(net, image, cfg, device) >= cfg.threshold
        ref = np.asarray(case.label()) > 0
        out.append(overlap_scores(int(ref.sum()), int(pred.sum()), int((ref & pred).sum()))["dice"])
    return out


def load_model(model_path: str | os.PathLike, device=None):
    """(network in eval mode on ``device``, its config, the checkpoint dict) from a checkpoint file."""
    from amt_core.model.checkpoint import CheckpointError, load_checkpoint
    from amt_core.model.network import build_network, pick_device, to_memory_format

    device = pick_device(device)
    state = load_checkpoint(model_path)
    cfg = state["config"]
    try:
        net = build_network(cfg)
        net.load_state_dict(state["model"])
    except (RuntimeError, ValueError, TypeError) as exc:  # torch: missing/unexpected keys, size mismatch
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) or (first[0] if first else type(exc).__name__)
        raise CheckpointError(
            f"{model_path}: its weights do not fit the network its config describes ({cfg.network}, channels "
            f"{list(cfg.channels)}): {detail}"
        ) from None
    net = to_memory_format(net.to(device), cfg).eval()
    return net, cfg, state


def predict_volume(net, cfg: ModelConfig, volume, device, *, overlap=None, tta=False) -> np.ndarray:
    """Tumour probability on the reader's RAS grid of ``volume``."""
    import torch

    from amt_core.model.preprocessing import invert, normalise, preprocess

    pre = preprocess(volume, cfg)
    image = normalise(pre.image[0].as_tensor().float(), cfg)
    prob = infer_array(net, image, cfg, device, overlap=overlap, tta=tta)
    del image
    with torch.inference_mode():
        back = invert(pre, prob)
    return np.clip(back, 0.0, 1.0)


# --- inputs and outputs --------------------------------------------------------------------------------------


def resolve_inputs(input_path: str | os.PathLike, split: str | None = None) -> list[tuple[str, str]]:
    """(case_id, image path) pairs from an image file, a DICOM series folder or a case table (CSV)."""
    p = Path(input_path)
    if not p.exists():
        raise FileNotFoundError(
            f"input {p} does not exist (pass a NIfTI/NRRD file, a DICOM folder or a case table)"
        )
    if p.is_file() and p.suffix.lower() == ".csv":
        from amt_core.data.cases import read_cases

        df = read_cases(p, check_files=False)
        if split is not None and split != "all":  # 'all': every case, as amt evaluate --split all
            df = df[df["split"] == split]
            if df.empty:
                raise ValueError(f"{p}: no case of split {split!r}")
        return [(str(c), str(i)) for c, i in zip(df["case_id"], df["image"], strict=True)]
    name = p.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            stem = stem[:-5] if stem.endswith("_0000") else stem  # nnU-Net channel suffix
            return [(stem, str(p))]
    if p.is_dir():
        return [(name, str(p))]
    raise ValueError(
        f"{p}: unknown input type (expected .nii/.nii.gz/.nrrd/.mha, a DICOM folder or a .csv table)"
    )


#: how `amt predict` names the series of a DICOM folder holding several (:func:`check_series`)
PREDICT_SERIES_HINT = "name the one to read with `amt predict --series UID`"
#: ... and for a folder a case table lists (a table names no series: the folder must hold one)
TABLE_SERIES_HINT = (
    "predict that folder on its own with `amt predict --series UID`, or import the cohort with `amt import` "
    "(its metadata CSV's series_uid column names the series)"
)


def check_series(
    source: str | os.PathLike, series_uid: str | None, case_images: list[tuple[str, str]] = ()
) -> None:
    """Refuse, before anything is written, a ``series_uid`` for an input that is not a DICOM folder, and a
    DICOM folder whose series to read is not clear: several series and no ``series_uid`` (the message says
    how to name one), or a ``series_uid`` not among them (the message lists those present). With the
    ``case_images`` of a case table (:func:`resolve_inputs`), each DICOM folder it lists must hold one series:
    a table names none."""
    from amt_core.data.volume import select_series

    p = Path(source)
    if p.is_dir():
        select_series(p, series_uid, hint=PREDICT_SERIES_HINT)
        return
    if series_uid is not None:
        what = "a case table" if p.suffix.lower() == ".csv" else "an image file"
        raise ValueError(
            f"{p}: --series {series_uid} names a series of a DICOM folder, but this input is {what}; "
            "leave --series out (or pass the DICOM folder)"
        )
    for _, image in case_images:
        if Path(image).is_dir():
            select_series(image, hint=TABLE_SERIES_HINT)


def write_outputs(
    out_dir: Path, case_id: str, prob: np.ndarray, affine: np.ndarray, cfg: ModelConfig, spacing
) -> dict:
    """Mask, compact probability map and candidate table of one case (atomic writes)."""
    from amt_core.atomic import write_csv
    from amt_core.data.volume import write_volume
    from amt_core.model.postprocess import filter_mask

    mask = filter_mask(prob, cfg.threshold, spacing, cfg.min_component_ml, cfg.min_component_conf)
    write_volume(mask, affine, out_dir / f"{case_id}.nii.gz")
    q = np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    write_volume(q, affine, out_dir / f"{case_id}_prob.nii.gz", slope=1.0 / 255.0)
    table = candidate_table(q.astype(np.float32) / 255.0, cfg, spacing, mask=mask)
    write_csv(out_dir / f"{case_id}_candidates.csv", table)
    return {
        "case_id": case_id,
        "voxels": int(mask.sum()),
        "n_candidates": len(table),
        "n_kept": int(table["kept"].sum()) if len(table) else 0,
        "max_prob": float(q.max()) / 255.0,
    }


def write_seg(out_dir: Path, case_id: str, volume, folder, series_uid: str | None) -> dict:
    """The mask of a DICOM-series case (``{case_id}.nii.gz``, written) also as ``{case_id}_seg.dcm``, a
    DICOM-SEG over the series in ``folder``. Returns the manifest's note: ``{"written": True}``, or, where the
    series' headers cannot be referenced by a SEG (:class:`~amt_core.data.dicom_seg.SegNotWritable`: e.g. no
    FrameOfReferenceUID), ``{"written": False, "reason": ...}`` with a warning naming the series folder: the
    mask, probabilities and candidates stand without it (the SEG is a viewer's copy of the mask, and no
    second try would make one over that series)."""
    from amt_core.data.dicom_seg import SegNotWritable, write_dicom_seg
    from amt_core.data.volume import read_label

    mask = read_label(out_dir / f"{case_id}.nii.gz", volume, role="prediction")
    path = out_dir / f"{case_id}_seg.dcm"
    try:
        write_dicom_seg(mask, folder, path, series_uid=series_uid)
    except SegNotWritable as exc:
        path.unlink(missing_ok=True)  # a resumed folder's SEG of an earlier version of the series is not this
        log.warning(
            "%s: no DICOM-SEG written for case %s: %s; its mask, probabilities and candidates are written "
            "(%s.nii.gz)",
            folder,
            case_id,
            exc.reason,
            case_id,
        )
        return {"written": False, "reason": exc.reason}
    return {"written": True}


def candidate_table(
    prob: np.ndarray, cfg: ModelConfig, spacing, *, mask: np.ndarray | None = None, config=None
):
    """The evaluation engine's candidates of ``prob`` (:func:`amt_core.evaluation.lesions.extract_candidates`
    under ``config``, default ``EvalConfig()``: picai_eval's dynamic extraction), one row each in order of
    descending confidence: confidence (max probability), volume, box, and ``kept``: whether the
    post-processed mask (``mask``; by default ``filter_mask`` of ``prob`` with ``cfg``'s settings) holds
    any of its voxels."""
    import pandas as pd

    from amt_core.evaluation.config import EvalConfig
    from amt_core.evaluation.lesions import extract_candidates
    from amt_core.model.postprocess import filter_mask

    cols = ["candidate_id", "confidence", "voxels", "volume_ml", "x0", "x1", "y0", "y1", "z0", "z1", "kept"]
    comps = extract_candidates(prob, config or EvalConfig())
    if not len(comps):
        return pd.DataFrame(columns=cols)
    if mask is None:
        mask = filter_mask(prob, cfg.threshold, spacing, cfg.min_component_ml, cfg.min_component_conf)
    ml = float(np.prod(spacing)) / 1000.0
    mask = np.asarray(mask)
    rows = []
    for k, (i, b) in enumerate(zip(comps.ids, comps.boxes, strict=True)):
        inside = comps.local(b) == i
        rows.append(
            {
                "candidate_id": 0,
                "confidence": float(comps.confidence[k]),
                "voxels": int(comps.voxels[k]),
                "volume_ml": comps.voxels[k] * ml,
                "kept": bool(mask[b][inside].any()),
                **{
                    f"{n}{e}": int(getattr(b[a], "start" if e == "0" else "stop"))
                    for a, n in enumerate("xyz")
                    for e in "01"
                },
            }
        )
    table = pd.DataFrame(rows, columns=cols).sort_values("confidence", ascending=False, kind="stable")
    table["candidate_id"] = np.arange(1, len(table) + 1)
    return table.reset_index(drop=True)


def predict(
    model_path: str | os.PathLike,
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overlap: float | None = None,
    tta: bool = False,
    progress: bool = True,
    split: str | None = None,
    device: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    series_uid: str | None = None,
) -> Path:
    """Predict every case of ``source`` (an image file, a DICOM series folder or a case table) into the
    predictions folder ``out_dir``; returns ``out_dir``.

    A DICOM folder holding several series needs ``series_uid`` (``amt predict --series``), the
    SeriesInstanceUID of the one to read: the image, the grid of the outputs, the DICOM-SEG's references and
    the input's SHA-256 are then that series' only. ``series_uid`` is an error for any other input.

    The folder also gets ``predictions.csv`` and ``predictions.json`` (:mod:`amt_core.data.predictions`:
    the checkpoint's SHA-256, the settings, per case the input and its files' SHA-256). A non-empty
    ``out_dir`` is refused unless ``overwrite`` (predict into a folder beside it, swapped in when complete)
    or ``resume`` (finish an interrupted prediction of the same model, settings and inputs).
    """
    from amt_core.atomic import (
        adopt_dead_staging,
        check_output_dir,
        is_nonempty_dir,
        remove_stale_temps,
        replacing_dir,
    )
    from amt_core.data import predictions as manifest

    case_images = resolve_inputs(source, split)
    check_series(source, series_uid, case_images)
    # the images a case table lists are inputs too: an --out holding them (cohort/imagesTs) is refused
    out = check_output_dir(
        out_dir,
        overwrite=overwrite,
        resume=resume,
        what="predictions folder",
        inputs=(model_path, source, *(image for _, image in case_images)),
    )
    net, cfg, _state = load_model(model_path, device)
    model_file = Path(model_path) / "best.pt" if Path(model_path).is_dir() else Path(model_path)
    settings = {
        "model": str(model_file.resolve()),
        "model_sha256": manifest.file_digest(model_file),
        "input": str(Path(source).resolve()),
        "series_uid": series_uid,
        "split": split,
        "overlap": overlap,
        "tta": tta,
    }
    run = dict(
        case_images=case_images,
        net=net,
        cfg=cfg,
        settings=settings,
        overlap=overlap,
        tta=tta,
        progress=progress,
    )
    if resume:  # a first prediction killed before it finished left its cases in a staging folder beside --out
        adopt_dead_staging(out, manifest.MANIFEST)
    remove_stale_temps(out.parent, of=out.name)  # other staging folders of killed predictions into --out
    if resume and is_nonempty_dir(out):  # finish it in place: the kept cases are already there
        _predict_into(out, done=manifest.resumable_cases(out, settings), **run)
        manifest.remove_strays(out, [c for c, _ in case_images])
    else:  # a new folder is built beside and appears only when every case is predicted
        with replacing_dir(out) as staging:
            _predict_into(staging, done={}, **run)
    return out


def _predict_into(
    out: Path, *, case_images, net, cfg, settings: dict, done: dict, overlap, tta, progress
) -> None:
    """Predict the cases into ``out`` (those in ``done`` with the same input are kept), recording each
    finished case in the manifest so that an interrupted prediction can be resumed."""
    import pandas as pd

    from amt_core.atomic import write_csv, write_json
    from amt_core.data import predictions as manifest
    from amt_core.data.volume import read_geometry, read_volume, to_stored_grid
    from amt_core.progress import Progress

    device = next(net.parameters()).device
    record = {**settings, "complete": False, "cases": {}}
    desc = f"predict {settings['split']}" if settings.get("split") else "predict"
    bar = Progress("predict", len(case_images), unit="scan", desc=desc, bar=True, enabled=progress)
    series_uid = settings.get("series_uid")  # only with a DICOM folder input: its one case
    for case_id, image in bar.iterate(case_images):  # scans done: amt run's progress file, else a tqdm bar
        digest = manifest.file_digest(image, series_uid)
        kept = done.get(case_id)
        if kept is None or kept.get("image_sha256") != digest:
            volume = read_volume(image, series_uid=series_uid)
            prob = predict_volume(net, cfg, volume, device, overlap=overlap, tta=tta)
            if not np.isfinite(prob).all():  # never cast to a "no tumour" mask
                raise ValueError(
                    f"{settings['model']}: the model's tumour probabilities for {image} (case {case_id}) are not "
                    f"finite at {int((~np.isfinite(prob)).sum())} voxels (NaN or infinite network output): "
                    "nothing written for it; check the model (a diverged or damaged checkpoint) and the scan"
                )
            geometry = read_geometry(image, volume=volume, series_uid=series_uid)
            prob, affine = to_stored_grid(prob, volume.affine, geometry)
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
            row = write_outputs(out, case_id, prob, affine, cfg, spacing)
            seg = None
            if Path(image).is_dir():  # a DICOM series: the mask also as a DICOM-SEG over it
                seg = write_seg(out, case_id, volume, image, series_uid)
            kept = {
                "image": str(image),
                "image_sha256": digest,
                "row": row,
                "files": {
                    n: manifest.file_digest(out / n)
                    for n in manifest.case_files(case_id)
                    if (out / n).is_file()
                },
                **({"dicom_seg": seg} if seg is not None else {}),
            }
        elif kept.get("dicom_seg", {}).get("written") is False:
            # kept by --resume: the missing SEG is said again, not only recorded
            log.warning(
                "%s: no DICOM-SEG for case %s (kept from the interrupted prediction): %s",
                image,
                case_id,
                kept["dicom_seg"].get("reason", "not recorded"),
            )
        record["cases"][case_id] = kept
        write_json(out / manifest.MANIFEST, record)
    bar.close()
    columns = ["case_id", "voxels", "n_candidates", "n_kept", "max_prob"]  # write_outputs' row
    write_csv(
        out / manifest.TABLE, pd.DataFrame([r["row"] for r in record["cases"].values()], columns=columns)
    )
    write_json(out / manifest.MANIFEST, {**record, "complete": True})
