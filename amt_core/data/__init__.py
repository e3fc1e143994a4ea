"""Data layer: volume readers/writers (RAS+), the case table and its checks, cohort folders, import.

Submodules: ``volume`` (read_volume, read_label, write_volume), ``cases`` (read_cases, validate_cases),
``cohort`` (nnU-Net v2 raw layout), ``importer`` (import_cohort), ``privacy`` (DICOM de-identification).
Nothing heavy is imported here.
"""
