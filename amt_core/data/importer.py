"""Build a cohort folder from real scans: a folder of NIfTI/NRRD files or DICOM series plus a metadata CSV.

The metadata CSV has one row per scan:

- ``image`` (required): path, relative to the source folder, of a NIfTI/NRRD file or a DICOM series folder;
- ``label`` (required): the tumour mask, any format of :mod:`amt_core.data.masks`: a NIfTI/NRRD label on the
  image's grid, binary 0/1 (``binarise_labels=True`` turns any non-zero integer into 1); a DICOM-SEG or an
  RTSTRUCT file (or a folder holding one) referencing the image series; a 3D Slicer ``.seg.nrrd``;
- optional ``label_segment``: the segment (DICOM-SEG, ``.seg.nrrd``) or ROI (RTSTRUCT) that is the tumour,
  by name (needed when the file holds several; the error lists the names present);
- ``split`` (required): train, tune or test;
- ``institution`` (a name: pseudonymised to ``INST-xxxxxxxx``) or ``institution_id`` (already a pseudonym:
  kept). For DICOM without either, the series' InstitutionName is pseudonymised;
- optional ``case_id`` and ``patient_id`` (generated when absent: ``case_0001``...; for DICOM the patient
  is a pseudonym of PatientID, so two scans of one patient are recognised), and any of ``sex, age,
  histology, contrast, slice_thickness_mm, vendor`` (DICOM fills sex, age, vendor and slice thickness
  when the CSV leaves them empty). ``tumour_volume_ml`` is measured from the mask;
- optional ``series_uid``: the SeriesInstanceUID to import when the image folder holds several DICOM
  series (a folder with several series and no ``series_uid`` is refused, and the error lists each series'
  UID, description and number of slices). The pixels and the DICOM metadata then come from that one
  series. It is not copied into the cohort.

Every image must look like CT in Hounsfield units (:func:`amt_core.data.volume.check_ct`: air near
-1000 HU and tissue above 0), as ``amt predict`` requires; the problems of every case are reported at once.

No identifying DICOM tag reaches the output (see :mod:`amt_core.data.privacy`); source paths are not
written either. The cohort is built in a hidden folder beside ``out_dir`` and renamed into place only when
every case converted, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import lzma
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core.atomic import check_output_dir, remove_stale_temps, replacing_dir
from amt_core.data import privacy
from amt_core.data.cases import CaseTableError, read_cases, validate_cases
from amt_core.data.cohort import CASES_CSV, image_relpath, label_relpath, write_cases, write_dataset_json
from amt_core.data.volume import VolumeError
from amt_core.registry import CASE_COLUMNS

log = logging.getLogger(__name__)

REQUIRED_METADATA = ("image", "label", "split")
OPTIONAL_METADATA = ("case_id", "patient_id", "institution", "institution_id", "sex", "age", "histology",
                     "contrast", "slice_thickness_mm", "vendor", "series_uid", "label_segment")  # fmt: skip


def import_cohort(
    source_dir: str | os.PathLike,
    metadata_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    key: str | bytes | None = None,
    binarise_labels: bool = False,
    mapping: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Convert the scans listed in ``metadata_csv`` into a cohort folder at ``out_dir``; return its
    validated case table. ``key`` is the pseudonymisation secret (default ``$AMT_PSEUDONYM_KEY``, else
    random: then institution pseudonyms are consistent within this import only). ``mapping`` is a YAML file
    mapping the metadata's histology/contrast/vendor/sex values onto the study's vocabularies
    (:mod:`amt_core.data.vocabulary`); every unmapped value is reported with its rows."""
    source_dir, metadata_csv, out_dir = Path(source_dir), Path(metadata_csv), Path(out_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{source_dir}: source folder not found")
    check_output_dir(
        out_dir, overwrite=overwrite, what="cohort folder", resumable=False, inputs=(source_dir, metadata_csv)
    )
    if key is None and not os.environ.get(privacy.KEY_ENV):
        log.warning(
            "%s is not set: institution and patient pseudonyms are random for this import only (another "
            "import of the same hospital gets other ones); set it to keep them stable across imports",
            privacy.KEY_ENV,
        )
    secret = privacy.pseudonym_key(key)

    meta = read_metadata(metadata_csv)
    problems: list[str] = []
    if mapping is not None:
        from amt_core.data.vocabulary import apply_mapping, load_mapping

        meta, problems = apply_mapping(meta, load_mapping(mapping))
    table, sources = _plan(meta, source_dir, secret, metadata_csv, problems)

    remove_stale_temps(out_dir.parent)  # staging folders of imports that were killed
    with replacing_dir(out_dir) as staging:  # built beside, swapped in only when every case converted
        _convert(table, sources, staging, binarise_labels, metadata_csv)
        write_cases(staging, table)
        write_dataset_json(staging, table, name=out_dir.name)
        _write_provenance(
            staging,
            {"metadata": metadata_csv, **({"mapping": Path(mapping)} if mapping is not None else {})},
            n_cases=len(table),
            binarise_labels=binarise_labels,
            pseudonym_key=(
                "given"
                if key is not None
                else f"${privacy.KEY_ENV}"
                if os.environ.get(privacy.KEY_ENV)
                else "random (pseudonyms hold for this import only)"
            ),
        )
        read_cases(staging / CASES_CSV)  # the result must pass every check
    log.info("imported %d cases into %s", len(table), out_dir)
    return read_cases(out_dir / CASES_CSV)


def read_metadata(metadata_csv: str | os.PathLike) -> pd.DataFrame:
    """The metadata CSV as text columns (age and slice thickness as numbers), checked for required columns."""
    metadata_csv = Path(metadata_csv)
    if not metadata_csv.is_file():
        raise FileNotFoundError(f"{metadata_csv}: metadata CSV not found")
    text_columns = {
        c: str for c in (*REQUIRED_METADATA, *OPTIONAL_METADATA) if c not in ("age", "slice_thickness_mm")
    }
    try:
        meta = pd.read_csv(metadata_csv, dtype=text_columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        problem = f"not a readable CSV file: {' '.join(str(exc).split())}"
        raise CaseTableError(str(metadata_csv), [problem]) from exc
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile) as exc:  # a damaged .gz, ...
        problem = f"cannot read the file (corrupt or truncated?): {' '.join(str(exc).split())}"
        raise CaseTableError(str(metadata_csv), [problem]) from exc
    meta.columns = [str(c).strip() for c in meta.columns]
    missing = [c for c in REQUIRED_METADATA if c not in meta.columns]
    if missing:
        raise CaseTableError(str(metadata_csv), [f"missing column(s): {', '.join(missing)}"])
    if len(meta) == 0:
        raise CaseTableError(str(metadata_csv), ["the metadata table has no rows"])
    return meta


def _cell(row: pd.Series, column: str):
    value = row.get(column)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.strip() or None if isinstance(value, str) else value


def _plan(meta: pd.DataFrame, source_dir: Path, secret: bytes, metadata_csv: Path, problems: list[str]):
    """The case table (before conversion) and each case's (image, label) source paths; every problem of
    the metadata (with ``problems`` found before, e.g. unmapped values) is raised at once, before any volume
    is converted."""
    problems = list(problems)
    mapped_problems = {p.split(" ", 1)[0] for p in problems}  # columns already reported as unmapped
    given_ids = {str(v).strip() for v in meta.get("case_id", pd.Series(dtype=str)).dropna()}
    counter = 0
    rows, sources, unknown = [], [], []
    for i, row in meta.iterrows():
        where = f"row {int(i) + 2}"
        image, label = (_cell(row, "image"), _cell(row, "label"))
        paths = []
        for column, rel in (("image", image), ("label", label)):
            path = None if rel is None else (source_dir / rel)
            if rel is None:
                problems.append(f"{where}: empty {column}")
            elif not path.exists():
                problems.append(f"{where}: {column} not found: {path}")
            paths.append(path)
        series_uid = _cell(row, "series_uid")
        dicom = privacy.DicomMetadata(None, None, None, None, None, None, None)
        unread = False  # the series could not be chosen: its metadata is unknown, not absent
        if paths[0] is not None and paths[0].is_dir():
            try:  # the series read_volume will import: the only one, or the one series_uid names
                dicom = privacy.dicom_metadata(paths[0], secret, series_uid=series_uid)
            except VolumeError as exc:
                problems.append(f"{where}: {exc}")
                unread = True
                unknown.append(i)
        elif series_uid is not None and paths[0] is not None and paths[0].exists():
            problems.append(f"{where}: series_uid {series_uid} is given but {paths[0]} is not a DICOM folder")
        case_id = _cell(row, "case_id")
        if case_id is None:
            counter += 1
            while f"case_{counter:04d}" in given_ids:
                counter += 1
            case_id = f"case_{counter:04d}"
        patient_id = (
            _cell(row, "patient_id") or dicom.patient_pseudonym or "pat_" + case_id.removeprefix("case_")
        )
        if _cell(row, "institution_id"):
            institution = _cell(row, "institution_id")
        elif _cell(row, "institution"):
            institution = privacy.pseudonymise(_cell(row, "institution"), secret, "INST")
        elif dicom.institution_pseudonym:
            institution = dicom.institution_pseudonym
        else:
            institution = None
            if not unread:
                problems.append(
                    f"{where}: no institution (add an 'institution' or 'institution_id' column; "
                    "the scan carries no InstitutionName)"
                )
        split = _cell(row, "split")
        rows.append({
            "case_id": case_id,
            "patient_id": patient_id,
            "institution_id": institution,
            "split": split,
            "sex": (_cell(row, "sex") or dicom.sex),
            "age": _number(_cell(row, "age"), dicom.age),
            "histology": _cell(row, "histology"),
            "tumour_volume_ml": np.nan,
            "contrast": _cell(row, "contrast"),
            "slice_thickness_mm": _number(_cell(row, "slice_thickness_mm"), dicom.slice_thickness_mm),
            # the CSV's vendor named as a DICOM Manufacturer is ("SIEMENS", "Siemens Healthineers" -> Siemens):
            # one vendor never becomes several sub-group levels; others are kept as written
            "vendor": privacy.vendor_name(_cell(row, "vendor")) or dicom.vendor,
            "image": image_relpath(case_id, split) if split in ("train", "tune", "test") else None,
            "label": label_relpath(case_id, split) if split in ("train", "tune", "test") else None,
        })  # fmt: skip
        sources.append((*paths, series_uid, _cell(row, "label_segment")))
    # one scan is one case: the same source image (file, or DICOM folder and series) in two rows would be one
    # patient counted twice, possibly in two splits
    seen: dict[tuple[str, str | None], str] = {}
    for i, (image_path, _, series_uid, _) in zip(meta.index, sources, strict=True):
        if image_path is None or not image_path.exists():
            continue
        key = (os.path.realpath(image_path), series_uid)
        where = f"row {int(i) + 2}"
        if key in seen:
            problems.append(f"{where}: the same image as {seen[key]} ({image_path}): one scan is one case")
        else:
            seen[key] = where
    table = pd.DataFrame(rows, columns=list(CASE_COLUMNS), index=meta.index)
    problems += _institution_leaks(table)
    # image/label problems of the table itself are consequences of the rows above (empty split); rows whose
    # DICOM series could not be chosen are left out (what the series would fill in is unknown, not missing)
    checked = table.drop(index=unknown)
    problems += [
        p for p in (validate_cases(checked, None, check_files=False) if len(checked) else [])
        if not p.startswith(("empty image", "empty label", "the same image", "the same label",
                             "leakage: test-split institution",  # said above, with the CSV's rows
                             *(f"unknown {c} " for c in mapped_problems)))
    ]  # fmt: skip
    if problems:
        raise CaseTableError(str(metadata_csv), problems)
    return table, sources


def _institution_leaks(table: pd.DataFrame) -> list[str]:
    """A test-split institution that also has train/tune rows (:func:`amt_core.data.cases.leakage_problems`'s
    computation), named by the metadata CSV's rows (its pseudonym appears nowhere in the CSV; the name as
    written is not repeated into a message)."""
    from amt_core.data.cases import _leaks

    problems = []
    split = table["split"].astype(str)
    for inst in _leaks(table)[2]:
        rows = table.index[table["institution_id"] == inst]
        test = [f"{int(i) + 2}" for i in rows if split.loc[i] == "test"]
        other = [f"{int(i) + 2} ({split.loc[i]})" for i in rows if split.loc[i] in ("train", "tune")]
        problems.append(
            f"leakage: the institution of test row(s) {', '.join(test)} ({inst}) also has row(s) "
            f"{', '.join(other)}: the external test must come from institutions seen in no other split"
        )
    return problems


def _number(value, fallback):
    if value is None:
        return np.nan if fallback is None else float(fallback)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value  # left for validate_cases to report


def _convert(table: pd.DataFrame, sources, root: Path, binarise_labels: bool, metadata_csv: Path) -> None:
    from amt_core.data.masks import read_mask
    from amt_core.data.volume import check_ct, read_volume, write_volume

    problems: list[str] = []
    n = len(table)
    for k, (i, row) in enumerate(table.iterrows(), start=1):
        image_src, label_src, series_uid, segment = sources[k - 1]
        try:
            image = read_volume(image_src, series_uid=series_uid)
        except VolumeError as exc:
            problems.append(f"case {row['case_id']}: {exc}")
            continue
        case_problems = []
        try:
            check_ct(image)  # the check `amt predict` makes, here at the door
        except VolumeError as exc:
            case_problems.append(exc)
        try:
            label = read_mask(
                label_src, image, segment=segment, series_uid=series_uid, binarise=binarise_labels
            )
        except VolumeError as exc:
            case_problems.append(exc)
        if case_problems:
            problems += [f"case {row['case_id']}: {exc}" for exc in case_problems]
            continue
        mask = (label.array > 0).astype(np.uint8)
        voxel_ml = float(np.prod(image.spacing)) / 1000.0
        table.at[i, "tumour_volume_ml"] = round(float(mask.sum()) * voxel_ml, 3)
        if pd.isna(table.at[i, "slice_thickness_mm"]):
            table.at[i, "slice_thickness_mm"] = round(image.spacing[2], 4)
        write_volume(_compact(image.array), image.affine, root / row["image"])
        write_volume(mask, image.affine, root / row["label"])
        log.info("%s: converted (%d/%d)", row["case_id"], k, n)
    if problems:
        raise CaseTableError(str(metadata_csv), problems)


def _compact(array: np.ndarray) -> np.ndarray:
    """int16 when the HU values are whole numbers in range (as CT almost always is), else float32."""
    with contextlib.suppress(ValueError):
        if (
            array.size
            and array.min() >= -32768
            and array.max() <= 32767
            and np.array_equal(array, np.round(array))
        ):
            return array.astype(np.int16)
    return array.astype(np.float32)


def _write_provenance(root: Path, tables: dict[str, Path], **config) -> None:
    """provenance.json without the command line or input paths (source paths may name patients): the
    SHA-256 of the metadata CSV and the mapping, keyed by their role; the cohort's own images and labels are
    hashed by every `amt run` that reads them (``.steps/``)."""
    from amt_core.atomic import file_hash, write_json
    from amt_core.provenance import provenance

    record = provenance({"step": "import", **config})
    record["command"] = ["amt", "import", "(source paths withheld)"]
    record["input_hashes"] = {role: file_hash(path) for role, path in tables.items()}
    write_json(root / "provenance.json", record)
