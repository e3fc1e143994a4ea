"""Progress of the long steps, shown in the terminal that waits on ``amt run``.

The notebooks run in a papermill kernel, a child process whose output the terminal never sees. So a long
loop (the cohort's cases, training's steps, inference's scans, the bootstrap's resamples) reports through a
:class:`Progress`, which writes one JSON line per update to the file named by :data:`ENV_FILE` (``amt run``
sets it per step, ``RUN/.steps/{notebook}.progress.jsonl``). ``amt run`` follows that file in a thread
(:func:`following`) and prints what it reads: one line per update when stdout is not a terminal (CI logs),
at most every :data:`LOG_EVERY` seconds plus every epoch end; an in-place line on a terminal. Without the
variable (a notebook run by hand, ``amt train`` in a shell) a :class:`Progress` is a tqdm bar where the
caller asks for one, or nothing.

A record is ``{"task", "desc", "unit", "done", "total", "event", "elapsed", "eta", "eta_by", "fields"}`` with
``event`` one of ``start``, ``update``, ``mark`` (an epoch end: always shown) and ``end``; ``eta_by`` is
``"time cap"`` when the loop's ``deadline`` (training's ``max_minutes``) comes before the rate's ETA, which is
then the time left under it. Elapsed time and ETA read the
clock: they are for display only and nothing a result file holds depends on them. Writing progress never stops
the computation: a progress file that cannot be written is given up silently.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

#: the environment variable naming the progress file (set by ``amt run`` for the kernel of each step)
ENV_FILE = "AMT_PROGRESS_FILE"
#: seconds between two records one task writes (marks, the start and the end are always written)
WRITE_EVERY = 1.0
#: seconds between two lines printed when stdout is not a terminal (epoch ends are always printed)
LOG_EVERY = 10.0
#: seconds between two redraws of the in-place line on a terminal
TTY_EVERY = 0.2

_ids = itertools.count(1)
#: how a field is named on the line (others: the key with spaces)
_LABELS = {"tune_dice": "tune Dice", "best_dice": "best Dice"}


class Progress:
    """Progress of one loop of ``total`` units.

    Parameters
    ----------
    task : short name of the loop (``cohort``, ``train``, ``predict``, ``bootstrap``).
    total : units the loop will have done at its end.
    unit : what a unit is (``case``, ``step``, ``scan``, ``resample``).
    desc : the label on the line (default ``task``).
    initial : units already done (a resumed run), left out of the rate behind the ETA.
    bar : without a progress file, show a tqdm bar (``tqdm.auto``: a notebook widget or a terminal bar).
    enabled : False makes the object do nothing at all.
    path : the progress file (default: the one :data:`ENV_FILE` names, if any).
    clock : seconds, for elapsed and ETA only (default ``time.monotonic``).
    deadline : the time on ``clock`` by which the loop stops at the latest, done or not (a time cap): the ETA is
        at most the time left until then, and the record says so (``eta_by``).
    """

    def __init__(
        self,
        task: str,
        total: int,
        *,
        unit: str = "",
        desc: str | None = None,
        initial: int = 0,
        bar: bool = False,
        enabled: bool = True,
        path: str | os.PathLike | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = WRITE_EVERY,
        deadline: float | None = None,
    ):
        self.task, self.total, self.unit, self.desc = task, int(total), unit, desc or task
        self.done = self.initial = int(initial)
        self.fields: dict[str, Any] = {}
        self.clock, self.every, self.deadline = clock, every, deadline
        target = os.environ.get(ENV_FILE) if path is None else path
        self.path = Path(target) if enabled and target else None
        self.bar = None
        if enabled and bar and self.path is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, unit=unit or "it")
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.t0 = clock()
        self._last = -math.inf
        self._closed = False
        self._emit("start", force=True)

    # --- the caller's side ---------------------------------------------------------------------------
    def update(self, n: int = 1, **fields: Any) -> None:
        """``n`` more units done; ``fields`` (loss, epoch, ...) replace the shown values of the same name."""
        self.done += n
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(n)
            if fields:
                self.bar.set_postfix(_postfix(self.fields), refresh=False)
        self._emit("update")

    def mark(self, **fields: Any) -> None:
        """A milestone (an epoch end): always written, always printed by the follower."""
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.set_postfix(_postfix(self.fields))
        self._emit("mark", force=True)

    def iterate(self, items: Iterable) -> Iterator:
        """Yield the items, one unit done after each."""
        for item in items:
            yield item
            self.update()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._emit("end", force=True)
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the record ----------------------------------------------------------------------------------
    def record(self, event: str) -> dict[str, Any]:
        now = self.clock()
        elapsed = now - self.t0
        rate_done = self.done - self.initial
        eta = elapsed / rate_done * max(self.total - self.done, 0) if rate_done > 0 else None
        eta_by = None
        if self.deadline is not None and self.done < self.total:
            left = max(self.deadline - now, 0.0)
            if eta is None or eta > left:  # the cap stops the loop first
                eta, eta_by = left, "time cap"
        return {
            "task": self.task,
            "desc": self.desc,
            "unit": self.unit,
            "id": self.id,
            "event": event,
            "done": self.done,
            "total": self.total,
            "elapsed": round(elapsed, 1),
            "eta": None if eta is None else round(eta, 1),
            "eta_by": eta_by,
            "fields": _plain(self.fields),
        }

    def _emit(self, event: str, force: bool = False) -> None:
        if self.path is None:
            return
        now = self.clock()
        if not force and now - self._last < self.every:
            return
        self._last = now
        try:
            line = json.dumps(self.record(event), allow_nan=False) + "\n"
            with open(self.path, "a", encoding="utf-8") as f:  # one write of one line: lines never interleave
                f.write(line)
        except (OSError, TypeError, ValueError):
            self.path = None  # display only: never stop the computation for it


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe field values (NaN and numpy scalars become None and Python numbers)."""
    out = {}
    for k, v in fields.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _postfix(fields: dict[str, Any]) -> dict[str, str]:
    return {k: _value(v) for k, v in fields.items() if v is not None and k != "epochs"}


def _value(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3f}"
    return str(v)


# --- the line -----------------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``1h 02m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def format_record(rec: dict[str, Any]) -> str:
    """One line for a record: ``train: epoch 3/30, step 750/7500 (10%), loss 0.412, tune Dice 0.713,
    elapsed 2m 35s, ETA 23m 10s`` (``ETA 5m 10s (time cap)`` when a time cap ends the loop first)."""
    fields = dict(rec.get("fields") or {})
    parts = []
    if "epoch" in fields:
        epochs = fields.pop("epochs", None)
        parts.append(f"epoch {fields.pop('epoch')}" + (f"/{epochs}" if epochs else ""))
    total, done, unit = rec.get("total") or 0, rec.get("done", 0), rec.get("unit") or ""
    unit = f" {unit}s" if unit and total != 1 else f" {unit}" if unit else ""
    parts.append(f"{done}/{total}{unit}" + (f" ({100 * done // total}%)" if total else ""))
    parts += [
        f"{_LABELS.get(k, k.replace('_', ' '))} {_value(v)}" for k, v in fields.items() if v is not None
    ]
    parts.append(f"elapsed {duration(rec.get('elapsed') or 0.0)}")
    if rec.get("event") == "end":
        parts.append("done")
    elif rec.get("eta") is not None:
        parts.append(f"ETA {duration(rec['eta'])}" + (f" ({rec['eta_by']})" if rec.get("eta_by") else ""))
    return f"{rec.get('desc') or rec.get('task')}: " + ", ".join(parts)


# --- the follower ---------------------------------------------------------------------------------------
class Console:
    """Where ``amt run`` prints: permanent lines, and a status line that is redrawn in place on a terminal
    and printed as one more line otherwise. Safe to call from the follower thread and the runner."""

    def __init__(self, out: TextIO | None = None, tty: bool | None = None):
        self.out = out if out is not None else sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)()) if tty is None else tty
        self._lock = threading.Lock()
        self._status = False  # an in-place line is showing

    def line(self, text: str) -> None:
        with self._lock:
            self._clear()
            self.out.write(text + "\n")
            self.out.flush()

    def status(self, text: str) -> None:
        with self._lock:
            if self.tty:
                self.out.write("\r" + text + "\x1b[K")
                self._status = True
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def end_status(self) -> None:
        with self._lock:
            self._clear()
            self.out.flush()

    def _clear(self) -> None:
        if self._status:
            self.out.write("\r\x1b[K")
            self._status = False


class Follower:
    """Turns the records of a progress file into lines on a :class:`Console`.

    Not a terminal: a record is printed when it is a mark (an epoch end), when ``interval`` seconds (default
    :data:`LOG_EVERY`) have passed since the last printed line, or when it ends a task that was shown. A
    terminal: marks as lines, everything else redrawn in place (at most every :data:`TTY_EVERY` seconds).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        console: Console,
        *,
        interval: float | None = None,
        indent: str = "  ",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path, self.console, self.indent, self.clock = Path(path), console, indent, clock
        self.interval = (TTY_EVERY if console.tty else LOG_EVERY) if interval is None else interval
        self._offset, self._partial = 0, ""
        self._last = -math.inf
        self._shown: set[str] = set()
        self._lock = threading.RLock()  # the thread polls, and so does :meth:`say`

    def poll(self) -> None:
        """Read what was appended since the last poll and show it."""
        with self._lock:
            try:
                with open(self.path, encoding="utf-8") as f:
                    f.seek(self._offset)
                    text = f.read()
                    self._offset = f.tell()
            except OSError:
                return
            self.feed(text)

    def say(self, text: str) -> None:
        """A line of the runner's (a cell's label), after the records written before it."""
        with self._lock:
            self.poll()
            self.console.line(text)

    def feed(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # not a record (a torn line is completed on the next read, never parsed half)
            if isinstance(rec, dict):
                self.handle(rec)

    def handle(self, rec: dict[str, Any]) -> None:
        now, event, key = self.clock(), rec.get("event"), str(rec.get("id"))
        text = self.indent + format_record(rec)
        if event == "mark":
            self.console.line(text)
        elif self.console.tty:
            if event == "end" or now - self._last >= self.interval:
                self.console.status(text)
            else:
                return
        elif now - self._last >= self.interval or (event == "end" and key in self._shown):
            self.console.status(text)
        else:
            return
        self._last = now
        self._shown.add(key)


@contextlib.contextmanager
def following(
    path: str | os.PathLike, console: Console, *, every: float = 0.5, interval: float | None = None
) -> Iterator[Follower]:
    """Inside the block: :data:`ENV_FILE` names ``path`` (emptied first), and a thread shows its records
    on ``console``. At the end the last records are read, the in-place line cleared and the variable restored."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    follower = Follower(path, console, interval=interval)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            follower.poll()

    thread = threading.Thread(target=loop, name="amt-progress", daemon=True)
    old = os.environ.get(ENV_FILE)
    os.environ[ENV_FILE] = str(path)
    thread.start()
    try:
        yield follower
    finally:
        stop.set()
        thread.join()
        follower.poll()
        console.end_status()
        if old is None:
            os.environ.pop(ENV_FILE, None)
        else:
            os.environ[ENV_FILE] = old


# --- papermill: the cell descriptions instead of its cell bar ----------------------------------------------
ENGINE = "amt-describing"


def describing_engine() -> str:
    """The name of a papermill engine (registered on first call) that calls ``on_cell(description)`` (an
    engine keyword argument of ``papermill.execute_notebook``) when a cell labelled
    ``#papermill_description=...`` starts, so that ``amt run`` prints the cell's label as a line where
    papermill's cell bar would have fought with the follower's line."""
    from papermill.engines import NBClientEngine, papermill_engines

    class DescribingEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, **kwargs):
            if on_cell is not None:
                start = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    description = nb_man.get_cell_description(cell)
                    if description:
                        on_cell(description)
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, DescribingEngine)  # (again: the same engine under the same name)
    return ENGINE
