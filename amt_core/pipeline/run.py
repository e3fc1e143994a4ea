"""The papermill runner: execute the study notebooks in order into a run folder.

Each step executes one notebook with the parameters it declares (from the preset file) into
``RUN/notebooks/`` and exports it to HTML. A step is **skipped** when its manifest in ``RUN/.steps/``
shows it succeeded with the same notebook, the same parameters, the same upstream steps, the same input files
*and the same code*: the SHA-256 of amt's own sources (:func:`~amt_core.provenance.code_fingerprint`, what the
notebooks import) and the versions of the libraries that shape results
(:data:`~amt_core.provenance.RESULT_PACKAGES`), and its outputs are still there unchanged; so an upgraded
amt, an edited ``amt_core`` module or an upgraded library re-runs the steps (the manifest records its ``code``
and ``libraries``; the line of a step that re-runs says which part changed). The input files of a step that reads
the cohort are ``cases.csv`` *and every image and label it lists* (an imported cohort's scans may change under
the same table); every file is compared by content (SHA-256), the hashes remembered in
``RUN/.steps/hashes.json`` by path, size and modification time so that an unchanged rerun reads no volume
again. A file is named in a manifest by its path in the run folder, a file of the amt package (the bundled
chest CTs) by its path in the package (``amt_core/synth/...``: the same for a moved checkout or an installed
wheel), any other by its absolute path. A step that re-runs replaces its output folders whole (the notebooks
write them with ``overwrite=True``).

``RUN`` must be empty, new or a run folder (``.steps/`` or ``params.yaml``): any other non-empty folder is
refused unless ``overwrite`` (then it is cleared and the run starts afresh). A failing cell stops the run with
:class:`StepError`, naming the notebook, the cell and the error; the executed notebook is kept for
inspection and the outputs of earlier steps are left as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from amt_core.atomic import (
    OutputExistsError,
    is_nonempty_dir,
    json_ready,
    remove_stale_temps,
    write_json,
    write_text,
)
from amt_core.layout import RunLayout
from amt_core.pipeline.hashes import FileHashes
from amt_core.pipeline.params import NOTEBOOKS, load_params, notebook_parameters
from amt_core.pipeline.sources import SOURCE_SUFFIX, check_sources, source_path, step_notebook
from amt_core.provenance import PACKAGE_DIR, code_fingerprint, result_versions
from amt_core.resources import notebook_dir, preset_path

#: The notebook sources, jupytext percent scripts (the checkout's notebooks/, or the installed package's copy).
NOTEBOOK_DIR = notebook_dir()


class StepError(RuntimeError):
    """A notebook of the pipeline failed; the message names the notebook, the cell and the error."""

    def __init__(self, notebook: str, message: str, executed: Path | None = None):
        super().__init__(message)
        self.notebook = notebook
        self.executed = executed


@dataclass(frozen=True)
class Step:
    notebook: str
    inputs: Callable[[RunLayout], list[Path]]
    outputs: Callable[[RunLayout], list[Path]]


def _eval_outputs(L: RunLayout) -> list[Path]:
    return [L.evaluation("tune"), L.evaluation("test"), L.analysis_dir]


def _cohort_outputs(L: RunLayout) -> list[Path]:
    """An imported cohort is an input of 01 (it only reads it); a generated one is its output, whole."""
    return [L.cases_csv if L.cohort_csv else L.cohort_dir, L.tables_dir / "table1.csv"]


def _training_records(L: RunLayout) -> list[Path]:
    """How each training ended (``training.json``: complete or stopped) and its log: read by the report, the
    learning curves and the seed table, so a training that finishes without changing ``best.pt`` still
    re-runs the steps that show it."""
    seeds = [L.seed_train_dir(k) / "training.json" for k in L.seed_numbers()]
    return [L.train_dir / "training.json", L.train_dir / "train_log.csv", *[p for p in seeds if p.is_file()]]


def _real_backgrounds(L: RunLayout) -> list[Path]:
    """The tumour-free chest CTs 03_evaluate predicts for the real-anatomy subset (the background of each
    real-anatomy test scan, and its folder's ``backgrounds.csv``): a changed background re-runs the
    evaluation. None for a cohort without real-anatomy test scans, or whose table or backgrounds cannot be
    read (the step itself then says what is wrong)."""
    import pandas as pd

    from amt_core.pipeline import real_anatomy as RA

    try:
        real = RA.real_cases(pd.read_csv(L.cases_csv, dtype=str, keep_default_na=False))
        if real.empty:
            return []
        folder = RA.background_folder(L)
        found = RA.backgrounds_of(real, folder)
    except (OSError, ValueError, KeyError):
        return []
    return [Path(p) for p in found["path"]] + [p for p in [folder / "backgrounds.csv"] if p.is_file()]


def _cohort_inputs(L: RunLayout) -> list[Path]:
    """What 01_cohort reads: an imported cohort (its table and every image and label); for a cohort it
    generates, the bundled chest CTs and their ``backgrounds.csv``, which it paints its real-anatomy test scans
    into (``real_anatomy``): data, not in the code fingerprint, so a changed bundle rebuilds the cohort."""
    from amt_core.synth.hybrid import MANIFEST, SUFFIXES, bundled_backgrounds

    if L.cohort_csv:
        return L.cohort_files()
    folder = bundled_backgrounds()
    scans = sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIXES)) if folder.is_dir() else []
    return [*scans, *[p for p in [folder / MANIFEST] if p.is_file()]]


STEPS: tuple[Step, ...] = (
    Step("01_cohort", _cohort_inputs, _cohort_outputs),
    Step(
        "02_train",
        lambda L: L.cohort_files(),
        lambda L: [L.model_path, *L.seed_model_paths(), *_training_records(L)],
    ),
    Step(
        "03_evaluate",
        lambda L: [
            *L.cohort_files(),
            L.model_path,
            *L.seed_model_paths(),
            *_training_records(L),
            *_real_backgrounds(L),
        ],
        lambda L: [
            L.predictions("tune"),
            L.predictions("test"),
            *_eval_outputs(L),
            *L.seed_result_dirs(),
            *L.real_anatomy_dirs(),
        ],
    ),
    Step(
        "04_figures",
        lambda L: [
            *L.cohort_files(),
            *_eval_outputs(L),
            L.predictions("test"),
            *L.real_anatomy_dirs(),
            *_training_records(L),
        ],
        lambda L: [L.figures_dir, L.tables_dir, L.report_md],
    ),
    Step(
        "05_explore", lambda L: [*L.cohort_files(), L.evaluation("test"), L.predictions("test")], lambda L: []
    ),
)
assert tuple(s.notebook for s in STEPS) == NOTEBOOKS


# --- hashing ----------------------------------------------------------------------------------------
def _files(paths: Iterable[Path]) -> list[Path]:
    """The files of ``paths`` (a folder: every file in it, hidden ones and hidden folders left out)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        else:
            out.append(p)
    return out


def _file_key(f: Path, root: Path) -> str:
    """A file's name in a step's manifest: its path in the run folder ``root``; for a file of the amt package
    (the bundled chest CTs) its path in the package, ``amt_core/synth/...``, the same wherever the package lies
    (a checkout moved or cloned again, an installed wheel). Any other file (a cohort of the user's own outside
    the run folder) keeps its absolute path, the name provenance.json records: its step's parameters hold the
    cohort's absolute path anyway (``cohort_csv``, resolved), so a moved cohort re-runs its steps whatever its
    files are called here."""
    if f.is_relative_to(root):
        return str(f.relative_to(root))
    resolved = f.resolve()
    if resolved.is_relative_to(PACKAGE_DIR):
        return (Path(PACKAGE_DIR.name) / resolved.relative_to(PACKAGE_DIR)).as_posix()
    return str(f)


def _hashes(paths: Iterable[Path], root: Path, hasher: FileHashes) -> dict[str, str | None]:
    return {_file_key(f, root): hasher(f) if f.is_file() else None for f in _files(paths)}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# --- kernel -----------------------------------------------------------------------------------------
def ensure_kernel(name: str = "python3") -> str:
    """A kernel name that runs *this* interpreter (so notebooks see the same installed packages).

    ipykernel's ``python3`` spec runs ``python`` which jupyter_client maps to ``sys.executable``; if a
    ``python3`` spec pointing elsewhere shadows it, install a spec for this interpreter into
    ``sys.prefix`` and use that.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec(name).argv[0]
    except NoSuchKernel:
        argv0 = None
    ok = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if argv0 in ok or (argv0 and Path(argv0).resolve() == Path(sys.executable).resolve()):
        return name
    from ipykernel.kernelspec import install

    own = "amt-" + hashlib.sha1(sys.executable.encode()).hexdigest()[:8]
    install(kernel_name=own, prefix=sys.prefix, display_name=f"Python (amt, {sys.prefix})")
    return own


# --- one step ---------------------------------------------------------------------------------------
def code_parts() -> dict[str, Any]:
    """What runs in every notebook besides the notebook itself, in each step's key: ``code``, the SHA-256 of
    amt's sources, and ``libraries``, the versions of the libraries that shape results. Computed once per
    `amt run` (a few hundred kilobytes), not once per process: the kernels import the code as it is now."""
    return {"code": code_fingerprint(), "libraries": result_versions()}


def _step_key(
    step: Step, layout: RunLayout, params: dict, upstream: str, hasher: FileHashes, code: dict[str, Any]
) -> tuple[str, dict]:
    """The step's key (a SHA-256) and the parts it is made of, as its manifest records them: ``code`` and
    ``libraries`` (:func:`code_parts`), ``notebook`` (its source's SHA-256), ``params``, ``inputs`` (name ->
    SHA-256) and ``upstream`` (the previous step's key)."""
    nb_params = {k: v for k, v in params.items() if k != "run_dir"}
    inputs = _hashes(step.inputs(layout), layout.root, hasher)
    parts = {
        **code,
        "notebook": hasher(source_path(NOTEBOOK_DIR, step.notebook)),
        "params": nb_params,
        "inputs": inputs,
        "upstream": upstream,
    }
    return _digest(parts), parts


#: what a step's line says when it re-runs because this part of its key changed
CHANGED = {
    "code": "the amt code changed",
    "libraries": "library versions changed",
    "notebook": "its notebook changed",
    "params": "its parameters changed",
    "inputs": "its input files changed",
    "upstream": "an earlier step changed",
}


def _rerun_reason(
    manifest_path: Path, key: str, parts: dict, layout: RunLayout, hasher: FileHashes
) -> str | None:
    """Why the step must run: None when its manifest has this ``key`` and its outputs are there unchanged;
    '' when it has no manifest (never run, or its last run failed); else the parts of the key that changed
    (:data:`CHANGED`; for libraries, which ones) or the first output that changed."""
    if not manifest_path.is_file():
        return ""
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("key") != key:
        now = json.loads(json.dumps(json_ready(parts), default=str))  # as the manifest holds it
        reasons = [why for part, why in CHANGED.items() if manifest.get(part) != now.get(part)]
        old = manifest.get("libraries")
        if CHANGED["libraries"] in reasons and isinstance(old, dict):
            new = now["libraries"]
            which = [n for n in sorted({*old, *new}) if old.get(n) != new.get(n)]
            detail = ", ".join(f"{n} {old.get(n)} -> {new.get(n)}" for n in which)
            reasons[reasons.index(CHANGED["libraries"])] += f" ({detail})"
        return ", ".join(reasons) or "its key changed"
    for rel, digest in manifest.get("outputs", {}).items():
        path = layout.root / rel
        if not path.is_file() or hasher(path) != digest:
            return f"its output {rel} changed or is missing"
    return None


def _describe_failure(exc, notebook: str, executed: Path) -> str:
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    label = next(
        (ln.split("=", 1)[1].strip() for ln in source if ln.startswith("#papermill_description=")),
        source[0] if source else "",
    )
    cell = getattr(exc, "cell_index", "?")
    return (
        f"{notebook} failed in cell {cell} ({label}): {getattr(exc, 'ename', type(exc).__name__)}: "
        f"{getattr(exc, 'evalue', exc)}\n  the executed notebook is kept at {executed}"
    )


def _export_html(notebook: Path) -> Path:
    """RUN/notebooks/NAME.html: a table of contents and RUN/provenance.json's record, then the notebook."""
    from amt_core.pipeline.export import export_html

    return export_html(notebook, provenance=notebook.parent.parent / "provenance.json")


@contextlib.contextmanager
def kernel_imports_this_package():
    """While the block runs, a kernel started from this process imports the amt_core this process imports
    (the code :func:`code_parts` fingerprints): a checkout's folder goes first on ``PYTHONPATH``. Without it a
    kernel (its working folder the run's) could import another amt_core, e.g. the editable install of another
    checkout in the same environment, and a step would run other code than its key and provenance.json name.
    An installed package (site-packages) is what the kernel, the same interpreter, imports anyway."""
    root = PACKAGE_DIR.parent
    if root.name in ("site-packages", "dist-packages"):
        yield
        return
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _execute(
    step: Step, layout: RunLayout, params: dict, kernel: str, progress: bool, head: str = ""
) -> Path:
    """Execute one notebook. With ``progress`` the terminal shows each labelled cell as a line and the inner
    progress of the long loops (``amt_core.progress``: the kernel writes ``.steps/{notebook}.progress.jsonl``,
    a thread here follows it); papermill's own cell bar stays off, so that no two bars fight."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from amt_core.progress import Console, describing_engine, following

    layout.notebooks_dir.mkdir(parents=True, exist_ok=True)
    executed = layout.notebooks_dir / f"{step.notebook}.ipynb"
    follow = following(layout.steps_dir / f"{step.notebook}.progress.jsonl", Console()) if progress else None
    try:
        with follow or contextlib.nullcontext() as follower, kernel_imports_this_package():
            shown = (
                {
                    "engine_name": describing_engine(),
                    "on_cell": lambda label: follower.say(f"{head}: {label}"),
                }
                if follower
                else {}
            )
            pm.execute_notebook(
                step_notebook(NOTEBOOK_DIR, step.notebook),
                executed,
                parameters=params,
                kernel_name=kernel,
                cwd=str(layout.root),
                progress_bar=False,
                log_output=False,
                report_mode=False,
                **shown,
                # the kernel's own log (transport warnings, shutdown notices) is noise here;
                # cell errors still reach the executed notebook and StepError
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
    except PapermillExecutionError as exc:
        _export_html(executed)
        raise StepError(step.notebook, _describe_failure(exc, step.notebook, executed), executed) from None
    _export_html(executed)
    return executed


def run_pipeline(
    params_path: str | Path,
    out_dir: str | Path,
    *,
    progress: bool = True,
    force: bool = False,
    steps: Iterable[str] | None = None,
    overwrite: bool = False,
) -> dict[str, str]:
    """Run the study notebooks with the preset ``params_path`` into the run folder ``out_dir``.

    Returns ``{notebook: "ran" | "skipped"}``. ``force`` reruns every step; ``steps`` limits the run to
    the named notebooks (the others must be up to date or are skipped as they are). ``out_dir`` must be
    empty, new or a run folder; ``overwrite`` clears it first (any folder) and runs every step afresh.
    Raises :class:`StepError` when a notebook fails, :class:`OutputExistsError` for a foreign folder.
    """
    params_path = preset_path(params_path)
    params = load_params(params_path)
    layout = RunLayout.of(out_dir, params.get("cohort_csv", ""))
    wanted = set(steps) if steps is not None else set(NOTEBOOKS)
    unknown = wanted - set(NOTEBOOKS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; the steps are {list(NOTEBOOKS)}")
    check_sources(NOTEBOOK_DIR, [nb for nb in NOTEBOOKS if nb in wanted])  # before any step runs
    params_text = Path(params_path).read_text()
    with run_lock(layout):  # one `amt run` at a time into one folder, from before it is cleaned or cleared
        _prepare_run_folder(
            layout, overwrite, keep=[Path(params_path), *([layout.cases_csv] if layout.cohort_csv else [])]
        )
        return _run_steps(layout, params, params_path, params_text, wanted, force, progress)


def _run_steps(layout, params, params_path, params_text, wanted, force, progress) -> dict[str, str]:
    hasher = FileHashes(layout.steps_dir / "hashes.json")
    say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
    status: dict[str, str] = {}
    stale: list[str] = []  # steps left out (``steps``) whose outputs are not those of these parameters
    kernel: str | None = None
    upstream = ""
    code = code_parts()  # once per run: the same code and library versions in every step's key
    say(f"amt run: {Path(params_path)} -> {layout.root}")
    for i, step in enumerate(STEPS, 1):
        nb_params = notebook_parameters(step.notebook, params, layout.root)
        key_params = key_parameters(step.notebook, params, nb_params)
        key, parts = _step_key(step, layout, key_params, upstream, hasher, code)
        manifest_path = layout.steps_dir / f"{step.notebook}.json"
        head = f"[{i}/{len(STEPS)}] {step.notebook}"
        reason = _rerun_reason(manifest_path, key, parts, layout, hasher)
        up_to_date = not force and reason is None
        if step.notebook not in wanted or up_to_date:
            status[step.notebook] = "skipped"
            if up_to_date:
                say(f"{head}: skipped (code, libraries, notebook, parameters and inputs unchanged)")
            else:
                stale_why = "" if reason is None else f"; out of date: {reason or 'no finished run recorded'}"
                say(f"{head}: skipped (not asked for{stale_why})")
            if not up_to_date and step.notebook in RESULT_STEPS:  # the explorer's notebook feeds no result
                stale.append(step.notebook)
            upstream = key
            continue
        # until every step is done, the folder mixes outputs of two parameter sets: said in INCOMPLETE
        write_json(
            layout.steps_dir / INCOMPLETE,
            {"params_file": str(params_path), "step": step.notebook},
        )
        if kernel is None:
            kernel = ensure_kernel()
            write_text(layout.root / "params.yaml", params_text)
            _write_run_provenance(layout, params, params_path, hasher)
        manifest_path.unlink(missing_ok=True)
        why = "forced" if force else reason
        say(f"{head}: running ({why}) ..." if why else f"{head}: running ...")
        t0 = time.perf_counter()
        try:
            executed = _execute(step, layout, nb_params, kernel, progress, head)
        finally:
            hasher.save()  # the inputs hashed so far stay known, also after a failure
        seconds = time.perf_counter() - t0
        outputs = _hashes(
            [*step.outputs(layout), executed, executed.with_suffix(".html")], layout.root, hasher
        )
        missing = [rel for rel, h in outputs.items() if h is None]
        if missing:
            raise StepError(step.notebook, f"{step.notebook} finished but did not write {missing}", executed)
        write_json(
            manifest_path,
            {
                "notebook": step.notebook,
                "key": key,
                **parts,
                "outputs": outputs,
                "seconds": round(seconds, 1),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        hasher.save()
        status[step.notebook] = "ran"
        say(f"{head}: done in {seconds:.1f} s")
        upstream = key
    hasher.save()
    if stale:
        write_json(
            layout.steps_dir / INCOMPLETE,
            {"params_file": str(params_path), "step": stale[0], "left_out": stale},
        )
        say(f"amt run: finished the steps asked for; {', '.join(stale)} still hold(s) earlier outputs")
    else:
        (layout.steps_dir / INCOMPLETE).unlink(missing_ok=True)
        say(f"amt run: finished; report at {layout.report_md}, figures in {layout.figures_dir}")
    warning = incomplete_training_warning(layout.root)
    if warning:  # the report says so on top; the terminal says so last (also with --quiet)
        print(warning, file=sys.stderr, flush=True)
    return status


def incomplete_training_warning(run_dir: str | Path) -> str | None:
    """The line ``amt run`` ends with when the run's model did not finish its training (``train/training.json``
    says ``complete: false``: the time cap stopped it, or it was stopped or killed), in the words of the
    report's note (:func:`~amt_core.model.run_control.incomplete_note`); None for a complete or absent one."""
    from amt_core.model.run_control import FINISH_RUN, incomplete_note, read_status

    try:
        status = read_status(RunLayout.of(run_dir).train_dir)
    except (OSError, ValueError) as exc:
        return f"amt run: warning: train/training.json cannot be read ({exc}): is the training complete?"
    note = incomplete_note(status, FINISH_RUN)
    return f"amt run: warning: incomplete training (train/training.json): {note}" if note else None


#: the step that writes report.md, and the run-level parameters it reads from the run's provenance
REPORT_STEP = "04_figures"
#: the steps whose outputs the results are made of (a stale one leaves the folder mixed): those up to the report
RESULT_STEPS = NOTEBOOKS[: NOTEBOOKS.index(REPORT_STEP) + 1]
RUN_LEVEL_PARAMETERS = ("preview",)


def key_parameters(notebook: str, params: dict, nb_params: dict) -> dict:
    """The parameters in a step's key: the notebook's own, and for the report's step the run-level ones
    (no notebook declares them, but the report reads them: a changed ``preview`` re-writes the report)."""
    if notebook != REPORT_STEP:
        return nb_params
    return {**nb_params, **{k: params[k] for k in RUN_LEVEL_PARAMETERS if k in params}}


#: ``RUN/.steps/INCOMPLETE``: present while (or after) an `amt run` left steps undone, naming the first
INCOMPLETE = "incomplete.json"
LOCK_SUFFIX = ".amt-run.lock"


def incomplete_run(run_dir: str | Path) -> dict | None:
    """What ``RUN/.steps/incomplete.json`` says (the step an `amt run` did not finish), or None."""
    path = RunLayout.of(run_dir).steps_dir / INCOMPLETE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None if not path.exists() else {"step": "?", "params_file": "?"}


@contextlib.contextmanager
def run_lock(layout: RunLayout):
    """Hold an exclusive ``flock`` on ``.NAME.amt-run.lock`` beside the run folder ``NAME`` while a run
    cleans, clears or writes it: a second `amt run` into it is refused at once instead of racing the first
    (beside, not inside: ``--overwrite`` replaces the folder). The kernel releases it when the process ends,
    however it ends. Where the file system has no flock (some NFS, Lustre, FUSE mounts) the run goes on
    unlocked, and says so."""
    import errno
    import fcntl

    root = layout.root
    root.parent.mkdir(parents=True, exist_ok=True)
    fh = open(root.parent / f".{root.name}{LOCK_SUFFIX}", "a+")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputExistsError(
                f"{root}: another `amt run` is writing into this run folder; wait for it to finish"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            print(f"amt run: warning: {root.parent} cannot be locked ({exc.strerror}); "
                  "make sure no other `amt run` writes into this folder", file=sys.stderr)  # fmt: skip
        yield
    finally:
        fh.close()


def _prepare_run_folder(layout: RunLayout, overwrite: bool, keep: list[Path]) -> None:
    """Refuse a non-empty folder that is not a run folder (unless ``overwrite``: then move it aside and
    delete it, unless it holds one of the ``keep`` inputs); remove the staging folders and temporary files
    that a killed step left inside."""
    root = layout.root
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root}: is a file, not a folder; choose another run folder")
    if is_nonempty_dir(root):
        inside = [p for p in keep if p.resolve().is_relative_to(root)]
        if overwrite and inside:
            raise OutputExistsError(
                f"{root}: --overwrite would delete {inside[0]}, an input of this run; copy it elsewhere first"
            )
        if overwrite:
            aside = root.parent / f".{root.name}.{os.getpid()}.{secrets.token_hex(4)}.old"
            os.replace(root, aside)  # one rename: a killed deletion leaves a name remove_stale_temps knows
            shutil.rmtree(aside)
        elif not layout.is_run_folder():
            raise OutputExistsError(
                f"{root}: is not empty and not an amt run folder (no .steps/ or params.yaml); "
                "pass --overwrite to replace it, or choose an empty folder"
            )
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root, recursive=True)


def _write_run_provenance(
    layout: RunLayout, params: dict, params_path: str | Path, hasher: FileHashes
) -> None:
    """The run's provenance.json: its config, versions and commit, and the SHA-256 of the params file, the
    notebooks and, for a cohort of the user's own (``cohort_csv``), its table and every image and label it
    lists (the hashes the step keys use, so nothing is read twice). The run's own synthetic cohort is an
    output of 01_cohort (hashed in ``.steps/01_cohort.json``)."""
    from amt_core.provenance import provenance

    inputs = [Path(params_path), *sorted(NOTEBOOK_DIR.glob(f"0*_*{SOURCE_SUFFIX}"))]
    record = provenance(
        {"params_file": str(params_path), "params": params, "run_dir": str(layout.root)}, inputs
    )
    if layout.cohort_csv:
        record["input_hashes"].update({str(f): hasher(f) for f in layout.cohort_files() if f.is_file()})
    write_json(layout.root / "provenance.json", record)
