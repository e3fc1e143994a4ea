"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

#: ../shared/realdata beside the repository (real CT volumes and DICOM series, see its SOURCES.md)
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(scope="session", autouse=True)
def _private_preprocessing_cache(tmp_path_factory):
    """The session's own preprocessed-case cache (``AMT_CACHE``, inherited by the notebooks papermill runs):
    the tests never read, grow or prune the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("AMT_CACHE", str(tmp_path_factory.mktemp("amt_cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Path to ../shared/realdata; the test is skipped when it is absent."""
    if not (REALDATA / "SOURCES.md").is_file():
        pytest.skip(f"real CT data not found at {REALDATA}")
    return REALDATA


def _tiny_cases():
    """Six valid cases: 3 train + 1 tune from institutions A/B, 2 test from institution C/D."""
    import pandas as pd

    rows = [
        ("case_001", "pat_001", "INST-A", "train", "M", 45, "thymoma_AB", 30.0, "venous", 1.0, "GE"),
        ("case_002", "pat_002", "INST-A", "train", "F", 61, "thymoma_B2", 12.5, "none", 2.5, "GE"),
        (
            "case_003",
            "pat_003",
            "INST-B",
            "train",
            "F",
            38,
            "thymic_carcinoma",
            80.0,
            "arterial",
            5.0,
            "Siemens",
        ),
        ("case_004", "pat_004", "INST-B", "tune", "M", 70, "thymoma_A", 4.0, "venous", 1.25, "Siemens"),
        ("case_005", "pat_005", "INST-C", "test", "F", 55, "lymphoma", 150.0, "venous", 0.625, "Canon"),
        ("case_006", "pat_006", "INST-D", "test", "M", 29, "thymoma_B1", 20.0, "none", 3.0, "Philips"),
    ]
    columns = ["case_id", "patient_id", "institution_id", "split", "sex", "age", "histology",
               "tumour_volume_ml", "contrast", "slice_thickness_mm", "vendor"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


@pytest.fixture
def tiny_cohort(tmp_path) -> Path:
    """A valid six-case cohort folder (nnU-Net layout + cases.csv) with 12x10x8 volumes; returns its root."""
    import numpy as np

    from amt_core.data.cohort import image_relpath, label_relpath, write_cases, write_dataset_json
    from amt_core.data.volume import write_volume

    root = tmp_path / "cohort"
    df = _tiny_cases()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    rng = np.random.default_rng(0)
    images, labels = [], []
    for case, split in zip(df["case_id"], df["split"], strict=True):
        image = rng.normal(0, 50, (12, 10, 8)).astype(np.float32) - 500
        label = np.zeros((12, 10, 8), np.uint8)
        label[4:8, 3:7, 2:6] = 1
        write_volume(image, affine, root / image_relpath(case, split))
        write_volume(label, affine, root / label_relpath(case, split))
        images.append(image_relpath(case, split))
        labels.append(label_relpath(case, split))
    df["image"], df["label"] = images, labels
    write_cases(root, df)
    write_dataset_json(root, df)
    return root


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory) -> Path:
    """An untrained tiny checkpoint, ``best.pt`` (geometry and file handling do not need a trained model)."""
    import torch

    from amt_core.model.checkpoint import save_checkpoint
    from amt_core.model.network import build_network
    from amt_core.model.presets import get_config

    torch.manual_seed(0)
    cfg = get_config(
        "cpu",
        patch_size=(32, 32, 32),
        channels=(8, 16, 32),
        strides=(2, 2),
        target_spacing=(4.0, 4.0, 4.0),
        intensity_stats={"lo": -200.0, "hi": 300.0, "mean": 40.0, "std": 60.0},
        roi="body",
    )
    path = tmp_path_factory.mktemp("model") / "best.pt"
    save_checkpoint(path, model=build_network(cfg), cfg=cfg)
    return path


#: identifying values written into the synthetic DICOM of `make_dicom_series`; none may reach an output
DICOM_IDENTITY = {
    "PatientName": "Doe^Johnathan^Quincy",
    "PatientID": "MRN-99887766",
    "PatientBirthDate": "19510203",
    "AccessionNumber": "ACC5551234",
    "InstitutionName": "St Example General Hospital",
    "InstitutionAddress": "12 Privacy Lane, Springfield",
    "ReferringPhysicianName": "Welby^Marcus",
    "OperatorsName": "Tech^Tamsin",
    "StationName": "CTSTATION77",
    "StudyID": "STUDY4242",
    "DeviceSerialNumber": "SN31337",
}


def write_dicom_series(folder, hu, spacing=(0.8, 0.8, 2.5), origin=(-20.0, -30.0, 100.0), identity=None,
                       sex="F", age="067Y", manufacturer="SIEMENS", intercept=-1024.0, slope=1.0):  # fmt: skip
    """Write ``hu`` (axes x, y, z in LPS voxel order, i.e. DICOM columns, rows, slices) as an uncompressed
    CT series with pydicom; returns the folder. ``identity`` (default DICOM_IDENTITY) fills the
    identifying tags."""
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    identity = DICOM_IDENTITY if identity is None else identity
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    stored = np.round((np.asarray(hu) - intercept) / slope).astype(np.uint16)
    for k in range(stored.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.Manufacturer = manufacturer
        ds.PatientSex = sex
        ds.PatientAge = age
        ds.StudyDate = "20200131"
        for keyword, value in identity.items():
            setattr(ds, keyword, value)
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = y, columns = x
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture
def make_dicom_series():
    """The `write_dicom_series` helper (identifying tags from DICOM_IDENTITY)."""
    return write_dicom_series


@pytest.fixture
def dicom_identity() -> dict[str, str]:
    """The identifying tag values `make_dicom_series` writes by default."""
    return dict(DICOM_IDENTITY)


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Torch's intra-op threads set to ``n`` inside the block, restored after (bit-reproducible tiny runs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    with torch_threads(1):
        yield
