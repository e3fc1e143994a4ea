"""Generate the synthetic cohort: one case = anatomy + tumour + scanner; a cohort = the study design
rendered to a folder in the nnU-Net v2 raw layout plus the case table (docs/architecture.md).

Deterministic (each case's random stream is ``SeedSequence([seed, 3, case_index])``; gzip headers carry no
time or name), parallel over processes with a progress bar, atomic (every file is written beside its target
and renamed; ``cases.csv`` is written last, so a cohort folder with a ``cases.csv`` is complete).

The output folder follows the one policy (docs/architecture.md): a non-empty folder is refused unless
``overwrite`` (a new folder is built beside it and swapped in; cases of the old folder made with the same
settings are reused, linked rather than rendered again) or ``resume`` (continue a cohort of identical
settings, recorded in ``.synth/cohort.json``, in place; a per-case record under ``.synth/`` lets its valid
cases be kept, and files that do not belong to the design are removed).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core import registry
from amt_core.atomic import (
    OutputExistsError,
    check_output_dir,
    is_nonempty_dir,
    remove_stale_temps,
    replacing_dir,
    write_bytes,
    write_csv,
    write_json,
)
from amt_core.data.volume import nifti_gz_bytes

#: bump when the generator's output changes; part of each case's cache key
GENERATOR_VERSION = "4"
MANIFEST_DIR = ".synth"
#: the settings a cohort folder was made with (what ``resume`` compares)
SETTINGS = "cohort.json"
#: the folders that hold the cases' files
CASE_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


# --- one case ------------------------------------------------------------------------------------------------
def render_case(row: dict, preset: str = "demo", seed: int = 0, details: dict | None = None):
    """Render one case of the design. Returns (image int16, label uint8, affine 4x4).

    If ``details`` is a dict it receives the patient, the lesions, the tissue HU table and boolean masks
    of pure tissues (for realism checks); the image is the same either way.
    """
    from amt_core.synth.anatomy import draw_anatomy, sample_patient, tissue_table, translate
    from amt_core.synth.canvas import Canvas
    from amt_core.synth.scanner import acquire, scan_grid
    from amt_core.synth.tumour import draw_lesions, mass_effect, plan_lesions

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3, int(row["case_index"])]))
    p = sample_patient(rng, row["sex"], float(row["age"]), float(row["patient_scale"]))
    # patient position on the table relative to the field-of-view centre
    translate(p, rng.normal(0.0, 8.0), rng.normal(-12.0, 8.0))
    lesions = plan_lesions(rng, p, row["histology"], float(row["tumour_diameter_mm"]), int(row["n_lesions"]))
    z_lo, z_hi = p.z_bottom, p.z_top
    z_shift = rng.normal(0.0, 8.0)
    fov = float(np.clip(p.body_width() * float(row["fov_margin"]), 260.0, 500.0))
    grid = scan_grid(
        preset, fov, float(row["slice_thickness_mm"]), z_lo + z_shift, z_hi + z_shift, centre_xy=(0.0, 0.0)
    )
    cv = Canvas(grid.shape, grid.spacing, grid.origin)
    hu = tissue_table(row["contrast"], float(row["enhancement"]), float(row["age"]), rng)
    masks = {} if details is not None else None
    info = draw_anatomy(cv, p, hu, rng, push=mass_effect(lesions, p), masks=masks)
    label = draw_lesions(cv, p, lesions, row["contrast"], float(row["enhancement"]), rng)
    image = acquire(
        cv.hu,
        grid,
        thickness_mm=float(row["slice_thickness_mm"]),
        psf_mm=float(row["psf_mm"]),
        noise_hu=float(row["noise_hu"]),
        hu_offset=float(row["hu_offset"]),
        vendor=row["vendor"],
        patient_scale=float(row["patient_scale"]),
        preset=preset,
        rng=rng,
    )
    if details is not None:
        details.update(patient=p, lesions=lesions, hu=hu, masks=masks, aorta=info["aorta"], grid=grid)
    return image, label, cv.affine


# --- the cohort folder -----------------------------------------------------------------------------------------
_SOURCES = (
    "design.py",
    "anatomy.py",
    "tumour.py",
    "scanner.py",
    "canvas.py",
    "generate.py",
    "backgrounds.py",
    "hybrid.py",
)


@functools.lru_cache(maxsize=1)
def generator_fingerprint() -> str:
    """Hash of the generator's source: a case made by other code is never taken as valid on resume."""
    h = hashlib.sha256(GENERATOR_VERSION.encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _case_key(row: dict, preset: str, seed: int) -> str:
    payload = json.dumps(
        {
            "v": generator_fingerprint(),
            "preset": preset,
            "seed": int(seed),
            "row": {k: row[k] for k in sorted(row) if k != "tumour_volume_ml"},
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _record_path(out: Path, case_id: str) -> Path:
    return out / MANIFEST_DIR / f"{case_id}.json"


def _valid_record(out: Path, row: dict, key: str) -> dict | None:
    """The case's record if its files are there as written (same key, size and mtime), else None."""
    rec_path = _record_path(out, row["case_id"])
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") != key:
        return None
    for kind in ("image", "label"):
        f = out / row[kind]
        try:
            st = f.stat()
        except OSError:
            return None
        if st.st_size != rec[kind]["size"] or st.st_mtime_ns != rec[kind]["mtime_ns"]:
            return None
    return rec


def _generate_one(out: str, row: dict, preset: str, seed: int, key: str) -> dict:
    """Worker: render, write image and label atomically, then the case record."""
    out_p = Path(out)
    extra: dict = {}
    if row.get("anatomy") == "real":  # a tumour inserted into a bundled real chest CT
        from amt_core.synth.hybrid import render_real_anatomy_case

        image, label, affine, extra = render_real_anatomy_case(row, seed)
    else:
        image, label, affine = render_case(row, preset, seed)
    voxel_ml = float(np.prod(np.sqrt((affine[:3, :3] ** 2).sum(0)))) / 1000.0
    vol_ml = round(float(label.sum(dtype=np.int64)) * voxel_ml, 2)
    rec = {
        "key": key,
        "case_id": row["case_id"],
        "tumour_volume_ml": vol_ml,
        "shape": list(image.shape),
        **extra,
    }
    for kind, arr in (("image", image), ("label", label)):
        f = out_p / row[kind]
        write_bytes(f, nifti_gz_bytes(arr, affine))
        st = f.stat()
        rec[kind] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    write_json(_record_path(out_p, row["case_id"]), rec)
    return rec


def build_cohort(
    out_dir: str | os.PathLike,
    *,
    preset: str = "demo",
    n_cases: int | None = None,
    seed: int = 0,
    n_institutions: int | None = None,
    design_only: bool = False,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    real_anatomy: int = 0,
) -> Path:
    """Write a synthetic cohort folder; returns the path of its ``cases.csv``.

    ``n_cases`` defaults to the study's 711; ``design_only`` writes just the case table (planned tumour
    volumes, no image files). A non-empty ``out_dir`` is refused unless ``overwrite`` (replace it whole,
    reusing its cases made with the same settings) or ``resume`` (continue a cohort of the same settings).
    ``real_anatomy`` adds that many external-test scans with tumours inserted into the bundled real chest
    CTs (``amt_core.synth.hybrid``), in institutions of their own, marked ``anatomy`` = ``real`` in the table.
    """
    from amt_core.synth.design import check_design, study_design

    if preset not in registry.COHORT_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(registry.COHORT_PRESETS)}")
    n_cases = registry.STUDY_DESIGN["n_cases"] if n_cases is None else int(n_cases)
    out = check_output_dir(out_dir, overwrite=overwrite, resume=resume, what="cohort folder")
    remove_stale_temps(out.parent, of=out.name)  # staging folders of killed builds into it (a cohort each)
    config = {
        "preset": preset,
        "n_cases": n_cases,
        "seed": int(seed),
        "n_institutions": n_institutions,
        "design_only": bool(design_only),
        "generator_version": GENERATOR_VERSION,
        "generator_fingerprint": generator_fingerprint(),
    }
    if real_anatomy:
        config["real_anatomy"] = int(real_anatomy)
    if resume and is_nonempty_dir(out):
        _check_same_settings(out, config)
    design = study_design(n_cases=n_cases, n_institutions=n_institutions, seed=seed)
    if real_anatomy:
        from amt_core.synth.hybrid import real_anatomy_rows

        real = real_anatomy_rows(int(real_anatomy), seed=seed, first_index=len(design))
        design = pd.concat([design.assign(anatomy="synthetic"), real], ignore_index=True)
    problems = check_design(design)
    if problems:  # pragma: no cover - the design guarantees it
        raise RuntimeError("; ".join(problems))
    build = dict(design=design, config=config, workers=workers, progress=progress)
    if overwrite and is_nonempty_dir(out):
        with replacing_dir(out) as staging:
            _build(staging, reuse=out, **build)
    else:  # new, empty, or resumed in place (an interrupted build can be resumed)
        out.mkdir(parents=True, exist_ok=True)
        _build(out, reuse=out, **build)
        _remove_strays(out, design)
    return out / "cases.csv"


def _check_same_settings(out: Path, config: dict) -> None:
    """``resume`` continues only a cohort made with the same settings (its .synth/cohort.json, or the
    config in provenance.json of a cohort written before that record existed)."""
    recorded = None
    for path, field in ((out / MANIFEST_DIR / SETTINGS, None), (out / "provenance.json", "config")):
        try:
            data = json.loads(path.read_text())
            recorded = data[field] if field else data
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not isinstance(recorded, dict):
        raise OutputExistsError(
            f"{out}: is not a cohort folder written by `amt cohort` (no {MANIFEST_DIR}/"
            f"{SETTINGS}); cannot --resume it: pass --overwrite to replace it"
        )
    names = ("preset", "n_cases", "seed", "n_institutions", "design_only", "real_anatomy")
    differ = [
        f"{n} {recorded.get(n)!r}, not {config.get(n)!r}" for n in names if recorded.get(n) != config.get(n)
    ]
    if differ:
        raise OutputExistsError(
            f"{out}: cohort folder was made with other settings ({'; '.join(differ)}); "
            "cannot --resume it: pass --overwrite to replace it"
        )


def _build(
    out: Path, *, design: pd.DataFrame, config: dict, workers: int | None, progress: bool, reuse: Path
) -> None:
    """Render the design into ``out``; valid cases of ``reuse`` (``out`` itself when resuming) are kept."""
    write_json(out / MANIFEST_DIR / SETTINGS, config)
    if config["design_only"]:
        _finish(out, design, config)
        return
    preset, seed = config["preset"], config["seed"]
    rows = design.to_dict("records")
    keys = {r["case_id"]: _case_key(r, preset, seed) for r in rows}
    records: dict[str, dict] = {}
    todo = []
    for r in rows:
        rec = _valid_record(reuse, r, keys[r["case_id"]])
        if rec is not None and reuse != out:
            rec = _link_case(reuse, out, r, rec)
        if rec is None:
            todo.append(r)
        else:
            records[r["case_id"]] = rec
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    bar = _progress(len(rows), len(rows) - len(todo), progress, f"cohort ({preset})")
    try:
        if workers == 1 or len(todo) <= 1:
            for r in todo:
                records[r["case_id"]] = _generate_one(str(out), r, preset, seed, keys[r["case_id"]])
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                futs = [
                    pool.submit(_generate_one, str(out), r, preset, seed, keys[r["case_id"]]) for r in todo
                ]
                for fut in as_completed(futs):
                    rec = fut.result()
                    records[rec["case_id"]] = rec
                    bar.update(1)
    finally:
        bar.close()

    design = design.copy()
    design["tumour_volume_ml"] = [records[c]["tumour_volume_ml"] for c in design.case_id]
    _finish(out, design, config)


def _link_case(old: Path, new: Path, row: dict, rec: dict) -> dict | None:
    """Hard-link (or copy, keeping the modification time) a valid case of ``old`` into ``new``."""
    import shutil

    try:
        for kind in ("image", "label"):
            (new / row[kind]).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(old / row[kind], new / row[kind])
            except OSError:
                shutil.copy2(old / row[kind], new / row[kind])
    except OSError:
        return None
    write_json(_record_path(new, row["case_id"]), rec)
    return _valid_record(new, row, rec["key"])


def _remove_strays(out: Path, design: pd.DataFrame) -> None:
    """Remove files of the case folders and records that do not belong to the design (cases of an
    earlier, interrupted build; files put there by hand) and temporary files of killed writers."""
    keep = {
        *design["image"],
        *design["label"],
        f"{MANIFEST_DIR}/{SETTINGS}",
        *(f"{MANIFEST_DIR}/{c}.json" for c in design["case_id"]),
    }
    for folder in (*CASE_FOLDERS, MANIFEST_DIR):
        for f in sorted((out / folder).rglob("*")) if (out / folder).is_dir() else []:
            if f.is_file() and not f.name.startswith(".") and f.relative_to(out).as_posix() not in keep:
                f.unlink()
    remove_stale_temps(out, recursive=True)


def _finish(out: Path, design: pd.DataFrame, config: dict) -> None:
    """dataset.json, design.csv (case table + scanner profiles), provenance.json, and cases.csv last."""
    from amt_core.data.cohort import write_cases, write_dataset_json
    from amt_core.provenance import write_provenance

    write_dataset_json(out, design, name="amt synthetic cohort")
    write_csv(out / "design.csv", design)
    write_provenance(out, config)
    extra = [c for c in ("anatomy",) if c in design.columns]  # real-anatomy test subset
    if extra and not config["design_only"]:
        from amt_core.synth.hybrid import write_insertion_tables

        write_insertion_tables(out, design)
    write_cases(out, design[list(registry.CASE_COLUMNS) + extra])


def _progress(total: int, initial: int, enabled: bool, desc: str):
    """Cases done of total: to ``amt run``'s progress file when it follows one, else a tqdm bar."""
    from amt_core.progress import Progress

    return Progress("cohort", total, unit="case", desc=desc, initial=initial, bar=True, enabled=enabled)
