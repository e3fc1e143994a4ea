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
    p.add_argument(
        "--volumes",
        action="store_true",
        help="also read every image and label in full (damaged files, not CT, labels off the grid)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (with --volumes)")
    p.set_defaults(func=_validate)

    p = subparsers.add_parser(
        "import",
        help="build a cohort folder from NIfTI/NRRD files or DICOM series plus a metadata CSV",
        description="Identifying DICOM tags are never copied; institutions become INST-xxxxxxxx pseudonyms "
        "(keyed hash; set AMT_PSEUDONYM_KEY to keep them stable across imports).",
    )
    p.add_argument("--source", help="folder holding the scans and masks (required to import)")
    p.add_argument(
        "--metadata",
        required=True,
        help="CSV: image, label, split, institution[, label_segment, series_uid, ...] per scan",
    )
    p.add_argument("--out", help="cohort folder to create (required to import)")
    p.add_argument(
        "--binarise-labels", action="store_true", help="turn every non-zero NIfTI/NRRD mask value into 1"
    )
    p.add_argument(
        "--mapping",
        metavar="MAPPING.yaml",
        help="map the metadata's histology/contrast/vendor/sex values onto the study's vocabularies",
    )
    p.add_argument(
        "--suggest-mapping",
        metavar="MAPPING.yaml",
        help="only write a starting mapping from the metadata's values (edit it, then --mapping)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out folder")
    p.set_defaults(func=_import)


def _validate(args: argparse.Namespace) -> int:
    from amt_core.data.cases import CaseTableError, read_cases, volume_problems

    if args.volumes and args.no_files:
        raise ValueError("--volumes reads the files: it cannot go with --no-files")
    # a CaseTableError (a ValueError) is printed by amt_core.cli as "amt validate: error: ...", exit 2
    df = read_cases(args.cases, check_files=not args.no_files)
    if args.volumes:
        problems = volume_problems(df, progress=not args.no_progress)
        if problems:
            raise CaseTableError(str(args.cases), problems)
    counts = df["split"].value_counts()
    splits = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("train", "tune", "test"))
    files = (
        ""
        if args.no_files
        else "; all files present"
        + ("; every volume read and usable" if args.volumes else " (not read: --volumes reads them)")
    )
    print(
        f"OK: {len(df)} cases ({splits}), {df['patient_id'].nunique()} patients, "
        f"{df['institution_id'].nunique()} institutions; no leakage{files}"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from amt_core.data.importer import import_cohort

    if args.suggest_mapping:
        return _suggest_mapping(args)
    missing = [flag for flag, value in (("--source", args.source), ("--out", args.out)) if not value]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required to import (or --suggest-mapping FILE)")
    df = import_cohort(args.source, args.metadata, args.out, binarise_labels=args.binarise_labels,
                       mapping=args.mapping, overwrite=args.overwrite)  # fmt: skip
    print(f"OK: imported {len(df)} cases into {args.out} ({df['institution_id'].nunique()} institutions)")
    return 0


def _suggest_mapping(args: argparse.Namespace) -> int:
    from pathlib import Path

    from amt_core.atomic import write_text
    from amt_core.data.importer import read_metadata
    from amt_core.data.vocabulary import suggest_mapping

    target = Path(args.suggest_mapping)
    if target.exists() and not args.overwrite:
        raise ValueError(f"{target}: exists; pass --overwrite to replace it")
    text = suggest_mapping(read_metadata(args.metadata))
    write_text(target, text)
    todo = text.count("# TODO")
    print(
        f"OK: wrote {target} ({todo} value(s) left to map)"
        if todo
        else f"OK: wrote {target} (every value matched)"
    )
    return 0
