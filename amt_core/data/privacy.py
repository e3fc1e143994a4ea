"""Keep identifying DICOM information out of everything the package writes.

The rule: identifying tags (``IDENTIFYING_TAGS``) are read in one place only, :func:`dicom_metadata`,
which returns a :class:`DicomMetadata` holding non-identifying fields plus keyed-hash pseudonyms of the
patient and the institution. The raw values never leave that function, so they cannot reach a case
table, a file name, a log line or any output. One exception, on purpose: when a folder holds several
DICOM series, the error that asks which one to import lists their SeriesInstanceUIDs (the user names one
in the metadata CSV's ``series_uid`` column); the error is raised to the user, never written to an output.

Pseudonyms are HMAC-SHA256 of the normalised value under a secret key: the same institution name gives the
same ``INST-xxxxxxxx`` within an import (and across imports made with the same key), and the key is never
written anywhere, so the names cannot be recovered by hashing a list of hospital names.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

#: DICOM keywords that identify a patient, a visit, a person or a place (PS3.15 Annex E, basic profile,
#: the subset that CT series carry in practice). None of them is ever copied into an output.
IDENTIFYING_TAGS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName",
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "MedicalRecordLocator", "MilitaryRank",
    "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician", "PhysiciansOfRecord",
    "StationName", "DeviceSerialNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime",
    "SeriesTime", "AcquisitionTime", "ContentTime", "AdditionalPatientHistory", "PatientComments",
)  # fmt: skip

#: environment variable holding the pseudonymisation key (any string); without it a random key is used
KEY_ENV = "AMT_PSEUDONYM_KEY"

_VENDORS = (
    ("GE", ("GE ", "GE_", "GENERAL ELECTRIC", "GEMS")),
    ("Siemens", ("SIEMENS",)),
    ("Philips", ("PHILIPS",)),
    ("Canon", ("CANON", "TOSHIBA")),
    ("Fujifilm", ("FUJI", "HITACHI")),
)
#: HIPAA safe harbour: ages over 89 are reported as 90
MAX_AGE = 90


def pseudonym_key(key: str | bytes | None = None) -> bytes:
    """The key to use: ``key`` if given, else ``$AMT_PSEUDONYM_KEY``, else a fresh random key (then
    pseudonyms are consistent within one import only)."""
    if key is None:
        key = os.environ.get(KEY_ENV) or secrets.token_bytes(32)
    return key.encode() if isinstance(key, str) else bytes(key)


def pseudonymise(value: str, key: bytes, prefix: str = "INST", n_hex: int = 8) -> str:
    """``PREFIX-xxxxxxxx``: a keyed hash of ``value`` (case, spacing and punctuation ignored)."""
    normalised = re.sub(r"[\W_]+", " ", str(value)).strip().casefold()
    if not normalised:
        raise ValueError("cannot pseudonymise an empty value")
    digest = hmac.new(key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:n_hex]}"


@dataclass(frozen=True)
class DicomMetadata:
    """Non-identifying facts of a DICOM series, and pseudonyms instead of identities."""

    patient_pseudonym: str | None
    institution_pseudonym: str | None
    sex: str | None
    age: float | None
    vendor: str | None
    slice_thickness_mm: float | None
    contrast_agent: bool | None


def dicom_metadata(folder: str | os.PathLike, key: bytes, series_uid: str | None = None) -> DicomMetadata:
    """Read one header of the DICOM series in ``folder`` (pydicom, no pixel data) and keep only what is
    safe; patient ID and institution name come back only as keyed-hash pseudonyms.

    The series is the one :func:`amt_core.data.volume.read_volume` reads with the same ``series_uid``
    (:func:`~amt_core.data.volume.select_series`): a folder with several series and no ``series_uid`` is a
    ``VolumeError`` listing them, never metadata of one series beside the pixels of another."""
    import pydicom

    from amt_core.data.volume import dicom_series, select_series

    folder = Path(folder)
    found = dicom_series(folder)
    header = None
    for path in select_series(folder, series_uid, found).files if found else ():
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        break
    if header is None:
        return DicomMetadata(None, None, None, None, None, None, None)

    def text(keyword: str) -> str | None:
        value = header.get(keyword)
        value = str(value).strip() if value is not None else ""
        return value or None

    patient = text("PatientID")
    institution = text("InstitutionName")
    sex = text("PatientSex")
    thickness = text("SliceThickness")
    agent = text("ContrastBolusAgent")
    return DicomMetadata(
        patient_pseudonym=pseudonymise(patient, key, "PAT") if patient else None,
        institution_pseudonym=pseudonymise(institution, key, "INST") if institution else None,
        sex=sex.upper() if sex and sex.upper() in ("M", "F") else None,
        age=parse_age(text("PatientAge")),
        vendor=vendor_name(text("Manufacturer")),
        slice_thickness_mm=_float(thickness),
        contrast_agent=None if agent is None else agent.upper() not in ("NONE", "NO", "N"),
    )


def parse_age(value: str | None) -> float | None:
    """DICOM AgeString ('045Y', '006M', '010W', '003D') in years, capped at 90."""
    if not value:
        return None
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", value.upper())
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2) or "Y"
    years = number / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[unit]
    return float(min(int(years), MAX_AGE))


def vendor_name(manufacturer: str | None) -> str | None:
    """The registry's vendor name for a DICOM Manufacturer string (others are kept as written)."""
    if not manufacturer:
        return None
    upper = manufacturer.upper() + " "
    for name, needles in _VENDORS:
        if any(upper.startswith(n) or n in upper for n in needles):
            return name
    return re.sub(r"[^\w .-]", "", manufacturer).strip() or None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
