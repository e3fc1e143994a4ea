"""The case table: the single description of a cohort, and every check it must pass.

Columns (``amt_core.registry.CASE_COLUMNS``): ``case_id, patient_id, institution_id, split, sex, age,
histology, tumour_volume_ml, contrast, slice_thickness_mm, vendor, image, label``; ``image`` and ``label``
are paths relative to the table's folder (absolute paths are accepted too). Extra columns are kept.

Reading a table validates it and fails with one :class:`CaseTableError` that lists every problem, so a
user fixes them all in one pass. Leakage is a problem like any other: a patient in two splits, or an
institution of the test split that also appears in train/tune (the study's external test is
institution-disjoint).
"""

from __future__ import annotations

import lzma
import os
import re
import zipfile
import zlib
from pathlib import Path

import pandas as pd

from amt_core.registry import CASE_COLUMNS, CONTRASTS, HISTOLOGIES, SEXES, SPLITS, TRAINING_SPLITS

#: columns read as text (ids such as "007" must not become the number 7)
TEXT_COLUMNS: tuple[str, ...] = (
    "case_id", "patient_id", "institution_id", "split", "sex", "histology", "contrast", "vendor",
    "image", "label",
)  # fmt: skip
NUMERIC_COLUMNS: tuple[str, ...] = ("age", "tumour_volume_ml", "slice_thickness_mm")
#: columns that may not be empty (sex, age and the acquisition may be unknown, e.g. in an anonymised export:
#: Table 1 and the flow figure count them as not stated, the sub-group analyses as the "unknown" level)
REQUIRED_VALUES: tuple[str, ...] = (
    "case_id",
    "patient_id",
    "institution_id",
    "split",
    "image",
    "label",
)
#: ids become file names (nnU-Net ``{case_id}_0000.nii.gz``): keep them to safe characters
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CaseTableError(ValueError):
    """A case table with problems; the message lists every one of them (one line when there is one)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(f"{source}: {self.problems[0]}")
            return
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the case table:\n{lines}")


def read_cases(csv: str | os.PathLike, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a case table; ``image`` and ``label`` come back as absolute path strings.

    Raises :class:`CaseTableError` listing every problem (missing columns, bad values, duplicate ids,
    leakage between splits, and, with ``check_files``, files that do not exist).
    """
    csv = Path(csv)
    if not csv.is_file():
        raise CaseTableError(str(csv), ["no such file (give the path of the cohort's cases.csv)"])
    try:
        df = pd.read_csv(csv, dtype={c: str for c in TEXT_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CaseTableError(str(csv), [f"not a readable CSV file: {_one_line(exc)}"]) from exc
    except (
        OSError,
        EOFError,
        zlib.error,
        lzma.LZMAError,
        zipfile.BadZipFile,
    ) as exc:  # damaged .gz/.bz2/.xz/.zip
        problem = f"cannot read the file (corrupt or truncated?): {_one_line(exc)}"
        raise CaseTableError(str(csv), [problem]) from exc
    df = _normalise(df)
    base = csv.resolve().parent
    problems = validate_cases(df, base, check_files=check_files)
    if problems:
        raise CaseTableError(str(csv), problems)
    for column in ("image", "label"):
        df[column] = [str(_resolve(base, p)) for p in df[column]]
    return df


def validate_cases(
    df: pd.DataFrame, base_dir: str | os.PathLike | None, check_files: bool = True
) -> list[str]:
    """Every problem of a case table, as readable sentences (empty list: the table is valid).

    ``base_dir`` is the folder relative paths are resolved against; with ``base_dir=None`` or
    ``check_files=False`` the files are not looked for.
    """
    df = _normalise(df.copy())
    problems: list[str] = []
    missing = [c for c in CASE_COLUMNS if c not in df.columns]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)} (expected: {', '.join(CASE_COLUMNS)})")
    if len(df) == 0:
        problems.append("the table has no cases")
        return problems

    def rows(mask) -> str:  # 1-based data row numbers as in a spreadsheet (header is row 1)
        idx = [int(i) + 2 for i in df.index[mask]]
        shown = ", ".join(map(str, idx[:10]))
        return (
            f"row {shown}"
            if len(idx) == 1
            else f"rows {shown}" + (f" and {len(idx) - 10} more" if len(idx) > 10 else "")
        )

    for column in REQUIRED_VALUES:
        if column in df.columns:
            empty = df[column].isna()
            if empty.any():
                problems.append(f"empty {column} in {rows(empty)}")

    for column in ("case_id", "patient_id", "institution_id"):
        if column in df.columns:
            bad = pd.Series(
                [isinstance(v, str) and not ID_PATTERN.match(v) for v in df[column]], index=df.index
            )
            if bad.any():
                values = sorted(set(df.loc[bad, column].astype(str)))[:10]
                problems.append(
                    f"{column} with characters other than letters, digits, '.', '_' or '-' (they become "
                    f"file names): {values} in {rows(bad)}"
                )

    for column, allowed in (
        ("split", SPLITS),
        ("sex", SEXES),
        ("histology", HISTOLOGIES),
        ("contrast", CONTRASTS),
    ):
        if column in df.columns:
            bad = df[column].notna() & ~df[column].isin(allowed)
            if bad.any():
                values = sorted(set(df.loc[bad, column].astype(str)))
                problems.append(f"unknown {column} {values} in {rows(bad)} (allowed: {', '.join(allowed)})")

    for column in NUMERIC_COLUMNS:
        if column in df.columns:
            numbers = pd.to_numeric(df[column], errors="coerce")
            not_numeric = df[column].notna() & numbers.isna()
            if not_numeric.any():
                values = sorted(set(df.loc[not_numeric, column].astype(str)))[:10]
                problems.append(f"{column} is not a number: {values} in {rows(not_numeric)}")
            low = 0 if column != "slice_thickness_mm" else 1e-9
            high = {"age": 120}.get(column, float("inf"))
            out = numbers.notna() & ((numbers < low) | (numbers > high))
            if out.any():
                problems.append(f"{column} out of range [{low:g}, {high:g}] in {rows(out)}")

    if "case_id" in df.columns:
        dup = df["case_id"].notna() & df["case_id"].duplicated(keep=False)
        if dup.any():
            problems.append(f"duplicate case_id {sorted(set(df.loc[dup, 'case_id']))[:20]} in {rows(dup)}")
    if "patient_id" in df.columns:
        dup = df["patient_id"].notna() & df["patient_id"].duplicated(keep=False)
        if dup.any():
            problems.append(
                f"duplicate patient_id {sorted(set(df.loc[dup, 'patient_id']))[:20]} in {rows(dup)} "
                "(one scan per patient)"
            )
    for column in ("image", "label"):
        if column in df.columns:
            dup = df[column].notna() & df[column].duplicated(keep=False)
            if dup.any():
                problems.append(f"the same {column} file is used by several cases in {rows(dup)}")

    problems += leakage_problems(df)

    if check_files and base_dir is not None:
        base = Path(base_dir)
        for column in ("image", "label"):
            if column not in df.columns:
                continue
            missing_files = [
                (i, p)
                for i, p in df[column].items()
                if isinstance(p, str) and p.strip() and not _exists(base, p)
            ]
            for i, p in missing_files:
                case = df.at[i, "case_id"] if "case_id" in df.columns else "?"
                problems.append(
                    f"{column} file not found for case {case} (row {int(i) + 2}): {_resolve(base, p)}"
                )
    return problems


def leakage_evidence(df: pd.DataFrame) -> dict[str, int]:
    """The leakage guard's evidence, as 01_cohort shows it: the number of test-split institutions, how many
    of them also appear in train/tune, and the number of patients in more than one split (the two last are 0
    for a table that :func:`read_cases` accepts; the same computation as its leakage check)."""
    patients, test, shared = _leaks(df)
    return {
        "test institutions": len(test),
        "of them also in train/tune": len(shared),
        "patients in more than one split": len(patients),
    }


def leakage_problems(df: pd.DataFrame) -> list[str]:
    """The leakage problems of a case table: each patient in several splits, and the test-split
    institutions that also appear in train/tune (the external test must be institution-disjoint)."""
    patients, _, shared = _leaks(df)
    problems = [
        f"leakage: patient {patient} is in several splits ({', '.join(where)})"
        for patient, where in patients.items()
    ]
    if shared:
        problems.append(
            f"leakage: test-split institution(s) {shared} also appear in train/tune (the external test "
            "must be institution-disjoint)"
        )
    return problems


def _leaks(df: pd.DataFrame) -> tuple[dict[str, list[str]], set[str], list[str]]:
    """(patient -> its splits, for patients in several; the test-split institutions; those of them also in
    train/tune, sorted). Columns that are missing give nothing."""
    patients: dict[str, list[str]] = {}
    test: set[str] = set()
    shared: list[str] = []
    if "split" not in df.columns:
        return patients, test, shared
    if "patient_id" in df.columns:
        splits = (
            df.dropna(subset=["patient_id", "split"])
            .groupby("patient_id")["split"]
            .agg(lambda s: sorted(set(s)))
        )
        patients = {str(p): where for p, where in splits[splits.map(len) > 1].items()}
    if "institution_id" in df.columns:
        test = set(df.loc[df["split"] == "test", "institution_id"].dropna())
        training = set(df.loc[df["split"].isin(TRAINING_SPLITS), "institution_id"].dropna())
        shared = sorted(test & training)
    return patients, test, shared


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Strip surrounding blanks from text cells; empty strings become missing."""
    for column in TEXT_COLUMNS:
        if column in df.columns:
            df[column] = [_clean_text(v) for v in df[column]]
    return df


def _clean_text(value):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _resolve(base: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else (base / path)


def _exists(base: Path, p: str) -> bool:
    path = _resolve(base, p)
    return path.is_file() or path.is_dir()  # a DICOM series is a folder


def volume_problems(df: pd.DataFrame, progress: bool = False) -> list[str]:
    """Read every image and label of a (validated) case table in full: the problems found, one per case
    (a damaged or truncated file, a gzip stream failing its CRC check, an image that is not CT in HU, a
    label that is not a binary mask on its image's grid). Empty when every volume is usable."""
    from tqdm.auto import tqdm

    from amt_core.data.volume import VolumeError, check_ct, read_label, read_volume

    problems = []
    for row in tqdm(list(df.itertuples()), desc="read volumes", unit="case", disable=not progress):
        try:
            image = read_volume(row.image)
            check_ct(image)
            read_label(row.label, image)
        except VolumeError as exc:
            problems.append(f"case {row.case_id}: {exc}")
    return problems
