"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/realdata beside the repository (real CT volumes and DICOM series, see its SOURCES.md)
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Path to ../shared/realdata; the test is skipped when it is absent."""
    if not (REALDATA / "SOURCES.md").is_file():
        pytest.skip(f"real CT data not found at {REALDATA}")
    return REALDATA
