"""The predictions folder's manifest, ``predictions.json``: the model (checkpoint SHA-256) and settings that
wrote the folder, and per case the input scan and the SHA-256 of every file written for it; for a DICOM
series input also ``dicom_seg``: ``{"written": true}``, or ``{"written": false, "reason": ...}`` where no
DICOM-SEG could be made over the series (e.g. slices without FrameOfReferenceUID; its other files stand).

``predict`` writes it (and reads it to ``--resume``); ``amt evaluate`` checks with it that every case it
scores came from that one model, so a folder holding the predictions of two models is never scored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from amt_core.atomic import OutputExistsError, remove_stale_temps

MANIFEST = "predictions.json"
TABLE = "predictions.csv"
#: what must be equal to resume a prediction
SETTINGS = ("model_sha256", "input", "series_uid", "split", "overlap", "tta")


def case_files(case_id: str) -> tuple[str, str, str, str]:
    """The files ``predict`` may write for one case (mask, probability map, candidate table, and for a DICOM
    series input the mask as a DICOM-SEG over that series)."""
    return f"{case_id}.nii.gz", f"{case_id}_prob.nii.gz", f"{case_id}_candidates.csv", f"{case_id}_seg.dcm"


def file_digest(path: str | os.PathLike, series_uid: str | None = None) -> str:
    """SHA-256 of a file, or of a folder's files (a DICOM series: names and contents, in name order); with
    ``series_uid``, of the files of that series of the DICOM folder only (the other series' files may
    change; a slice of this one that is changed, added or removed changes the digest)."""
    from amt_core.atomic import file_hash

    p = Path(path)
    if not p.is_dir():
        return file_hash(p)
    if series_uid is not None:
        from amt_core.data.volume import select_series

        files = [Path(f) for f in select_series(p, series_uid).files]
    else:
        files = [x for x in p.rglob("*") if x.is_file()]
    h = hashlib.sha256()
    for rel in sorted(Path(os.path.relpath(f, p)) for f in files):
        h.update(f"{rel.as_posix()}\0{file_hash(p / rel)}\n".encode())
    return h.hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The folder's manifest, or None when it has none (a damaged one is an error naming it)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: damaged manifest ({exc}); predict again with --overwrite") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise ValueError(f"{path}: not a predictions manifest; predict again with --overwrite")
    return data


def _files_intact(folder: Path, record: dict) -> bool:
    files = record.get("files", {})
    return bool(files) and all(
        (folder / n).is_file() and file_digest(folder / n) == d for n, d in files.items()
    )


def resumable_cases(folder: Path, settings: dict) -> dict[str, dict]:
    """The finished cases of an interrupted prediction that ``resume`` may keep (their files intact).
    Raises :class:`OutputExistsError` when the folder was written by another model or other settings."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise OutputExistsError(
            f"{folder}: has no {MANIFEST} (not written by `amt predict`); cannot --resume "
            "it: pass --overwrite to replace it"
        )
    differ = [
        f"{k} {manifest.get(k)!r}, not {settings[k]!r}" for k in SETTINGS if manifest.get(k) != settings[k]
    ]
    if differ:
        raise OutputExistsError(
            f"{folder}: holds predictions of another model or settings ({'; '.join(differ)})"
            "; cannot --resume it: pass --overwrite to replace it"
        )
    return {c: r for c, r in manifest["cases"].items() if _files_intact(folder, r)}


def remove_strays(folder: Path, case_ids) -> None:
    """Remove every file of ``folder`` that is not the manifest, the table or a file of ``case_ids``."""
    keep = {MANIFEST, TABLE, *(n for c in case_ids for n in case_files(c))}
    for f in folder.iterdir():
        if f.is_file() and not f.name.startswith(".") and f.name not in keep:
            f.unlink()
    remove_stale_temps(folder)


def check_evaluable(folder: str | os.PathLike, case_ids) -> None:
    """Refuse to score a folder whose cases did not all come from one model: with a ``predictions.json``
    every case must be listed in it with its files unchanged; with only a ``predictions.csv`` every case
    must be listed there. A folder with neither (predictions made elsewhere) is not checked."""
    import csv

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        if not (folder / TABLE).is_file():
            return
        with open(folder / TABLE, newline="") as fh:
            listed = {row.get("case_id") for row in csv.DictReader(fh)}
        bad = [c for c in case_ids if c not in listed]
        if bad:
            raise ValueError(
                f"{folder}: {len(bad)} case(s) to evaluate are not listed in its {TABLE} (written "
                f"by something else?), e.g. {bad[0]}; predict them again into an empty folder"
            )
        return
    problems = []
    for c in case_ids:
        record = manifest["cases"].get(c)
        if record is None:
            problems.append(f"{c} is not listed in it")
            continue
        changed = [
            n
            for n, d in record.get("files", {}).items()
            if (folder / n).is_file() and file_digest(folder / n) != d
        ]
        if changed:
            problems.append(f"{changed[0]} is not the file that model wrote")
    if problems:
        raise ValueError(
            f"{folder}: {len(problems)} case(s) are not predictions of the model in its {MANIFEST} "
            f"({manifest.get('model', '?')}), e.g. {problems[0]}; predict again with --overwrite"
        )
