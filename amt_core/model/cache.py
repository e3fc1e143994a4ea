"""The preprocessed-case cache: epochs after the first never decode NIfTI or resample again.

Each case is stored as ``{case_id}-{key}.npy`` (image, int16 HU), ``{case_id}-{key}_label.npy`` (uint8)
and ``{case_id}-{key}.json`` (geometry, foreground voxel indices' file, tumour box). ``key`` hashes the
SHA-256 of the image and label files, the preprocessing settings that shape the arrays and a format
version, so a changed file or a changed setting never reuses a stale array. Input hashes are remembered
per (path, size, mtime) so an unchanged file is not read again just to hash it. Every file is written
atomically; the JSON is written last and marks a complete entry.

Housekeeping: every lookup marks its entry as used (the JSON's modification time), and
:func:`prune_cache` removes whole entries, least recently used first, down to a size cap or past an age;
an entry used in the last ``KEEP_RECENT_S`` seconds (or by the calling run) is never removed (another run
may be reading it), and a file whose name is not an entry's is never touched. Training applies the cap of ``AMT_CACHE_MAX_GB``
(default ``DEFAULT_MAX_GB``; ``off`` for none) after it has built its cases (:func:`auto_prune`);
``amt cache info`` and ``amt cache prune`` show and prune by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from amt_core.atomic import atomic_path, file_hash, remove_stale_temps, write_json
from amt_core.model.presets import ModelConfig

CACHE_VERSION = 1
_INDEX_LOCK = threading.Lock()
#: the size cap (GiB) training applies to the cache (``AMT_CACHE_MAX_GB`` overrides it; ``off``: no cap)
DEFAULT_MAX_GB = 20.0
#: an entry used (or written) less than this many seconds ago is never removed: a run may be reading it
KEEP_RECENT_S = 6 * 3600.0
#: the files of one entry ``{case_id}-{key}``: the JSON (written last: the entry is complete) and the arrays
_ENTRY_FILE = re.compile(r"^(?P<base>.+-[0-9a-f]{20})(?P<suffix>\.json|_label\.npy|_fg\.npy|\.npy)$")


@dataclass(frozen=True)
class CachedCase:
    case_id: str
    image_path: Path
    label_path: Path
    meta: dict

    def image(self, mmap: bool = True) -> np.ndarray:
        return np.load(self.image_path, mmap_mode="r" if mmap else None)

    def label(self, mmap: bool = True) -> np.ndarray:
        return np.load(self.label_path, mmap_mode="r" if mmap else None)

    def fg_indices(self) -> np.ndarray:
        return np.load(self.image_path.with_name(self.image_path.stem + "_fg.npy"))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["shape"])


class HashIndex:
    """SHA-256 of input files, remembered per (absolute path, size, mtime_ns) in ``hashes.json``."""

    def __init__(self, root: Path):
        self.path = Path(root) / "hashes.json"
        try:
            self.table = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.table = {}
        self.dirty = False

    def sha(self, file: str | Path) -> str:
        p = Path(file).resolve()
        st = p.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        hit = self.table.get(str(p))
        if hit and hit[0] == stamp:
            return hit[1]
        digest = file_hash(p)
        with _INDEX_LOCK:
            self.table[str(p)] = [stamp, digest]
            self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            with _INDEX_LOCK:
                write_json(self.path, self.table)
                self.dirty = False


def cache_key(image_sha: str, label_sha: str | None, cfg: ModelConfig, spacing) -> str:
    settings = dict(cfg.preprocessing_key, target_spacing=[float(s) for s in spacing], version=CACHE_VERSION)
    blob = json.dumps({"image": image_sha, "label": label_sha, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class CaseCache:
    """Preprocessed training/tuning cases on disk under ``root`` for one config and target spacing."""

    def __init__(self, root: str | Path, cfg: ModelConfig, spacing):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.spacing = tuple(float(s) for s in spacing)
        self.hashes = HashIndex(self.root)

    def key(self, image: str | Path, label: str | Path) -> str:
        return cache_key(self.hashes.sha(image), self.hashes.sha(label), self.cfg, self.spacing)

    def lookup(self, case_id: str, image: str | Path, label: str | Path) -> CachedCase | None:
        key = self.key(image, label)
        base = self.root / f"{case_id}-{key}"
        meta_path = base.with_name(base.name + ".json")
        arrays = [base.with_name(base.name + s) for s in (".npy", "_label.npy", "_fg.npy")]
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            return None
        if not all(p.is_file() for p in arrays):  # pruned meanwhile: built again
            return None
        _mark(meta_path)
        return CachedCase(case_id, arrays[0], arrays[1], meta)

    def get(self, case_id: str, image: str | Path, label: str | Path) -> CachedCase:
        """The cached case, preprocessing it first when no entry matches the files and settings."""
        hit = self.lookup(case_id, image, label)
        if hit is None:
            hit = _build(
                self.root, self.cfg.to_dict(), self.spacing, case_id, image, label, self.key(image, label)
            )
        return hit

    def build_all(self, rows, progress: bool = False, workers: int = 1) -> list[CachedCase]:
        """Cache every (case_id, image, label) row (``workers`` threads); cached rows are only looked up."""
        from amt_core.progress import Progress

        rows = list(rows)
        found = [self.lookup(*row) for row in rows]
        self.hashes.save()
        todo = [(i, row) for i, (row, hit) in enumerate(zip(rows, found, strict=True)) if hit is None]
        args = [
            (self.root, self.cfg.to_dict(), self.spacing, *row, self.key(row[1], row[2])) for _, row in todo
        ]
        # scans done: to `amt run`'s progress file when it follows one, else a tqdm bar
        bar = Progress("preprocess", len(todo), unit="scan", bar=True, enabled=progress and bool(todo))
        if workers > 1 and len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor

            # threads, not processes: decoding (zlib) and resampling (torch) release the GIL, and a process
            # pool would re-import the caller's __main__
            with ThreadPoolExecutor(workers) as pool:
                for (i, _), case in zip(todo, pool.map(_build, *zip(*args, strict=True)), strict=True):
                    found[i] = case
                    bar.update()
        else:
            for (i, _), a in zip(todo, args, strict=True):
                found[i] = _build(*a)
                bar.update()
        bar.close()
        return cast("list[CachedCase]", found)  # every case found or built


def _build(root: Path, cfg_dict: dict, spacing, case_id: str, image, label, key: str) -> CachedCase:
    """Preprocess one case into the cache."""
    from amt_core.data.volume import read_label, read_volume
    from amt_core.model.preprocessing import preprocess

    root = Path(root)
    vol = read_volume(image)
    lab = read_label(label, vol)
    pre = preprocess(vol, ModelConfig.from_dict(cfg_dict), label=lab, spacing=spacing)
    image_t, label_t = cast(Any, pre.image), cast(Any, pre.label)  # MetaTensors (1, X, Y, Z)
    img = np.asarray(image_t[0].numpy()).round().clip(-32768, 32767).astype(np.int16)
    seg = np.asarray(label_t[0].numpy(), dtype=np.uint8)
    fg = np.flatnonzero(seg.ravel() > 0).astype(np.int64)
    base = root / f"{case_id}-{key}"
    for suffix, arr in ((".npy", img), ("_label.npy", seg), ("_fg.npy", fg)):
        target = base.with_name(base.name + suffix)
        with atomic_path(target, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    if fg.size:
        coords = np.stack(np.unravel_index(fg, seg.shape))
        box = [[int(c.min()), int(c.max()) + 1] for c in coords]
        rng = np.random.default_rng(0)
        fg_values = img.ravel()[rng.choice(fg, size=min(fg.size, 2000), replace=False)]
    else:
        box, fg_values = None, np.zeros(0)
    meta = {
        "case_id": case_id,
        "image": str(image),
        "label": str(label),
        "key": key,
        "shape": list(img.shape),
        "spacing": [float(s) for s in spacing],
        "source_spacing": list(vol.spacing),
        "source_shape": list(vol.shape),
        "body_start": list(pre.body_start),
        "body_end": list(pre.body_end),
        "tumour_box": box,
        "n_fg": int(fg.size),
        "fg_values": [float(v) for v in fg_values],
    }
    write_json(base.with_name(base.name + ".json"), meta)
    return CachedCase(
        case_id, base.with_name(base.name + ".npy"), base.with_name(base.name + "_label.npy"), meta
    )


def mark_used(cases) -> None:
    """Mark cached cases as used now: a run longer than ``KEEP_RECENT_S`` calls this every epoch, so that
    another run's pruning never removes the cases it still reads."""
    for case in cases:
        _mark(case.image_path.with_suffix(".json"))


def _mark(meta_path: Path) -> None:
    """An entry's JSON stamped with the time: used now, the last to go when the cache is pruned."""
    with contextlib.suppress(OSError):  # a read-only cache: the caller's ``keep`` protects its entries
        os.utime(meta_path)


def default_cache_dir() -> Path:
    return Path(os.environ.get("AMT_CACHE", Path.home() / ".cache" / "amt" / "preprocessed"))


# --- housekeeping -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheEntry:
    """One cached case on disk: its files, their size and when it was last used."""

    name: str  # "{case_id}-{key}"
    files: tuple[Path, ...]
    nbytes: int
    last_used: float  # the JSON's mtime (every lookup sets it); without a JSON, the newest file's
    complete: bool  # the JSON is there (an entry without it is a build that never finished)


@dataclass
class PruneResult:
    removed: list[CacheEntry] = field(default_factory=list)
    kept: list[CacheEntry] = field(default_factory=list)
    temp_files: int = 0  # temporary files of killed builds, removed (not counted in a dry run)
    failed: list[str] = field(default_factory=list)  # "path: reason" of each file that could not be removed
    in_use: int = 0  # kept entries that were never candidates: the caller's, or used within ``keep_recent_s``
    dry_run: bool = False

    @property
    def freed(self) -> int:
        return sum(e.nbytes for e in self.removed)

    @property
    def kept_bytes(self) -> int:
        return sum(e.nbytes for e in self.kept)


def cache_entries(root: str | os.PathLike) -> list[CacheEntry]:
    """The entries in the cache folder ``root``, least recently used first (files of other names ignored)."""
    groups: dict[str, list[tuple[Path, os.stat_result, str]]] = {}
    root = Path(root)
    if not root.is_dir():
        return []
    for p in root.iterdir():
        m = _ENTRY_FILE.match(p.name)
        if m is None or not p.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile by another process
            groups.setdefault(m["base"], []).append((p, p.stat(), m["suffix"]))
    out = []
    for name, files in groups.items():
        meta = [st for _, st, suffix in files if suffix == ".json"]
        last = meta[0].st_mtime if meta else max(st.st_mtime for _, st, _ in files)
        out.append(
            CacheEntry(
                name,
                tuple(sorted(p for p, _, _ in files)),
                sum(st.st_size for _, st, _ in files),
                last,
                bool(meta),
            )
        )
    return sorted(out, key=lambda e: (e.last_used, e.name))


def prune_cache(
    root: str | os.PathLike,
    *,
    max_bytes: float | None = None,
    older_than_s: float | None = None,
    keep: Collection[str] = (),
    keep_recent_s: float = KEEP_RECENT_S,
    dry_run: bool = False,
    now: float | None = None,
) -> PruneResult:
    """Remove whole entries of the cache ``root``: unfinished ones, those unused for ``older_than_s``
    seconds, then the least recently used until the rest holds at most ``max_bytes``. The entries named in
    ``keep`` and those used in the last ``keep_recent_s`` seconds stay whatever the cap (each is looked at
    again just before it goes: one a run has just looked up stays). Each entry's JSON goes first, so a
    lookup never finds half an entry. A file that cannot be removed is listed in ``failed`` (the rest goes
    on). ``dry_run`` only reports. Temporary files of builds killed more than ``keep_recent_s`` ago and rows
    of ``hashes.json`` whose input file is gone are removed too."""
    root = Path(root)
    now = time.time() if now is None else now
    keep = set(keep)
    result = PruneResult(dry_run=dry_run)
    entries = cache_entries(root)
    total = sum(e.nbytes for e in entries)
    doomed = []
    for e in entries:  # least recently used first
        age = now - e.last_used
        if age < keep_recent_s or e.name in keep:
            result.kept.append(e)
            result.in_use += 1
            continue
        stale = not e.complete or (older_than_s is not None and age > older_than_s)
        if stale or (max_bytes is not None and total > max_bytes):
            doomed.append(e)
            total -= e.nbytes
        else:
            result.kept.append(e)
    if dry_run:
        result.removed = doomed
        return result
    for e in doomed:
        if _used_since(e, now - keep_recent_s):  # looked up since it was listed: in use
            result.kept.append(e)
            result.in_use += 1
            continue
        result.removed.append(e)
        for p in sorted(e.files, key=lambda f: f.suffix != ".json"):  # the JSON first
            try:
                p.unlink(missing_ok=True)
            except OSError as exc:
                result.failed.append(f"{p}: {exc.strerror or exc}")
                break  # a JSON that stays keeps its arrays: the entry stays whole
    try:
        result.temp_files = len(remove_stale_temps(root, min_age_s=keep_recent_s))
        if (root / "hashes.json").is_file():
            index = HashIndex(root)
            with _INDEX_LOCK:
                gone = [k for k in index.table if not Path(k).exists()]
                for k in gone:
                    del index.table[k]
                index.dirty = bool(gone)
            index.save()
    except OSError as exc:
        result.failed.append(f"{getattr(exc, 'filename', None) or root}: {exc.strerror or exc}")
    return result


def _used_since(entry: CacheEntry, t: float) -> bool:
    try:
        return any(p.suffix == ".json" and p.stat().st_mtime >= t for p in entry.files)
    except FileNotFoundError:
        return False


def cache_cap_bytes() -> float | None:
    """The size cap (bytes) training applies: ``AMT_CACHE_MAX_GB`` in GiB (``0`` keeps only the entries in
    use) or, unset, ``DEFAULT_MAX_GB``; ``None`` when it is ``off``."""
    raw = os.environ.get("AMT_CACHE_MAX_GB", "").strip()
    if not raw:
        return DEFAULT_MAX_GB * 2**30
    if raw.lower() in ("off", "none", "no"):
        return None
    try:
        gb = float(raw)
    except ValueError:
        raise ValueError(f"AMT_CACHE_MAX_GB={raw!r}: expected a size in GiB (e.g. 20) or 'off'") from None
    if not gb >= 0:
        raise ValueError(f"AMT_CACHE_MAX_GB={raw!r}: a size cannot be negative")
    return gb * 2**30


def auto_prune(root: str | os.PathLike, keep: Collection[str] = ()) -> PruneResult | None:
    """Apply :func:`cache_cap_bytes` to the cache ``root``, never removing the entries named in ``keep``
    (the calling run's; None: no cap set, nothing done)."""
    cap = cache_cap_bytes()
    if cap is None:
        return None
    return prune_cache(root, max_bytes=cap, keep=keep)
