"""Atomic writes and the output-folder policy.

Files: write to a temporary file beside the target, then rename; a failed write leaves neither a partial
file nor a damaged older version behind. Temporary names carry the writer's process id
(``.{name}.{pid}.{random}.tmp{suffix}``), so a writer killed mid-write leaves a file that
:func:`remove_stale_temps` recognises and removes later.

Folders (one policy for every command that writes a folder, docs/architecture.md): an existing non-empty
output folder is refused unless the user says ``overwrite`` (the new folder is built beside it and swapped
in only when complete: :func:`replacing_dir`) or ``resume`` (continue it, only when everything that shaped
the result is the same; each command checks that itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target`` atomically.

    ``suffix`` defaults to the target's full suffix (``.nii.gz`` stays ``.nii.gz``) so that writers
    that choose a format by extension still work. On any exception the temporary file is removed and
    the target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with contextlib.suppress(FileNotFoundError):
            if tmp_path.stat().st_mode & 0o777 == 0o600:  # mkstemp's owner-only mode: the umask's instead
                os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _proc_umask() -> int | None:
    """The process umask from /proc/self/status (reading it never changes it), or None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _set_and_restore_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: without /proc the umask is read once, at import (setting it and back; before any thread of ours writes)
_found = _proc_umask()
_UMASK_AT_IMPORT: int = _found if _found is not None else _set_and_restore_umask()


def _umask() -> int:
    """The umask, never set after import: concurrent writers cannot race on it."""
    mask = _proc_umask()
    return _UMASK_AT_IMPORT if mask is None else mask


#: a temporary file of :func:`atomic_path` or a staging folder of :func:`replacing_dir`: (name, pid)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.(?:tmp|staging|old)(?:\..*)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(
    folder: str | os.PathLike, recursive: bool = False, min_age_s: float = 0.0, of: str | None = None
) -> list[Path]:
    """Remove the temporary files and staging folders that a killed writer left in ``folder`` (those whose
    writer process no longer runs); returns what was removed. Files of live writers are left alone, and
    with ``min_age_s`` those modified more recently (a folder shared between machines or containers,
    whose writers' process ids this one cannot see). ``of``: only the temporaries of the file or folder of
    that name (``.NAME.<pid>.*``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    found = folder.rglob(".*") if recursive else folder.glob(".*")
    now = time.time()
    for path in sorted(found):
        m = _TEMP_NAME.match(path.name)
        if not m or _alive(int(m["pid"])) or (of is not None and m["name"] != of):
            continue
        if min_age_s > 0:
            try:
                if now - path.lstat().st_mtime < min_age_s:
                    continue
            except FileNotFoundError:
                continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


class OutputExistsError(ValueError):
    """An output folder that already holds files, without ``--overwrite`` or ``--resume``."""


def is_nonempty_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.iterdir())


def check_output_dir(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    what: str = "output folder",
    resumable: bool = True,
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Refuse an existing non-empty ``path`` unless ``overwrite`` or ``resume`` is set (the one policy of
    every command that writes a folder). A file where a folder is wanted is always an error, and so is an
    output folder that is, or holds, one of the command's ``inputs`` (replacing it would delete what the
    command reads: ``amt train --cohort C/cases.csv --out C --overwrite``)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"{p}: is a file, not a folder; choose another {what}")
    refuse_holding_inputs(p, inputs, what)
    if overwrite and resume:
        raise OutputExistsError(f"{p}: --overwrite and --resume exclude each other; choose one")
    if is_nonempty_dir(p) and not (overwrite or resume):
        how = "--overwrite to replace it" + (" or --resume to continue it" if resumable else "")
        raise OutputExistsError(f"{p}: {what} exists and is not empty; pass {how}, or choose an empty folder")
    return p


def refuse_holding_inputs(path: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str) -> None:
    """An :class:`OutputExistsError` when the folder ``path`` is, or holds, one of ``inputs``."""
    out = Path(path).resolve()
    for given in inputs:
        if Path(given).resolve().is_relative_to(out):
            raise OutputExistsError(
                f"{path}: the {what} would hold {given}, an input of this command (replacing the folder "
                "would delete it); choose another folder"
            )


def adopt_dead_staging(target: str | os.PathLike, holding: str) -> bool:
    """Make the newest staging folder that a killed writer of ``target`` left beside it (``replacing_dir``'s
    ``.NAME.<pid>.*.staging`` whose process no longer runs, holding the file ``holding``) the folder
    ``target`` (missing or empty), with the umask's mode, so that its work can be resumed; True if one was."""
    target = Path(target)
    if not target.parent.is_dir() or is_nonempty_dir(target):
        return False
    found = []
    for path in target.parent.glob(f".{target.name}.*.staging"):
        m = _TEMP_NAME.match(path.name)
        if m and m["name"] == target.name and (path / holding).is_file() and not _alive(int(m["pid"])):
            found.append(path)
    if not found:
        return False
    if target.exists():
        target.rmdir()
    os.replace(max(found, key=lambda p: p.stat().st_mtime_ns), target)
    os.chmod(target, 0o777 & ~_umask())
    return True


@contextlib.contextmanager
def replacing_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder beside ``target``; when the block succeeds it takes ``target``'s place (the
    old folder, if any, is moved aside first and then deleted). On any exception the staging folder is
    removed and ``target`` is left exactly as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".staging", dir=target.parent)
    )
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's owner-only mode: the umask's, as a mkdir would
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.{os.getpid()}.{staging.name.split('.')[-2]}.old"
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_bytes(target: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    """``data`` as the file ``target`` (permissions ``mode``), atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
    return Path(target)


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as sorted, indented JSON (:func:`json_ready` first: NaN is written as null, never as the
    invalid token NaN), atomically."""
    return write_text(target, json.dumps(json_ready(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_csv(target: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index)."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(target)


def json_ready(obj: Any) -> Any:
    """``obj`` with what JSON cannot hold replaced: NaN and infinities -> None, numpy scalars and arrays ->
    Python numbers and lists, tuples -> lists, paths -> strings, mapping keys -> strings. Anything else
    that is not JSON is left for ``json.dumps`` to refuse."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (the one file hash of the package: provenance, caches, locks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
