"""``amt validate`` and ``amt import``: parse arguments, call the data API, print the outcome."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check a case table (columns, values, duplicate ids, leakage, files) and print every problem",
    )
    p.add_argument("cases", metavar="CASES.csv", help="the case table (e.g. COHORT/cases.csv)")
    p.add_argument("--no-files", action="store_true", help="do not check that image and label files exist")
    p.set_defaults(func=_validate)

    p = subparsers.add_parser(
        "import",
        help="build a cohort folder from NIfTI/NRRD files or DICOM series plus a metadata CSV",
        description="Identifying DICOM tags are never copied; institutions become INST-xxxxxxxx pseudonyms "
        "(keyed hash; set AMT_PSEUDONYM_KEY to keep them stable across imports).",
    )
    p.add_argument("--source", required=True, help="folder holding the scans and masks")
    p.add_argument("--metadata", required=True, help="CSV: image, label, split, institution[, ...] per scan")
    p.add_argument("--out", required=True, help="cohort folder to create")
    p.add_argument("--binarise-labels", action="store_true", help="turn every non-zero mask value into 1")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out folder")
    p.set_defaults(func=_import)


def _validate(args: argparse.Namespace) -> int:
    import sys

    from amt_core.data.cases import CaseTableError, read_cases

    try:
        df = read_cases(args.cases, check_files=not args.no_files)
    except CaseTableError as exc:
        print(exc, file=sys.stderr)
        return 2
    counts = df["split"].value_counts()
    splits = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("train", "tune", "test"))
    print(
        f"OK: {len(df)} cases ({splits}), {df['patient_id'].nunique()} patients, "
        f"{df['institution_id'].nunique()} institutions; no leakage"
        + ("" if args.no_files else "; all files present")
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from amt_core.data.importer import import_cohort

    try:
        df = import_cohort(args.source, args.metadata, args.out, binarise_labels=args.binarise_labels,
                           overwrite=args.overwrite)  # fmt: skip
    except FileExistsError as exc:  # a user error: one line, exit 2 (amt_core.cli catches ValueError)
        raise ValueError(str(exc)) from exc
    print(f"OK: imported {len(df)} cases into {args.out} ({df['institution_id'].nunique()} institutions)")
    return 0
