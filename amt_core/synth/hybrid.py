"""Hybrid cohorts: histology-driven tumours inserted into real, tumour-free chest CT.

``build_hybrid_cohort(backgrounds, out_dir, ...)`` writes the same cohort folder as
:func:`amt_core.synth.generate.build_cohort` (nnU-Net v2 raw layout, ``cases.csv``, ``dataset.json``,
provenance) from a folder of chest CTs: one case per background, since each background is one real
patient (one scan per patient: a patient is never in two splits). Histology, size and the split come
from the study design (:func:`amt_core.synth.design.study_design`); the patient, sex, age, vendor, slice
thickness and contrast from the background's row in an optional ``backgrounds.csv`` beside the scans (columns
``file, patient_id, sex, age, vendor, slice_thickness_mm, contrast``) or a DICOM series' header, and are left
empty when neither states them (never made up), except that the patient id is then the file name, the slice
thickness the slice spacing and the contrast phase the one estimated from the blood HU of the great vessels.
Each patient is an institution of its own, so the test split stays institution-disjoint. Every insertion that
fails a check is retried (up to ``tries``) and listed with its reason in ``rejections.csv``; ``insertions.csv``
holds the record of each inserted tumour.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core import registry
from amt_core.atomic import (
    check_output_dir,
    remove_stale_temps,
    replacing_dir,
    write_bytes,
    write_csv,
    write_json,
)

#: what a background file may be called (a DICOM series is a folder)
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr")
MANIFEST = "backgrounds.csv"
TRIES = 6
#: the tumour's size, as a share of the design's diameter, tried in turn when ``TRIES`` insertions at the size
#: before all failed (a large mass in a narrow mediastinum); what was inserted is measured, and the share used
#: is recorded (``insertions.csv``: ``size_scale``; each failed try in ``rejections.csv``)
SIZE_SCALES = (1.0, 0.75, 0.55, 0.4)


def bundled_backgrounds() -> Path:
    """The folder of the four bundled real chest CTs (see its SOURCES.md)."""
    from amt_core.synth.backgrounds import BUNDLE_DIR

    return BUNDLE_DIR


def list_backgrounds(folder: str | os.PathLike) -> pd.DataFrame:
    """One row per background scan in ``folder``: ``path`` and the metadata of ``backgrounds.csv`` if any.

    A DICOM series states what the manifest leaves empty (PatientSex, Manufacturer, SliceThickness). Every
    value of the manifest is checked (each bad cell named by file, row and column), and two backgrounds of
    one patient (the same ``patient_id``, the same DICOM PatientID or the same bytes) are refused: a patient
    may not be in two splits."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of background chest CTs")
    files = sorted(
        p
        for p in folder.iterdir()
        # a DICOM series is a folder; hidden and Python folders (e.g. __pycache__) are not
        if p.name.endswith(SUFFIXES) or (p.is_dir() and not p.name.startswith((".", "_")))
    )
    if not files:
        raise ValueError(f"{folder}: holds no chest CT (NIfTI, NRRD or a DICOM series folder)")
    rows = pd.DataFrame({"file": [p.name for p in files], "path": [str(p) for p in files]})
    manifest = folder / MANIFEST
    if manifest.is_file():
        rows = rows.merge(_read_manifest(manifest, set(rows.file)), on="file", how="left")
    for column in ("patient_id", "sex", "age", "vendor", "slice_thickness_mm", "contrast"):
        if column not in rows.columns:
            rows[column] = ""
    rows = rows.fillna("")
    # a vendor named as a DICOM Manufacturer would be ('SIEMENS' -> Siemens), as the header's and amt
    # import's are: one vendor is never two sub-group levels
    from amt_core.data.privacy import vendor_name

    rows["vendor"] = [vendor_name(v) or "" for v in rows["vendor"]]
    rows = _fill_from_dicom(rows)
    stated = rows["patient_id"].ne("")  # the manifest's patient ids overrule the DICOM PatientID
    rows.loc[stated, "dicom_patient"] = ""  # (anonymised series often share one, e.g. 'ANONYMOUS')
    rows["patient_id"] = [pid or _stem(f) for pid, f in zip(rows.patient_id, rows.file, strict=True)]
    dup = rows.patient_id[rows.patient_id.duplicated()]
    if len(dup):
        raise ValueError(
            f"{folder}: patient {sorted(set(dup))[:5]} has several scans; use one per patient "
            "(a patient may not be in two splits)"
        )
    for key, what, hint in (
        ("dicom_patient", "the same DICOM PatientID", f", or give each its patient_id in {MANIFEST}"),
        ("content", "the same bytes", ""),
    ):
        same = rows[rows[key].ne("") & rows[key].duplicated(keep=False)]
        if len(same):
            raise ValueError(
                f"{folder}: {', '.join(same.file)} hold {what}: one scan per patient (a patient may not "
                f"be in two splits); keep one of them{hint}"
            )
    return rows.drop(columns=["dicom_patient", "content"])


def _read_manifest(manifest: Path, scans: set[str]) -> pd.DataFrame:
    """``backgrounds.csv``, every problem listed with its row and column (as ``amt validate`` would)."""
    try:
        meta = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{manifest}: not a readable CSV table ({type(exc).__name__}: {exc})") from None
    from amt_core.data.cases import ID_PATTERN

    problems = []
    if "file" not in meta.columns:
        problems.append("no column 'file' (the scan each row describes)")
    else:
        unknown = sorted(set(meta["file"]) - scans)
        if unknown:
            problems.append(f"'file' names no scan of the folder: {unknown[:5]}")
        twice = sorted(set(meta["file"][meta["file"].duplicated()]))
        if twice:
            problems.append(f"'file' {twice[:5]} described twice")
    checks = {
        "patient_id": (lambda v: bool(ID_PATTERN.match(v)), "letters, digits, '.', '_' or '-'"),
        "sex": (lambda v: v in registry.SEXES, f"one of {list(registry.SEXES)}"),
        "contrast": (lambda v: v in registry.CONTRASTS, f"one of {list(registry.CONTRASTS)}"),
        "slice_thickness_mm": (_positive_number, "a positive number of mm"),
        "age": (_age, "an age in years, 0 to 120"),
    }
    for column, (ok, wanted) in checks.items():
        if column not in meta.columns:
            continue
        for k, value in enumerate(meta[column].str.strip()):
            if value and not ok(value):
                problems.append(f"row {k + 2}, {column} {value!r}: expected {wanted} (or empty)")
    if "patient_id" in meta.columns:  # with the other problems, not after them
        ids = meta["patient_id"].str.strip()
        for pid in sorted(set(ids[ids.ne("") & ids.duplicated()])):
            rows = ", ".join(str(k + 2) for k in np.flatnonzero(ids.eq(pid)))
            problems.append(
                f"rows {rows}, patient_id {pid!r}: one scan per patient (a patient may not be in two splits)"
            )
    if problems:
        raise ValueError(f"{manifest}: " + "; ".join(problems))
    return meta.apply(lambda c: c.str.strip())


def _positive_number(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


def _age(value: str) -> bool:
    try:
        return 0 <= float(value) <= 120
    except ValueError:
        return False


def _fill_from_dicom(rows: pd.DataFrame) -> pd.DataFrame:
    """Sex, age, vendor and slice thickness of a DICOM background from its header where the manifest is silent;
    the keyed pseudonym of its PatientID (``dicom_patient``, to find two scans of one patient; never
    written) and a content hash of every background (``content``)."""
    from amt_core.atomic import file_hash
    from amt_core.data import privacy

    key = privacy.pseudonym_key()
    rows = rows.copy()
    patients, contents = [], []
    for i, row in rows.iterrows():
        path = Path(row["path"])
        if path.is_dir():
            meta = privacy.dicom_metadata(path, key)
            patients.append(meta.patient_pseudonym or "")
            for column, value in (("sex", meta.sex), ("vendor", meta.vendor)):
                if not row[column] and value:
                    rows.at[i, column] = value
            if not row["slice_thickness_mm"] and meta.slice_thickness_mm:
                rows.at[i, "slice_thickness_mm"] = f"{meta.slice_thickness_mm:g}"
            if not row["age"] and meta.age is not None:
                rows.at[i, "age"] = f"{meta.age:g}"
        else:
            patients.append("")
        contents.append(_combined_hash([file_hash(p) for p in background_files([path])]))
    rows["dicom_patient"], rows["content"] = patients, contents
    return rows


def check_backgrounds(bgs: pd.DataFrame) -> None:
    """Refuse, before any tumour is inserted, every background that cannot hold one: unreadable, not CT
    in HU, or no prevascular space found (not a chest CT, too few slices, cropped); all of them listed at
    once, each with its reason."""
    from amt_core.data.volume import check_ct, read_volume
    from amt_core.synth.backgrounds import find_prevascular_space

    problems = []
    for file, path in zip(bgs.file, bgs.path, strict=True):
        try:
            vol = read_volume(path)
            check_ct(vol)
            find_prevascular_space(vol.array, vol.spacing, vol.source)
        except ValueError as exc:  # VolumeError, NotCTError, InsertionRejected
            problems.append(f"{file}: {str(exc).removeprefix(f'{path}: ')}")
    if problems:
        folder = Path(bgs.path.iloc[0]).parent
        raise ValueError(
            f"{folder}: {len(problems)} of {len(bgs)} backgrounds cannot hold an anterior mediastinal "
            f"tumour (move them out of the folder): " + "; ".join(problems)
        )


def _combined_hash(hashes: list[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()


def background_files(paths) -> list[Path]:
    """The files behind background paths (a DICOM series folder: each of its files), for provenance."""
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return out


def _stem(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def render_hybrid_case(row: dict, background: str, seed: int = 0, tries: int = TRIES):
    """Insert the row's tumour into ``background``. Returns (image int16, label uint8, affine, record,
    rejections); ``rejections`` lists the reason of each failed try. After ``tries`` failures at the design's
    size the tumour is tried smaller (:data:`SIZE_SCALES`); raises ``InsertionRejected`` when every size
    failed (the message lists the tries)."""
    from amt_core.data.volume import check_ct, read_volume
    from amt_core.synth.backgrounds import (
        InsertionRejected,
        find_prevascular_space,
        insert_tumour,
        record_dict,
    )

    vol = read_volume(background)
    check_ct(vol)
    anatomy = find_prevascular_space(vol.array, vol.spacing, vol.source)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5, int(row["case_index"])]))
    # a background of unknown contrast phase: estimated from the blood HU of its great vessels, so the
    # tumour enhances as its histology does in that phase (insertions.csv says which it was)
    contrast = row["contrast"] if row["contrast"] in registry.CONTRASTS else None
    rejections = []
    attempts = [(scale, k) for scale in SIZE_SCALES for k in range(tries)]
    for attempt, (scale, _) in enumerate(attempts):
        try:
            image, label, rec = insert_tumour(
                vol.array,
                vol.spacing,
                row["histology"],
                float(row["tumour_diameter_mm"]) * scale,
                rng,
                contrast=contrast,
                enhancement=float(row["enhancement"]),
                anatomy=anatomy,
                affine=vol.affine,
                source=vol.source,
            )
        except InsertionRejected as exc:
            rejections.append(
                {
                    "case_id": row["case_id"],
                    "background": Path(background).name,
                    "try": attempt + 1,
                    "reason": exc.reason + ("" if scale == 1.0 else f" (at {scale:g} of the design's size)"),
                }
            )
            continue
        image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
        return image, label, vol.affine, {**record_dict(rec), "size_scale": scale}, rejections
    reasons = "; ".join(f"try {r['try']}: {r['reason']}" for r in rejections)
    raise InsertionRejected(
        f"no tumour could be inserted in {len(attempts)} tries at {len(SIZE_SCALES)} sizes ({reasons})",
        vol.source,
    )


def hybrid_design(
    backgrounds: pd.DataFrame,
    *,
    n_cases: int | None = None,
    seed: int = 0,
    split: str | None = None,
    first_index: int = 0,
    prefix: str = "AMTR",
) -> pd.DataFrame:
    """The case table of a hybrid cohort: design rows (histology, size, age, split) on the backgrounds.

    ``split`` puts every case in that split (the real-anatomy test subset); otherwise the published
    proportions. Each background is one patient and one institution of its own.
    """
    from amt_core.data.cohort import image_relpath, label_relpath
    from amt_core.synth.design import study_design

    n = len(backgrounds) if n_cases is None else int(n_cases)
    if not 1 <= n <= len(backgrounds):
        raise ValueError(
            f"n_cases {n}: a hybrid cohort has one case per background patient, and there are "
            f"{len(backgrounds)} backgrounds"
        )
    # the design's rows from ``first_index`` on: other draws than the synthetic cases before them
    design = study_design(n_cases=max(first_index + n, 3), seed=seed)
    design = design.iloc[first_index : first_index + n].reset_index(drop=True)
    bg = backgrounds.iloc[:n].reset_index(drop=True)
    if split is None and n < 3:
        raise ValueError(f"a hybrid cohort of its own needs at least 3 cases (one per split), got {n}")
    rows = []
    for i in range(n):
        d = design.iloc[i].to_dict()
        b = bg.iloc[i]
        case_id = f"{prefix}{first_index + i + 1:03d}"
        s = split or d["split"]
        d.update(
            case_id=case_id,
            patient_id=b.patient_id,
            institution_id=f"{prefix}-{b.patient_id}",
            split=s,
            image=image_relpath(case_id, s),
            label=label_relpath(case_id, s),
            case_index=first_index + i,
            background=b.file,
            anatomy="real",
        )
        # the patient's sex when the background states it, else not stated (never the design's draw: Table 1
        # and the sex sub-group would count a made-up value as data)
        d["sex_from"] = "background" if b.sex in registry.SEXES else "not stated for the background"
        d["sex"] = b.sex if b.sex in registry.SEXES else np.nan
        d["age"] = float(b.age) if b.age else np.nan  # the same for age
        d["vendor"] = b.vendor  # empty when the background does not state it (never a made-up vendor)
        d["contrast"] = b.contrast if b.contrast in registry.CONTRASTS else ""
        d["slice_thickness_mm"] = float(b.slice_thickness_mm) if b.slice_thickness_mm else np.nan
        rows.append(d)
    return pd.DataFrame(rows)


def build_hybrid_cohort(
    backgrounds: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n_cases: int | None = None,
    seed: int = 0,
    tries: int = TRIES,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a hybrid cohort folder (tumours inserted into the chest CTs of ``backgrounds``); returns the
    path of its ``cases.csv``. A non-empty ``out_dir`` is refused unless ``overwrite`` (replaced whole).
    ``progress``: a bar of the cases inserted."""
    out = check_output_dir(
        out_dir, overwrite=overwrite, what="cohort folder", resumable=False, inputs=(backgrounds,)
    )
    bgs = list_backgrounds(backgrounds)
    design = hybrid_design(bgs, n_cases=n_cases, seed=seed)
    check_backgrounds(bgs[bgs.file.isin(design.background)])
    config = {
        "kind": "hybrid",
        "backgrounds": str(Path(backgrounds).resolve()),
        "n_cases": len(design),
        "seed": int(seed),
        "tries": int(tries),
    }
    # built beside the target and swapped in when complete: a failure (an unreadable background, a tumour
    # that never fits) leaves no half-written folder, and an old folder intact; the staging folders of
    # builds that were killed (a full cohort each) go first
    remove_stale_temps(out.parent, of=out.name)
    with replacing_dir(out) as staging:
        _build(staging, design, bgs, config, progress=progress)
    return out / "cases.csv"


def write_hybrid_cases(
    out: Path, design: pd.DataFrame, bgs: pd.DataFrame, seed: int, tries: int = TRIES, progress: bool = False
):
    """Render and write the hybrid rows of ``design`` into ``out``; returns (design with measured volumes,
    insertion records, rejections). ``progress``: cases done, as a bar (or ``amt run``'s progress file)."""
    from amt_core.data.volume import nifti_gz_bytes
    from amt_core.progress import Progress

    paths = dict(zip(bgs.file, bgs.path, strict=True))
    records, rejections = [], []
    volumes, thickness = [], []
    bar = Progress("cohort", len(design), unit="case", desc="insert tumours", bar=True, enabled=progress)
    for row in bar.iterate(design.to_dict("records")):
        image, label, affine, rec, rej = render_hybrid_case(row, paths[row["background"]], seed, tries)
        rejections += rej
        voxel_ml = float(np.prod(np.sqrt((affine[:3, :3] ** 2).sum(0)))) / 1000.0
        volumes.append(round(float(label.sum(dtype=np.int64)) * voxel_ml, 2))
        # a background without a stated slice thickness: its slice spacing
        dz = float(np.sqrt((affine[:3, 2] ** 2).sum()))
        thickness.append(
            row["slice_thickness_mm"] if np.isfinite(row["slice_thickness_mm"]) else round(dz, 3)
        )
        records.append(
            {"case_id": row["case_id"], "background": row["background"], "sex_from": row["sex_from"], **rec}
        )
        for kind, arr in (("image", image), ("label", label)):
            write_bytes(out / row[kind], nifti_gz_bytes(arr, affine))
    bar.close()
    design = design.copy()
    design["tumour_volume_ml"] = volumes
    design["slice_thickness_mm"] = thickness
    # a background without a stated contrast phase: the one estimated from it (insertions.csv: contrast_from)
    design["contrast"] = [c or rec["contrast"] for c, rec in zip(design["contrast"], records, strict=True)]
    return design, records, rejections


def _build(out: Path, design: pd.DataFrame, bgs: pd.DataFrame, config: dict, progress: bool = False) -> None:
    from amt_core.data.cohort import write_cases, write_dataset_json
    from amt_core.provenance import write_provenance

    design, records, rejections = write_hybrid_cases(
        out, design, bgs, config["seed"], config["tries"], progress=progress
    )
    write_json(out / ".synth" / "cohort.json", config)
    write_csv(out / "insertions.csv", _flat(records))
    write_csv(
        out / "rejections.csv", pd.DataFrame(rejections, columns=["case_id", "background", "try", "reason"])
    )
    write_dataset_json(out, design, name="amt hybrid cohort")
    write_provenance(out, config, inputs=background_files(bgs.path))
    write_cases(out, design[list(registry.CASE_COLUMNS) + ["anatomy", "background"]])
    from amt_core.data.cases import read_cases

    read_cases(out / "cases.csv")  # the table it writes passes amt validate (else nothing is swapped in)


def _flat(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        r = dict(r)
        for key in ("position_mm", "position_voxel"):
            for axis, v in zip("xyz", r.pop(key), strict=True):
                r[f"{key.rsplit('_', 1)[0]}_{axis}_{key.rsplit('_', 1)[1]}"] = v
        rows.append(r)
    return pd.DataFrame(rows)


# --- the real-anatomy test subset of a synthetic cohort ---------------------------------------------------
def real_anatomy_rows(n: int, *, seed: int, first_index: int) -> pd.DataFrame:
    """``n`` external-test rows with tumours inserted into the bundled real chest CTs (one per patient, so
    at most 4), each patient an institution of its own (``REAL-...``) that appears only in the test split."""
    bgs = list_backgrounds(bundled_backgrounds())
    if not 0 < n <= len(bgs):
        raise ValueError(f"real_anatomy {n}: the bundled backgrounds are {len(bgs)} patients (one scan each)")
    return hybrid_design(bgs, n_cases=n, seed=seed, split="test", first_index=first_index, prefix="REAL")


def render_real_anatomy_case(row: dict, seed: int = 0):
    """A real-anatomy row of ``build_cohort``: (image, label, affine, extra fields for the case record)."""
    path = bundled_backgrounds() / row["background"]
    image, label, affine, rec, rejections = render_hybrid_case(row, str(path), seed)
    return image, label, affine, {"insertion": {"sex_from": row["sex_from"], **rec}, "rejections": rejections}


def write_insertion_tables(out: Path, design: pd.DataFrame) -> None:
    """``insertions.csv`` and ``rejections.csv`` of a cohort's real-anatomy cases, from their case records."""
    import json

    records, rejections = [], []
    for row in design[design.get("anatomy", pd.Series(dtype=str)) == "real"].to_dict("records"):
        rec = json.loads((out / ".synth" / f"{row['case_id']}.json").read_text())
        records.append({"case_id": row["case_id"], "background": row["background"], **rec["insertion"]})
        rejections += rec["rejections"]
    write_csv(out / "insertions.csv", _flat(records))
    write_csv(
        out / "rejections.csv", pd.DataFrame(rejections, columns=["case_id", "background", "try", "reason"])
    )
