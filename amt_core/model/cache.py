"""The preprocessed-case cache: epochs after the first never decode NIfTI or resample again.

Each case is stored as ``{case_id}-{key}.npy`` (image, int16 HU), ``{case_id}-{key}_label.npy`` (uint8)
and ``{case_id}-{key}.json`` (geometry, foreground voxel indices' file, tumour box). ``key`` hashes the
SHA-256 of the image and label files, the preprocessing settings that shape the arrays and a format
version, so a changed file or a changed setting never reuses a stale array. Input hashes are remembered
per (path, size, mtime) so an unchanged file is not read again just to hash it. Every file is written
atomically; the JSON is written last and marks a complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from amt_core.atomic import atomic_path, file_hash, write_json
from amt_core.model.presets import ModelConfig

CACHE_VERSION = 1
_INDEX_LOCK = threading.Lock()


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
        meta_path = self.root / f"{case_id}-{key}.json"
        if not meta_path.is_file():
            return None
        return CachedCase(
            case_id,
            self.root / f"{case_id}-{key}.npy",
            self.root / f"{case_id}-{key}_label.npy",
            json.loads(meta_path.read_text()),
        )

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


def default_cache_dir() -> Path:
    return Path(os.environ.get("AMT_CACHE", Path.home() / ".cache" / "amt" / "preprocessed"))
