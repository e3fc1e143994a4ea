"""The preprocessed-case cache's housekeeping: whole entries go, least recently used first, down to a cap;
entries in use, unknown files and the entries a lookup just used stay; ``amt cache`` shows and prunes."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from amt_core.cli import main
from amt_core.model.cache import (
    CaseCache,
    auto_prune,
    cache_cap_bytes,
    cache_entries,
    prune_cache,
)
from amt_core.model.presets import get_config

MIB = 2**20
DAY = 86400.0
SUFFIXES = (".npy", "_label.npy", "_fg.npy", ".json")


def _entry(root: Path, case: str, mib: float, days_ago: float, complete: bool = True) -> str:
    """A cache entry of about ``mib`` MiB, last used ``days_ago`` days ago; returns its name."""
    name = f"{case}-{hashlib.sha256(case.encode()).hexdigest()[:20]}"
    then = time.time() - days_ago * DAY
    for suffix in SUFFIXES if complete else SUFFIXES[:-1]:
        p = root / f"{name}{suffix}"
        p.write_bytes(b"\0" * int(mib * MIB / 4))
        os.utime(p, (then, then))
    return name


def _names(root: Path) -> set[str]:
    return {e.name for e in cache_entries(root)}


def test_prune_removes_whole_entries_least_recently_used_first_down_to_the_cap(tmp_path):
    names = [_entry(tmp_path, f"CASE{i}", 1.0, days_ago=10 - i) for i in range(6)]  # CASE0 the oldest
    assert [e.name for e in cache_entries(tmp_path)] == names
    result = prune_cache(tmp_path, max_bytes=3.5 * MIB)
    assert [e.name for e in result.removed] == names[:3]
    assert _names(tmp_path) == set(names[3:])
    assert result.kept_bytes <= 3.5 * MIB < result.kept_bytes + 1.0 * MIB
    # nothing of a removed entry is left behind, every file of a kept one is there
    files = {p.name for p in tmp_path.iterdir()}
    assert not any(f.startswith(tuple(names[:3])) for f in files)
    assert all(f"{n}{s}" in files for n in names[3:] for s in SUFFIXES)


def test_entries_in_use_unfinished_builds_and_foreign_files_under_the_rules(tmp_path):
    fresh = _entry(tmp_path, "FRESH", 2.0, days_ago=0.01)  # used 15 minutes ago: another run may read it
    old = _entry(tmp_path, "OLD", 1.0, days_ago=40)
    unfinished = _entry(tmp_path, "HALF", 1.0, days_ago=2, complete=False)  # a build killed before its JSON
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "scan.npy").write_bytes(b"\0" * 100)  # a name no entry has
    assert {e.name: e.complete for e in cache_entries(tmp_path)} == {
        fresh: True,
        old: True,
        unfinished: False,
    }

    # no cap: only the unfinished build goes
    assert [e.name for e in prune_cache(tmp_path).removed] == [unfinished]
    # an age limit takes the old entry, a zero cap everything but the one in use
    assert [e.name for e in prune_cache(tmp_path, older_than_s=30 * DAY, dry_run=True).removed] == [old]
    result = prune_cache(tmp_path, max_bytes=0)
    assert [e.name for e in result.removed] == [old]
    assert _names(tmp_path) == {fresh}
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "scan.npy").is_file()


def test_a_dry_run_removes_nothing(tmp_path):
    names = [_entry(tmp_path, f"C{i}", 1.0, days_ago=5 + i) for i in range(3)]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = prune_cache(tmp_path, max_bytes=0, dry_run=True)
    assert {e.name for e in result.removed} == set(names) and result.freed >= 3 * MIB
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_lookup_marks_its_entry_used_so_the_cases_in_use_are_pruned_last(tmp_path):
    from toy import toy_cohort

    from amt_core.data.cases import read_cases

    cases = read_cases(toy_cohort(tmp_path / "toy", n_train=3, n_tune=0, n_test=0))
    rows = [(r.case_id, r.image, r.label) for r in cases.itertuples()]
    cache = CaseCache(tmp_path / "cache", get_config("cpu"), (3.0, 3.0, 3.0))
    built = cache.build_all(rows)
    arrays = [np.asarray(c.image()).copy() for c in built]
    long_ago = time.time() - 30 * DAY
    for e in cache_entries(cache.root):
        for p in e.files:
            os.utime(p, (long_ago, long_ago))
    cache.lookup(*rows[1])  # used again now
    assert cache_entries(cache.root)[-1].name.startswith(rows[1][0] + "-")
    one_entry = max(e.nbytes for e in cache_entries(cache.root))
    removed = prune_cache(cache.root, max_bytes=one_entry).removed
    assert sorted(e.name.split("-")[0] for e in removed) == sorted([rows[0][0], rows[2][0]])
    # the hashes of the inputs stay while the inputs exist (as written back); a pruned entry is built again
    from amt_core.model.cache import HashIndex

    assert len(HashIndex(cache.root).table) == 6
    again = CaseCache(cache.root, get_config("cpu"), (3.0, 3.0, 3.0)).build_all(rows)
    assert all(np.array_equal(a, np.asarray(c.image())) for a, c in zip(arrays, again, strict=True))


def test_hash_rows_of_inputs_that_are_gone_are_dropped(tmp_path):
    from amt_core.model.cache import HashIndex

    kept, gone = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    kept.write_bytes(b"a")
    gone.write_bytes(b"b")
    index = HashIndex(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    index.sha(kept), index.sha(gone)
    index.save()
    gone.unlink()
    prune_cache(tmp_path / "cache")
    assert list(HashIndex(tmp_path / "cache").table) == [str(kept.resolve())]


def test_the_cap_comes_from_amt_cache_max_gb(tmp_path, monkeypatch):
    monkeypatch.delenv("AMT_CACHE_MAX_GB", raising=False)
    assert cache_cap_bytes() == 20 * 2**30
    monkeypatch.setenv("AMT_CACHE_MAX_GB", "off")
    assert cache_cap_bytes() is None and auto_prune(tmp_path) is None
    monkeypatch.setenv("AMT_CACHE_MAX_GB", "0.002")  # about 2 MiB
    names = [_entry(tmp_path, f"C{i}", 1.0, days_ago=3 - i) for i in range(3)]
    assert [e.name for e in auto_prune(tmp_path).removed] == names[:1]
    for bad in ("lots", "-1"):
        monkeypatch.setenv("AMT_CACHE_MAX_GB", bad)
        with pytest.raises(ValueError, match="AMT_CACHE_MAX_GB"):
            cache_cap_bytes()


def test_amt_cache_info_and_prune(tmp_path, capsys):
    names = [_entry(tmp_path, f"C{i}", 1.0, days_ago=3 - i) for i in range(3)]
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "entries: 3 (0 unfinished)" in out and "size: 0.00 GiB" in out

    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--max-gb", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 3 entries" in out and all(n in out for n in names)
    assert _names(tmp_path) == set(names)

    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--older-than-days", "1.5"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert _names(tmp_path) == {names[2]}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cache", "prune"], "needs --max-gb and/or --older-than-days"),
        (["cache", "prune", "--max-gb", "-2"], "--max-gb -2: must be 0 or more"),
        (["cache", "info", "--max-gb", "1"], "go with 'amt cache prune'"),
    ],
)
def test_amt_cache_refuses_unclear_requests(tmp_path, capsys, argv, message):
    name = _entry(tmp_path, "C", 1.0, days_ago=9)
    assert main([*argv, "--cache-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert _names(tmp_path) == {name}


def test_amt_cache_names_a_missing_folder(tmp_path, capsys):
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "nope")]) == 2
    assert "nope: no such cache folder" in capsys.readouterr().err


def test_a_long_run_keeps_marking_its_cases_used(tmp_path):
    """Training marks its cases every epoch: a run longer than the protection window keeps them."""
    from amt_core.model.cache import CachedCase, mark_used

    names = [_entry(tmp_path, f"C{i}", 1.0, days_ago=2) for i in range(3)]
    in_use = [CachedCase(n, tmp_path / f"{n}.npy", tmp_path / f"{n}_label.npy", {}) for n in names[:2]]
    mark_used(in_use)
    assert [e.name for e in prune_cache(tmp_path, max_bytes=0).removed] == names[2:]


def test_the_calling_runs_entries_and_files_that_cannot_go_stay_whole(tmp_path, monkeypatch, capsys):
    names = [_entry(tmp_path, f"C{i}", 1.0, days_ago=5 - i) for i in range(4)]
    # the run's own entries stay even when their use could not be recorded (utime refused on a shared cache)
    result = prune_cache(tmp_path, max_bytes=0, keep={names[0]}, dry_run=True)
    assert {e.name for e in result.removed} == set(names[1:])

    stuck = tmp_path / f"{names[1]}.json"
    unlink = Path.unlink

    def refuse(self, *args, **kwargs):
        if self == stuck:
            raise PermissionError(13, "Permission denied")
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    result = prune_cache(tmp_path, max_bytes=0, keep={names[0]})
    assert result.failed == [f"{stuck}: Permission denied"]
    assert _names(tmp_path) == {names[0], names[1]}
    assert all(
        (tmp_path / f"{names[1]}{s}").is_file() for s in SUFFIXES
    )  # its JSON stayed: so did its arrays
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--max-gb", "0"]) == 1
    assert f"could not remove {stuck}: Permission denied" in capsys.readouterr().err


def test_temporary_files_of_killed_builds_go_once_old(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)  # a process that has ended
    name = _entry(tmp_path, "C", 1.0, days_ago=0.001)  # in use
    old, young = (tmp_path / f".{name}.npy.{pid}.{tag}.tmp.npy" for tag in ("abc", "def"))
    for p in (old, young):
        p.write_bytes(b"\0" * 10)
    day_ago = time.time() - DAY
    os.utime(old, (day_ago, day_ago))
    result = prune_cache(tmp_path, max_bytes=0)
    assert result.temp_files == 1 and not old.exists() and young.exists()
    assert _names(tmp_path) == {name}


def test_prune_refuses_a_folder_that_is_not_a_cache(tmp_path, capsys):
    stray = tmp_path / f"scan-{'a' * 20}.npy"  # looks like an unfinished entry, but no cache is here
    stray.write_bytes(b"\0" * 10)
    os.utime(stray, (0, 0))
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--max-gb", "0"]) == 2
    assert "not a preprocessed-case cache" in capsys.readouterr().err
    assert stray.exists()
    assert main(["cache", "info", "--cache-dir", str(stray)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_a_lookup_of_a_half_pruned_entry_is_a_miss(tmp_path):
    from toy import toy_cohort

    from amt_core.data.cases import read_cases

    cases = read_cases(toy_cohort(tmp_path / "toy", n_train=3, n_tune=0, n_test=0))
    row = next((r.case_id, r.image, r.label) for r in cases.itertuples())
    cache = CaseCache(tmp_path / "cache", get_config("cpu"), (3.0, 3.0, 3.0))
    built = cache.get(*row)
    built.label_path.unlink()  # the JSON still there, an array gone
    assert cache.lookup(*row) is None
    again = cache.get(*row)
    assert again.label_path.is_file() and np.array_equal(np.asarray(again.label()).shape, built.shape)


def test_a_listing_piped_into_head_stops_quietly(tmp_path):
    """``amt cache prune --dry-run | head``: the reader leaves early; no traceback."""
    import subprocess
    import sys

    for i in range(1500):  # a listing longer than a pipe's buffer
        _entry(tmp_path, f"CASE{i:05d}", 0.0001, days_ago=2)
    cmd = [
        sys.executable,
        "-m",
        "amt_core.cli",
        "cache",
        "prune",
        "--cache-dir",
        str(tmp_path),
        "--max-gb",
        "0",
    ]
    proc = subprocess.Popen([*cmd, "--dry-run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(str(tmp_path).encode())
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and proc.returncode in (0, 141), err.decode()[-500:]
    assert len(cache_entries(tmp_path)) == 1500
