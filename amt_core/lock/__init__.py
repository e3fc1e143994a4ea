"""The locked environment: exact versions (with hashes) of every dependency except torch, for CPU Linux.

``linux-cpu-py311.txt`` is ``uv pip compile`` output (``make lock`` writes it): every package that
``pip install -e ".[test]"`` brings, pinned with SHA-256 hashes, compiled against ``torch==2.13.0+cpu`` so
that torch's own dependencies are pinned too. Torch itself is left out: the Makefile installs the CPU wheel
on CPU-only Linux and lets pip pick a CUDA build where a GPU is present; everything else comes from this
lock either way (``pip install --require-hashes --no-deps -r``).

:func:`lock_status` compares the installed distributions with the lock; every run's ``provenance.json``
records it, so a result says whether it ran on the locked set.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

#: the lock of this package (CPU Linux, Python 3.11)
LOCK_FILE = Path(__file__).with_name("linux-cpu-py311.txt")
#: the torch the lock was compiled against (installed by the Makefile, not by the lock)
TORCH_PIN = "2.13.0"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path = LOCK_FILE) -> dict[str, str]:
    """{canonical name: version} of every ``name==version`` line of a pip requirements lock."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[canonical(m[1])] = m[2]
    if not pins:
        raise ValueError(f"{path}: no 'name==version' line; not a requirements lock")
    return pins


def lock_digest(path: str | Path = LOCK_FILE) -> str:
    from amt_core.atomic import file_hash

    return file_hash(path)


def installed_versions() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def lock_status(path: str | Path = LOCK_FILE, installed: dict[str, str] | None = None) -> dict:
    """Whether the installed distributions are the locked ones: the lock's file name and SHA-256, the
    number of pins, ``matches`` (every pinned package installed at its pinned version) and the
    ``mismatches`` as ``name: installed != locked`` strings (``missing`` when not installed); torch is
    reported beside it (it is installed outside the lock)."""
    path = Path(path)
    if not path.is_file():
        return {"file": path.name, "sha256": None, "matches": False, "mismatches": [f"{path}: no lock file"]}
    pins = read_lock(path)
    have = installed_versions() if installed is None else {canonical(k): v for k, v in installed.items()}
    bad = [
        f"{name}: {have.get(name, 'missing')} != {version}"
        for name, version in sorted(pins.items())
        if have.get(name) != version
    ]
    return {
        "file": path.name,
        "sha256": lock_digest(path),
        "n_pinned": len(pins),
        "matches": not bad,
        "mismatches": bad,
        "torch": have.get("torch"),
        "torch_pin": TORCH_PIN,
    }


def environment_yml(pins: dict[str, str], torch_pin: str = TORCH_PIN) -> str:
    """environment.yml with the lock's exact versions (conda's pip section; hashes stay in the lock)."""
    lines = [
        "# Conda environment with the locked versions of amt_core/lock/linux-cpu-py311.txt (written by",
        "# `make lock`; a test keeps the two equal). CPU-only Linux: keep the torch pin below (a CPU build).",
        "# With a GPU, install torch from the pytorch/nvidia channels (or `pip install torch=="
        + torch_pin
        + "`)",
        "# first and keep every other pin.",
        "name: amt",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
        f"      - torch=={torch_pin}",
        *[f"      - {name}=={version}" for name, version in sorted(pins.items())],
        "      - -e .",
    ]
    return "\n".join(lines) + "\n"
